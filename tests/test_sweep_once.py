"""The sweep is a doorbell, rung once: a backlog goes on the queue once per redelivery window,
a bounded bite per pass, and the clock's own jobs keep running while it does."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import insert

from config.settings import Settings
from tests.lead_helpers import FAIR
from worker.pipeline.sweep import BUSY_REDELIVERY, Pending, enqueue, find_pending
from worker.runtime.app import App, init_app
from worker.runtime.broker import QUEUES, in_line, setup_broker
from worker.runtime.clock import start_clock
from worker.store.models import Contact, Event

BACKLOG = 20_000
ARRIVED = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def a_backlog_of_pending_events(app: App, count: int, received_at: datetime) -> None:
    """``count`` leads taken in (as a 20,000-row import leaves them) and not yet scored."""
    contacts = [
        {
            "id": n,
            "email": f"lead{n}@firm{n}.example.com",
            "email_domain": f"firm{n}.example.com",
            "fields": {},
            "source": FAIR,
            "stage": "lead",
            "created_at": received_at,
            "updated_at": received_at,
        }
        for n in range(1, count + 1)
    ]
    events = [
        {
            "id": n,
            "contact_id": n,
            "source": FAIR,
            "record_key": f"row-{n}",
            "type": "tradefair",
            "attrs": {},
            "raw": {},
            "occurred_at": received_at,
            "received_at": received_at,
            "status": "pending",
            "attempts": 0,
        }
        for n in range(1, count + 1)
    ]
    with app.store.session() as session:
        session.execute(insert(Contact), contacts)
        session.execute(insert(Event), events)


def queued_batches(broker: dramatiq.Broker) -> list[list[int]]:
    """The events of each message waiting to be scored (nothing consumes the queues): a
    ``score_backlog`` batch on the backlog queue, or a lone ``score_lead`` on score."""
    messages = [
        dramatiq.Message.decode(data)
        for queue in ("backlog", "score")
        for data in list(broker.queues[queue].queue)  # type: ignore[attr-defined]
    ]
    return [m.args[0] if m.actor_name == "score_backlog" else [m.args[0]] for m in messages]


def queued_events(broker: dramatiq.Broker) -> list[int]:
    return [event_id for batch in queued_batches(broker) for event_id in batch]


@pytest.fixture
def backlogged(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> Iterator[tuple[App, dramatiq.Broker]]:
    """Leadwerk with 20,000 pending events and an in-process queue no worker consumes."""
    settings = make_settings(
        database_url=database_url, inbox_dir=tmp_path / "inbox", sweep_limit=5000
    )
    app = init_app(settings)
    broker = setup_broker(settings)
    a_backlog_of_pending_events(app, BACKLOG, ARRIVED)
    try:
        yield app, broker
    finally:
        broker.close()
        app.close()


def sweep(app: App, now: datetime) -> None:
    enqueue(
        find_pending(
            app.store,
            now,
            older_than=timedelta(seconds=5),
            redelivery=timedelta(seconds=app.settings.redelivery_after),
            limit=app.settings.sweep_limit,
        )
    )


def test_a_backlog_is_enqueued_once_per_redelivery_window_in_bounded_passes(
    backlogged: tuple[App, dramatiq.Broker],
) -> None:
    app, broker = backlogged
    start = ARRIVED + timedelta(hours=1)

    # A pass every 5 s for a minute: 5,000 events a pass until each is on the queue once
    after_each_pass = []
    for n in range(12):
        sweep(app, start + timedelta(seconds=5 * n))
        after_each_pass.append(len(queued_events(broker)))

    assert after_each_pass == [5000, 10000, 15000] + [20000] * 9
    assert max(Counter(queued_events(broker)).values()) == 1
    # in batches: each pass's 5,000 events in 16 messages
    assert [len(batch) for batch in queued_batches(broker)] == ([313] * 15 + [305]) * 4

    # An event enqueued over a minute ago and still pending lost its message: enqueued again
    sweep(app, start + timedelta(seconds=61))
    again = queued_events(broker)[BACKLOG:]
    assert sorted(again) == list(range(1, 5001))


def test_a_backlog_found_at_once_is_enqueued_in_batches_of_at_most_500_events(
    backlogged: tuple[App, dramatiq.Broker],
) -> None:
    app, broker = backlogged

    # As `leadwerk import` hands its rows to the workers: everything pending, no limit
    enqueue(find_pending(app.store, ARRIVED + timedelta(minutes=1)))

    batches = queued_batches(broker)
    assert [len(batch) for batch in batches] == [500] * 40
    assert [event_id for batch in batches for event_id in batch] == list(range(1, BACKLOG + 1))


def test_a_few_events_go_one_message_each(backlogged: tuple[App, dramatiq.Broker]) -> None:
    app, broker = backlogged

    enqueue(find_pending(app.store, ARRIVED + timedelta(minutes=1), limit=99))

    assert queued_batches(broker) == [[n] for n in range(1, 100)]


def test_the_clock_sweeps_a_big_backlog_without_skipping_its_own_jobs(
    backlogged: tuple[App, dramatiq.Broker], caplog: pytest.LogCaptureFixture
) -> None:
    app, broker = backlogged
    caplog.set_level(logging.WARNING)

    clock = start_clock(app, background=True)
    try:
        deadline = time.monotonic() + 60
        while len(queued_events(broker)) < 10000 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        clock.shutdown(wait=True)

    queued = queued_events(broker)
    assert len(queued) in (10000, 15000, 20000)
    assert max(Counter(queued).values()) == 1
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_while_its_queue_still_holds_messages_a_backlog_is_not_enqueued_again_behind_itself(
    backlogged: tuple[App, dramatiq.Broker],
) -> None:
    app, broker = backlogged
    start = ARRIVED + timedelta(hours=1)
    for n in range(4):  # every event on the queue once
        sweep(app, start + timedelta(seconds=5 * n))
    assert len(queued_events(broker)) == BACKLOG
    assert in_line(broker, "backlog") == 4 * 16  # messages: a batch is one
    assert in_line(broker, "score") == 0  # a new lead's queue stays clear of them

    def sweep_busy(now: datetime) -> Pending:
        busy = [queue for queue in QUEUES if in_line(broker, queue)]
        return find_pending(app.store, now, redelivery=timedelta(seconds=60), limit=5000, busy=busy)

    # A minute later the workers are still on it: the doorbell rings already, nothing is re-sent
    assert sweep_busy(start + timedelta(seconds=61)).events == []
    # A message lost for good is still found, once the busy window has passed
    assert len(sweep_busy(start + BUSY_REDELIVERY + timedelta(seconds=15)).events) == 5000
