"""Admin operations behind the CLI: dead letters, quarantine, accepting a lead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dramatiq
from sqlalchemy import select

from connectors.sources.base import RawRecord
from rules.contact import FieldError
from worker.app import App
from worker.pipeline.ingest import prepare, store_prepared
from worker.store.models import Assignment, Contact, DeadLetter, Quarantine, StageChange


def dead_letters(app: App) -> list[dict[str, Any]]:
    with app.store.session() as session:
        return [
            {
                "id": d.id,
                "actor": d.actor,
                "args": d.args,
                "error": d.error,
                "status": d.status,
                "created_at": d.created_at,
            }
            for d in session.scalars(select(DeadLetter).order_by(DeadLetter.id))
        ]


def replay_dead_letters(app: App, broker: dramatiq.Broker, letter: int | None) -> int:
    from worker.pipeline.actors import ALL
    from worker.store.models import Message

    actors = {a.actor_name: a for a in ALL}
    count = 0
    with app.store.session() as session:
        query = select(DeadLetter).where(DeadLetter.status == "open")
        if letter is not None:
            query = query.where(DeadLetter.id == letter)
        for dead in session.scalars(query):
            if dead.actor == "send_message":
                message = session.get(Message, dead.args[0])
                if message is not None and message.status == "failed":
                    # Sent now, and given a fresh retry_for should it fail again.
                    message.status = "pending"
                    message.retry_at = message.first_failed_at = None
            actor = actors.get(dead.actor)
            if actor is not None:
                actor.send(*dead.args)
            dead.status = "replayed"
            count += 1
    return count


def quarantined(app: App, source: str | None) -> list[dict[str, Any]]:
    with app.store.session() as session:
        query = select(Quarantine).where(Quarantine.status == "open").order_by(Quarantine.id)
        if source:
            query = query.where(Quarantine.source == source)
        return [
            {
                "id": q.id,
                "source": q.source,
                "row": q.row,
                "record_id": q.record_id,
                "file": q.file,
                "field": q.field,
                "reason": q.reason,
                "raw": q.raw,
            }
            for q in session.scalars(query)
        ]


def retry_quarantine(app: App, record: int | None, source: str | None) -> tuple[int, int]:
    """Quarantined records through the current mapping again; fixed ones enter the pipeline."""
    now = datetime.now(UTC)
    accepted = still = 0
    with app.store.session() as session:
        query = select(Quarantine).where(Quarantine.status == "open")
        if record is not None:
            query = query.where(Quarantine.id == record)
        if source:
            query = query.where(Quarantine.source == source)
        for item in session.scalars(query):
            source_cfg = app.config.sources.get(item.source)
            if source_cfg is None:
                still += 1
                continue
            raw = RawRecord(data=item.raw, record_id=item.record_id, row=item.row)
            try:
                prepared = prepare(app.config, source_cfg, raw, now)
            except FieldError as exc:
                item.reason = str(exc).split(": ", 1)[-1]
                item.field = exc.field
                still += 1
                continue
            store_prepared(session, item.source, prepared, raw, now)
            item.status = "replayed"
            accepted += 1
    return accepted, still


def accept_lead(app: App, lead: str, now: datetime | None = None) -> str | None:
    """Stop the SLA clock: the assignment is accepted and the contact becomes an SAL."""
    now = now or datetime.now(UTC)
    with app.store.session() as session:
        # Locked, as the SLA clock locks it before a breach reassigns the lead.
        query = select(Contact).with_for_update()
        query = (
            query.where(Contact.id == int(lead))
            if lead.isdigit()
            else query.where(Contact.email == lead.strip())
        )
        contact = session.scalars(query).first()
        if contact is None:
            return None
        assignment = session.scalars(
            select(Assignment).where(
                Assignment.contact_id == contact.id, Assignment.status == "open"
            )
        ).first()
        if assignment is None:
            return None
        return accept_assignment(session, assignment, contact, now, "accepted with leadwerk accept")


def accept_from_slack(
    app: App, lead: str, slack_user: str | None, now: datetime
) -> tuple[str | None, str]:
    """A click on "Accept" in Slack: (the rep who accepted, None when refused; what to tell
    the rep). Only the rep who has the lead (or, for an unassigned one, a fallback manager)
    may accept it there, so a button in an old message never accepts a lead that has since
    gone to someone else."""
    reps = app.config.team.reps
    rep = next((r for r, p in reps.items() if slack_user and p.slack == slack_user), None)
    if not lead.isdigit():
        return None, "this button does not name a lead"
    with app.store.session() as session:
        contact = session.get(Contact, int(lead), with_for_update=True)
        if contact is None:
            return None, "this lead no longer exists"
        assignments = list(
            session.scalars(
                select(Assignment)
                .where(Assignment.contact_id == contact.id)
                .order_by(Assignment.id.desc())
            )
        )
        current = next((a for a in assignments if a.status == "open"), None)
        if current is None:
            last = assignments[0].status if assignments else "never assigned"
            return None, f"lead {contact.id} is not open: it was {last}"
        allowed = current.rep == rep or (current.rep is None and rep in app.config.fallback)
        if rep is None or not allowed:
            holder = current.rep or "the managers"
            return None, f"lead {contact.id} is assigned to {holder}; only they can accept it"
        return rep, accept_assignment(session, current, contact, now, "accepted in Slack")


def accept_assignment(
    session: Any, assignment: Assignment, contact: Contact, now: datetime, cause: str
) -> str:
    assignment.status = "accepted"
    assignment.accepted_at = now
    if contact.stage == "mql":
        session.add(
            StageChange(
                contact_id=contact.id,
                from_stage="mql",
                to_stage="sal",
                cause=f"{cause} by {assignment.rep or 'a manager'}",
                at=now,
            )
        )
        contact.stage = "sal"
    late = assignment.due_at is not None and now > assignment.due_at
    return f"lead {contact.id} accepted by {assignment.rep or 'a manager'}" + (
        " (after the SLA was due)" if late else ""
    )
