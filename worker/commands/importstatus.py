"""What became of the leads of one import: scored, MQLs, routed, notified; and waiting until
each is accounted for (``leadwerk import --wait``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    any_,
    bindparam,
    cast,
    distinct,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from worker.pipeline.digest import HELD
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Event, Message

# Ids per IN (...) list on SQLite: well below its parameter limit.
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


def _chunks(session: Session, ids: Sequence[int]) -> list[Sequence[int]]:
    """``ids`` cut into the lists :func:`_among` takes: on PostgreSQL all in one."""
    size = len(ids) if _one_array(session) else _CHUNK
    return [ids[start : start + size] for start in range(0, len(ids), size or 1)]


def _one_array(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _among(session: Session, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """``column`` among ``ids``: on PostgreSQL one array (``= ANY``), as an ``IN`` list of
    5,000 placeholders is a query text the driver parses each time (0.2 s each). The array
    goes as one text that PostgreSQL splits: psycopg would write the ints of a list parameter
    one by one in Python (100,000 ids, five queries: 0.2 s of an import's end)."""
    if _one_array(session):
        listed = bindparam(None, ",".join(map(str, ids)), type_=Text)
        return column == any_(cast(func.string_to_array(listed, ","), postgresql.ARRAY(Integer)))
    return column.in_(ids)


def import_outcome(store: Store, event_ids: Sequence[int]) -> ImportOutcome:
    """Where the leads of these events stand now."""
    by_status: dict[str, int] = {}
    contacts: set[int] = set()
    with store.session() as session:
        for chunk in _chunks(session, event_ids):
            rows = session.execute(
                select(Event.status, Event.contact_id).where(_among(session, Event.id, chunk))
            ).all()
            for status, contact_id in rows:
                by_status[status] = by_status.get(status, 0) + 1
                contacts.add(contact_id)
        mqls = routed = notified = in_digest = 0
        for chunk in _chunks(session, sorted(contacts)):
            mqls += (
                session.scalar(
                    select(func.count()).where(
                        _among(session, Contact.id, chunk), Contact.mql_at.is_not(None)
                    )
                )
                or 0
            )
            assigned = select(func.count(distinct(Assignment.contact_id))).where(
                _among(session, Assignment.contact_id, chunk)
            )
            routed += session.scalar(assigned) or 0
            notified += session.scalar(assigned.where(Assignment.notified_at.is_not(None))) or 0
            in_digest += (
                session.scalar(
                    select(func.count(distinct(Message.contact_id))).where(
                        _among(session, Message.contact_id, chunk), Message.status == HELD
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
