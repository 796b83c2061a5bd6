"""Helpers for the tests of the links in Leadwerk's e-mails: the e-mails as the file outbox
wrote them, the links in them, and the store's state to compare before and after."""

from __future__ import annotations

import re
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select

from worker.pipeline.notify import send_message
from worker.runtime.app import App
from worker.store.models import Assignment, Contact, Message, SlaTimer, StageChange

LINK = re.compile(r"https?://[^\s<>\"']+")

# Every team member is at capacity, so a new lead goes to the fallback manager, Anna.
FULL_TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com, capacity: {per_day: 0}}
  lea: {name: Lea Hoffmann, email: lea@example.com, capacity: {per_day: 0}}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
"""

# Everyone is told by e-mail, and has room for leads.
MAIL_TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com}
  lea: {name: Lea Hoffmann, email: lea@example.com}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
"""


def send_all(app: App, now: datetime) -> None:
    """Send every pending outbox message (here: into the file outbox)."""
    with app.store.session() as session:
        ids = list(session.scalars(select(Message.id).where(Message.status == "pending")))
    for message_id in ids:
        send_message(app, message_id, lambda: now)


def mail_to(outbox: Path, address: str) -> list[EmailMessage]:
    """The e-mails the file outbox holds for ``address``, oldest first."""
    mails = []
    for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(mail, EmailMessage)
        if address in str(mail["To"]):
            mails.append(mail)
    return mails


def links_in(mail: EmailMessage) -> list[str]:
    """Every link in an e-mail's text and HTML parts and in its List-Unsubscribe header."""
    found: list[str] = []
    for part in mail.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            found += LINK.findall(part.get_content())
    found += LINK.findall(str(mail.get("List-Unsubscribe", "")))
    return list(dict.fromkeys(link.rstrip(".,)") for link in found))


def store_state(app: App) -> dict[str, list[tuple[Any, ...]]]:
    """What the store holds of leads, assignments, clocks, messages and stage changes."""
    with app.store.session() as session:
        return {
            "contacts": [
                (c.id, c.stage, c.owner, sorted(c.fields.items()))
                for c in session.scalars(select(Contact).order_by(Contact.id))
            ],
            "assignments": [
                (a.id, a.rep, a.status, a.accepted_at, a.accepted_by, a.due_at)
                for a in session.scalars(select(Assignment).order_by(Assignment.id))
            ],
            "timers": [
                (t.id, t.fired_at, t.outcome)
                for t in session.scalars(select(SlaTimer).order_by(SlaTimer.id))
            ],
            "messages": [
                (m.id, m.status, m.key)
                for m in session.scalars(select(Message).order_by(Message.id))
            ],
            "stage_changes": [
                (s.id, s.to_stage)
                for s in session.scalars(select(StageChange).order_by(StageChange.id))
            ],
        }


def assignments_of(app: App, lead: int) -> list[Assignment]:
    with app.store.session() as session:
        found = list(
            session.scalars(
                select(Assignment).where(Assignment.contact_id == lead).order_by(Assignment.id)
            )
        )
        session.expunge_all()
    return found
