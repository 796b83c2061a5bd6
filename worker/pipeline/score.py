"""Score step: a stored event's contact is scored with all its events; MQLs go to routing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.loader import Config
from rules.scoring import ScoreResult, r1, score_contact
from worker.store.db import Store
from worker.store.models import Contact, Event, Score, StageChange

log = logging.getLogger("leadwerk.score")


def event_facts(event: Event) -> dict[str, Any]:
    """An event as rules read it: its mapped fields plus type, source and time."""
    return {**event.attrs, "type": event.type, "source": event.source, "at": event.occurred_at}


@dataclass(frozen=True)
class Scored:
    """A scored event: its contact, the contact's latest processed event, the score written,
    and whether the contact is an MQL still to be routed."""

    contact: Contact
    latest_event: Event
    score: Score
    needs_routing: bool


def score_event(store: Store, config: Config, event_id: int, now: datetime) -> int | None:
    """Score the contact of a pending event. Returns the contact id when it is an MQL that
    still needs routing, else None. Idempotent: an event already processed is left alone."""
    with store.session() as session:
        scored = score_locked(session, config, event_id, now)
        return scored.contact.id if scored and scored.needs_routing else None


def score_locked(session: Session, config: Config, event_id: int, now: datetime) -> Scored | None:
    """:func:`score_event` inside the caller's transaction; the event and its contact are
    locked until it ends. None when the event is gone or processed already."""
    event = session.get(Event, event_id, with_for_update=True)
    if event is None or event.status != "pending":
        return None
    contact = session.get(Contact, event.contact_id, with_for_update=True)
    assert contact is not None
    events = session.scalars(
        select(Event).where(
            Event.contact_id == contact.id,
            (Event.status == "processed") | (Event.id == event.id),
        )
    ).all()
    result = score_contact(config.ruleset, contact.fields, [event_facts(e) for e in events], now)
    score = _record(session, config, contact, event, result, now)
    event.status = "processed"
    event.processed_at = now
    latest = max(events, key=lambda e: (e.occurred_at, e.id))
    needs_routing = contact.stage == "mql" and contact.owner is None
    return Scored(contact, latest, score, needs_routing)


def _record(
    session: Any,
    config: Config,
    contact: Contact,
    event: Event,
    result: ScoreResult,
    now: datetime,
) -> Score:
    ruleset = config.ruleset
    score = Score(
        contact_id=contact.id,
        event_id=event.id,
        score=result.score,
        fit=result.fit,
        engagement=result.engagement,
        mql=result.mql,
        disqualified=result.disqualified,
        hits=[h.as_dict() for h in result.hits],
        ruleset_version=str(ruleset.version),
        ruleset_hash=ruleset.hash,
        computed_at=now,
    )
    session.add(score)
    contact.score, contact.fit, contact.engagement = result.score, result.fit, result.engagement
    contact.updated_at = now
    if result.disqualified and contact.stage == "lead":
        _move(session, contact, "disqualified", f"disqualify rule '{result.disqualified}'", now)
    elif result.mql and contact.stage in ("lead", "recycled"):
        # Sticks even if decay lowers the score later; a recycled contact that qualifies
        # again starts a new cycle (the first MQL date stays in stage_changes).
        contact.mql_at = now
        _move(
            session,
            contact,
            "mql",
            f"score {r1(result.score)} >= {ruleset.threshold:g} (rules v{ruleset.version}, "
            f"{ruleset.hash})",
            now,
        )
    return score


def _move(session: Any, contact: Contact, stage: str, cause: str, now: datetime) -> None:
    session.add(
        StageChange(
            contact_id=contact.id, from_stage=contact.stage, to_stage=stage, cause=cause, at=now
        )
    )
    contact.stage = stage
