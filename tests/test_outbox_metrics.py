"""Admins see how notifications fare: sent, failed, waiting and resent after a worker crash,
on the web process's /metrics (for Prometheus) and in `leadwerk status`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from typer.testing import CliRunner

from config.settings import Settings
from worker.commands.cli import app as cli
from worker.runtime.app import init_app
from worker.store.models import Message
from worker.web.app import create_app


def outbox_row(n: int, channel: str, status: str, resent: int = 0) -> Message:
    return Message(
        key=f"lead:{n}:new_lead",
        purpose="new_lead",
        channel=channel,
        recipient="U024BE7LH" if channel == "slack" else "lea@example.com",
        message_id=f"<lead-{n}@example.com>",
        status=status,
        resent_after_crash=resent,
    )


def test_metrics_and_status_count_messages_sent_failed_waiting_and_resent_after_a_crash(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    app = init_app(settings)
    # Given an outbox: three e-mails sent (one of them again after a crash), a Slack card
    # failed, one e-mail waiting and one being sent
    with app.store.session() as session:
        session.add_all(
            [
                outbox_row(1, "email", "sent"),
                outbox_row(2, "email", "sent", resent=1),
                outbox_row(3, "email", "sent"),
                outbox_row(4, "slack", "failed"),
                outbox_row(5, "email", "pending"),
                outbox_row(6, "email", "sending"),
            ]
        )
    try:
        # Prometheus on the same host: /metrics answers on loopback while no admin token is set
        with TestClient(create_app(app), client=("127.0.0.1", 50000)) as web:
            scraped = web.get("/metrics")
    finally:
        app.close()

    assert scraped.status_code == 200
    samples = {
        (sample.name, sample.labels.get("channel")): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name.startswith(("leadwerk_messages", "leadwerk_store"))
    }
    assert samples[("leadwerk_store_up", None)] == 1
    assert samples[("leadwerk_messages_sent_total", "email")] == 3
    assert samples[("leadwerk_messages_sent_total", "slack")] == 0
    assert samples[("leadwerk_messages_failed_total", "slack")] == 1
    assert samples[("leadwerk_messages_pending", "email")] == 2
    assert samples[("leadwerk_messages_resent_after_crash_total", None)] == 1

    # And `leadwerk status --json` says the same
    status = CliRunner().invoke(
        cli,
        ["--config", str(config_dir), "status", "--json"],
        env={"LEADWERK_DATABASE_URL": settings.database_url},
    )
    assert status.exit_code == 0, status.output
    messages = json.loads(status.output)["messages"]
    assert (messages["sent"], messages["failed"], messages["pending"]) == (3, 1, 2)
    assert messages["resent_after_crash"] == 1
