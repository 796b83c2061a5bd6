"""What became of the leads of one import: scored, MQLs, routed, notified; and waiting until
each is accounted for (``leadwerk import --wait``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import distinct, func, select

from worker.pipeline.digest import HELD
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Event, Message

# Event ids per IN (...) list: well below SQLite's and PostgreSQL's parameter limits.
_CHUNK = 5000


@dataclass(frozen=True)
class ImportOutcome:
    """The imported leads (new events) by where they stand. A lead is accounted for once its
    event is processed or dead-lettered and, if it became an MQL, it has been routed."""

    leads: int
    processed: int
    dead: int
    pending: int
    mqls: int
    routed: int
    notified: int
    in_digest: int  # routed, to be told in a digest still gathering (not notified yet)

    @property
    def unrouted(self) -> int:
        return self.mqls - self.routed

    @property
    def accounted(self) -> int:
        return self.processed + self.dead - self.unrouted

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.unrouted == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "processed": self.processed,
            "dead_lettered": self.dead,
            "pending": self.pending,
            "mqls": self.mqls,
            "routed": self.routed,
            "notified": self.notified,
            "in_digest": self.in_digest,
            "complete": self.complete,
        }


def import_outcome(store: Store, event_ids: Sequence[int]) -> ImportOutcome:
    """Where the leads of these events stand now."""
    by_status: dict[str, int] = {}
    contacts: set[int] = set()
    with store.session() as session:
        for start in range(0, len(event_ids), _CHUNK):
            chunk = list(event_ids[start : start + _CHUNK])
            rows = session.execute(
                select(Event.status, Event.contact_id).where(Event.id.in_(chunk))
            ).all()
            for status, contact_id in rows:
                by_status[status] = by_status.get(status, 0) + 1
                contacts.add(contact_id)
        mqls = routed = notified = in_digest = 0
        ids = sorted(contacts)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            mqls += (
                session.scalar(
                    select(func.count()).where(Contact.id.in_(chunk), Contact.mql_at.is_not(None))
                )
                or 0
            )
            assigned = select(func.count(distinct(Assignment.contact_id))).where(
                Assignment.contact_id.in_(chunk)
            )
            routed += session.scalar(assigned) or 0
            notified += session.scalar(assigned.where(Assignment.notified_at.is_not(None))) or 0
            in_digest += (
                session.scalar(
                    select(func.count(distinct(Message.contact_id))).where(
                        Message.contact_id.in_(chunk), Message.status == HELD
                    )
                )
                or 0
            )
    return ImportOutcome(
        leads=len(event_ids),
        processed=by_status.get("processed", 0),
        dead=by_status.get("dead", 0),
        pending=by_status.get("pending", 0),
        mqls=mqls,
        routed=routed,
        notified=notified,
        in_digest=in_digest,
    )


def wait_for_import(
    store: Store,
    event_ids: Sequence[int],
    timeout: float,
    on_progress: Callable[[ImportOutcome], None] | None = None,
    every: float = 0.5,
) -> ImportOutcome:
    """Look until every lead is accounted for or ``timeout`` seconds have passed; returns
    the last look (``complete`` says which)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = import_outcome(store, event_ids)
        if on_progress is not None:
            on_progress(outcome)
        if outcome.complete or time.monotonic() >= deadline:
            return outcome
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
