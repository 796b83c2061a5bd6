"""The store: the truth about every lead. The queue is only a doorbell.

Every piece of pending work can be derived from these tables (an event not yet scored, an MQL
not yet routed, a message not yet sent), so a lost queue message costs a delay, never a lead.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # On SQLite, where every date is text, each value in one call: the two conversions above
    # and the text SQLAlchemy's DateTime reads and writes ("2026-04-21 09:30:00.000000")
    # took three Python calls a value, 5 % of a backlog's CPU. Each is kept for the values
    # met last: a batch stamps its rows with one time (bench_backlog's 10,000 leads: 1,300
    # distinct times in 170,000 conversions). Equal times are one instant, so one text.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime


@functools.lru_cache(maxsize=4096)
def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC and value.tzinfo is not None:  # a naive one is UTC already
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the offset


@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


ModelT = TypeVar("ModelT", bound=Base)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_domain: Mapped[str] = mapped_column(String(255), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    source: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(20), default="lead")
    score: Mapped[float | None] = mapped_column(Float)
    fit: Mapped[float | None] = mapped_column(Float)
    engagement: Mapped[float | None] = mapped_column(Float)
    mql_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # When the sweep last enqueued it for routing.
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set by the hygiene sweep when the contact has shown no engagement for
    # ``stale.no_engagement_for``; cleared when it engages again.
    stale_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Event(Base):
    """One record that entered from a source. ``status``: pending → processed | dead."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "record_key", name="uq_events_source_key"),
        Index("ix_events_status", "status"),
        Index("ix_events_contact_id", "contact_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(200))
    record_key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(50))
    attrs: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    raw: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the sweep last enqueued it (the pipeline enqueues it on receipt).
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Score(Base):
    """A score as computed, with the rule-set version and hash and the hits behind it."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    fit: Mapped[float] = mapped_column(Float)
    engagement: Mapped[float] = mapped_column(Float)
    mql: Mapped[bool] = mapped_column(Boolean)
    disqualified: Mapped[str | None] = mapped_column(String(200))
    hits: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    ruleset_version: Mapped[str] = mapped_column(String(50))
    ruleset_hash: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StageChange(Base):
    """lead → mql → sal → sql, recycled, disqualified: each change with its time and cause."""

    __tablename__ = "stage_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    cause: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


def new_public_id() -> str:
    """What links name an assignment by: random, so one link does not show how to make
    another (the row ids are sequential)."""
    return secrets.token_urlsafe(16)


class Assignment(Base):
    """A routing decision: who got the lead, by which rule, who was skipped and why."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_rep_created_at", "rep", "created_at"),
        Index("uq_assignments_public_id", "public_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    rep: Mapped[str | None] = mapped_column(String(100))
    team: Mapped[str | None] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str | None] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text)
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    seed: Mapped[int | None] = mapped_column(Integer)
    sla_policy: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|accepted|reassigned
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    accepted_by: Mapped[str | None] = mapped_column(String(100))
    public_id: Mapped[str | None] = mapped_column(String(32), default=new_public_id)
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RepCounter(Base):
    """Lifetime assignment counts per rep and team: never reset when reps come and go."""

    __tablename__ = "rep_counters"

    team: Mapped[str] = mapped_column(String(100), primary_key=True)
    rep: Mapped[str] = mapped_column(String(100), primary_key=True)
    assigned_total: Mapped[int] = mapped_column(Integer, default=0)
    last_assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SlaTimer(Base):
    """One step of an assignment's SLA clock: ``kind`` is ``remind:50``, ``remind:80`` or
    ``breach``. Written with the assignment, claimed once by setting ``fired_at``; a timer of
    an assignment that is no longer open never fires, it is closed with ``fired_at`` set and
    ``outcome`` saying so. ``enqueued_at`` keeps the clock from ringing the same doorbell every
    tick while a worker is busy."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        UniqueConstraint("assignment_id", "kind", name="uq_sla_timers_assignment_kind"),
        Index("ix_sla_timers_due", "fired_at", "fire_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    fire_at: Mapped[datetime] = mapped_column(UtcDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)


class Message(Base):
    """The outbox. A message is written here, with a key that makes a resend impossible,
    before it is sent; ``status``: pending → sending → sent | failed, or rerouted (a Slack
    message that went out by e-mail instead), or held → sent with its digest (see
    ``worker.pipeline.digest``). ``retry_at``: not due before then."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_status", "status"),
        # How many new leads a person was told of lately: whether the next goes in a digest.
        Index("ix_messages_rep_created_at", "rep", "created_at"),
        # A bounce names the Message-ID it is about.
        Index("ix_messages_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_name: Mapped[str] = mapped_column(String(200), default="")
    rep: Mapped[str | None] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    blocks: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)
    message_id: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Since when its sends fail for a passing reason (None once it is sent or never failed).
    first_failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When it is (or was) due on the queue: a retry is enqueued for its retry_at.
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    remote_id: Mapped[str | None] = mapped_column(String(300))
    resent_after_crash: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # A new-lead message with status ``held`` goes out in the digest with this key instead.
    digest_key: Mapped[str | None] = mapped_column(String(300), index=True)


class Quarantine(Base):
    """A record that could not be taken in, with where and why; replayable once fixed."""

    __tablename__ = "quarantine"
    __table_args__ = (
        Index(
            "uq_quarantine_open_key",
            "source",
            "record_key",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), index=True)
    record_key: Mapped[str | None] = mapped_column(String(200))
    record_id: Mapped[str | None] = mapped_column(String(200))
    row: Mapped[int | None] = mapped_column(Integer)
    file: Mapped[str | None] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | replayed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SourceState(Base):
    """Per source: the cursor (advanced with the page it follows) and health."""

    __tablename__ = "source_state"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    records_total: Mapped[int] = mapped_column(Integer, default=0)


class SourceFile(Base):
    """A file export taken in once, known by its content hash."""

    __tablename__ = "source_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(Text)
    received: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DeadLetter(Base):
    """Work that failed for good, with what an admin needs to fix and replay it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    error: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | replayed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Heartbeat(Base):
    """Each worker/clock process says it is alive here; ``leadwerk status`` shows them."""

    __tablename__ = "heartbeats"

    process: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The rule set this process has in force (it may differ from the files after a refusal).
    rules_version: Mapped[str | None] = mapped_column(String(50))
    rules_hash: Mapped[str | None] = mapped_column(String(64))


class ConfigReload(Base):
    """A rule change a process took in (``loaded``) or refused (``refused``: it did not load,
    the process kept ``rules_version``/``rules_hash``), with the first error."""

    __tablename__ = "config_reloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    process: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))  # loaded | refused
    rules_version: Mapped[str] = mapped_column(String(50))
    rules_hash: Mapped[str] = mapped_column(String(64))
    errors: Mapped[int] = mapped_column(Integer, default=0)
    first_error: Mapped[str | None] = mapped_column(Text)


class NurtureEnrolment(Base):
    """A contact in a nurture sequence. ``step`` is the next step's number; it is due at
    ``next_due_at`` (its ``planned_at`` moved by limits or a pause), which the next step's
    delay counts from. ``status``: active → finished | exited (``exit_reason``), or paused.
    ``enqueued_at`` keeps the clock from ringing the same doorbell every tick while a worker
    is busy with the step."""

    __tablename__ = "nurture_enrolments"
    __table_args__ = (
        Index("ix_nurture_enrolments_due", "status", "next_due_at"),
        Index("ix_nurture_enrolments_sequence", "sequence", "status"),
        # Room in each page for the row's next version: claiming a step rewrites the row
        # without touching its indexes (a HOT update).
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    sequence: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer, default=1)
    planned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20), default="active")
    exit_reason: Mapped[str | None] = mapped_column(Text)
    call_tasks: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NurtureRefusal(Base):
    """A contact a sequence matched but did not take, and why (``channel_conflict``,
    ``no_consent``, ``suppressed``, ``exit: <reason>``)."""

    __tablename__ = "nurture_refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    sequence: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NurturePause(Base):
    """A sequence paused by ``leadwerk nurture pause``: its contacts wait until resumed."""

    __tablename__ = "nurture_pauses"

    sequence: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AlertState(Base):
    """One alert of alerts.yaml as the last check left it. ``episode`` counts the times it
    started to fire: the keys of its messages carry it, so no episode is announced twice."""

    __tablename__ = "alert_states"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    firing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    episode: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    since: Mapped[datetime | None] = mapped_column(UtcDateTime)  # when it last changed
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    value: Mapped[str | None] = mapped_column(Text)  # the facts it read, for the admin


class BounceEvent(Base):
    """One delivery status report about one recipient: from a DSN (Maildir, IMAP) or an ESP
    webhook. ``kind``: hard | soft | policy | delivered | unparseable. ``contact_id`` is None
    for an address no contact has (counted as unmatched); ``message_id`` is the outbox
    message the report names, where it names one. ``key`` makes a report taken in twice
    count once."""

    __tablename__ = "bounce_events"
    __table_args__ = (Index("ix_bounce_events_kind_occurred", "kind", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    origin: Mapped[str] = mapped_column(String(50))  # maildir | imap | sendgrid | ...
    kind: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[str | None] = mapped_column(String(20))
    recipient: Mapped[str | None] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    file: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AddressState(Base):
    """Where an address stands after its bounces: ok | soft | hard, and the soft bounces in a
    row since its last delivery. ``last_soft_for`` is the Message-ID the last soft bounce was
    about: mail servers repeat "still delayed" notices for one message, which count once."""

    __tablename__ = "address_states"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(10), default="ok")
    soft_in_row: Mapped[int] = mapped_column(Integer, default=0)
    last_soft_for: Mapped[str | None] = mapped_column(String(300))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AddressChange(Base):
    """Each change of an address's state with its cause: a bounce, a delivery, a restore."""

    __tablename__ = "address_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    from_state: Mapped[str] = mapped_column(String(10))
    to_state: Mapped[str] = mapped_column(String(10))
    cause: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("bounce_events.id", ondelete="SET NULL")
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ListState(Base):
    """A list's bounce status: ok | warn | suspended. ``counts_from`` is when its rate starts
    counting (set on resume, so that the bounces that suspended it do not suspend it again);
    ``told`` is the status its owner was last told of."""

    __tablename__ = "list_states"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="ok")
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    counts_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    told: Mapped[str | None] = mapped_column(String(20))
    resumed_by: Mapped[str | None] = mapped_column(String(200))


class CrmChange(Base):
    """The CRM outbox: one change for the CRM (``upsert`` of an MQL with its owner and stage,
    on routing and on a reassignment; ``stage``, ``task``, ``delete``), written in the
    transaction that made the change. ``lead``: the e-mail it concerns, the order key (a
    lead's changes go out in ``id`` order; an erased contact's ``delete`` keeps it).
    ``status``: pending → sent, or dead after ``max_attempts`` or a refusal, with the CRM's
    answer in ``error``."""

    __tablename__ = "crm_changes"
    __table_args__ = (Index("ix_crm_changes_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    lead: Mapped[str] = mapped_column(String(320))
    change: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class CrmLink(Base):
    """A contact's record in the CRM, learnt from the upsert that made or found it."""

    __tablename__ = "crm_links"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    crm_id: Mapped[str] = mapped_column(String(200), index=True)
    synced_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CrmAccount(Base):
    """The account owner the CRM names for a company domain (``owner``: a rep, or None when
    the CRM has none), as read at ``fetched_at``; routing trusts it for ``account_owner_ttl``."""

    __tablename__ = "crm_accounts"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# The tables as Core sees them, for the prebuilt statements of the hot path.
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
EVENTS: Table = Event.__table__  # type: ignore[assignment]
SCORES: Table = Score.__table__  # type: ignore[assignment]
STAGE_CHANGES: Table = StageChange.__table__  # type: ignore[assignment]
ASSIGNMENTS: Table = Assignment.__table__  # type: ignore[assignment]
COUNTERS: Table = RepCounter.__table__  # type: ignore[assignment]
TIMERS: Table = SlaTimer.__table__  # type: ignore[assignment]
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
QUARANTINE: Table = Quarantine.__table__  # type: ignore[assignment]
ENROLMENTS: Table = NurtureEnrolment.__table__  # type: ignore[assignment]
REFUSALS: Table = NurtureRefusal.__table__  # type: ignore[assignment]
CRM_CHANGES: Table = CrmChange.__table__  # type: ignore[assignment]
CRM_ACCOUNTS: Table = CrmAccount.__table__  # type: ignore[assignment]
ADDRESS_STATES: Table = AddressState.__table__  # type: ignore[assignment]

# Now, not at the first object made: :func:`snapshot` makes objects without the constructor,
# which is what would trigger it.
configure_mappers()


def snapshot(model: type[ModelT], row: Any) -> ModelT:
    """A model instance holding a row read with a Core statement, in no session.

    The hot path (scoring and routing a new lead) reads and writes with prebuilt Core
    statements, which cost a fraction of the ORM's unit of work; the code that composes
    messages and decisions still reads the model's attributes. Nothing set on a snapshot is
    ever written: changes go out as explicit statements.
    """
    mapping = row._mapping
    # Made without the constructor, its values put in place as a loaded object's are: the
    # constructor records each one as a change to write (20 us a contact, this: 4 us).
    instance: ModelT = model.__mapper__.class_manager.new_instance()
    instance.__dict__.update({column.key: mapping[column] for column in model.__table__.c})
    return instance
