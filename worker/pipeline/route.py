"""Route step: an MQL goes to a rep (or the fallback managers), with reasons and an SLA due
time, and its notifications are written to the outbox in the same transaction."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.loader import Config
from rules.assign import RepState
from rules.expr import Context
from rules.routing import RouteDecision, choose_sla, decide_route, due_time
from rules.scoring import contact_view
from worker.pipeline.notify import new_lead_messages
from worker.pipeline.score import event_facts
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Event, RepCounter, Score

log = logging.getLogger("leadwerk.route")


def lead_context(
    contact: Contact, event: Event | None, account: dict[str, Any], now: datetime
) -> Context:
    view = contact_view(contact.fields)
    view.update(
        score=contact.score,
        fit=contact.fit,
        engagement=contact.engagement,
        mql=contact.mql_at is not None,
    )
    return Context(
        contact=view, event=event_facts(event) if event else None, account=account, now=now
    )


def account_facts(session: Session, config: Config, contact: Contact) -> dict[str, Any]:
    """The company, matched by e-mail domain: who owns it and how many leads are open.
    Free-mail domains never match an account."""
    if contact.email_domain in set(config.lists.get("free_mail", ())):
        return {}
    owner = session.scalars(
        select(Contact.owner)
        .where(
            Contact.email_domain == contact.email_domain,
            Contact.id != contact.id,
            Contact.owner.is_not(None),
        )
        .order_by(Contact.updated_at.desc())
    ).first()
    open_leads = session.scalar(
        select(func.count(Assignment.id))
        .join(Contact, Contact.id == Assignment.contact_id)
        .where(Contact.email_domain == contact.email_domain, Assignment.status == "open")
    )
    return {"owner": owner, "open_leads": open_leads or 0}


def team_states(session: Session, config: Config, team: str, now: datetime) -> list[RepState]:
    """The team's reps with their lifetime counts, today's load and calendars; the counter
    rows are locked (PostgreSQL) so parallel workers never hand out the same turn."""
    members = config.team.teams[team].members
    existing = {
        c.rep: c
        for c in session.scalars(
            select(RepCounter)
            .where(RepCounter.team == team)
            .order_by(RepCounter.rep)
            .with_for_update()
        )
    }
    for rep in members:
        if rep not in existing:
            existing[rep] = RepCounter(team=team, rep=rep, assigned_total=0)
            session.add(existing[rep])
    session.flush()
    states = []
    for rep in members:
        settings = config.team.reps[rep]
        tz = ZoneInfo(settings.timezone or config.settings.timezone)
        local_midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
        today = (
            session.scalar(
                select(func.count(Assignment.id)).where(
                    Assignment.rep == rep, Assignment.created_at >= local_midnight
                )
            )
            or 0
        )
        counter = existing[rep]
        states.append(
            RepState(
                name=rep,
                weight=settings.weight,
                assigned_total=counter.assigned_total,
                assigned_today=today,
                capacity_per_day=settings.capacity.per_day,
                last_assigned_at=counter.last_assigned_at,
                calendar=config.calendars.get(rep),
            )
        )
    return states


def route_contact(store: Store, config: Config, contact_id: int, now: datetime) -> list[int]:
    """Assign an MQL once. Returns the ids of the outbox messages to send (none when the
    contact already has an open assignment: a redelivered message changes nothing)."""
    with store.session() as session:
        contact = session.get(Contact, contact_id, with_for_update=True)
        if contact is None or contact.mql_at is None:
            return []
        if session.scalars(
            select(Assignment.id).where(
                Assignment.contact_id == contact.id, Assignment.status == "open"
            )
        ).first():
            return []
        event = session.scalars(
            select(Event)
            .where(Event.contact_id == contact.id, Event.status == "processed")
            .order_by(Event.occurred_at.desc(), Event.id.desc())
        ).first()
        account = account_facts(session, config, contact)
        ctx = lead_context(contact, event, account, now)
        policy = choose_sla(config.sla, ctx)
        within = policy.policy.respond_within if policy else None
        states = {
            rule.team: team_states(session, config, rule.team, now)
            for rule in config.routing
            if rule.team and _matches(rule, ctx)
        }
        decision = decide_route(
            config.routing,
            ctx,
            states=states,
            account_owner=account.get("owner"),
            fallback=config.fallback,
            max_wait=within,
            seed=random.SystemRandom().randrange(2**31),
        )
        assignment = _assign(session, config, contact, event, decision, policy, within, now)
        score = session.scalars(
            select(Score).where(Score.contact_id == contact.id).order_by(Score.id.desc())
        ).first()
        messages = new_lead_messages(config, contact, event, assignment, decision, score)
        for message in messages:
            session.add(message)
        session.flush()
        log.info("routed lead %s: %s", contact.id, decision.reason)
        return [m.id for m in messages]


def _matches(rule: Any, ctx: Context) -> bool:
    return rule.when is None or bool(rule.when(ctx))


def _assign(
    session: Session,
    config: Config,
    contact: Contact,
    event: Event | None,
    decision: RouteDecision,
    policy: Any,
    within: timedelta | None,
    now: datetime,
) -> Assignment:
    due = None
    if within is not None:
        calendar = config.calendars.get(decision.rep) if decision.rep else None
        due = due_time(now, within, policy.policy.clock, calendar)
    assignment = Assignment(
        contact_id=contact.id,
        event_id=event.id if event else None,
        rep=decision.rep,
        team=decision.team,
        rule=decision.rule,
        strategy=decision.strategy,
        reason=decision.reason,
        skipped=[{"rep": s.name, "reason": s.reason} for s in decision.skipped],
        seed=decision.seed,
        sla_policy=policy.name if policy else None,
        due_at=due,
        status="open",
        created_at=now,
    )
    session.add(assignment)
    if decision.rep:
        contact.owner = decision.rep
        if decision.team:
            counter = session.get(RepCounter, (decision.team, decision.rep))
            if counter is not None:
                counter.assigned_total += 1
                counter.last_assigned_at = now
    else:
        contact.owner = None
    session.flush()
    return assignment
