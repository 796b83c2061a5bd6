"""A backlog batch a worker takes from the queue (``score_backlog``) is worked in one
transaction; handed over again (its worker died before acknowledging it), it changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, restore_logging  # noqa: F401
from tests.test_backlog import NOW, backlog_rows, outcome
from worker.pipeline import actors
from worker.pipeline.ingest import ingest_records
from worker.runtime.app import App, init_app
from worker.runtime.broker import setup_broker
from worker.store.models import Message


@pytest.fixture
def leadwerk(
    make_settings: Callable[..., Settings], postgres_url: str
) -> Iterator[tuple[App, dramatiq.Broker]]:
    """Leadwerk on PostgreSQL with an in-process queue that nothing consumes, its clock at
    :data:`NOW` (a Wednesday morning: the reps are at work)."""
    settings = make_settings(database_url=postgres_url)
    app = init_app(settings)
    broker = setup_broker(settings)
    actors.simulate_clock(NOW)
    try:
        yield app, broker
    finally:
        actors.simulate_clock(None)
        broker.close()
        app.close()


def test_a_redelivered_batch_message_changes_nothing(
    leadwerk: tuple[App, dramatiq.Broker],
) -> None:
    app, broker = leadwerk
    report = ingest_records(
        app.store, app.config, app.config.sources[FAIR], backlog_rows(), now=NOW
    )
    outbox = app.settings.outbox_dir

    # Given a batch of the backlog worked by a worker
    actors.score_backlog.fn(report.event_ids)
    worked = outcome(app)
    written = sorted(p.name for p in outbox.iterdir())
    with app.store.session() as session:
        assert set(session.scalars(select(Message.status))) == {"sent"}
    assert len(written) == len(worked["messages"]) == len(worked["assignments"]) >= 8

    # When the queue hands the same message over again, and a later batch holds some of its
    # events as well
    actors.score_backlog.fn(report.event_ids)
    actors.score_backlog.fn(report.event_ids[10:30])

    # Then nothing changed: no lead scored, routed or e-mailed twice, nothing queued
    assert outcome(app) == worked
    assert sorted(p.name for p in outbox.iterdir()) == written
    assert all(not queue.queue for queue in broker.queues.values())  # type: ignore[attr-defined]


def test_the_events_of_a_batch_that_fails_go_the_per_lead_way(
    leadwerk: tuple[App, dramatiq.Broker], config_dir: Path
) -> None:
    app, broker = leadwerk
    # Given: a template that fails when it is rendered, so routing an MQL fails
    template = config_dir / "templates" / "new_lead.txt.j2"
    template.write_text("{% set broken = lead.id / 0 %}" + template.read_text(encoding="utf-8"))
    report = ingest_records(
        app.store, app.config, app.config.sources[FAIR], backlog_rows(), now=NOW
    )

    # When: a worker takes the backlog's batch
    actors.score_backlog.fn(report.event_ids)

    # Then: the batch left nothing behind, and each of its events waits as a lead of its own
    # (where a lead is scored even when its routing fails)
    assert outcome(app)["scores"] == []
    queue = broker.queues["score"]  # type: ignore[attr-defined]
    messages = [dramatiq.Message.decode(data) for data in list(queue.queue)]
    assert [(m.actor_name, m.args) for m in messages] == [
        ("score_lead", (event_id,)) for event_id in report.event_ids
    ]
