"""Running the pipeline: the in-process worker, draining, and accounting for every lead."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from worker.pipeline.actors import deliver_batch
from worker.pipeline.backlog import work_backlog
from worker.pipeline.digest import PURPOSE as DIGEST
from worker.pipeline.nurture import enqueue_due_steps
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.app import App
from worker.runtime.broker import QUEUES
from worker.store.models import Event, Message, Quarantine

log = logging.getLogger("leadwerk.runtime")


def start_worker(app: App, broker: dramatiq.Broker) -> Worker:
    # A short worker timeout: idle polling otherwise dominates speed to lead.
    worker = Worker(broker, worker_threads=app.settings.worker_threads, worker_timeout=100)
    worker.start()
    return worker


def stop_drained(worker: Worker) -> None:
    """Stop a worker that has nothing left to do (a drained ``run --once``, an import
    processed here): its worker and consumer threads told at once, so that they wind down in
    one wait. dramatiq's own stop tells the worker threads, waits until each has come back
    from waiting on its queue (up to the worker timeout), and only then tells the consumers
    and waits again, keeping them beating for tasks still running: 0.1-0.2 s of every run."""
    for thread in [*worker.workers, *worker.consumers.values()]:
        thread.stop()
    worker.stop()


def drain(
    app: App,
    broker: dramatiq.Broker,
    worker: Worker | None = None,
    rounds: int = 20,
    now: datetime | None = None,
) -> None:
    """Enqueue all pending work from the store and wait until it is done, repeatedly, until
    the store shows nothing pending (single-process mode: the in-process broker). ``now``:
    the time nurture steps are due by (``run --once --now``), else the clock's."""
    for _ in range(rounds):
        # What is on the queue is done before the store is asked (the last round's work, a
        # replayed dead letter): a message a worker is sending is not pending, and would
        # otherwise end the drain unsent.
        _settle(broker, worker)
        # The store's own bookkeeping (leases of messages being sent) keeps the real clock.
        pending = find_pending(
            app.store, datetime.now(UTC), send_lease=timedelta(seconds=app.settings.send_lease)
        )
        # Nurture steps once the new events are scored: a step reads what they changed.
        if (
            not pending
            and not enqueue_due_steps(app.store, app.config, now or datetime.now(UTC)).enqueued
        ):
            return
        if pending.events:
            # A backlog in batches, here in this thread; what fails goes the per-lead way.
            worked = work_backlog(
                app.store,
                app.config,
                pending.events,
                lambda: now or datetime.now(UTC),
                deliver_batch,
            )
            pending.events = worked.handed_back
        enqueue(pending, batched=False)
    _settle(broker, worker)


def _settle(broker: dramatiq.Broker, worker: Worker | None) -> None:
    """Wait until the queues are empty and the worker has finished what it took."""
    options = {"fail_fast": False} if isinstance(broker, StubBroker) else {}
    for queue in QUEUES:
        broker.join(queue, **options)  # type: ignore[attr-defined]
    if worker is not None:
        worker.join()


@dataclass
class Accounting:
    """Every lead that entered: processed, quarantined or dead-lettered; nothing else."""

    events: int
    processed: int
    pending: int
    dead: int
    quarantined: int
    messages_sent: int
    messages_pending: int
    messages_failed: int

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.messages_pending == 0

    def as_dict(self) -> dict[str, int | bool]:
        return {**self.__dict__, "complete": self.complete}


def account(app: App) -> Accounting:
    with app.store.session() as session:
        by_status = dict(
            session.execute(select(Event.status, func.count()).group_by(Event.status)).all()
        )
        messages = dict(
            session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
        # A digest gathering leads until its window ends is on time, not behind: its leads
        # are routed and their clocks run (worker/pipeline/digest.py).
        gathering = (
            session.scalar(
                select(func.count()).where(
                    Message.purpose == DIGEST,
                    Message.status == "pending",
                    Message.retry_at > datetime.now(UTC),
                )
            )
            or 0
        )
        quarantined = (
            session.scalar(
                select(func.count()).select_from(Quarantine).where(Quarantine.status == "open")
            )
            or 0
        )
    return Accounting(
        events=sum(by_status.values()),
        processed=by_status.get("processed", 0),
        pending=by_status.get("pending", 0),
        dead=by_status.get("dead", 0),
        quarantined=quarantined,
        messages_sent=messages.get("sent", 0),
        messages_pending=messages.get("pending", 0) + messages.get("sending", 0) - gathering,
        messages_failed=messages.get("failed", 0),
    )
