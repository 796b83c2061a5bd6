"""Route step: an MQL goes to a rep (or the fallback managers), with reasons and an SLA due
time, and its notifications are written to the outbox in the same transaction."""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Row,
    Select,
    bindparam,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.attributes import set_committed_value

from config.loader import Config
from rules import decision
from rules.assign import RepState
from rules.calendar import WorkCalendar
from rules.routing import RouteDecision
from rules.scoring import contact_view
from rules.sla import plan_timers
from worker.pipeline import handover
from worker.pipeline.crm import new_mql_changes
from worker.pipeline.digest import HELD, hold_for_digest
from worker.pipeline.notify import new_lead_messages
from worker.pipeline.score import event_facts, update_contact
from worker.store.db import Store
from worker.store.models import (
    ASSIGNMENTS,
    CONTACTS,
    COUNTERS,
    CRM_ACCOUNTS,
    EVENTS,
    MESSAGES,
    SCORES,
    Assignment,
    Contact,
    Event,
    Message,
    RepCounter,
    Score,
    new_public_id,
    snapshot,
)

log = logging.getLogger("leadwerk.route")


# Built once, so that SQLAlchemy finds their compiled form by a memoised key (see score.py).
_LOCK_CONTACT = select(CONTACTS).where(CONTACTS.c.id == bindparam("contact_id")).with_for_update()
_LATEST_EVENT = (
    select(EVENTS)
    .where(EVENTS.c.contact_id == bindparam("contact_id"), EVENTS.c.status == "processed")
    .order_by(EVENTS.c.occurred_at.desc(), EVENTS.c.id.desc())
    .limit(1)
)
_LATEST_SCORE = (
    select(SCORES)
    .where(SCORES.c.contact_id == bindparam("contact_id"))
    .order_by(SCORES.c.id.desc())
    .limit(1)
)
# The account's owner: the CRM's where it names one (crm_accounts, kept fresh by the CRM
# sync), else the owner of the company's latest other lead.
_OWNER_OF_DOMAIN = func.coalesce(
    select(CRM_ACCOUNTS.c.owner)
    .where(CRM_ACCOUNTS.c.domain == bindparam("domain"))
    .scalar_subquery(),
    select(CONTACTS.c.owner)
    .where(
        CONTACTS.c.email_domain == bindparam("domain"),
        CONTACTS.c.id != bindparam("contact_id"),
        CONTACTS.c.owner.is_not(None),
    )
    .order_by(CONTACTS.c.updated_at.desc(), CONTACTS.c.id.desc())
    .limit(1)
    .scalar_subquery(),
)
_OPEN_OF_DOMAIN = (
    select(func.count(ASSIGNMENTS.c.id))
    .join_from(ASSIGNMENTS, CONTACTS, CONTACTS.c.id == ASSIGNMENTS.c.contact_id)
    .where(CONTACTS.c.email_domain == bindparam("domain"), ASSIGNMENTS.c.status == "open")
    .scalar_subquery()
)
_ACCOUNT = select(_OWNER_OF_DOMAIN, _OPEN_OF_DOMAIN)
# Routing's first question (is the lead assigned already?) asked with the account's facts.
_OPEN_AND_ACCOUNT = select(
    select(ASSIGNMENTS.c.id)
    .where(ASSIGNMENTS.c.contact_id == bindparam("contact_id"), ASSIGNMENTS.c.status == "open")
    .limit(1)
    .scalar_subquery(),
    _OWNER_OF_DOMAIN,
    _OPEN_OF_DOMAIN,
)
_OPEN_AND_ACCOUNT_AND_NEXT_ID = _OPEN_AND_ACCOUNT.add_columns(handover.NEXT_ASSIGNMENT_ID)
_LOCK_COUNTERS = (
    select(COUNTERS)
    .where(COUNTERS.c.team == bindparam("team"))
    .order_by(COUNTERS.c.rep)
    .with_for_update()
)


def lead_view(contact: Contact) -> dict[str, Any]:
    """The stored contact as routing and SLA rules read it: its fields and its score."""
    view = contact_view(contact.fields)
    view.update(
        score=contact.score,
        fit=contact.fit,
        engagement=contact.engagement,
        mql=contact.mql_at is not None,
    )
    return view


def account_facts(connection: Connection, config: Config, contact: Contact) -> dict[str, Any]:
    """The company, matched by e-mail domain: who owns it and how many leads are open.
    Free-mail domains never match an account. One round trip for both facts."""
    if free_mail(config, contact):
        return {}
    params = {"domain": contact.email_domain, "contact_id": contact.id}
    return account_of(*connection.execute(_ACCOUNT, params).one())


def free_mail(config: Config, contact: Contact) -> bool:
    return contact.email_domain in set(config.lists.get("free_mail", ()))


def account_of(owner: str | None, open_leads: int | None) -> dict[str, Any]:
    """The account facts as rules read them (``account.owner``, ``account.open_leads``)."""
    return {"owner": owner, "open_leads": open_leads or 0}


def team_states(
    connection: Connection, config: Config, team: str, now: datetime
) -> tuple[list[RepState], dict[str, Row[Any]]]:
    """The team's reps with their lifetime counts, today's load and calendars, and their
    counter rows, locked (PostgreSQL) so parallel workers never hand out the same turn."""
    members = config.team.teams[team].members
    counters = _lock_counters(connection, team)
    if any(rep not in counters for rep in members):
        # A new rep's counter row is made first, and a parallel worker's insert of the same
        # row is no error: then every member has a row for FOR UPDATE to lock.
        dialect = connection.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(RepCounter)
        rows = [{"team": team, "rep": rep, "assigned_total": 0} for rep in members]
        connection.execute(insert.values(rows).on_conflict_do_nothing())
        counters = _lock_counters(connection, team)
    today = _assigned_today(connection, config, members, now)
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


def _lock_counters(connection: Connection, team: str) -> dict[str, Row[Any]]:
    rows = connection.execute(_LOCK_COUNTERS, {"team": team})
    return {counter.rep: counter for counter in rows}


def _assigned_today(
    connection: Connection, config: Config, members: Sequence[str], now: datetime
) -> dict[str, int]:
    """Leads each rep got since midnight in the rep's own time zone, in one query."""
    if not members:
        return {}
    since = {}
    for index, rep in enumerate(members):
        tz = ZoneInfo(config.team.reps[rep].timezone or config.settings.timezone)
        midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
        since[f"since_{index}"] = midnight
    query = _assigned_today_query(tuple(members))
    counts = connection.execute(query, {**since, "since": min(since.values())}).one()
    return {rep: count or 0 for rep, count in zip(members, counts, strict=True)}


@functools.lru_cache(maxsize=64)
def _assigned_today_query(members: tuple[str, ...]) -> Select[Any]:
    """One count per rep since ``since_<n>``, the rep's midnight; built once per team."""
    stamp = ASSIGNMENTS.c.created_at.type
    return select(
        *(
            func.count(ASSIGNMENTS.c.id).filter(
                ASSIGNMENTS.c.rep == rep,
                ASSIGNMENTS.c.created_at >= bindparam(f"since_{index}", type_=stamp),
            )
            for index, rep in enumerate(members)
        )
    ).where(
        ASSIGNMENTS.c.rep.in_(members),
        ASSIGNMENTS.c.created_at >= bindparam("since", type_=stamp),
    )


def route_contact(store: Store, config: Config, contact_id: int, now: datetime) -> list[int]:
    """Assign an MQL once. Returns the ids of the outbox messages to send (none when the
    contact already has an open assignment: a redelivered message changes nothing)."""
    with store.transaction() as connection:
        row = connection.execute(_LOCK_CONTACT, {"contact_id": contact_id}).first()
        if row is None or row.mql_at is None:
            return []
        return [m.id for m in route_locked(connection, config, snapshot(Contact, row), now)]


def route_locked(
    connection: Connection,
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
    params = {"contact_id": contact.id, "domain": contact.email_domain}
    if connection.dialect.name == "postgresql":
        # The assignment's id is drawn now, outside the team's lock: see handover.py.
        query = _OPEN_AND_ACCOUNT_AND_NEXT_ID
        assigned, owner, open_leads, assignment_id = connection.execute(query, params).one()
    else:
        assigned, owner, open_leads = connection.execute(_OPEN_AND_ACCOUNT, params).one()
        assignment_id = None
    if assigned is not None:
        if known is not None:
            update_contact(connection, contact.id, known.contact_changes)
        return []
    account = {} if free_mail(config, contact) else account_of(owner, open_leads)
    routing = decide(connection, config, contact, now, known=known, account=account)
    messages = hand_over(
        connection, config, contact, routing, now, known, claim=claim, assignment_id=assignment_id
    )
    log.info("routed lead %s: %s", contact.id, routing.explanation)
    return messages


@dataclass(frozen=True)
class Known:
    """What the caller has just done to a contact: its latest processed event and score,
    written, and the contact's changed columns, not yet written (they go out with the
    assignment's, in one statement)."""

    event: Event
    score: Score
    contact_changes: dict[str, Any]


@dataclass(frozen=True)
class Routing:
    """A routing decision not yet persisted, with what persisting it needs."""

    event: Event | None
    decision: RouteDecision
    policy: Any  # the SLA policy chosen (config.loader.CompiledSla), or None
    due: datetime | None
    counters: Mapping[str, Mapping[str, Row[Any]]]  # team -> rep -> locked counter row
    explanation: str = ""


def decide(
    connection: Connection,
    config: Config,
    contact: Contact,
    now: datetime,
    exclude: Collection[str] = (),
    known: Known | None = None,
    account: dict[str, Any] | None = None,
) -> Routing:
    """Where the lead goes now, by :func:`rules.decision.decide` with the store's state.
    ``exclude``: reps who must not get it again because they let its SLA pass; they are listed
    as skipped, and an excluded account owner is passed over. ``known``: see
    :func:`route_locked`; else the latest processed event is read. ``account``: the lead's
    :func:`account_facts` when the caller has read them."""
    if known is not None:
        event = known.event
    else:
        row = connection.execute(_LATEST_EVENT, {"contact_id": contact.id}).first()
        event = snapshot(Event, row) if row else None
    if account is None:
        account = account_facts(connection, config, contact)
    state = StoreSnapshot(connection, config, now, account)
    made = decision.decide(
        config,
        lead_view(contact),
        event_facts(event) if event else None,
        state,
        now,
        seed=decision.seed_for(contact.email),
        passed_over=exclude,
    )
    return Routing(event, made.route, made.policy, made.due, state.counters, made.explanation)


def hand_over(
    connection: Connection,
    config: Config,
    contact: Contact,
    routing: Routing,
    now: datetime,
    known: Known | None = None,
    claim: bool = False,
    assignment_id: int | None = None,
) -> list[Message]:
    """Persist a decision: the assignment with its SLA timers, the contact's owner, and the
    outbox messages (claimed for the caller with ``claim``, see :func:`route_locked`). The
    messages are written already; each carries its id. Messages held for a digest are
    written but not returned: the digest tells of them. ``assignment_id``: drawn from the
    sequence by the caller (PostgreSQL), else drawn or inserted here."""
    decision = routing.decision
    values = assignment_values(config, contact, routing, now)
    if assignment_id is None and connection.dialect.name == "postgresql":
        assignment_id = connection.execute(select(handover.NEXT_ASSIGNMENT_ID)).scalar_one()
    if assignment_id is None:
        assignment = Assignment(id=handover.insert_assignment(connection, values), **values)
    else:
        values["id"] = assignment_id
        assignment = Assignment(**values)
    score = known.score if known is not None else _latest_score(connection, contact.id)
    messages = outbox_messages(connection, config, contact, routing, assignment, score, now, claim)
    counted = decision.rep in routing.counters.get(decision.team or "", {})
    plan = handover.HandOver(
        assignment=values if assignment_id is not None else {},
        assignment_id=assignment.id,
        contact_id=contact.id,
        contact_changes=owner_changes(contact, decision.rep, known),
        counter=(decision.team, decision.rep) if counted and decision.rep else None,
        now=now,
        timers=sla_timers(config, routing, now),
        messages=[message_values(message) for message in messages],
        crm_changes=new_mql_changes(
            config, contact, decision.rep, score.score if score else contact.score, now
        ),
    )
    for message, message_id in zip(messages, handover.write(connection, plan), strict=True):
        message.id = message_id
    return [message for message in messages if message.status != HELD]


def _latest_score(connection: Connection, contact_id: int) -> Score | None:
    row = connection.execute(_LATEST_SCORE, {"contact_id": contact_id}).first()
    return snapshot(Score, row) if row else None


def outbox_messages(
    connection: Connection,
    config: Config,
    contact: Contact,
    routing: Routing,
    assignment: Assignment,
    score: Score | None,
    now: datetime,
    claim: bool,
) -> list[Message]:
    """The hand-over's messages, not yet written: held for a digest where the rep has had
    enough lately, else claimed for the caller with ``claim``."""
    decision = routing.decision
    messages = new_lead_messages(config, contact, routing.event, assignment, decision, score)
    hold_for_digest(connection, config, messages, now)
    if claim:
        for message in messages:
            if message.status != HELD:
                message.status, message.claimed_at, message.attempts = "sending", now, 1
    return messages


def sla_timers(config: Config, routing: Routing, now: datetime) -> list[tuple[str, datetime]]:
    """The SLA clock's timers (kind, fire_at): reminders and the breach fire from these rows."""
    rep, policy = routing.decision.rep, routing.policy
    if policy is None or not rep:
        return []
    return [(t.kind, t.fire_at) for t in plan_timers(now, policy.policy, config.calendars.get(rep))]


def owner_changes(contact: Contact, rep: str | None, known: Known | None) -> dict[str, Any]:
    """The contact's columns a hand-over writes: its new owner, with the scoring changes
    not yet written. The caller's contact object (it may belong to a session) learns the
    owner as written."""
    set_committed_value(contact, "owner", rep)
    return {**(known.contact_changes if known else {}), "owner": rep}


def message_values(message: Message) -> dict[str, Any]:
    """The columns a new message sets, by key; the others take their defaults."""
    given = inspect(message).dict
    return {column.key: given[column.key] for column in MESSAGES.c if column.key in given}


class StoreSnapshot:
    """The team state routing reads from the store (:class:`rules.decision.TeamSnapshot`):
    only the teams a matching rule names are counted and their counters locked, not every
    team a later rule names (speed to lead, and no needless lock on other teams' counters)."""

    def __init__(
        self, connection: Connection, config: Config, now: datetime, account: dict[str, Any]
    ) -> None:
        self._connection = connection
        self._config = config
        self._now = now
        self.account = account
        self._made: dict[str, list[RepState]] = {}
        self.counters: dict[str, dict[str, Row[Any]]] = {}

    def members(self, team: str) -> list[RepState]:
        if team not in self._made:
            if team not in self._config.team.teams:
                return []
            states, self.counters[team] = team_states(
                self._connection, self._config, team, self._now
            )
            self._made[team] = states
        return self._made[team]

    def calendar(self, rep: str) -> WorkCalendar | None:
        return self._config.calendars.get(rep)


def assignment_values(
    config: Config, contact: Contact, routing: Routing, now: datetime
) -> dict[str, Any]:
    decision, policy = routing.decision, routing.policy
    return {
        "contact_id": contact.id,
        "event_id": routing.event.id if routing.event else None,
        "rep": decision.rep,
        "team": decision.team,
        "rule": decision.rule,
        "strategy": decision.strategy,
        "reason": decision.reason,
        "skipped": [{"rep": s.name, "reason": s.reason} for s in decision.skipped],
        "seed": decision.seed,
        "sla_policy": policy.name if policy else None,
        "due_at": routing.due,
        "status": "open",
        "public_id": new_public_id(),
        "created_at": now,
    }
