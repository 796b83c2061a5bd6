"""A digest instead of a flood: when one import or one burst routes many leads to the same
person (a rep, or a fallback manager), the leads beyond ``digest_after`` within
``digest_window`` are told in one message at the end of the window rather than one each.

Each lead is routed and its SLA clock started as always; only its new-lead message is
written ``held``, naming the digest by ``digest_key``. The digest is an outbox message like
any other, keyed by the person and the time its window opened (``digest:<rep>:<time>``,
when the first lead beyond ``digest_after`` was routed); it goes out ``digest_window``
later with every lead held for it meanwhile, and is sent once like any outbox message. Its
text is composed when it is sent, from the messages it holds; sending it marks them sent
and their leads notified. A lead joins only a digest still waiting (read under the digest
row's lock, which its sending waits for): once a digest is on its way, the next lead opens
a new one.

The digest links to a page listing its leads, each with its Accept button
(:mod:`worker.web.digest`).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from config.loader import Config
from config.settings import Settings
from rules.scoring import r1
from worker.pipeline.notify import (
    NEW_LEAD_PURPOSES,
    _html_env,
    accept_link,
    channel_for,
    display_name,
    local_time_text,
    message_id_domain,
    template_env,
)
from worker.store.models import ASSIGNMENTS, MESSAGES, Assignment, Contact, Message
from worker.web.accept import ACCEPT_LINK_MAX_AGE, link_url, verify

if TYPE_CHECKING:
    from worker.runtime.app import App

log = logging.getLogger("leadwerk.digest")

PURPOSE = "digest"
HELD = "held"

_TOLD_SINCE = select(func.count(MESSAGES.c.id)).where(
    MESSAGES.c.rep == bindparam("rep"),
    MESSAGES.c.purpose.in_(NEW_LEAD_PURPOSES),
    MESSAGES.c.created_at >= bindparam("since", type_=MESSAGES.c.created_at.type),
)
_WAITING_DIGEST = (
    select(MESSAGES.c.key)
    .where(
        MESSAGES.c.rep == bindparam("rep"),
        MESSAGES.c.purpose == PURPOSE,
        MESSAGES.c.status == "pending",
    )
    .order_by(MESSAGES.c.id)
    .limit(1)
    .with_for_update()
)
# The assignment a new-lead message was written for, from its key (notify.new_lead_messages).
_ASSIGNMENT_IN_KEY = re.compile(r"^lead:\d+:assignment:(\d+):")


def hold_for_digest(
    connection: Connection, config: Config, messages: list[Message], now: datetime
) -> None:
    """Mark the new-lead messages that go out in a digest (``held``, with ``digest_key``),
    writing each digest they name once; called before the messages are written."""
    settings = config.settings
    if not settings.digest_after:
        return
    for message in messages:
        if message.purpose not in NEW_LEAD_PURPOSES or not message.rep:
            continue
        message.created_at = now  # counted in the window by the time routing went by
        since = now - settings.digest_window
        told = connection.execute(_TOLD_SINCE, {"rep": message.rep, "since": since}).scalar()
        if (told or 0) < settings.digest_after:
            continue
        message.status = HELD
        message.digest_key = _open_digest(connection, config, message.rep, now)


def _open_digest(connection: Connection, config: Config, rep_id: str, now: datetime) -> str:
    """The key of the person's digest still waiting to go out, locked until the caller
    commits (so that it is not sent without the lead being held for it); a new one, due a
    ``digest_window`` from now, when none waits. A digest already on its way is not pending:
    a lead routed meanwhile starts the next one."""
    key = connection.execute(_WAITING_DIGEST, {"rep": rep_id}).scalar()
    if key is not None:
        return key
    key = f"digest:{rep_id}:{now:%Y-%m-%dT%H:%M:%S.%fZ}"
    rep = config.team.reps[rep_id]
    channel = channel_for(config, rep)
    row = {
        "key": key,
        "contact_id": None,
        "purpose": PURPOSE,
        "channel": channel,
        "recipient": rep.slack if channel == "slack" else rep.email,
        "recipient_name": rep.name,
        "rep": rep_id,
        "subject": "",
        "body_text": "",
        "message_id": f"<digest-{rep_id}.{now:%Y%m%d%H%M%S%f}@{message_id_domain(config)}>",
        "status": "pending",
        "retry_at": now + config.settings.digest_window,
        "created_at": now,
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        dialect.insert(MESSAGES).values(row).on_conflict_do_nothing(index_elements=["key"])
    )
    return key


def compose(app: App, digest: Message, now: datetime) -> Message | None:
    """Write the digest's subject and bodies from the leads it holds, as they stand now
    (it is claimed: no lead joins it any more); None when it holds none."""
    config = app.config
    with app.store.session() as session:
        held = list(
            session.scalars(
                select(Message)
                .where(Message.digest_key == _own_key(digest), Message.status == HELD)
                .order_by(Message.id)
            )
        )
        leads = [held_lead_facts(session, config, digest.rep, m) for m in held]
        stored = session.get(Message, digest.id)
        assert stored is not None
        if not leads:
            stored.status, stored.error = "sent", "no lead left to tell"
            return None
        facts = {
            "rep": {"id": digest.rep, "name": digest.recipient_name},
            "leads": leads,
            "count": len(leads),
            "page_url": digest_page_url(app.settings, digest.id),
        }
        env = template_env(config.directory)
        stored.subject = env.get_template("digest.subject.j2").render(facts).strip()
        stored.body_text = env.get_template("digest.txt.j2").render(facts)
        stored.body_html = _html_env(env).get_template("digest.html.j2").render(facts)
        stored.blocks = _slack_blocks(facts) if digest.channel == "slack" else None
        session.flush()
        session.expunge(stored)
    return stored


def digest_sent(connection: Connection, digest: Message, now: datetime) -> None:
    """The digest went out: the messages it held are sent, their leads notified."""
    held = (
        update(MESSAGES)
        .where(MESSAGES.c.digest_key == _own_key(digest), MESSAGES.c.status == HELD)
        .values(status="sent", sent_at=now)
        .returning(MESSAGES.c.contact_id)
    )
    contacts = [c for c in connection.execute(held).scalars() if c is not None]
    if contacts:
        connection.execute(
            update(ASSIGNMENTS)
            .where(ASSIGNMENTS.c.contact_id.in_(contacts), ASSIGNMENTS.c.notified_at.is_(None))
            .values(notified_at=now)
        )
    log.info("digest %s told %s of %d leads", digest.id, digest.rep, len(contacts))


def forget_in_digests(session: Any, contact_id: int) -> int:
    """Erasure: the digests that told of this lead lose their text (it names the lead among
    others); returns how many. Its held message goes with the contact."""
    keys = select(Message.digest_key).where(
        Message.contact_id == contact_id, Message.digest_key.is_not(None)
    )
    erased = session.execute(
        update(Message)
        .where(Message.purpose == PURPOSE, Message.key.in_(keys))
        .values(subject="(erased)", body_text="(erased)", body_html=None, blocks=None)
    )
    return erased.rowcount or 0


def _own_key(digest: Message) -> str:
    """The key its leads name: a digest Slack could not deliver goes out again by e-mail
    under a key of its own (notify's fallback), holding the same leads."""
    return digest.key.removesuffix(":email-fallback")


def assignment_of(message: Message) -> int | None:
    """The assignment a held new-lead message was written for."""
    found = _ASSIGNMENT_IN_KEY.match(message.key)
    return int(found.group(1)) if found else None


def held_lead_facts(
    session: Any, config: Config, reader: str | None, message: Message
) -> dict[str, Any]:
    """A lead held in a digest as the digest and its page show it to ``reader``."""
    contact = session.get(Contact, message.contact_id) if message.contact_id else None
    assignment_id = assignment_of(message)
    assignment = session.get(Assignment, assignment_id) if assignment_id else None
    fields = contact.fields if contact else {}
    return {
        "id": contact.id if contact else None,
        "assignment": assignment_id,
        "name": display_name(contact) if contact else "(erased)",
        "email": contact.email if contact else "",
        "company": fields.get("company"),
        "title": fields.get("title"),
        "phone": fields.get("phone"),
        "score": r1(contact.score or 0) if contact else 0,
        "status": assignment.status if assignment else "gone",
        "holder": assignment.rep if assignment else None,
        "can_accept": bool(assignment and may_accept(config, reader, assignment)),
        "due": local_time_text(config, reader, assignment.due_at if assignment else None),
        "accept_url": accept_link(config, assignment, reader or "") if assignment else None,
    }


def may_accept(config: Config, reader: str | None, assignment: Assignment) -> bool:
    """Whether the digest's reader may accept this lead now: it is open and still theirs
    (or, unassigned, waits for the fallback managers they are one of)."""
    if assignment.status != "open" or reader is None:
        return False
    return assignment.rep == reader or (assignment.rep is None and reader in config.fallback)


def _slack_blocks(facts: dict[str, Any]) -> list[dict[str, Any]]:
    lines = [
        f"• {lead['name']}" + (f" ({lead['company']})" if lead["company"] else "")
        for lead in facts["leads"]
    ]
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{facts['count']} new leads for you*\n" + "\n".join(lines[:40]),
            },
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open the list"},
                    "url": facts["page_url"],
                }
            ],
        },
    ]


# --- the page's link -----------------------------------------------------------------------


DIGEST_LINK = "digest"


def digest_page_url(settings: Settings, digest_id: int) -> str:
    """The page listing a digest's leads; signed like every link, as a kind of its own."""
    return link_url(settings, DIGEST_LINK, str(digest_id))


def verify_digest(settings: Settings, token: str) -> int:
    """The digest a page link names; :class:`LinkError` when tampered with or older than an
    accept link may be."""
    return int(verify(settings, DIGEST_LINK, token, ACCEPT_LINK_MAX_AGE).ref)
