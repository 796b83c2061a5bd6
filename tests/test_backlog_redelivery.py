"""A backlog batch a worker takes from the queue (``score_backlog``) is worked in one
transaction; handed over again (its worker died before acknowledging it), it changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, restore_logging  # noqa: F401
from tests.test_backlog import CROWDED_ROUTING, NOW, backlog_rows, crowded_rows, outcome
from worker.pipeline import actors
from worker.pipeline.backlog import work_backlog
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


def test_batches_side_by_side_on_postgresql_never_wait_for_each_other_in_a_circle(
    make_settings: Callable[..., Settings], config_dir: Path, postgres_url: str
) -> None:
    """Two workers take batches of one backlog at once. Each batch locks all its contacts
    first, then every team's counters in name order: whatever the batches hold, neither
    holds what the other waits for while waiting itself. A deadlock would fail a batch
    (PostgreSQL breaks it) and send its events the per-lead way."""
    (config_dir / "routing.yaml").write_text(CROWDED_ROUTING, encoding="utf-8")
    settings = make_settings(database_url=postgres_url)
    app = init_app(settings)
    try:
        known: list[str] = []
        rows = crowded_rows(1, 200, known) + crowded_rows(2, 200, known)
        report = ingest_records(app.store, app.config, app.config.sources[FAIR], rows, now=NOW)
        ids = sorted(report.event_ids)
        # Batches of 16 taken alternately, so that a contact scanned twice is often in two
        # batches at once, and MQLs of both teams in each.
        batches = [ids[n : n + 16] for n in range(0, len(ids), 16)]
        halves = [batches[0::2], batches[1::2]]
        handed_back: list[int] = []
        barrier = threading.Barrier(2)

        def work(mine: list[list[int]]) -> None:
            barrier.wait()
            for batch in mine:
                worked = work_backlog(app.store, app.config, batch, lambda: NOW, list, 16)
                handed_back.extend(worked.handed_back)

        threads = [threading.Thread(target=work, args=(half,)) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert handed_back == []
        done = outcome(app)
        routed = [a[0] for a in done["assignments"]]
        assert len(routed) == len(set(routed)) >= 40  # every MQL routed once
        teams = {a[2] for a in done["assignments"]}
        assert {"enterprise-dach", "inside-sales"} <= teams
        totals = {(team, rep): total for team, rep, total, _ in done["counters"]}
        for team, rep in totals:
            picks = [a for a in done["assignments"] if a[1] == rep and a[2] == team]
            assert totals[(team, rep)] == len(picks), (team, rep)
    finally:
        app.close()
