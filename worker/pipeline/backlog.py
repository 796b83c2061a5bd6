"""A backlog of pending events, worked off in batches beside the per-lead fast path.

``run --once`` after a big poll or import finds thousands of events pending. Sent one by one
through the queue, each is a transaction of its own with half a dozen statements (on SQLite:
a ``BEGIN IMMEDIATE`` and a commit each, with worker threads queueing for the one writer).
Here a batch of events is one transaction: its events and contacts are locked and read with
one statement, their histories with another, every event is scored in memory, and the
scores, stage changes, ``processed`` marks and contact columns are written set-wise. Then the
new MQLs are routed in event order by :class:`~worker.pipeline.batchroute.BatchRouter`: the
team's counters are locked and read once for the batch and kept in memory, so every pick sees
the picks before it, exactly as if the events had been worked one at a time in that order
(:func:`~worker.pipeline.lead.score_and_route`). A
contact with two events in a batch has them scored in two runs, the second seeing the first.
The new-lead messages are written claimed and sent once the batch is committed.

A batch that fails is rolled back whole and its events go the per-lead way (the queue), where
a lead that cannot be routed is still scored and its routing retried on its own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Row,
    bindparam,
    or_,
    select,
    update,
)

from config.loader import Config
from rules.scoring import score_contact
from worker.pipeline.batchroute import BatchRouter
from worker.pipeline.nurture import after_score, nurture_rules, read_run_facts, write_run_facts
from worker.pipeline.route import Known
from worker.pipeline.score import event_facts, outcome, update_contacts
from worker.store.bulk import insert_ids, insert_rows, listed
from worker.store.db import Store
from worker.store.models import (
    CONTACTS,
    EVENTS,
    SCORES,
    STAGE_CHANGES,
    Contact,
    Event,
    Message,
    Score,
    snapshot,
)

log = logging.getLogger("leadwerk.backlog")

# Events per transaction: large enough that commits do not count, small enough that a batch
# that fails and goes the per-lead way costs little, and that the messages of a batch go out
# soon after its leads were scored.
BATCH_SIZE = 500


@dataclass
class Worked:
    """What a backlog pass did: events scored in batches, messages sent after them, and the
    events of failed batches, left to the per-lead path."""

    scored: int = 0
    messages: int = 0
    handed_back: list[int] = field(default_factory=list)


def work_backlog(
    store: Store,
    config: Config,
    event_ids: Sequence[int],
    now: Callable[[], datetime],
    send: Callable[[list[Message]], None],
    batch_size: int = BATCH_SIZE,
) -> Worked:
    """Score and route ``event_ids`` in batches of ``batch_size``, in id order; ``send`` gets
    each batch's claimed messages after its commit. ``now``: the clock each batch reads."""
    worked = Worked()
    ordered = sorted(event_ids)
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        try:
            messages = _score_batch(store, config, batch, now())
        except Exception as exc:
            log.warning(
                "a batch of %d events failed (%s); each goes on its own",
                len(batch),
                type(exc).__name__,
            )
            worked.handed_back.extend(batch)
            continue
        worked.scored += len(batch)
        worked.messages += len(messages)
        log.debug("a batch of %d events scored; %d messages to send", len(batch), len(messages))
        send(messages)
    return worked


def _score_batch(
    store: Store, config: Config, event_ids: list[int], now: datetime
) -> list[Message]:
    messages: list[Message] = []
    with store.transaction() as connection:
        statements = _POSTGRESQL if connection.dialect.name == "postgresql" else _SQLITE
        contact_of = dict(connection.execute(statements.contact_of, {"event_ids": event_ids}).all())
        router = BatchRouter(connection, config, now)
        for run in _runs(event_ids, contact_of):
            messages.extend(score_and_route_run(connection, config, statements, run, now, router))
        router.flush()
    return messages


def _runs(event_ids: list[int], contact_of: dict[int, int]) -> list[list[int]]:
    """``event_ids`` cut into runs in which each contact has one event at most: a contact's
    second event is scored after its first, seeing what the first changed."""
    runs: list[list[int]] = [[]]
    seen: set[int] = set()
    for event_id in event_ids:
        contact_id = contact_of.get(event_id)
        if contact_id in seen:
            runs.append([])
            seen.clear()
        if contact_id is not None:
            seen.add(contact_id)
        runs[-1].append(event_id)
    return [run for run in runs if run]


@dataclass(frozen=True)
class _Statements:
    """One dialect's statements, each taking lists of ids: :event_ids, :contact_ids."""

    contact_of: Executable
    lock_events: Executable
    events_to_score: Executable
    mark_processed: Executable


def _statements(dialect: str) -> _Statements:
    return _Statements(
        # Every contact of the batch locked at its start, in id order, before any team's
        # counters (BatchRouter locks all teams, in name order): batches on PostgreSQL run side
        # by side and always take their locks in the same order, so none waits in a circle.
        contact_of=(
            select(EVENTS.c.id, EVENTS.c.contact_id)
            .join_from(EVENTS, CONTACTS, EVENTS.c.contact_id == CONTACTS.c.id)
            .where(listed(dialect, EVENTS.c.id, "event_ids"))
            .order_by(CONTACTS.c.id)
            .with_for_update()
        ),
        lock_events=(
            select(EVENTS.c.id.label("event_id"), EVENTS.c.status.label("event_status"), CONTACTS)
            .join_from(EVENTS, CONTACTS, EVENTS.c.contact_id == CONTACTS.c.id)
            .where(listed(dialect, EVENTS.c.id, "event_ids"))
            .order_by(CONTACTS.c.id)
            .with_for_update()  # the events and their contacts; SQLite holds the whole database
        ),
        events_to_score=select(EVENTS).where(
            listed(dialect, EVENTS.c.contact_id, "contact_ids"),
            or_(EVENTS.c.status == "processed", listed(dialect, EVENTS.c.id, "event_ids")),
        ),
        mark_processed=(
            update(EVENTS)
            .where(listed(dialect, EVENTS.c.id, "event_ids"))
            .values(status="processed", processed_at=bindparam("now"))
        ),
    )


_SQLITE = _statements("sqlite")
_POSTGRESQL = _statements("postgresql")


def score_and_route_run(
    connection: Connection,
    config: Config,
    statements: _Statements,
    event_ids: list[int],
    now: datetime,
    router: BatchRouter,
) -> list[Message]:
    """Score the pending ones of ``event_ids`` (of distinct contacts) with a handful of
    statements, then route the new MQLs in event order by ``router``, as
    :func:`~worker.pipeline.lead.score_and_route` would one event at a time; returns the
    claimed messages."""
    locked = {
        row.event_id: row
        for row in connection.execute(statements.lock_events, {"event_ids": event_ids})
        if row.event_status == "pending"
    }
    if not locked:
        return []
    pending = [event_id for event_id in event_ids if event_id in locked]
    history: dict[int, list[Row[Any]]] = defaultdict(list)
    parameters = {"contact_ids": [row.id for row in locked.values()], "event_ids": pending}
    for row in connection.execute(statements.events_to_score, parameters):
        history[row.contact_id].append(row)
    nurtured = bool(nurture_rules(config).sequences)
    facts = read_run_facts(connection, [row.id for row in locked.values()]) if nurtured else None
    scores: list[dict[str, Any]] = []
    stage_changes: list[dict[str, Any]] = []
    outcomes = []
    for event_id in pending:
        row = locked[event_id]
        events = history[row.id]
        result = score_contact(config.ruleset, row.fields, [event_facts(e) for e in events], now)
        values, changes, stage_change = outcome(config, row.id, row.stage, event_id, result, now)
        scores.append(values)
        if stage_change is not None:
            stage_changes.append(stage_change)
        outcomes.append((row, events, result, changes))
    score_ids = insert_ids(connection, SCORES, scores)
    insert_rows(connection, STAGE_CHANGES, stage_changes)
    connection.execute(statements.mark_processed, {"event_ids": pending, "now": now})
    to_route: list[tuple[Contact, Known]] = []
    unrouted: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for (row, events, result, changes), values, score_id in zip(
        outcomes, scores, score_ids, strict=True
    ):
        stage = changes.get("stage", row.stage)
        if nurtured or (stage == "mql" and row.owner is None):
            contact = snapshot(Contact, row)
            for name, value in changes.items():
                setattr(contact, name, value)
            if nurtured:
                after_score(
                    connection,
                    config,
                    contact,
                    events,
                    values["event_id"],
                    result.mql,
                    now,
                    facts,
                )
            if stage == "mql" and row.owner is None:
                latest = snapshot(Event, max(events, key=lambda e: (e.occurred_at, e.id)))
                to_route.append((contact, Known(latest, Score(id=score_id, **values), changes)))
                continue
        unrouted[frozenset(changes)].append({"contact_id": row.id, **changes})
    if facts is not None:
        write_run_facts(connection, facts)
    for rows in unrouted.values():
        update_contacts(connection, rows)
    return router.route(to_route) if to_route else []
