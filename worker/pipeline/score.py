"""Score step: a stored event's contact is scored with all its events; MQLs go to routing."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, insert, or_, select, update

from config.loader import Config
from rules.scoring import ScoreResult, r1, score_contact
from worker.pipeline.nurture import after_score
from worker.store.bulk import update_rows
from worker.store.ctes import insert_cte, prefixed, with_defaults
from worker.store.db import Store
from worker.store.models import (
    CONTACTS,
    EVENTS,
    SCORES,
    STAGE_CHANGES,
    Contact,
    Event,
    Score,
    snapshot,
)

log = logging.getLogger("leadwerk.score")


def event_facts(event: Event | Row[Any]) -> dict[str, Any]:
    """An event as rules read it: its mapped fields plus type, source and time."""
    return {**event.attrs, "type": event.type, "source": event.source, "at": event.occurred_at}


# Built once: SQLAlchemy then finds each one's compiled form by a memoised key, where a
# statement built per call is walked for its key every time (speed to lead).
_LOCK_EVENT = (
    select(EVENTS.c.status.label("event_status"), CONTACTS)
    .join_from(EVENTS, CONTACTS, EVENTS.c.contact_id == CONTACTS.c.id)
    .where(EVENTS.c.id == bindparam("event_id"))
    .with_for_update()  # the event and its contact; SQLite holds the whole database
)
_EVENTS_TO_SCORE = select(EVENTS).where(
    EVENTS.c.contact_id == bindparam("contact_id"),
    or_(EVENTS.c.status == "processed", EVENTS.c.id == bindparam("event_id")),
)
_INSERT_SCORE = insert(SCORES).returning(SCORES.c.id)
_INSERT_STAGE_CHANGE = insert(STAGE_CHANGES)
_UPDATE_CONTACT = update(CONTACTS).where(CONTACTS.c.id == bindparam("contact_id"))
_MARK_PROCESSED = (
    update(EVENTS)
    .where(EVENTS.c.id == bindparam("event_id"))
    .values(status="processed", processed_at=bindparam("now"))
)


@dataclass(frozen=True)
class Scored:
    """A scored event: its contact (with the new score), the contact's latest processed
    event, the score written, whether the contact is an MQL still to be routed, and the
    contact's changed columns (written already, unless the caller asked to write them)."""

    contact: Contact
    latest_event: Event
    score: Score
    needs_routing: bool
    contact_changes: dict[str, Any]


def score_event(store: Store, config: Config, event_id: int, now: datetime) -> int | None:
    """Score the contact of a pending event. Returns the contact id when it is an MQL that
    still needs routing, else None. Idempotent: an event already processed is left alone."""
    with store.transaction() as connection:
        scored = score_locked(connection, config, event_id, now)
        return scored.contact.id if scored and scored.needs_routing else None


def score_locked(
    connection: Connection,
    config: Config,
    event_id: int,
    now: datetime,
    write_contact: bool = True,
) -> Scored | None:
    """:func:`score_event` inside the caller's transaction; the event and its contact are
    locked until it ends. None when the event is gone or processed already.

    ``write_contact=False``: the contact's new columns are left to the caller, who writes
    them with its own changes in one statement (:func:`update_contact`)."""
    locked = connection.execute(_LOCK_EVENT, {"event_id": event_id}).first()
    if locked is None or locked.event_status != "pending":
        return None
    contact = snapshot(Contact, locked)
    events = [
        snapshot(Event, row)
        for row in connection.execute(
            _EVENTS_TO_SCORE, {"contact_id": contact.id, "event_id": event_id}
        )
    ]
    result = score_contact(config.ruleset, contact.fields, [event_facts(e) for e in events], now)
    score, changes = _record(connection, config, contact, event_id, result, now)
    if write_contact:
        update_contact(connection, contact.id, changes)
    after_score(connection, config, contact, events, event_id, result.mql, now)
    latest = max(events, key=lambda e: (e.occurred_at, e.id))
    needs_routing = contact.stage == "mql" and contact.owner is None
    return Scored(contact, latest, score, needs_routing, changes)


def update_contact(connection: Connection, contact_id: int, changes: dict[str, Any]) -> None:
    """Write a contact's changed columns, all in one statement."""
    connection.execute(_UPDATE_CONTACT, {"contact_id": contact_id, **changes})


def update_contacts(connection: Connection, changes: list[dict[str, Any]]) -> None:
    """Write the changed columns of many contacts (``contact_id`` and the columns, the same
    columns in every row), in one statement."""
    update_rows(connection, CONTACTS, "contact_id", changes)


def _record(
    connection: Connection,
    config: Config,
    contact: Contact,
    event_id: int,
    result: ScoreResult,
    now: datetime,
) -> tuple[Score, dict[str, Any]]:
    """Write the score (and a stage change it makes) and mark the event processed; returns
    the score and the contact's changed columns, which are set on ``contact`` too but not
    written."""
    values, changes, stage_change = outcome(
        config, contact.id, contact.stage, event_id, result, now
    )
    score_id = _write(connection, values, stage_change, event_id, now)
    for name, value in changes.items():
        setattr(contact, name, value)
    return Score(id=score_id, **values), changes


def outcome(
    config: Config,
    contact_id: int,
    stage: str,
    event_id: int,
    result: ScoreResult,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """What scoring an event writes: the score row, the contact's changed columns and the
    stage change row (None when the stage stays)."""
    ruleset = config.ruleset
    values = {
        "contact_id": contact_id,
        "event_id": event_id,
        "score": result.score,
        "fit": result.fit,
        "engagement": result.engagement,
        "mql": result.mql,
        "disqualified": result.disqualified,
        "hits": [h.as_dict() for h in result.hits],
        "ruleset_version": str(ruleset.version),
        "ruleset_hash": ruleset.hash,
        "computed_at": now,
    }
    changes: dict[str, Any] = {
        "score": result.score,
        "fit": result.fit,
        "engagement": result.engagement,
        "updated_at": now,
    }
    if result.disqualified and stage == "lead":
        changes["stage"] = "disqualified"
        cause = f"disqualify rule '{result.disqualified}'"
    elif result.mql and stage in ("lead", "recycled"):
        # Sticks even if decay lowers the score later; a recycled contact that qualifies
        # again starts a new cycle (the first MQL date stays in stage_changes).
        changes["stage"], changes["mql_at"] = "mql", now
        cause = (
            f"score {r1(result.score)} >= {ruleset.threshold:g} (rules v{ruleset.version}, "
            f"{ruleset.hash})"
        )
    stage_change = None
    if "stage" in changes:
        stage_change = {
            "contact_id": contact_id,
            "from_stage": stage,
            "to_stage": changes["stage"],
            "cause": cause,
            "at": now,
        }
    return values, changes, stage_change


def _write(
    connection: Connection,
    score: dict[str, Any],
    stage_change: dict[str, Any] | None,
    event_id: int,
    now: datetime,
) -> int:
    """Write the score, the stage change and the event's ``processed`` mark; returns the
    score's id. One statement on PostgreSQL (see worker/store/ctes.py)."""
    params = {"event_id": event_id, "now": now}
    if connection.dialect.name != "postgresql":
        score_id = connection.execute(_INSERT_SCORE, score).scalar_one()
        if stage_change is not None:
            connection.execute(_INSERT_STAGE_CHANGE, stage_change)
        connection.execute(_MARK_PROCESSED, params)
        return int(score_id)
    score = with_defaults(SCORES, score)
    params.update(prefixed("s", score))
    change: tuple[str, ...] = ()
    if stage_change is not None:
        stage_change = with_defaults(STAGE_CHANGES, stage_change)
        params.update(prefixed("g", stage_change))
        change = tuple(stage_change)
    return int(connection.execute(_scored_together(tuple(score), change), params).scalar_one())


@functools.lru_cache(maxsize=8)
def _scored_together(score: tuple[str, ...], stage_change: tuple[str, ...]) -> Select[Any]:
    """The score, its stage change (when ``stage_change`` names columns) and the event's
    mark as one statement, built once per shape."""
    written = insert_cte("s", SCORES, score, returning=True)
    ctes = [_MARK_PROCESSED.cte("e")]
    if stage_change:
        ctes.append(insert_cte("g", STAGE_CHANGES, stage_change))
    return select(select(written.c.id).scalar_subquery()).add_cte(written, *ctes)
