"""SLA clock step: timers kept in the store fire reminders, escalations and reassignments.

The timers are written with the assignment (``route._assign``). The clock only finds due ones
and rings the doorbell (:func:`enqueue_due_timers`); the ``fire_sla_timer`` actor does the work
in :func:`fire_timer`, in one transaction that locks the lead and its assignment, claims the
timer with an atomic UPDATE (``fired_at`` is set only where it is still NULL; SQLite ignores
``FOR UPDATE``, so the claim must not rely on it) and writes the outbox messages or the new
assignment. Two clocks or a redelivered message therefore fire a timer once, and a crash
before the commit leaves it unfired for the next tick. A timer of an assignment that is no
longer open (accepted, reassigned) never fires: accepting stops the clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, or_, select, update
from sqlalchemy.orm import Session

from config.loader import Config
from config.models import SlaPolicy
from rules.sla import BREACH
from worker.pipeline.notify import (
    accept_link,
    assign_link,
    channel_for,
    display_name,
    local_time_text,
    message_id_domain,
    template_env,
)
from worker.pipeline.route import decide, hand_over
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Message, SlaTimer

log = logging.getLogger("leadwerk.sla")

REENQUEUE_AFTER = timedelta(seconds=60)
"""A due timer enqueued this long ago and still unfired is enqueued again (a lost message)."""

DUE_BATCH = 500


@dataclass
class Fired:
    """What one call of :func:`fire_timer` did. ``fired`` is True only for the call that
    claimed the timer; ``message_ids`` are the outbox messages to send."""

    timer_id: int
    fired: bool
    outcome: str
    message_ids: list[int] = field(default_factory=list)


def due_timers(store: Store, now: datetime) -> list[int]:
    """Timers due, unfired, of open assignments, and not enqueued in the last minute; they are
    marked as enqueued so that the next tick leaves them to the worker.

    Due timers of leads accepted or reassigned meanwhile are closed without firing (``fired_at``
    set, ``outcome`` saying why), so the timers left open stay few however long Leadwerk runs.
    """
    with store.session() as session:
        status = (
            select(Assignment.status)
            .where(Assignment.id == SlaTimer.assignment_id)
            .scalar_subquery()
        )
        session.execute(
            update(SlaTimer)
            .where(
                SlaTimer.fired_at.is_(None),
                SlaTimer.fire_at <= now,
                SlaTimer.assignment_id.in_(
                    select(Assignment.id).where(Assignment.status != "open")
                ),
            )
            .values(fired_at=now, outcome=literal("not fired: the lead was ") + status)
        )
        ids = list(
            session.scalars(
                select(SlaTimer.id)
                .join(Assignment, Assignment.id == SlaTimer.assignment_id)
                .where(
                    SlaTimer.fired_at.is_(None),
                    SlaTimer.fire_at <= now,
                    Assignment.status == "open",
                    or_(
                        SlaTimer.enqueued_at.is_(None),
                        SlaTimer.enqueued_at < now - REENQUEUE_AFTER,
                    ),
                )
                .order_by(SlaTimer.fire_at, SlaTimer.id)
                .limit(DUE_BATCH)
            )
        )
        if ids:
            session.execute(update(SlaTimer).where(SlaTimer.id.in_(ids)).values(enqueued_at=now))
    return ids


def enqueue_due_timers(store: Store, now: datetime) -> int:
    """The clock's SLA job: one ``fire_sla_timer`` message per due timer."""
    from worker.pipeline.actors import fire_sla_timer

    ids = due_timers(store, now)
    for timer_id in ids:
        fire_sla_timer.send(timer_id)
    return len(ids)


def fire_timer(store: Store, config: Config, timer_id: int, now: datetime) -> Fired:
    """Fire one timer if it is due, unfired and its assignment still open; see the module."""
    with store.session() as session:
        row = session.execute(
            select(SlaTimer.assignment_id, SlaTimer.kind).where(SlaTimer.id == timer_id)
        ).first()
        if row is None:
            return Fired(timer_id, False, "no such timer")
        contact_id = session.scalar(
            select(Assignment.contact_id).where(Assignment.id == row.assignment_id)
        )
        # Lead first, then assignment: the order routing and accepting lock them in.
        contact = session.get(Contact, contact_id, with_for_update=True) if contact_id else None
        assignment = session.get(Assignment, row.assignment_id, with_for_update=True)
        if contact is None or assignment is None:  # erased (leadwerk forget) meanwhile
            return Fired(timer_id, False, "not fired: the lead was erased")
        if assignment.status != "open":
            return Fired(timer_id, False, f"not fired: the lead was {assignment.status}")
        claimed = session.execute(
            update(SlaTimer)
            .where(
                SlaTimer.id == timer_id,
                SlaTimer.fired_at.is_(None),
                SlaTimer.fire_at <= now,
            )
            .values(fired_at=now)
        ).rowcount
        if claimed != 1:
            return Fired(timer_id, False, "not fired: already fired or not yet due")
        if row.kind == BREACH:
            outcome, messages = _breach(session, config, contact, assignment, now)
        else:
            outcome, messages = _remind(config, contact, assignment, row.kind, now)
        # A reassignment's new-lead messages are stored already (route.hand_over).
        session.add_all(message for message in messages if message.id is None)
        session.execute(update(SlaTimer).where(SlaTimer.id == timer_id).values(outcome=outcome))
        session.flush()
        log.info("SLA %s of lead %s: %s", row.kind, contact.id, outcome)
        return Fired(timer_id, True, outcome, [m.id for m in messages])


def _policy(config: Config, name: str | None) -> SlaPolicy | None:
    return next((p.policy for p in config.sla if p.name == name), None)


def _remind(
    config: Config, contact: Contact, assignment: Assignment, kind: str, now: datetime
) -> tuple[str, list[Message]]:
    rep = assignment.rep or ""
    person = config.team.reps.get(rep)
    if assignment.due_at is not None and now >= assignment.due_at:
        return "not sent: the lead was already past due", []
    if person is None:
        return f"not sent: {rep} is no longer in team.yaml", []
    policy = _policy(config, assignment.sla_policy)
    facts = _facts(config, contact, assignment, policy, rep)
    facts["sla"]["used"] = f"{kind.partition(':')[2]}%"
    env = template_env(config.directory)
    subject = env.get_template("sla_reminder.subject.j2").render(facts).strip()
    text = env.get_template("sla_reminder.txt.j2").render(facts)
    message = _message(config, contact, assignment, kind, "sla_reminder", rep, subject, text)
    if message.channel == "slack":
        message.blocks = _reminder_blocks(subject, facts, contact)
    return f"reminded {rep}", [message]


def _breach(
    session: Session, config: Config, contact: Contact, assignment: Assignment, now: datetime
) -> tuple[str, list[Message]]:
    """The policy's ``on_breach`` actions; a policy removed from sla.yaml since the assignment
    was made still escalates, so a late lead is never silent."""
    policy = _policy(config, assignment.sla_policy)
    actions = policy.on_breach if policy else ["escalate"]
    breached = assignment.rep or ""
    outcome: list[str] = []
    messages: list[Message] = []
    reassigned_to: str | None = None
    not_reassigned: str | None = None
    if "reassign" in actions:
        earlier = session.scalars(
            select(Assignment.rep).where(
                Assignment.contact_id == contact.id,
                Assignment.status == "reassigned",
                Assignment.rep.is_not(None),
            )
        )
        exclude = {breached, *(rep for rep in earlier if rep)}
        routing = decide(session.connection(), config, contact, now, exclude)
        if routing.decision.rep is None:
            skipped = routing.decision.skipped
            not_reassigned = (
                "; ".join(f"{skip.name} {skip.reason}" for skip in skipped)
                or routing.decision.reason
            )
            outcome.append(f"not reassigned: {not_reassigned}")
        else:
            assignment.status = "reassigned"
            session.flush()
            why = f"reassigned after {breached} let the {assignment.sla_policy} SLA pass; "
            routing = replace(
                routing, decision=replace(routing.decision, reason=why + routing.decision.reason)
            )
            messages += hand_over(session.connection(), config, contact, routing, now)
            reassigned_to = routing.decision.rep
            outcome.append(f"reassigned to {reassigned_to}")
    if "escalate" in actions:
        escalations = _escalations(
            config, contact, assignment, policy, breached, reassigned_to, not_reassigned
        )
        messages += escalations
        names = ", ".join(m.rep or "" for m in escalations) or "nobody (no manager in team.yaml)"
        outcome.insert(0, f"escalated to {names}")
    return "; ".join(outcome) or "breached; sla.yaml names no action", messages


def _escalations(
    config: Config,
    contact: Contact,
    assignment: Assignment,
    policy: SlaPolicy | None,
    breached: str,
    reassigned_to: str | None,
    not_reassigned: str | None,
) -> list[Message]:
    """One message to the breached rep's team manager, else to the fallback managers."""
    manager = config.manager_of(breached)
    recipients = [manager] if manager else list(config.fallback)
    env = template_env(config.directory)
    messages = []
    for recipient in recipients:
        person = config.team.reps.get(recipient)
        if person is None:
            continue
        facts = _facts(config, contact, assignment, policy, breached, viewer=recipient)
        facts["manager"] = {"id": recipient, "name": person.name}
        new_rep = config.team.reps.get(reassigned_to or "")
        facts["reassigned_to"] = (
            {"id": reassigned_to, "name": new_rep.name if new_rep else reassigned_to}
            if reassigned_to
            else None
        )
        facts["reassign_reason"] = not_reassigned
        facts["assign_url"] = None if reassigned_to else assign_link(config, assignment, recipient)
        subject = env.get_template("sla_escalation.subject.j2").render(facts).strip()
        text = env.get_template("sla_escalation.txt.j2").render(facts)
        what = "breach:escalate"
        messages.append(
            _message(config, contact, assignment, what, "sla_escalation", recipient, subject, text)
        )
    return messages


def _facts(
    config: Config,
    contact: Contact,
    assignment: Assignment,
    policy: SlaPolicy | None,
    rep: str,
    viewer: str | None = None,
) -> dict[str, Any]:
    """What the reminder and escalation templates may use; times in the reader's zone."""
    fields = contact.fields
    name = display_name(contact)
    person = config.team.reps.get(rep)
    return {
        "lead": {
            "id": contact.id,
            "name": name,
            "email": contact.email,
            "company": fields.get("company"),
            "phone": fields.get("phone"),
        },
        "rep": {"id": rep, "name": person.name if person else rep},
        "sla": {
            "policy": assignment.sla_policy,
            "due": local_time_text(config, viewer or rep, assignment.due_at),
            "within": span(policy.respond_within) if policy else "?",
        },
        "accept_url": accept_link(config, assignment, viewer or rep),
    }


def _reminder_blocks(subject: str, facts: dict[str, Any], contact: Contact) -> list[Any]:
    from connectors.notify.slack import lead_card_blocks

    lead = facts["lead"]
    return lead_card_blocks(
        title=subject,
        fields=[("Name", lead["name"]), ("Company", lead["company"] or "–")],
        reasons=[],
        due_text=f"{facts['sla']['used']} of the time has passed; respond by {facts['sla']['due']}",
        accept_url=facts["accept_url"],
        accept_value=str(contact.id),
    )


def _message(
    config: Config,
    contact: Contact,
    assignment: Assignment,
    what: str,
    purpose: str,
    recipient: str,
    subject: str,
    text: str,
) -> Message:
    """An outbox message whose key (``lead:7:assignment:9:remind:50:jonas``) makes a second
    one for the same timer and recipient impossible."""
    person = config.team.reps[recipient]
    channel = channel_for(config, person)
    domain = message_id_domain(config)
    tag = what.replace(":", "-")
    return Message(
        key=f"lead:{contact.id}:assignment:{assignment.id}:{what}:{recipient}",
        contact_id=contact.id,
        purpose=purpose,
        channel=channel,
        recipient=person.slack if channel == "slack" else person.email,
        recipient_name=person.name,
        rep=recipient,
        subject=subject,
        body_text=text,
        message_id=f"<lead-{contact.id}.a{assignment.id}.{tag}.{recipient}@{domain}>",
        status="pending",
    )


def span(delta: timedelta) -> str:
    """``5m``, ``4h``, ``1h 30m``, ``2d``: how sla.yaml writes a budget."""
    minutes = round(delta.total_seconds() / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return " ".join(parts) or f"{delta.total_seconds():g}s"
