"""Nurture step: contacts join sequences after scoring, and each due step goes out once.

The schedule lives in the store (``nurture_enrolments``: the next step and when it is due), so
a restart loses nothing. The clock claims due rows in batches with one ``UPDATE ... RETURNING``
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, as the outbox claims), spreads what exceeds the
``limits`` to the next opening, and enqueues the rest; a worker then runs one step under the
contact's lock and advances the row in the same transaction as it writes the step's outbox
message, whose key (``lead:<contact>:nurture:<enrolment>:<step>``) cannot be written twice.
Two workers racing on one step therefore send it once.

Which sequence a contact joins, when its steps are due and why it leaves are decided by
:mod:`rules.nurture`, which ``leadwerk nurture plan`` previews.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateNotFound
from sqlalchemy import Connection, Row, and_, bindparam, func, insert, or_, select, text, update

from config.loader import CompiledSequence, Config
from rules.contact import coerce_bool, mask_email
from rules.expr import Context, Expr
from rules.nurture import (
    Active,
    NurtureRules,
    Plan,
    SendWindow,
    StepRules,
    exit_reason,
    plan_contact,
    send_calendar,
    step_time,
    window_zone,
)
from rules.scoring import contact_view
from worker.pipeline.crm import lead_fields, record
from worker.pipeline.hygiene import hard_bounced, hard_bounced_among, list_suspended, suppressed
from worker.pipeline.notify import (
    _html_env,
    channel_for,
    display_name,
    message_id_domain,
    template_env,
)
from worker.store.bulk import among, insert_rows
from worker.store.db import Store
from worker.store.models import (
    ASSIGNMENTS,
    CONTACTS,
    ENROLMENTS,
    EVENTS,
    MESSAGES,
    REFUSALS,
    Contact,
    Event,
    Message,
    NurturePause,
    snapshot,
)
from worker.web.unsubscribe import unsubscribe_url

log = logging.getLogger("leadwerk.nurture")

NURTURE_FLAGS = ("replied", "unsubscribed", "bounced", "stale")
# Stages in which a contact counts as an MQL for ``exit_when``: handed to sales.
MQL_STAGES = ("mql", "sal", "sql")
# An event of this type, from any source, means the contact wrote back.
REPLY_EVENT = "reply"
# Holding an enrolment: active (due steps go out) or paused (frozen by a paused sequence).
HELD = ("active", "paused")
# A step the clock enqueued is not enqueued again before this, unless a worker finished it.
ENQUEUE_LEASE = timedelta(minutes=5)
# Due rows per claim, and enrolments per queue message. Each claim walks the due index from
# its start, past the rows claimed before it: 100,000 due rows claimed 20,000 at a time took
# 3.4x as long as one select of them, in one claim 1.7-3.9x (bench/bench_nurture.py).
CLAIM_BATCH = 100_000
MESSAGE_BATCH = 500
CALL_TASK = "call_task"


# --- the rules of a loaded config -----------------------------------------------------------


@dataclass(frozen=True)
class _Sequence:
    """A compiled sequence of ``nurture.yaml`` as :mod:`rules.nurture` reads it."""

    name: str
    channel: str
    steps: Sequence[StepRules]
    enroll_when: Expr
    exit_when: Expr | None

    @classmethod
    def of(cls, compiled: CompiledSequence) -> _Sequence:
        model = compiled.model
        return cls(
            compiled.name, model.channel, model.steps, compiled.enroll_when, compiled.exit_when
        )


def nurture_rules(config: Config, default_timezone: str | None = None) -> NurtureRules:
    """The nurture rules of a loaded config (built once per config)."""
    zone = default_timezone or config.settings.timezone
    cached = _RULES.get(id(config))
    if cached is not None and cached[0] is config and cached[1].default_timezone == zone:
        return cached[1]
    window = config.nurture.send_window
    rules = NurtureRules(
        sequences=[_Sequence.of(s) for s in config.sequences],
        window=SendWindow(window.days, window.hours, window.timezone),
        consent_field=config.nurture.consent_field,
        default_timezone=zone,
    )
    _RULES.clear()  # one config at a time: a reload replaces it
    _RULES[id(config)] = (config, rules)
    return rules


_RULES: dict[int, tuple[Config, NurtureRules]] = {}


def _sequence(rules: NurtureRules, name: str) -> _Sequence | None:
    return next((s for s in rules.sequences if s.name == name), None)  # type: ignore[misc]


# --- the contact as exit_when reads it ------------------------------------------------------


def nurture_view(
    config: Config,
    contact: Contact,
    events: Iterable[Event | Row[Any]],
    now: datetime,
    mql: bool | None = None,
    bounced: bool = False,
) -> dict[str, Any]:
    """The contact as nurture's expressions read it: fields, score, stage and nurture flags.

    ``replied``: an event of type ``reply`` from any source; ``unsubscribed``: the one-click
    link was used; ``bounced``: see :func:`is_suppressed`; ``stale``: no event for longer than
    ``hygiene.yaml``'s ``stale.no_engagement_for``."""
    view = contact_view({**contact.fields, "email": contact.email})
    view.update(
        score=contact.score,
        fit=contact.fit,
        engagement=contact.engagement,
        mql=contact.stage in MQL_STAGES if mql is None else mql,
    )
    last_event: datetime | None = None
    replied = False
    for event in events:
        replied = replied or event.type == REPLY_EVENT
        if last_event is None or event.occurred_at > last_event:
            last_event = event.occurred_at
    stale_after = config.hygiene.stale.no_engagement_for if config.hygiene.stale else None
    view["replied"] = replied or bool(coerce_bool("replied", contact.fields.get("replied")))
    view["unsubscribed"] = contact.unsubscribed_at is not None
    view["bounced"] = bounced
    view["stale"] = bool(stale_after and last_event and now - last_event > stale_after)
    return view


def is_suppressed(connection: Connection, contact: Contact) -> bool:
    """Whether nothing may be mailed to the contact's address: it unsubscribed, or list
    hygiene classified it hard-bounced. The one place nurture asks before an e-mail step."""
    return contact.unsubscribed_at is not None or suppressed(connection, contact.id) is not None


# While a list is suspended, its contacts' e-mail steps wait and are looked at again this often.
SUSPENDED_LIST_RECHECK = timedelta(days=1)


# --- enrolment, after scoring ---------------------------------------------------------------


@dataclass
class RunFacts:
    """What :func:`after_score` reads of a batch run's contacts, read at once, and the rows
    it writes, written at once (:func:`read_run_facts`, :func:`write_run_facts`): a
    backlog's events are otherwise three or four round trips each."""

    bounced: set[int]
    held: dict[int, list[Row[Any]]]
    paused: dict[str, datetime] | None = None  # read when a first enrolment needs it
    enrolments: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)


_HELD_OF = select(
    ENROLMENTS.c.id, ENROLMENTS.c.contact_id, ENROLMENTS.c.sequence, ENROLMENTS.c.channel
).where(ENROLMENTS.c.status.in_(HELD))
_PAUSES = select(NurturePause.sequence, NurturePause.paused_at)


def read_run_facts(connection: Connection, contact_ids: Sequence[int]) -> RunFacts:
    """The run's contacts' hard bounces and held enrolments, and the paused sequences."""
    ids = list(contact_ids)
    held: dict[int, list[Row[Any]]] = {}
    held_of = _HELD_OF.where(among(connection.dialect.name, ENROLMENTS.c.contact_id, ids))
    for row in connection.execute(held_of):
        held.setdefault(row.contact_id, []).append(row)
    return RunFacts(bounced=hard_bounced_among(connection, ids), held=held)


def write_run_facts(connection: Connection, facts: RunFacts) -> None:
    insert_rows(connection, REFUSALS, facts.refusals)
    insert_rows(connection, ENROLMENTS, facts.enrolments)


def after_score(
    connection: Connection,
    config: Config,
    contact: Contact,
    events: Sequence[Event | Row[Any]],
    event_id: int,
    mql: bool,
    now: datetime,
    facts: RunFacts | None = None,
) -> None:
    """Nurture's part of scoring an event, in the scoring transaction (the contact is locked).

    Enrolments whose ``exit_when`` now holds end at once (an MQL leaves as scoring makes it
    one, a ``reply`` event ends what it answers); then the new event is checked against the
    sequences' ``enroll_when``, first match wins, and the enrolment or its refusal is stored.
    ``facts``: what a batch run read at once; the new rows are left in it for the caller to
    write."""
    rules = nurture_rules(config)
    if not rules.sequences:
        return
    from worker.pipeline.score import event_facts

    on_its_own = facts is None
    if facts is None:
        facts = read_run_facts(connection, [contact.id])
    view = nurture_view(
        config,
        contact,
        events,
        now,
        mql=mql or contact.stage in MQL_STAGES,
        bounced=contact.id in facts.bounced,
    )
    ctx = Context(contact=view, event=None, now=now)
    active = []
    for row in facts.held.get(contact.id, ()):
        sequence = _sequence(rules, row.sequence)
        reason = exit_reason(sequence, ctx) if sequence else None
        if reason:
            _end(connection, row.id, "exited", reason, now)
        else:
            active.append(Active(row.sequence, row.channel))
    event = next((e for e in events if e.id == event_id), None)
    if event is not None:
        plan = plan_contact(rules, view, [event_facts(event)], active, now)
        _enrol(connection, facts, plan, contact.id, event_id, now)
    if on_its_own:
        write_run_facts(connection, facts)


def _enrol(
    connection: Connection,
    facts: RunFacts,
    plan: Plan,
    contact_id: int,
    event_id: int,
    now: datetime,
) -> None:
    """The planned enrolment or its refusal, as a row for ``facts``."""
    if plan.sequence is None or plan.refused == "already_enrolled":
        return
    if plan.refused:
        facts.refusals.append(
            {
                "contact_id": contact_id,
                "event_id": event_id,
                "sequence": plan.sequence,
                "channel": plan.channel,
                "reason": plan.refused,
                "at": now,
            }
        )
        log.info("lead %s not enrolled in %s: %s", contact_id, plan.sequence, plan.refused)
        return
    first = plan.steps[0].at
    if facts.paused is None:
        facts.paused = {row.sequence: row.paused_at for row in connection.execute(_PAUSES)}
    paused = plan.sequence in facts.paused
    facts.enrolments.append(
        {
            "contact_id": contact_id,
            "sequence": plan.sequence,
            "channel": plan.channel,
            "step": 1,
            "planned_at": first,
            "next_due_at": first,
            "status": "paused" if paused else "active",
            "paused_at": now if paused else None,
            "call_tasks": 0,
            "enrolled_at": now,
            "updated_at": now,
        }
    )
    log.info("lead %s enrolled in %s, first step %s", contact_id, plan.sequence, first)


def _end(
    connection: Connection, enrolment_id: int, status: str, reason: str | None, now: datetime
) -> None:
    connection.execute(
        update(ENROLMENTS)
        .where(ENROLMENTS.c.id == enrolment_id)
        .values(
            status=status, exit_reason=reason, next_due_at=None, enqueued_at=None, updated_at=now
        )
    )


# --- the clock: claim due steps, spread what exceeds the limits, enqueue ------------------------


def _claim_statement(dialect: str, for_limits: bool) -> Any:
    """Claim a batch of due rows. Without limits only their ids come back, which costs as
    much as selecting them (the row is rewritten in place: see the table's fillfactor);
    with limits, what the limits need of each row and its contact, by a join."""
    due = (
        select(ENROLMENTS.c.id)
        .where(
            ENROLMENTS.c.status == "active",
            ENROLMENTS.c.next_due_at <= bindparam("now"),
            or_(
                ENROLMENTS.c.enqueued_at.is_(None),
                ENROLMENTS.c.enqueued_at < bindparam("lease_start"),
            ),
        )
        .order_by(ENROLMENTS.c.next_due_at)
        .limit(bindparam("batch"))
    )
    # With each row, what the limits need of its contact: the recipient domain, and the
    # fields its send window is read in.
    contact = (
        CONTACTS.c.email_domain.label("domain"),
        CONTACTS.c.fields["country"].as_string().label("country"),
        CONTACTS.c.fields["timezone"].as_string().label("timezone"),
    )
    claim = update(ENROLMENTS).values(enqueued_at=bindparam("now"))
    if dialect == "postgresql":
        due = due.with_for_update(of=ENROLMENTS, skip_locked=True)
    if not for_limits:
        return claim.where(ENROLMENTS.c.id.in_(due.scalar_subquery())).returning(ENROLMENTS.c.id)
    returned = (ENROLMENTS.c.id, ENROLMENTS.c.contact_id, ENROLMENTS.c.channel)
    returned += (ENROLMENTS.c.next_due_at,)
    if dialect == "postgresql":
        # UPDATE ... FROM contacts: one join, where a lookup per row and column costs 3x.
        return claim.where(
            ENROLMENTS.c.id.in_(due.scalar_subquery()),
            CONTACTS.c.id == ENROLMENTS.c.contact_id,
        ).returning(*returned, *contact)
    # SQLite's RETURNING reads only the updated table: the contact comes by subqueries.
    by_contact = [
        select(value).where(CONTACTS.c.id == ENROLMENTS.c.contact_id).scalar_subquery()
        for value in contact
    ]
    return claim.where(ENROLMENTS.c.id.in_(due.scalar_subquery())).returning(
        *returned,
        *(query.label(value.name) for query, value in zip(by_contact, contact, strict=True)),
    )


_CLAIMS = {
    (dialect, for_limits): _claim_statement(dialect, for_limits)
    for dialect in ("postgresql", "sqlite")
    for for_limits in (False, True)
}
_PUSH = (
    update(ENROLMENTS)
    .where(ENROLMENTS.c.id == bindparam("enrolment_id"))
    .values(next_due_at=bindparam("due"), enqueued_at=None)
)


def _push(connection: Connection, later: list[dict[str, Any]]) -> None:
    """New due times for many rows: on PostgreSQL one statement joining two arrays (a
    statement per row costs a round trip each, and SQLAlchemy compiles a ``VALUES`` list of
    5,000 rows in a second), on SQLite a prepared statement run for each row, without round
    trips."""
    if connection.dialect.name != "postgresql":
        connection.execute(_PUSH, later)
        return
    connection.execute(
        _PUSH_MANY,
        {"ids": [i["enrolment_id"] for i in later], "dues": [i["due"] for i in later]},
    )


_PUSH_MANY = text(
    "UPDATE nurture_enrolments SET next_due_at = pushed.due, enqueued_at = NULL "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:dues AS timestamptz[])) AS pushed (id, due) "
    "WHERE nurture_enrolments.id = pushed.id"
)


@dataclass
class Pass:
    """What one clock pass did: steps enqueued, and steps moved to a later opening by limits."""

    enqueued: list[int] = field(default_factory=list)
    spread: int = 0


def claim_due_steps(store: Store, config: Config, now: datetime, batch: int = CLAIM_BATCH) -> Pass:
    """Claim the steps due at ``now``; those within the limits are returned to be enqueued,
    the surplus is moved to the next opening (never dropped)."""
    result = Pass()
    limits = config.nurture.limits
    for_limits = limits.per_minute is not None or limits.per_domain_per_day is not None
    claim = _CLAIMS[("postgresql" if store.dialect == "postgresql" else "sqlite", for_limits)]
    params = {"now": now, "lease_start": now - ENQUEUE_LEASE, "batch": batch}
    while True:
        with store.transaction() as connection:
            if not for_limits:
                ids = list(connection.execute(claim, params).scalars())
                result.enqueued.extend(ids)
                if len(ids) < batch:
                    return result
                continue
            rows = connection.execute(claim, params).all()
            if not rows:
                return result
            rows.sort(key=lambda r: (r.next_due_at, r.id))
            go, later = _within_limits(connection, config, rows, now)
            if later:
                _push(connection, later)
        result.enqueued.extend(r.id for r in go)
        result.spread += len(later)
        if len(rows) < batch:
            return result


def _within_limits(
    connection: Connection, config: Config, rows: Sequence[Row[Any]], now: datetime
) -> tuple[list[Row[Any]], list[dict[str, Any]]]:
    """Rows that may go now, and the new due times of those over ``limits``: an e-mail over
    its domain's day goes at the first opening of the next (UTC) day, one over the minute's
    budget at the first opening of a later minute, as many per minute as the limit allows."""
    limits = config.nurture.limits
    if not any(r.channel == "email" for r in rows):
        return list(rows), []
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sent_minute, sent_domain = _recent_emails(
        connection, now - timedelta(minutes=1), day_start, now
    )
    per_domain: Counter[str] = Counter(sent_domain)
    minute_used = sent_minute
    go: list[Row[Any]] = []
    over_day: list[Row[Any]] = []
    over_minute: list[Row[Any]] = []
    for row in rows:
        if row.channel != "email":
            go.append(row)
        elif (
            limits.per_domain_per_day is not None
            and per_domain[row.domain] >= limits.per_domain_per_day
        ):
            over_day.append(row)
        elif limits.per_minute is not None and minute_used >= limits.per_minute:
            over_minute.append(row)
        else:
            per_domain[row.domain] += 1
            minute_used += 1
            go.append(row)
    if not over_day and not over_minute:
        return go, []
    rules = nurture_rules(config)
    openings: dict[tuple[Any, datetime], datetime] = {}

    def opening(row: Row[Any], at: datetime) -> datetime:
        """The contact's next opening at or after ``at``; contacts in one zone and country
        share their calendar, so each (calendar, time) is worked out once per pass."""
        calendar = send_calendar(rules, {"country": row.country, "timezone": row.timezone})
        key = (id(calendar), at)
        if key not in openings:
            openings[key] = calendar.next_open(at)
        return openings[key]

    next_day = day_start + timedelta(days=1)
    later = [{"enrolment_id": row.id, "due": opening(row, next_day)} for row in over_day]
    per_minute = limits.per_minute or 1
    for index, row in enumerate(over_minute):
        minute = now + timedelta(minutes=index // per_minute + 1)
        later.append({"enrolment_id": row.id, "due": opening(row, minute)})
    return go, later


def _recent_emails(
    connection: Connection,
    minute_start: datetime,
    day_start: datetime,
    now: datetime,
) -> tuple[int, dict[str, int]]:
    """Nurture e-mails written in the last minute, and today per recipient domain."""
    nurture = and_(MESSAGES.c.purpose.like("nurture:%"), MESSAGES.c.created_at <= now)
    minute = connection.execute(
        select(func.count()).where(nurture, MESSAGES.c.created_at > minute_start)
    ).scalar_one()
    by_domain = connection.execute(
        select(CONTACTS.c.email_domain, func.count())
        .join_from(MESSAGES, CONTACTS, MESSAGES.c.contact_id == CONTACTS.c.id)
        .where(nurture, MESSAGES.c.created_at >= day_start)
        .group_by(CONTACTS.c.email_domain)
    ).all()
    return int(minute), {domain: int(count) for domain, count in by_domain}


def enqueue_due_steps(store: Store, config: Config, now: datetime) -> Pass:
    """The clock's nurture job: claim what is due and enqueue it, a batch per queue message.
    ``now`` travels with the message, so ``run --once --now`` runs steps as of that time."""
    from worker.pipeline.actors import run_nurture_steps

    done = claim_due_steps(store, config, now)
    for start in range(0, len(done.enqueued), MESSAGE_BATCH):
        run_nurture_steps.send(done.enqueued[start : start + MESSAGE_BATCH], now.isoformat())
    return done


# --- one step -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallTask:
    """A phone step: who calls whom, about what. What a CRM gets as a task."""

    enrolment_id: int
    contact_id: int
    sequence: str
    step: int
    task: str
    owner: str | None
    recipients: tuple[str, ...]
    due_at: datetime


@dataclass
class StepResult:
    """What running a step did: ``sent`` (messages written), ``exited``, ``finished``,
    ``skipped`` (not due, or another worker had it); the outbox messages to send now."""

    status: str
    messages: list[int] = field(default_factory=list)
    task: CallTask | None = None


_LOCK_CONTACT = select(CONTACTS).where(CONTACTS.c.id == bindparam("contact_id")).with_for_update()
# Every event, scored or not: a reply that came in counts before it is scored.
_CONTACT_EVENTS = select(EVENTS).where(EVENTS.c.contact_id == bindparam("contact_id"))


def run_step(store: Store, config: Config, enrolment_id: int, now: datetime) -> StepResult:
    """Run an enrolment's due step once: exit when ``exit_when`` (or consent, or suppression)
    says so, else write its outbox message(s) and plan the next step, in one transaction."""
    with store.transaction() as connection:
        contact_id = connection.execute(
            select(ENROLMENTS.c.contact_id).where(ENROLMENTS.c.id == enrolment_id)
        ).scalar_one_or_none()
        if contact_id is None:
            return StepResult("skipped")
        # The contact before its enrolment: the order scoring locks them in.
        contact_row = connection.execute(_LOCK_CONTACT, {"contact_id": contact_id}).first()
        enrolment = connection.execute(
            select(ENROLMENTS).where(ENROLMENTS.c.id == enrolment_id).with_for_update()
        ).first()
        if (
            contact_row is None
            or enrolment is None
            or enrolment.status != "active"
            or enrolment.next_due_at is None
            or enrolment.next_due_at > now
        ):
            return StepResult("skipped")
        contact = snapshot(Contact, contact_row)
        events = [
            snapshot(Event, r)
            for r in connection.execute(_CONTACT_EVENTS, {"contact_id": contact_id})
        ]
        return _step(connection, config, enrolment, contact, events, now)


def _step(
    connection: Connection,
    config: Config,
    enrolment: Row[Any],
    contact: Contact,
    events: list[Event],
    now: datetime,
) -> StepResult:
    rules = nurture_rules(config)
    sequence = _sequence(rules, enrolment.sequence)
    if sequence is None:
        _end(connection, enrolment.id, "exited", "sequence removed from nurture.yaml", now)
        return StepResult("exited")
    view = nurture_view(config, contact, events, now, bounced=hard_bounced(connection, contact.id))
    reason = exit_reason(sequence, Context(contact=view, event=None, now=now))
    if reason is None and sequence.channel == "email":
        if rules.consent_field and view.get(rules.consent_field) is not True:
            reason = "no_consent"
        elif is_suppressed(connection, contact):
            reason = "suppressed"
    if reason is not None:
        _end(connection, enrolment.id, "exited", reason, now)
        log.info(
            "lead %s left %s before step %s: %s", contact.id, sequence.name, enrolment.step, reason
        )
        return StepResult("exited")
    if sequence.channel == "email" and list_suspended(connection, contact.id):
        # Its list bounces too much: the step waits until an admin resumes the list.
        connection.execute(
            update(ENROLMENTS)
            .where(ENROLMENTS.c.id == enrolment.id)
            .values(next_due_at=now + SUSPENDED_LIST_RECHECK, enqueued_at=None, updated_at=now)
        )
        return StepResult("skipped")
    n = enrolment.step
    if n > len(sequence.steps):
        _end(connection, enrolment.id, "finished", None, now)
        return StepResult("finished")
    step = sequence.steps[n - 1]
    task = None
    if sequence.channel == "email":
        messages = [_email(config, enrolment, contact, events, step, now)]
    else:
        task, messages = _call_task(connection, config, enrolment, contact, events, step, now)
        _task_to_crm(connection, config, contact, task, now)
    ids = [
        connection.execute(
            insert(MESSAGES).values(**_values(m)).returning(MESSAGES.c.id)
        ).scalar_one()
        for m in messages
    ]
    values: dict[str, Any] = {"updated_at": now, "enqueued_at": None, "step": n + 1}
    if task is not None:
        values["call_tasks"] = enrolment.call_tasks + 1
    if n == len(sequence.steps):
        values.update(status="finished", next_due_at=None)
    else:
        planned = step_time(rules, sequence, view, enrolment.planned_at or now, n + 1)
        values.update(planned_at=planned, next_due_at=planned)
    advanced = connection.execute(
        update(ENROLMENTS)
        .where(
            ENROLMENTS.c.id == enrolment.id, ENROLMENTS.c.step == n, ENROLMENTS.c.status == "active"
        )
        .values(**values)
    ).rowcount
    if not advanced:  # cannot happen under the lock; kept as the guard it documents
        raise RuntimeError(f"enrolment {enrolment.id} moved while locked")
    return StepResult("sent", ids, task)


def _values(message: Message) -> dict[str, Any]:
    return {
        c.key: getattr(message, c.key) for c in MESSAGES.c if getattr(message, c.key) is not None
    }


def _email(
    config: Config,
    enrolment: Row[Any],
    contact: Contact,
    events: list[Event],
    step: StepRules,
    now: datetime,
) -> Message:
    """The step's e-mail, rendered from ``<template>.subject.j2``, ``.txt.j2`` and (when it
    exists) ``.html.j2``; it carries the one-click unsubscribe headers (see notify)."""
    from worker.pipeline.score import event_facts

    env = template_env(config.directory)
    latest = max(events, key=lambda e: (e.occurred_at, e.id)) if events else None
    facts = {
        "contact": {
            "id": contact.id,
            "name": display_name(contact),
            "first_name": contact.fields.get("first_name"),
            "last_name": contact.fields.get("last_name"),
            "email": contact.email,
            "company": contact.fields.get("company"),
            "title": contact.fields.get("title"),
            "country": contact.fields.get("country"),
        },
        "event": event_facts(latest) if latest else {},
        "sequence": enrolment.sequence,
        "step": enrolment.step,
        "unsubscribe_url": unsubscribe_url(config.settings, contact.id),
    }
    name = str(step.template)
    subject = env.get_template(f"{name}.subject.j2").render(facts).strip()
    text = env.get_template(f"{name}.txt.j2").render(facts)
    try:
        html: str | None = _html_env(env).get_template(f"{name}.html.j2").render(facts)
    except TemplateNotFound:
        html = None
    return Message(
        key=nurture_key(contact.id, enrolment.id, enrolment.step),
        contact_id=contact.id,
        purpose=f"nurture:{enrolment.sequence}:{enrolment.step}",
        channel="email",
        recipient=contact.email,
        recipient_name=display_name(contact),
        subject=subject,
        body_text=text,
        body_html=html,
        message_id=f"<nurture-{enrolment.id}.{enrolment.step}@{message_id_domain(config)}>",
        status="pending",
        attempts=0,
        resent_after_crash=0,
        created_at=now,
    )


def nurture_key(contact_id: int, enrolment_id: int, step: int) -> str:
    """The outbox key of a step: written once, so the step is sent once. It starts with the
    lead, as every outbox key does, so erasing the lead finds its file-outbox copies."""
    return f"lead:{contact_id}:nurture:{enrolment_id}:{step}"


def call_task_owner(connection: Connection, config: Config, contact: Contact) -> tuple[str, ...]:
    """Who makes a call: the contact's rep, else the manager of the team it was routed to,
    else the fallback managers of ``routing.yaml``."""
    reps = config.team.reps
    if contact.owner and contact.owner in reps:
        return (contact.owner,)
    team = connection.execute(
        select(ASSIGNMENTS.c.team)
        .where(ASSIGNMENTS.c.contact_id == contact.id, ASSIGNMENTS.c.team.is_not(None))
        .order_by(ASSIGNMENTS.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    manager = config.team.teams[team].manager if team in config.team.teams else None
    if manager and manager in reps:
        return (manager,)
    return tuple(name for name in config.fallback if name in reps)


def _call_task(
    connection: Connection,
    config: Config,
    enrolment: Row[Any],
    contact: Contact,
    events: list[Event],
    step: StepRules,
    now: datetime,
) -> tuple[CallTask, list[Message]]:
    """A phone step: a call task for the owner, told on their channel with the contact's
    phone, local time and history."""
    recipients = call_task_owner(connection, config, contact)
    task = CallTask(
        enrolment.id,
        contact.id,
        enrolment.sequence,
        enrolment.step,
        str(step.task),
        contact.owner,
        recipients,
        now,
    )
    if not recipients:
        log.error(
            "lead %s: call task '%s' has nobody to go to (no owner, no team manager, no "
            "fallback in routing.yaml); counted, not sent",
            contact.id,
            step.task,
        )
    env = template_env(config.directory)
    zone = window_zone(nurture_rules(config), {**contact.fields})
    history = [
        f"{e.occurred_at.astimezone(ZoneInfo(zone)):%d %b %Y}: {e.type} via {e.source}"
        + "".join(
            f", {k} {e.attrs[k]}" for k in ("form", "asset", "fair", "rating") if e.attrs.get(k)
        )
        for e in sorted(events, key=lambda e: e.occurred_at, reverse=True)[:10]
    ]
    messages = []
    for name in recipients:
        rep = config.team.reps[name]
        facts = {
            "lead": {
                "id": contact.id,
                "name": display_name(contact),
                "email": contact.email,
                "company": contact.fields.get("company"),
                "phone": contact.fields.get("phone"),
            },
            "rep": {"id": name, "name": rep.name},
            "task": step.task,
            "sequence": enrolment.sequence,
            "step": enrolment.step,
            "local_time": now.astimezone(ZoneInfo(zone)).strftime("%a %H:%M %Z") + f" ({zone})",
            "history": history,
        }
        channel = channel_for(config, rep)
        messages.append(
            Message(
                key=f"{nurture_key(contact.id, enrolment.id, enrolment.step)}:call:{name}",
                contact_id=contact.id,
                purpose=CALL_TASK,
                channel=channel,
                recipient=rep.slack if channel == "slack" else rep.email,
                recipient_name=rep.name,
                rep=name,
                subject=env.get_template(f"{CALL_TASK}.subject.j2").render(facts).strip(),
                body_text=env.get_template(f"{CALL_TASK}.txt.j2").render(facts),
                message_id=f"<call-{enrolment.id}.{enrolment.step}.{name}@{message_id_domain(config)}>",
                status="pending",
                attempts=0,
                resent_after_crash=0,
                created_at=now,
            )
        )
    return task, messages


def _task_to_crm(
    connection: Connection, config: Config, contact: Contact, task: CallTask, now: datetime
) -> None:
    """A call task goes to the CRM through its outbox, in the step's transaction; a nurtured
    contact is no MQL yet, so it is upserted first (as it stands), then given the task."""
    fields = lead_fields(contact.fields, contact.score)
    upsert = {"fields": fields, "rep": task.owner, "stage": contact.stage}
    record(connection, config, contact, "upsert", upsert, now)
    due = task.due_at.isoformat()
    record(
        connection,
        config,
        contact,
        "task",
        {"subject": task.task, "due": due, "rep": task.owner},
        now,
    )


# --- unsubscribe, pause and resume ----------------------------------------------------------


def unsubscribe(store: Store, contact_id: int, now: datetime) -> bool:
    """Record a one-click unsubscribe: no nurture e-mail goes to the contact again, and its
    e-mail enrolments end before their next step. False when the contact is unknown."""
    with store.transaction() as connection:
        found = connection.execute(
            update(CONTACTS)
            .where(CONTACTS.c.id == contact_id)
            .values(unsubscribed_at=func.coalesce(CONTACTS.c.unsubscribed_at, now))
        ).rowcount
        if not found:
            return False
        connection.execute(
            update(ENROLMENTS)
            .where(
                ENROLMENTS.c.contact_id == contact_id,
                ENROLMENTS.c.channel == "email",
                ENROLMENTS.c.status.in_(HELD),
            )
            .values(
                status="exited",
                exit_reason="unsubscribed",
                next_due_at=None,
                enqueued_at=None,
                updated_at=now,
            )
        )
    return True


def pause(store: Store, sequence: str, now: datetime) -> int:
    """Freeze a sequence: its contacts get no step until it is resumed. Returns how many."""
    with store.transaction() as connection:
        if connection.execute(
            select(NurturePause.sequence).where(NurturePause.sequence == sequence)
        ).first():
            return 0
        connection.execute(insert(NurturePause).values(sequence=sequence, paused_at=now))
        return int(
            connection.execute(
                update(ENROLMENTS)
                .where(ENROLMENTS.c.sequence == sequence, ENROLMENTS.c.status == "active")
                .values(status="paused", paused_at=now, updated_at=now)
            ).rowcount
            or 0
        )


def resume(store: Store, sequence: str, now: datetime) -> int | None:
    """Unfreeze a sequence; each contact's dates move on by as long as it was paused, so the
    spacing between steps stays as planned. ``None`` when the sequence was not paused."""
    with store.transaction() as connection:
        paused = connection.execute(
            select(NurturePause.paused_at).where(NurturePause.sequence == sequence)
        ).first()
        if paused is None:
            return None
        rows = connection.execute(
            select(
                ENROLMENTS.c.id,
                ENROLMENTS.c.planned_at,
                ENROLMENTS.c.next_due_at,
                ENROLMENTS.c.paused_at,
            ).where(ENROLMENTS.c.sequence == sequence, ENROLMENTS.c.status == "paused")
        ).all()
        shifted = [
            {
                "enrolment_id": row.id,
                "planned": row.planned_at + (now - (row.paused_at or paused.paused_at)),
                "due": row.next_due_at + (now - (row.paused_at or paused.paused_at)),
            }
            for row in rows
            if row.next_due_at is not None and row.planned_at is not None
        ]
        if shifted:
            connection.execute(
                update(ENROLMENTS)
                .where(ENROLMENTS.c.id == bindparam("enrolment_id"))
                .values(
                    status="active",
                    planned_at=bindparam("planned"),
                    next_due_at=bindparam("due"),
                    paused_at=None,
                    enqueued_at=None,
                    updated_at=now,
                ),
                shifted,
            )
        connection.execute(NurturePause.__table__.delete().where(NurturePause.sequence == sequence))
        return len(shifted)


# --- status -----------------------------------------------------------------------------------


def status(store: Store, config: Config) -> dict[str, dict[str, Any]]:
    """Per sequence: active, paused, finished, exited by reason, e-mails sent, call tasks made,
    refused by reason (``refused_channel`` the channel conflicts)."""
    names = [s.name for s in config.sequences]
    with store.transaction() as connection:
        counts = connection.execute(
            select(
                ENROLMENTS.c.sequence,
                ENROLMENTS.c.status,
                ENROLMENTS.c.exit_reason,
                func.count(),
                func.sum(ENROLMENTS.c.call_tasks),
            ).group_by(ENROLMENTS.c.sequence, ENROLMENTS.c.status, ENROLMENTS.c.exit_reason)
        ).all()
        refused = connection.execute(
            select(REFUSALS.c.sequence, REFUSALS.c.reason, func.count()).group_by(
                REFUSALS.c.sequence, REFUSALS.c.reason
            )
        ).all()
        paused = set(connection.execute(select(NurturePause.sequence)).scalars())
        sent = connection.execute(
            select(MESSAGES.c.purpose, func.count())
            .where(MESSAGES.c.purpose.like("nurture:%"), MESSAGES.c.status == "sent")
            .group_by(MESSAGES.c.purpose)
        ).all()
    report: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        if name not in report:
            report[name] = {
                "paused": name in paused,
                "active": 0,
                "paused_contacts": 0,
                "finished": 0,
                "exited": {},
                "emails_sent": 0,
                "call_tasks": 0,
                "refused_channel": 0,
                "refused": {},
            }
        return report[name]

    for name in names:
        entry(name)
    for purpose, count in sent:  # nurture:<sequence>:<step>
        entry(purpose.split(":")[1])["emails_sent"] += count
    for sequence, state, reason, count, calls in counts:
        item = entry(sequence)
        item["call_tasks"] += int(calls or 0)
        if state == "exited":
            item["exited"][reason or "?"] = item["exited"].get(reason or "?", 0) + count
        elif state == "paused":
            item["paused_contacts"] += count
        elif state in ("active", "finished"):
            item[state] += count
    for sequence, reason, count in refused:
        item = entry(sequence)
        item["refused"][reason] = count
        if reason == "channel_conflict":
            item["refused_channel"] = count
    return report


def describe_enrolments(store: Store, config: Config, limit: int = 20) -> list[str]:
    """The contacts in a sequence and their next step, in the contact's time, for a person."""
    rules = nurture_rules(config)
    with store.transaction() as connection:
        rows = connection.execute(
            select(ENROLMENTS, CONTACTS.c.email, CONTACTS.c.fields)
            .join_from(ENROLMENTS, CONTACTS, ENROLMENTS.c.contact_id == CONTACTS.c.id)
            .where(ENROLMENTS.c.status.in_(HELD))
            .order_by(ENROLMENTS.c.next_due_at)
            .limit(limit)
        ).all()
    lines = []
    for row in rows:
        sequence = _sequence(rules, row.sequence)
        if sequence is None or row.next_due_at is None:
            continue
        zone = ZoneInfo(window_zone(rules, row.fields or {}))
        step = sequence.steps[row.step - 1]
        lines.append(
            f"  nurture: {mask_email(row.email):28} {row.sequence} ({row.channel}), step "
            f"{row.step} of {len(sequence.steps)} ({step.template or step.task}) "
            f"{'paused' if row.status == 'paused' else 'due'} "
            f"{row.next_due_at.astimezone(zone):%a %d %b %Y %H:%M %Z}"
        )
    return lines


def describe_status(report: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The status as lines for a person."""
    if not report:
        return ["no sequences in nurture.yaml"]
    lines = []
    for name, item in report.items():
        exited = ", ".join(f"{k} {v}" for k, v in sorted(item["exited"].items())) or "none"
        head = f"{name}{' (paused)' if item['paused'] else ''}:"
        lines.append(
            f"{head} active {item['active']}, paused {item['paused_contacts']}, finished "
            f"{item['finished']}, exited {sum(item['exited'].values())} ({exited}); "
            f"e-mails sent {item['emails_sent']}, call tasks {item['call_tasks']}; "
            f"refused for channel {item['refused_channel']}"
        )
    return lines
