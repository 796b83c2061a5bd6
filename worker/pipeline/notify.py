"""Notify step: outbox messages are composed from templates, then sent exactly once.

Exactly once, as far as a channel allows: a message row exists (with a unique key) before
anything is sent; a worker claims it with one atomic UPDATE (pending → sending) and marks it
sent right after the server's OK. A redelivered or retried actor finds it claimed or sent and
sends nothing. The one gap no protocol closes: the server accepted, then the process died
before the mark. Such a message is found ``sending`` after its lease, resent with the same
Message-ID (mail clients collapse it) and counted in ``resent_after_crash``.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jinja2 import ChainableUndefined, ChoiceLoader, Environment, FileSystemLoader, PackageLoader
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import Connection, bindparam, select, update

from config.loader import Config
from config.models import Rep
from config.settings import Settings
from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.notify.base import OutboundMessage
from rules.contact import mask_email
from rules.routing import RouteDecision
from rules.scoring import r1
from worker.store.bulk import among, update_rows
from worker.store.db import Store
from worker.web.accept import ACCEPT, ASSIGN, link_url
from worker.web.unsubscribe import is_nurture, list_unsubscribe_headers

if TYPE_CHECKING:
    from worker.runtime.app import App
from worker.store.models import (
    ASSIGNMENTS,
    MESSAGES,
    Assignment,
    Contact,
    DeadLetter,
    Event,
    Message,
    Score,
)

log = logging.getLogger("leadwerk.notify")

# The time as a delivery reads it: the wall clock, or ``run --once --now``'s simulated one.
Clock = Callable[[], datetime]

# How a channel is named in logs and in ``leadwerk status``.
CHANNEL_NAMES = {"email": "e-mail", "slack": "Slack"}

# 2^30 seconds is far above any cap: the exponent stops growing there (and never overflows).
_MAX_EXPONENT = 30

SEND_LEASE = timedelta(minutes=2)


# The names a plain dict answers as attributes (``items``, ``get``, ...).
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with ``{{ lead.name }}`` on the plain dicts of facts looked up as a key
    straight away. Jinja tries the attribute first and takes the key after the lookup fails:
    an exception per use, half of a message's rendering time. A name of one of dict's own
    attributes still goes the long way, so every template reads as it did."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@functools.lru_cache(maxsize=8)
def template_env(config_dir: Path) -> Environment:
    """Templates in ``config/templates/`` override the defaults shipped with Leadwerk.

    One environment per folder and process: it keeps templates compiled, which costs more than
    all the rest of composing a message (speed to lead). An edited file is still picked up, as
    Jinja checks each template's modification time when it is used. Marketing ops write these
    templates, so they render in Jinja's sandbox: no way from a template into Python's
    internals (``''.__class__``), only the facts a message is given.
    """
    return _Sandbox(
        loader=ChoiceLoader(
            [
                FileSystemLoader(str(config_dir / "templates")),
                PackageLoader("config", "templates"),
            ]
        ),
        undefined=ChainableUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.lru_cache(maxsize=8)
def _html_env(env: Environment) -> Environment:
    """An overlay copies the compiled templates it starts with, so it is kept too."""
    return env.overlay(autoescape=True)


def display_name(contact: Contact) -> str:
    """First and last name as written, else the address."""
    fields = contact.fields
    parts = (fields.get("first_name"), fields.get("last_name"))
    return " ".join(p for p in parts if p) or contact.email


def local_time_text(config: Config, reader: str | None, moment: datetime | None) -> str | None:
    """``Tue 24 Nov 2026, 16:27 CET``: a time as the reading rep's clock shows it."""
    if moment is None:
        return None
    rep = config.team.reps.get(reader or "")
    zone = ZoneInfo((rep.timezone if rep else None) or config.settings.timezone)
    return moment.astimezone(zone).strftime("%a %d %b %Y, %H:%M %Z")


def lead_facts(
    config: Config,
    contact: Contact,
    event: Event | None,
    assignment: Assignment,
    decision: RouteDecision,
    score: Score | None,
    recipient: str,
) -> dict[str, Any]:
    """What a template may use. Kept small and named for what a rep needs at a glance."""
    fields = contact.fields
    name = display_name(contact)
    rep = config.team.reps.get(recipient)
    due_text = local_time_text(config, recipient, assignment.due_at)
    hits = [h for h in (score.hits if score else []) if h.get("kind") != "disqualify"]
    hits.sort(key=lambda h: -abs(h.get("points", 0)))
    return {
        "lead": {
            "id": contact.id,
            "name": name,
            "email": contact.email,
            "company": fields.get("company"),
            "title": fields.get("title"),
            "phone": fields.get("phone"),
            "country": fields.get("country"),
            "company_size": fields.get("company_size"),
            "source": contact.source,
        },
        "score": {
            "total": r1(contact.score or 0),
            "fit": r1(contact.fit or 0),
            "engagement": r1(contact.engagement or 0),
            "ruleset": f"v{config.ruleset.version} ({config.ruleset.hash})",
        },
        "reasons": [f"{h['rule']} ({h['points']:+g})" for h in hits],
        "event": {"type": event.type, **event.attrs} if event else {},
        "route": {"rule": decision.rule, "team": decision.team, "reason": decision.reason},
        "rep": {"id": recipient, "name": rep.name if rep else recipient},
        "sla": {
            "policy": assignment.sla_policy,
            "due": due_text,
        },
        "accept_url": accept_link(config, assignment, recipient),
        "assign_url": assign_link(config, assignment, recipient) if decision.rep is None else None,
        "unassigned": decision.rep is None,
    }


def new_lead_messages(
    config: Config,
    contact: Contact,
    event: Event | None,
    assignment: Assignment,
    decision: RouteDecision,
    score: Score | None,
) -> list[Message]:
    """One message per recipient: the assigned rep, or each fallback manager."""
    env = template_env(config.directory)
    recipients = [decision.rep] if decision.rep else list(decision.fallback)
    if not recipients:
        log.error(
            "lead %s could not be routed and routing.yaml names no fallback rep to tell: "
            "it waits unassigned (leadwerk status counts it)",
            contact.id,
        )
    purpose = "new_lead" if decision.rep else "unassigned_lead"
    domain = message_id_domain(config)
    messages = []
    for recipient in recipients:
        rep = config.team.reps[recipient]
        facts = lead_facts(config, contact, event, assignment, decision, score, recipient)
        subject = env.get_template("new_lead.subject.j2").render(facts).strip()
        text = env.get_template("new_lead.txt.j2").render(facts)
        html = _html_env(env).get_template("new_lead.html.j2").render(facts)
        channel = channel_for(config, rep)
        key = f"lead:{contact.id}:assignment:{assignment.id}:{purpose}:{recipient}"
        messages.append(
            Message(
                key=key,
                contact_id=contact.id,
                purpose=purpose,
                channel=channel,
                recipient=rep.slack if channel == "slack" else rep.email,
                recipient_name=rep.name,
                rep=recipient,
                subject=subject,
                body_text=text,
                body_html=html,
                blocks=slack_blocks(facts) if channel == "slack" else None,
                message_id=f"<lead-{contact.id}.a{assignment.id}.{recipient}@{domain}>",
                status="pending",
            )
        )
    return messages


def channel_for(config: Config, rep: Rep) -> str:
    """Where a rep is told: Slack when their ``notify:`` says so and they have a Slack id, and
    Slack goes out (with a bot token, or into the file outbox when nothing is configured);
    else e-mail."""
    slack_on = bool(config.settings.slack_token or not config.settings.smtp_url)
    return "slack" if rep.notify == "slack" and rep.slack and slack_on else "email"


def message_id_domain(config: Config) -> str:
    """The domain of the Message-IDs Leadwerk makes: the sender's."""
    return _domain_of(config.settings.mail_from)


@functools.lru_cache(maxsize=8)
def _domain_of(mail_from: str) -> str:
    return parseaddr(mail_from)[1].rpartition("@")[2] or "leadwerk.local"


def accept_link(config: Config, assignment: Assignment, reader: str) -> str:
    """The link that accepts the lead for ``reader``, the rep (or manager) it is sent to."""
    return link_url(config.settings, ACCEPT, assignment.public_id or "", reader)


def assign_link(config: Config, assignment: Assignment, manager: str) -> str:
    """The page where ``manager`` gives the lead to a rep of the team."""
    return link_url(config.settings, ASSIGN, assignment.public_id or "", manager)


def slack_blocks(facts: dict[str, Any]) -> list[dict[str, Any]]:
    from connectors.notify.slack import lead_card_blocks

    lead = facts["lead"]
    fields = [
        ("Name", lead["name"]),
        ("Company", lead["company"] or "–"),
        ("Title", lead["title"] or "–"),
        ("Score", str(facts["score"]["total"])),
    ]
    due = (
        f"Respond by {facts['sla']['due']} ({facts['sla']['policy']})"
        if facts["sla"]["due"]
        else None
    )
    return lead_card_blocks(
        title=f"New lead: {lead['name']}",
        fields=fields,
        reasons=facts["reasons"][:5],
        due_text=due,
        accept_url=facts["accept_url"],
        accept_value=str(lead["id"]),
    )


def to_outbound(message: Message, settings: Settings) -> OutboundMessage:
    """The outbox row as the notifier seam takes it. Nurture e-mails carry one-click
    unsubscribe headers (RFC 8058), which mailbox providers require of bulk senders."""
    headers: dict[str, str] = {}
    if message.channel == "email" and is_nurture(message.purpose) and message.contact_id:
        headers = list_unsubscribe_headers(settings, message.contact_id)
    return OutboundMessage(
        key=message.key,
        channel=message.channel,
        to_address=message.recipient,
        to_name=message.recipient_name,
        subject=message.subject,
        text=message.body_text,
        html=message.body_html,
        blocks=message.blocks,
        message_id=message.message_id,
        headers=headers,
    )


def claim(store: Store, message_id: int, now: datetime) -> Message | None:
    """pending → sending in one atomic statement that also returns the row; None if another
    delivery has it, or if it waits out a retry (not before its ``retry_at``: the row owns
    its retries, whoever enqueued it)."""
    with store.session() as session:
        return session.scalars(
            update(Message)
            .where(
                Message.id == message_id,
                Message.status == "pending",
                Message.retry_at.is_(None) | (Message.retry_at <= now),
            )
            .values(status="sending", claimed_at=now, attempts=Message.attempts + 1)
            .returning(Message)
        ).one_or_none()


@dataclass(frozen=True)
class Outcome:
    """What ``send_message`` did: ``sent``, ``skipped`` (another delivery has it or it is not
    due), ``failed``, ``fallback`` or ``retry``; ``follow_up`` is an outbox message to send
    next (the e-mail fallback); ``retry_at`` when a retry is to be enqueued for."""

    status: str
    follow_up: int | None = None
    retry_at: datetime | None = None


def send_message(app: App, message_id: int, clock: Clock) -> Outcome:
    """Send one outbox message at most once per claim."""
    message = claim(app.store, message_id, clock())
    if message is None:
        return Outcome("skipped")
    return deliver(app, message, clock)


def deliver(app: App, message: Message, clock: Clock) -> Outcome:
    """Send a message this delivery has claimed (status ``sending``), then mark it sent.

    The clock is read again once the server has answered: ``sent_at`` is the time of its OK
    and a retry counts from the failure, not from when the attempt began (a connect or a
    timeout can take seconds, and a retry that began just before a server came back must not
    look sent before it)."""
    from worker.pipeline import digest

    if message.purpose == digest.PURPOSE:  # its text is written now, from the leads it holds
        composed = digest.compose(app, message, clock())
        if composed is None:
            return Outcome("skipped")
        message = composed
    store, notifiers, message_id = app.store, app.notifiers, message.id
    notifier = notifiers.get(message.channel) or notifiers["email"]
    try:
        result = notifier.send(to_outbound(message, app.settings))
    except RetriableError as exc:
        return _retry_later(app, message, exc, clock())
    except UndeliverableError as exc:
        if message.channel == "slack":
            return _fall_back_to_email(app, message_id, str(exc))
        _fail(store, message, str(exc))
        return Outcome("failed")
    except FatalError as exc:
        _fail(store, message, str(exc))
        return Outcome("failed")
    _mark_sent(store, message, result.remote_id, clock())
    log.info("sent %s to %s via %s", message.purpose, _masked(message), message.channel)
    return Outcome("sent")


def deliver_to_outbox(app: App, messages: list[Message], clock: Clock) -> list[Message]:
    """Write the claimed ``messages`` that go to the file outbox and mark them all sent in
    one transaction (a backlog's messages); returns the others, each to be delivered on its
    own (:func:`deliver`).

    Marking a batch at once widens the gap between written and marked from one message to a
    batch, which is harmless here: a message written again after a crash overwrites its own
    file (the outbox key names it), so nobody gets it twice."""
    from connectors.notify.outbox import FileOutboxNotifier
    from worker.pipeline import digest

    others: list[Message] = []
    written: list[dict[str, Any]] = []
    notified: list[int | None] = []
    for message in messages:
        notifier = app.notifiers.get(message.channel) or app.notifiers["email"]
        if message.purpose == digest.PURPOSE or not isinstance(notifier, FileOutboxNotifier):
            others.append(message)
            continue
        try:
            result = notifier.send(to_outbound(message, app.settings))
        except FatalError:  # the folder cannot be written: deliver() marks it failed
            others.append(message)
            continue
        written.append({"id": message.id, "remote_id": result.remote_id})
        if message.purpose in NEW_LEAD_PURPOSES:
            notified.append(message.contact_id)
    if written:
        now = clock()  # once the files are written
        sent = {**_SENT, "sent_at": now}
        with app.store.transaction() as connection:
            update_rows(connection, MESSAGES, "id", [{**row, **sent} for row in written])
            _mark_notified(connection, notified, now)
        log.info("wrote %d message(s) to the outbox %s", len(written), app.settings.outbox_dir)
    return others


NEW_LEAD_PURPOSES = ("new_lead", "unassigned_lead")

# What marks a message sent, besides its time and the server's id for it.
_SENT = {"status": "sent", "error": None, "first_failed_at": None}
_MARK_SENT = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("outbox_id"))
    .values(**_SENT, sent_at=bindparam("now"), remote_id=bindparam("remote_id"))
)
# PostgreSQL: both in one statement, sent on its own (autocommit): one round trip, the
# shortest gap between the server's OK and the mark.
_sent = _MARK_SENT.returning(MESSAGES.c.contact_id, MESSAGES.c.purpose).cte("sent")
_MARK_SENT_AND_NOTIFIED = (
    update(ASSIGNMENTS)
    .where(
        ASSIGNMENTS.c.contact_id.in_(
            select(_sent.c.contact_id).where(_sent.c.purpose.in_(NEW_LEAD_PURPOSES))
        ),
        ASSIGNMENTS.c.notified_at.is_(None),
    )
    .values(notified_at=bindparam("now"))
)


def _mark_sent(store: Store, message: Message, remote_id: str | None, now: datetime) -> None:
    """Mark a message sent and, for a new lead's message, its assignment notified: one
    atomic write."""
    from worker.pipeline import digest

    params = {"outbox_id": message.id, "remote_id": remote_id, "now": now}
    if message.purpose == digest.PURPOSE:
        with store.transaction() as connection:
            connection.execute(_MARK_SENT, params)
            digest.digest_sent(connection, message, now)
        return
    if store.dialect == "postgresql":
        with store.autocommit() as connection:
            connection.execute(_MARK_SENT_AND_NOTIFIED, params)
        return
    with store.transaction() as connection:
        connection.execute(_MARK_SENT, params)
        if message.purpose in NEW_LEAD_PURPOSES:
            _mark_notified(connection, [message.contact_id], now)


def _mark_notified(connection: Connection, contact_ids: list[int | None], now: datetime) -> None:
    """The leads' assignments notified, where they were not yet."""
    if contact_ids:
        connection.execute(
            update(ASSIGNMENTS)
            .where(
                among(connection.dialect.name, ASSIGNMENTS.c.contact_id, contact_ids),
                ASSIGNMENTS.c.notified_at.is_(None),
            )
            .values(notified_at=now)
        )


def retry_delay(settings: Settings, attempts: int, retry_after: float | None = None) -> float:
    """Seconds to wait before the next attempt: what the server asked for (Retry-After), else
    capped exponential backoff with full jitter, so that many messages waiting out one outage
    do not all come back at the same moment."""
    if retry_after:
        return retry_after
    ceiling = settings.retry_base * 2.0 ** min(max(attempts - 1, 0), _MAX_EXPONENT)
    return random.uniform(0, min(settings.retry_cap, ceiling))


def _retry_later(app: App, message: Message, exc: RetriableError, now: datetime) -> Outcome:
    """A passing fault: the row goes back to pending, not claimable before its ``retry_at``,
    with the reason; after ``retry_for`` of failing, it is dead-lettered instead."""
    since = message.first_failed_at or now
    failing_for = now - since
    channel = CHANNEL_NAMES.get(message.channel, message.channel)
    if failing_for >= timedelta(seconds=app.settings.retry_for):
        hours = failing_for.total_seconds() / 3600
        _fail(
            app.store,
            message,
            f"gave up after {message.attempts} attempts in {hours:.1f} h: {exc}",
        )
        return Outcome("failed")
    retry_at = now + timedelta(seconds=retry_delay(app.settings, message.attempts, exc.retry_after))
    _set(
        app.store,
        message.id,
        status="pending",
        retry_at=retry_at,
        enqueued_at=retry_at,
        first_failed_at=since,
        error=str(exc),
    )
    log.warning(
        "%s message %s to %s not sent: %s; attempt %d, next attempt %s UTC",
        channel,
        message.id,
        _masked(message),
        exc,
        message.attempts,
        f"{retry_at:%H:%M:%S}",
    )
    return Outcome("retry", retry_at=retry_at)


def _masked(message: Message) -> str:
    return mask_email(message.recipient) if message.channel == "email" else message.recipient


def _set(store: Store, message_id: int, **values: Any) -> None:
    with store.session() as session:
        session.execute(update(Message).where(Message.id == message_id).values(**values))


def _fail(store: Store, message: Message, error: str) -> None:
    _set(store, message.id, status="failed", error=error)
    with store.session() as session:
        session.add(DeadLetter(actor="send_message", args=[message.id], error=error))
    log.error("message %s to %s failed for good: %s", message.id, _masked(message), error)


def _fall_back_to_email(app: App, message_id: int, why: str) -> Outcome:
    """Slack cannot reach the rep: the same notification goes out by e-mail instead."""
    with app.store.session() as session:
        message = session.get(Message, message_id)
        assert message is not None
        contact = session.get(Contact, message.contact_id) if message.contact_id else None
        message.status = "rerouted"
        message.error = f"slack: {why}; sent by e-mail instead"
        rep = app.config.team.reps.get(message.rep or "")
        email = rep.email if rep else message.recipient
        fallback = Message(
            key=message.key + ":email-fallback",
            contact_id=contact.id if contact else None,
            purpose=message.purpose,
            channel="email",
            recipient=email,
            recipient_name=message.recipient_name,
            rep=message.rep,
            subject=message.subject,
            body_text=message.body_text,
            body_html=message.body_html,
            message_id=message.message_id,
            status="pending",
        )
        session.add(fallback)
        session.flush()
    return Outcome("fallback", follow_up=fallback.id)
