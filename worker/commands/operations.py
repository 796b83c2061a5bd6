"""Admin operations behind the CLI and the web pages: dead letters, quarantine, accepting
and assigning a lead."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.loader import Config
from connectors.sources.base import RawRecord
from rules.contact import FieldError
from rules.decision import sla_clock
from rules.expr import Context
from rules.routing import RouteDecision, choose_sla
from worker.commands.stage import find_contact
from worker.pipeline.crm import record
from worker.pipeline.ingest import preparer, store_prepared
from worker.pipeline.notify import local_time_text
from worker.pipeline.route import Routing, account_facts, hand_over, lead_view
from worker.pipeline.score import event_facts
from worker.runtime.app import App
from worker.store.models import Assignment, Contact, DeadLetter, Event, Quarantine, StageChange


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
    sends: list[tuple[dramatiq.Actor[Any, Any], list[Any]]] = []
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
                sends.append((actor, list(dead.args)))
            dead.status = "replayed"
            count += 1
    # Enqueued once committed: a worker quicker than the commit would find the message still
    # failed, do nothing, and leave it to the clock's sweep.
    for actor, args in sends:
        actor.send(*args)
    return count


def quarantined(app: App, source: str | None) -> list[dict[str, Any]]:
    with app.store.session() as session:
        query = select(Quarantine).where(Quarantine.status == "open").order_by(Quarantine.id)
        if source:
            query = query.where(Quarantine.source == source)
        return [_quarantined(q) for q in session.scalars(query)]


def _quarantined(q: Quarantine) -> dict[str, Any]:
    return {
        "id": q.id,
        "source": q.source,
        "row": q.row,
        "record_id": q.record_id,
        "file": q.file,
        "field": q.field,
        "reason": q.reason,
        "created_at": q.created_at,
        "raw": q.raw,
    }


def retry_quarantine(
    app: App, record: int | None, source: str | None
) -> tuple[int, list[dict[str, Any]]]:
    """Quarantined records through the current mapping again; fixed ones enter the pipeline.
    Returns how many were taken in and the records still refused, each with today's reason.
    A row that was cut wrongly (more or fewer cells than its header) stays refused: no
    mapping can tell which of its cells belongs to which column."""
    now = datetime.now(UTC)
    accepted = 0
    refused: list[dict[str, Any]] = []
    with app.store.session() as session:
        query = select(Quarantine).where(Quarantine.status == "open").order_by(Quarantine.id)
        if record is not None:
            query = query.where(Quarantine.id == record)
        if source:
            query = query.where(Quarantine.source == source)
        for item in session.scalars(query):
            source_cfg = app.config.sources.get(item.source)
            if source_cfg is None:
                item.reason = f"the source {item.source} is no longer in sources.yaml"
                item.field = None
                refused.append(_quarantined(item))
                continue
            error = item.reason if item.field == "record" else None
            raw = RawRecord(data=item.raw, record_id=item.record_id, row=item.row, error=error)
            try:
                prepared = preparer(app.config, source_cfg, now)(raw)
            except FieldError as exc:
                item.reason = str(exc).split(": ", 1)[-1]
                item.field = exc.field
                refused.append(_quarantined(item))
                continue
            store_prepared(session, item.source, prepared, now)
            item.status = "replayed"
            accepted += 1
    return accepted, refused


def accept_lead(
    app: App, lead: str, now: datetime | None = None, by: str | None = None
) -> str | None:
    """Stop the SLA clock: the assignment is accepted (by ``by``, else by the rep who has
    it) and the contact becomes an SAL."""
    now = now or datetime.now(UTC)
    with app.store.session() as session:
        # Locked, as the SLA clock locks it before a breach reassigns the lead.
        contact = find_contact(session, lead, lock=True)
        if contact is None:
            return None
        assignment = session.scalars(
            select(Assignment).where(
                Assignment.contact_id == contact.id, Assignment.status == "open"
            )
        ).first()
        if assignment is None:
            return None
        return accept_assignment(
            session, app.config, assignment, contact, now, "accepted with leadwerk accept", by
        )


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
        cause = "accepted in Slack"
        return rep, accept_assignment(session, app.config, current, contact, now, cause, rep)


def accept_assignment(
    session: Any,
    config: Config,
    assignment: Assignment,
    contact: Contact,
    now: datetime,
    cause: str,
    by: str | None = None,
) -> str:
    """Accept ``assignment`` for ``by`` (else the rep who has it); the caller holds the lead
    and the assignment locked. An MQL becomes an SAL, and the CRM (if any) is told."""
    who = by or assignment.rep
    assignment.status = "accepted"
    assignment.accepted_at = now
    assignment.accepted_by = who
    if contact.stage == "mql":
        session.add(
            StageChange(
                contact_id=contact.id,
                from_stage="mql",
                to_stage="sal",
                cause=f"{cause} by {who or 'a manager'}",
                at=now,
            )
        )
        contact.stage = "sal"
        record(session.connection(), config, contact, "stage", {"stage": "sal"}, now)
    late = assignment.due_at is not None and now > assignment.due_at
    return f"lead {contact.id} accepted by {who or 'a manager'}" + (
        " (after the SLA was due)" if late else ""
    )


class AssignRefused(ValueError):
    """A manager's assignment that cannot be made; the message says why."""


@dataclass(frozen=True)
class Assigned:
    """A lead given to a rep by a manager: what to tell them, and the outbox messages to send."""

    text: str
    message_ids: list[int]


def assign_lead(app: App, lead: str, rep: str, by: str | None, now: datetime) -> Assigned:
    """A manager gives a lead to ``rep``: a new assignment under the SLA policy routing chose
    for it, with a fresh clock, and the rep told through the outbox. The open assignment (the
    managers', or another rep's) is kept as history, marked reassigned. Refused
    (:class:`AssignRefused`) for a rep not in team.yaml, an unknown lead, or one already
    accepted."""
    config = app.config
    if rep not in config.team.reps:
        hint = difflib.get_close_matches(rep, list(config.team.reps), n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise AssignRefused(f"no rep named '{rep}' in team.yaml{suggestion}")
    who = by or "a manager"
    with app.store.session() as session:
        contact = find_contact(session, lead, lock=True)
        if contact is None:
            raise AssignRefused(f"no lead {lead}")
        history = list(
            session.scalars(
                select(Assignment)
                .where(Assignment.contact_id == contact.id)
                .order_by(Assignment.id.desc())
                .with_for_update()
            )
        )
        accepted = next((a for a in history if a.status == "accepted"), None)
        if accepted is not None:
            holder = accepted.accepted_by or accepted.rep or "a manager"
            raise AssignRefused(f"lead {contact.id} was already accepted by {holder}")
        current = next((a for a in history if a.status == "open"), None)
        if current is not None and current.rep == rep:
            raise AssignRefused(f"lead {contact.id} is assigned to {rep} already")
        prior = history[0] if history else None
        event = session.get(Event, prior.event_id) if prior and prior.event_id else None
        policy = _policy_for(session, config, contact, event, prior, now)
        decision = RouteDecision(
            rule=f"assigned by {who}",
            team=_team_of(config, rep, prior.team if prior else None),
            rep=rep,
            strategy="manager",
            reason=f"{who} gave the lead to {rep}",
        )
        terms = policy.policy if policy else None
        due = (
            sla_clock(now, terms.respond_within, terms.clock, config.calendars.get(rep))[1]
            if terms
            else None
        )
        if current is not None:
            current.status = "reassigned"
            session.flush()
        routing = Routing(event, decision, policy, due, counters={})
        messages = hand_over(session.connection(), config, contact, routing, now)
        due = session.scalar(
            select(Assignment.due_at)
            .where(Assignment.contact_id == contact.id, Assignment.status == "open")
            .order_by(Assignment.id.desc())
        )
        text = f"lead {contact.id} assigned to {rep} by {who}"
        if policy is not None and due is not None:
            due_text = local_time_text(config, rep, due)
            text += f"; {policy.name} SLA, respond by {due_text}"
        return Assigned(text, [m.id for m in messages])


def _team_of(config: Any, rep: str, preferred: str | None) -> str | None:
    """The team the lead was routed to when ``rep`` is in it, else the rep's first team."""
    teams = config.team.teams
    if preferred in teams and rep in teams[preferred].members:
        return preferred
    return next((name for name, team in teams.items() if rep in team.members), None)


def _policy_for(
    session: Session,
    config: Any,
    contact: Contact,
    event: Event | None,
    prior: Assignment | None,
    now: datetime,
) -> Any:
    """The SLA policy routing chose for the lead; for a lead never routed, the one that
    matches it now."""
    if prior is not None:
        return next((p for p in config.sla if p.name == prior.sla_policy), None)
    account = account_facts(session.connection(), config, contact)
    facts = event_facts(event) if event else None
    return choose_sla(config.sla, Context(lead_view(contact), facts, account, now))
