"""Route step: an MQL goes to a rep (or the fallback managers), with reasons and an SLA due
time, and its notifications are written to the outbox in the same transaction."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.loader import Config
from rules.assign import RepState, Skip
from rules.expr import Context
from rules.routing import RouteDecision, choose_sla, decide_route, due_time
from rules.scoring import contact_view
from rules.sla import plan_timers
from worker.pipeline.notify import new_lead_messages
from worker.pipeline.score import event_facts
from worker.store.db import Store
from worker.store.models import (
    Assignment,
    Contact,
    Event,
    Message,
    RepCounter,
    Score,
    SlaTimer,
)

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
    Free-mail domains never match an account. One round trip for both facts."""
    if contact.email_domain in set(config.lists.get("free_mail", ())):
        return {}
    owner = (
        select(Contact.owner)
        .where(
            Contact.email_domain == contact.email_domain,
            Contact.id != contact.id,
            Contact.owner.is_not(None),
        )
        .order_by(Contact.updated_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    open_leads = (
        select(func.count(Assignment.id))
        .join(Contact, Contact.id == Assignment.contact_id)
        .where(Contact.email_domain == contact.email_domain, Assignment.status == "open")
        .scalar_subquery()
    )
    found_owner, found_open = session.execute(select(owner, open_leads)).one()
    return {"owner": found_owner, "open_leads": found_open or 0}


def team_states(
    session: Session, config: Config, team: str, now: datetime
) -> tuple[list[RepState], dict[str, RepCounter]]:
    """The team's reps with their lifetime counts, today's load and calendars, and their
    counter rows, locked (PostgreSQL) so parallel workers never hand out the same turn."""
    members = config.team.teams[team].members
    counters = _lock_counters(session, team)
    if any(rep not in counters for rep in members):
        # A new rep's counter row is made first, and a parallel worker's insert of the same
        # row is no error: then every member has a row for FOR UPDATE to lock.
        dialect = session.get_bind().dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(RepCounter)
        rows = [{"team": team, "rep": rep, "assigned_total": 0} for rep in members]
        session.execute(insert.values(rows).on_conflict_do_nothing())
        counters = _lock_counters(session, team)
    today = _assigned_today(session, config, members, now)
    states = [
        RepState(
            name=rep,
            weight=config.team.reps[rep].weight,
            assigned_total=counters[rep].assigned_total,
            assigned_today=today[rep],
            capacity_per_day=config.team.reps[rep].capacity.per_day,
            last_assigned_at=counters[rep].last_assigned_at,
            calendar=config.calendars.get(rep),
        )
        for rep in members
    ]
    return states, counters


def _lock_counters(session: Session, team: str) -> dict[str, RepCounter]:
    rows = session.scalars(
        select(RepCounter).where(RepCounter.team == team).order_by(RepCounter.rep).with_for_update()
    )
    return {counter.rep: counter for counter in rows}


def _assigned_today(
    session: Session, config: Config, members: Sequence[str], now: datetime
) -> dict[str, int]:
    """Leads each rep got since midnight in the rep's own time zone, in one query."""
    if not members:
        return {}
    midnights = {}
    for rep in members:
        tz = ZoneInfo(config.team.reps[rep].timezone or config.settings.timezone)
        midnights[rep] = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = session.execute(
        select(
            *(
                func.count(Assignment.id).filter(
                    Assignment.rep == rep, Assignment.created_at >= midnight
                )
                for rep, midnight in midnights.items()
            )
        ).where(
            Assignment.rep.in_(list(members)),
            Assignment.created_at >= min(midnights.values()),
        )
    ).one()
    return {rep: count or 0 for rep, count in zip(midnights, counts, strict=True)}


def route_contact(store: Store, config: Config, contact_id: int, now: datetime) -> list[int]:
    """Assign an MQL once. Returns the ids of the outbox messages to send (none when the
    contact already has an open assignment: a redelivered message changes nothing)."""
    with store.session() as session:
        contact = session.get(Contact, contact_id, with_for_update=True)
        if contact is None or contact.mql_at is None:
            return []
        return [m.id for m in route_locked(session, config, contact, now)]


def route_locked(
    session: Session,
    config: Config,
    contact: Contact,
    now: datetime,
    known: Known | None = None,
    claim: bool = False,
) -> list[Message]:
    """Route a contact the caller has locked, unless it has an open assignment already.

    ``known``: the latest processed event and score when the caller has just written them
    (scoring and routing in one transaction), so they are not read back. ``claim``: the
    messages are written claimed for sending (``sending``), for a caller that sends them
    right after the commit; a crash in between leaves them to the send lease, as any claim.
    """
    if session.scalars(
        select(Assignment.id).where(
            Assignment.contact_id == contact.id, Assignment.status == "open"
        )
    ).first():
        return []
    routing = decide(session, config, contact, now, known=known)
    messages = hand_over(session, config, contact, routing, now, known=known, claim=claim)
    log.info("routed lead %s: %s", contact.id, routing.decision.reason)
    return messages


@dataclass(frozen=True)
class Known:
    """What the caller has just written for a contact: its latest processed event and score."""

    event: Event
    score: Score


@dataclass(frozen=True)
class Routing:
    """A routing decision not yet persisted, with what persisting it needs."""

    event: Event | None
    decision: RouteDecision
    policy: Any  # the SLA policy chosen (config.loader.CompiledSla), or None
    within: timedelta | None
    counters: Mapping[str, Mapping[str, RepCounter]]  # team -> rep -> locked counter row


def decide(
    session: Session,
    config: Config,
    contact: Contact,
    now: datetime,
    exclude: Collection[str] = (),
    known: Known | None = None,
) -> Routing:
    """Where the lead goes now. ``exclude``: reps who must not get it again because they let
    its SLA pass; they are listed as skipped, and an excluded account owner is passed over.
    ``known``: see :func:`route_locked`; else the latest processed event is read."""
    if known is not None:
        event = known.event
    else:
        event = session.scalars(
            select(Event)
            .where(Event.contact_id == contact.id, Event.status == "processed")
            .order_by(Event.occurred_at.desc(), Event.id.desc())
        ).first()
    account = account_facts(session, config, contact)
    ctx = lead_context(contact, event, account, now)
    policy = choose_sla(config.sla, ctx)
    within = policy.policy.respond_within if policy else None
    states = _TeamStates(lambda team: team_states(session, config, team, now), exclude)
    owner = account.get("owner")
    decision = decide_route(
        config.routing,
        ctx,
        states=states,
        account_owner=None if owner in exclude else owner,
        fallback=config.fallback,
        max_wait=within,
        seed=random.SystemRandom().randrange(2**31),
    )
    if exclude:
        passed = tuple(Skip(rep, "let the SLA on this lead pass") for rep in sorted(exclude))
        decision = replace(decision, skipped=passed + decision.skipped)
    return Routing(event, decision, policy, within, states.counters)


def hand_over(
    session: Session,
    config: Config,
    contact: Contact,
    routing: Routing,
    now: datetime,
    known: Known | None = None,
    claim: bool = False,
) -> list[Message]:
    """Persist a decision: the assignment with its SLA timers, and its outbox messages
    (claimed for the caller with ``claim``, see :func:`route_locked`)."""
    assignment = _assign(session, config, contact, routing, now)
    if known is not None:
        score = known.score
    else:
        score = session.scalars(
            select(Score).where(Score.contact_id == contact.id).order_by(Score.id.desc())
        ).first()
    decision = routing.decision
    messages = new_lead_messages(config, contact, routing.event, assignment, decision, score)
    for message in messages:
        if claim:
            message.status, message.claimed_at, message.attempts = "sending", now, 1
        session.add(message)
    session.flush()
    return messages


class _TeamStates(Mapping[str, list[RepState]]):
    """Team states made when routing asks for a team: only the first matching rule's team is
    counted and its counters locked, not every team a later rule names (speed to lead, and
    no needless lock on other teams' counters). ``exclude``d reps are left out."""

    def __init__(
        self,
        make: Callable[[str], tuple[list[RepState], dict[str, RepCounter]]],
        exclude: Collection[str],
    ) -> None:
        self._make = make
        self._exclude = exclude
        self._made: dict[str, list[RepState]] = {}
        self.counters: dict[str, dict[str, RepCounter]] = {}

    def __getitem__(self, team: str) -> list[RepState]:
        if team not in self._made:
            states, self.counters[team] = self._make(team)
            self._made[team] = [s for s in states if s.name not in self._exclude]
        return self._made[team]

    def __iter__(self) -> Iterator[str]:
        return iter(self._made)

    def __len__(self) -> int:
        return len(self._made)


def _assign(
    session: Session, config: Config, contact: Contact, routing: Routing, now: datetime
) -> Assignment:
    decision, policy, within = routing.decision, routing.policy, routing.within
    event = routing.event
    due = None
    if within is not None:
        calendar = config.calendars.get(decision.answerer or "")
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
            counter = routing.counters.get(decision.team, {}).get(decision.rep)
            if counter is not None:
                counter.assigned_total += 1
                counter.last_assigned_at = now
    else:
        contact.owner = None
    session.flush()
    if policy is not None and decision.rep:
        # The SLA clock lives in the store: reminders and the breach fire from these rows.
        calendar = config.calendars.get(decision.rep)
        for timer in plan_timers(now, policy.policy, calendar):
            session.add(
                SlaTimer(assignment_id=assignment.id, kind=timer.kind, fire_at=timer.fire_at)
            )
    return assignment
