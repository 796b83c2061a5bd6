"""`leadwerk status` and `/metrics` tell an admin what matters: how many contacts and MQLs,
when each webhook source last delivered, which rules are in force and whether a change was
refused, which processes are alive, and whether Leadwerk is healthy (exit code)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from typer.testing import CliRunner

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row, take_in
from tests.process_helpers import free_port
from tests.redis_namespace import own_namespace
from worker.commands.cli import app as cli
from worker.pipeline.ingest import ingest_records
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.app import App, init_app
from worker.runtime.broker import setup_broker
from worker.runtime.clock import heartbeat
from worker.runtime.processes import process_identity
from worker.runtime.reload import ConfigReloader
from worker.store.models import DeadLetter, Event
from worker.web.app import create_app

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def status(config_dir: Path, settings: Settings, *options: str) -> Any:
    env = {"LEADWERK_DATABASE_URL": settings.database_url}
    if settings.redis_url:
        env |= {
            "LEADWERK_REDIS_URL": settings.redis_url,
            "LEADWERK_REDIS_NAMESPACE": settings.redis_namespace,
        }
    return CliRunner().invoke(cli, ["--config", str(config_dir), "status", *options], env=env)


def scrape(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with TestClient(create_app(app), client=("127.0.0.1", 50000)) as web:  # loopback: no token
        text = web.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def break_scoring(config_dir: Path) -> None:
    path = config_dir / "scoring.yaml"
    path.write_text(path.read_text().replace("version: 3", "version: [3"), encoding="utf-8")


def test_status_counts_contacts_and_mqls_not_events(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    app = init_app(settings)
    # Given two hot leads from the fair (one of them scanned twice) and a cold one
    rows = [
        fair_row("eva@firm1.de", size=500, title="Head of Sales"),
        fair_row("eva@firm1.de", size=500, title="Head of Sales", rating="warm"),
        fair_row("jan@firm2.de", size=500, title="Head of Sales"),
        fair_row("tim@tiny.de", size=3, title="Student", rating="cold"),
    ]
    take_in(app.store, app.config, rows, NOW)
    app.close()

    result = status(config_dir, settings, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["contacts"] == {"total": 3, "mqls": 2}
    assert "contacts: 3, of which 2 MQLs" in status(config_dir, settings).output


def test_status_shows_when_each_webhook_source_last_delivered(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    app = init_app(settings)
    # Given the ebooks webhook delivered once, at a known time
    take_in(app.store, app.config, [fair_row("eva@firm1.de", size=500)], NOW)
    with app.store.session() as session:
        event = session.query(Event).one()
        event.source, event.received_at = "ebooks", NOW
    app.close()

    data = json.loads(status(config_dir, settings, "--json").output)
    text = status(config_dir, settings).output

    assert data["webhooks"]["ebooks"]["last_delivery_at"] == NOW.isoformat()
    assert "webhook ebooks: last delivery 2026-12-03 10:00:00 UTC" in text


def test_a_refused_rule_change_shows_in_status_with_its_first_error_and_the_rules_kept(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    app = init_app(settings)
    kept = f"v{app.config.ruleset.version} ({app.config.hash})"
    # Given a live worker running the rules as they are
    heartbeat(app, process_identity(), "worker")
    # When someone saves a broken scoring.yaml and the worker refuses it
    break_scoring(config_dir)
    assert ConfigReloader(app).reload("changed: scoring.yaml") is False
    heartbeat(app, process_identity(), "worker")
    metrics = scrape(app)
    app.close()

    as_json = status(config_dir, settings, "--json")
    text = status(config_dir, settings)

    # Then status lists the file's errors, and says the worker refused it and what it runs
    assert as_json.exit_code == text.exit_code == 1
    [refusal] = json.loads(as_json.stdout)["rules"]["refused_reloads"]
    assert (
        "scoring.yaml:2:1: the bracket opened at line 1, column 10 is not closed"
        in refusal["first_error"]
    )
    assert refusal["still_running"] == kept
    assert "scoring.yaml:2:1: the bracket opened at line 1, column 10 is not closed" in text.stderr
    assert "rules: do not load on disk; in force: " + kept in text.stdout
    assert f"reload refused at {datetime.now(UTC):%Y-%m-%d}" in text.stdout
    assert f"still running {kept}" in text.stdout
    # And /metrics counts the refusal
    assert metrics[("leadwerk_config_reloads_refused_total", ())] == 1


def test_a_reload_that_succeeds_later_clears_the_refusal_from_status(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    app = init_app(settings)
    heartbeat(app, process_identity(), "worker")
    scoring = (config_dir / "scoring.yaml").read_text()
    reloader = ConfigReloader(app)
    break_scoring(config_dir)
    reloader.reload("changed: scoring.yaml")
    (config_dir / "scoring.yaml").write_text(scoring.replace("version: 3", "version: 4"))
    reloader.reload("changed: scoring.yaml")
    heartbeat(app, process_identity(), "worker")
    app.close()

    data = json.loads(status(config_dir, settings, "--json").stdout)

    assert data["rules"]["refused_reloads"] == []
    assert data["rules"]["in_force"] == [data["rules"]["on_disk"]]
    assert data["rules"]["on_disk"].startswith("v4 (")


def test_with_redis_status_is_unhealthy_until_a_worker_and_a_clock_are_alive(
    config_dir: Path, make_settings: Callable[..., Settings], redis_url: str
) -> None:
    with own_namespace(redis_url) as namespace:
        settings = make_settings(redis_url=redis_url, redis_namespace=namespace)
        app = init_app(settings)
        # Given nothing runs yet
        before = status(config_dir, settings)
        # When a worker and a clock say they are alive
        heartbeat(app, "host-a:1", "worker")
        heartbeat(app, "host-b:2:77", "clock")
        after = status(config_dir, settings)
        app.close()

    assert before.exit_code == 1
    assert "health: UNHEALTHY: no live worker" in before.output
    assert "no live clock" in before.output
    assert after.exit_code == 0, after.output
    assert "health: ok" in after.output


def test_status_with_the_store_down_says_so_in_one_line_and_exits_1(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/leadwerk"
    settings = make_settings(database_url=url)

    result = status(config_dir, settings)

    assert result.exit_code == 1
    assert result.output == f"cannot reach the store at {url}: Connection refused\n"


def test_metrics_show_queues_pending_leads_quarantine_dead_letters_and_sla_breaches(
    config_dir: Path, make_settings: Callable[..., Settings], postgres_url: str, redis_url: str
) -> None:
    with own_namespace(redis_url) as namespace:
        settings = make_settings(
            database_url=postgres_url, redis_url=redis_url, redis_namespace=namespace
        )
        app = init_app(settings)
        setup_broker(settings)
        # Given two leads taken in and queued for scoring, no worker running, a row without an
        # e-mail address quarantined, and one dead letter
        source = app.config.sources[FAIR]
        rows = [fair_row("eva@firm1.de", size=500), fair_row("jan@firm2.de"), fair_row("")]
        ingest_records(app.store, app.config, source, rows, now=NOW)
        enqueue(find_pending(app.store, datetime.now(UTC)))
        with app.store.session() as session:
            session.add(DeadLetter(actor="send_message", args=[1], error="SMTP said 554"))
        metrics = scrape(app)
        app.close()

    assert metrics[("leadwerk_queue_depth", (("queue", "score"), ("state", "ready")))] == 2
    assert metrics[("leadwerk_queue_depth", (("queue", "notify"), ("state", "ready")))] == 0
    assert metrics[("leadwerk_queue_oldest_age_seconds", (("queue", "score"),))] >= 0
    assert metrics[("leadwerk_leads_pending", ())] == 2
    assert metrics[("leadwerk_leads_pending_oldest_age_seconds", ())] > 0
    assert metrics[("leadwerk_quarantine_open", ())] == 1
    assert metrics[("leadwerk_dead_letters_open", ())] == 1
    assert metrics[("leadwerk_sla_breached", ())] == 0
    assert metrics[("leadwerk_processes_live", (("kind", "worker"),))] == 0
