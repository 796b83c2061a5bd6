"""Re-derive pending work from the store and enqueue it: the queue is only a doorbell.

Run by the clock every few seconds and by ``run --once`` until nothing is left, so a lost
message (a crash, the in-process broker's memory at exit) costs a delay, never a lead.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from worker.pipeline.backlog import BATCH_SIZE
from worker.pipeline.notify import SEND_LEASE
from worker.runtime.broker import BACKLOG_QUEUE
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Event, Message

# While a queue still holds messages, what it waits for is enqueued again only after this
# long: a lost message is still found, but a backlog of an hour's import is not re-sent every
# minute behind itself (100,000 rows once peaked at 166,765 queued messages that way).
BUSY_REDELIVERY = timedelta(minutes=15)

# Events found together go to the workers in batches (``score_backlog``) from this many on:
# below, one message each costs the import under 0.2 s, and a worker that dies while sending
# leaves one claimed message to be sent again rather than a batch's.
BATCH_FROM = 100
# A backlog is cut into this many batches at least (of up to BATCH_SIZE events), so that a few
# hundred leads still reach the threads of more than one worker.
SPREAD = 16


@dataclass
class Pending:
    events: list[int]
    contacts: list[int]
    messages: list[int]
    recovered: int = 0

    def __bool__(self) -> bool:
        return bool(self.events or self.contacts or self.messages)


def find_pending(
    store: Store,
    now: datetime,
    older_than: timedelta = timedelta(0),
    send_lease: timedelta = SEND_LEASE,
    redelivery: timedelta | None = None,
    limit: int | None = None,
    busy: Collection[str] = (),
) -> Pending:
    """Work due: events not yet scored, MQLs not yet routed, messages not yet sent.

    Messages left ``sending`` past ``send_lease`` (the ``send_lease`` setting: a worker died
    between the server's OK and our mark) go back to pending and are counted: the one
    documented duplicate gap.

    What is found is marked enqueued (the caller enqueues it). With ``redelivery`` (the
    clock's sweep), each row is found once per that window: what was enqueued (on receipt,
    by a scheduled retry, by an import or an earlier sweep) less than ``redelivery`` ago
    still has its queue message. ``limit`` caps the rows of each kind, oldest first, so one
    pass over a backlog stays short. ``busy``: the queues that still hold messages (a backlog
    being worked off): their rows come back only after :data:`BUSY_REDELIVERY`, since their
    doorbell is ringing already, so a long backlog is not enqueued again behind itself.
    """
    cutoff = now - older_than
    with store.session() as session:
        recovered = session.execute(
            update(Message)
            .where(Message.status == "sending", Message.claimed_at < now - send_lease)
            .values(status="pending", resent_after_crash=Message.resent_after_crash + 1)
        ).rowcount
        # A recycled lead's closed assignment does not count: when it qualifies again, it is
        # routed again.
        routed = select(Assignment.contact_id).where(Assignment.status != "closed")
        # Each kind of row, with the queues whose messages ring for it: an event's on "score"
        # one by one, or on "backlog" in batches.
        due = (
            (
                ("score", BACKLOG_QUEUE),
                Event,
                [Event.status == "pending", Event.received_at <= cutoff],
                Event.received_at,
            ),
            (
                ("route",),
                Contact,
                [
                    Contact.mql_at.is_not(None),
                    Contact.stage == "mql",
                    Contact.id.not_in(routed),
                    Contact.updated_at <= cutoff,
                ],
                Contact.updated_at,
            ),
            (
                ("notify",),
                Message,
                [
                    Message.status == "pending",
                    Message.created_at <= cutoff,
                    Message.retry_at.is_(None) | (Message.retry_at <= now),
                ],
                Message.created_at,
            ),
        )
        found = []
        for queues, model, conditions, arrived in due:
            ids = select(model.id).where(*conditions).order_by(model.id).limit(limit)
            if redelivery is not None:
                ringing = any(queue in busy for queue in queues)
                window = max(redelivery, BUSY_REDELIVERY) if ringing else redelivery
                last_enqueued = func.coalesce(model.enqueued_at, arrived)
                ids = ids.where(last_enqueued <= now - window)
            marked = session.scalars(
                update(model)
                .where(model.id.in_(ids.scalar_subquery()))
                .values(enqueued_at=now)
                .returning(model.id)
                .execution_options(synchronize_session=False)
            )
            found.append(sorted(marked))
    events, contacts, messages = found
    return Pending(events, contacts, messages, recovered or 0)


def batches(event_ids: Sequence[int]) -> list[list[int]]:
    """``event_ids`` in id order, cut into :data:`SPREAD` batches or more of at most
    :data:`BATCH_SIZE` each."""
    ordered = sorted(event_ids)
    size = min(BATCH_SIZE, math.ceil(len(ordered) / SPREAD))
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def enqueue(pending: Pending, batched: bool = True) -> None:
    """Events one message each (``score_lead``), or from :data:`BATCH_FROM` on a message per
    batch (``score_backlog``): one Redis round trip for up to 500 leads. ``batched=False``:
    one message each however many (the events of batches that failed).
    """
    from worker.pipeline.actors import route_lead, score_backlog, score_lead, send_message

    if len(pending.events) < BATCH_FROM or not batched:
        for event_id in pending.events:
            score_lead.send(event_id)
    else:
        for batch in batches(pending.events):
            score_backlog.send(batch)
    for contact_id in pending.contacts:
        route_lead.send(contact_id)
    for message_id in pending.messages:
        send_message.send(message_id)
