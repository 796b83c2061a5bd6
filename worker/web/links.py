"""The pages behind the links in Leadwerk's e-mails: accept a lead, give it to a rep,
unsubscribe.

Corporate mail scanners (Safe Links, Mimecast, Proofpoint) open every link of an e-mail before
the reader does. Opening a link (GET or HEAD) therefore only shows a small page: the lead, and
a form with one button that POSTs to the same address; the POST acts. The pages work without
JavaScript and cannot be framed or cached. Mailbox providers' one-click unsubscribe
(RFC 8058) POSTs ``List-Unsubscribe=One-Click`` to the link, which unsubscribes at once.

Every function here touches the store and blocks: the web app runs them in a thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

from sqlalchemy import select

from rules.contact import mask_email
from worker.commands.operations import AssignRefused, accept_assignment, assign_lead
from worker.pipeline.notify import display_name
from worker.pipeline.nurture import unsubscribe
from worker.runtime.app import App
from worker.store.models import Assignment, Contact
from worker.web.accept import ACCEPT_LINK_MAX_AGE, ASSIGN, Link, LinkError, verify, verify_accept
from worker.web.unsubscribe import UnsubscribeLinkError, verify_unsubscribe

log = logging.getLogger("leadwerk.web")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

STYLE = (
    "body{font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em}"
    "button{background:#0a7;color:#fff;border:0;padding:8px 16px;font-size:1em;cursor:pointer}"
    "form{margin:.5em 0}"
)


@dataclass(frozen=True)
class Choice:
    """One button of a page's forms; ``value`` goes out as the form field ``name``."""

    label: str
    name: str = ""
    value: str = ""


@dataclass(frozen=True)
class Page:
    """What a link shows: a title, plain-text lines, and the buttons that POST back."""

    title: str
    lines: list[str]
    status: int = 200
    buttons: list[Choice] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)  # outbox messages the action wrote

    def html(self) -> str:
        lines = "".join(f"<p>{escape(line)}</p>" for line in self.lines)
        forms = "".join(
            '<form method="post">'
            + (
                f'<input type="hidden" name="{escape(b.name)}" value="{escape(b.value)}">'
                if b.name
                else ""
            )
            + f'<button type="submit">{escape(b.label)}</button></form>'
            for b in self.buttons
        )
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{escape(self.title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(self.title)}</h1>{lines}{forms}</body></html>"
        )


def refused(error: Exception) -> Page:
    return Page("Link not valid", [f"{error}."], status=403)


GONE = Page("Lead not found", ["This lead no longer exists."], status=404)


def _lead_line(contact: Contact) -> str:
    """The lead as a link's page names it: name and company, the address masked (a link may
    be forwarded, or opened by a scanner)."""
    company = contact.fields.get("company")
    name = display_name(contact)
    if name == contact.email:
        name = mask_email(contact.email)
    return f"{name}{f' at {company}' if company else ''} ({mask_email(contact.email)})"


def _not_open(assignment: Assignment) -> str:
    if assignment.status == "accepted":
        return f"This lead was already accepted by {assignment.accepted_by or 'a manager'}."
    return f"This lead was already {assignment.status}."


def _assignment(app: App, link: Link) -> tuple[Assignment, Contact] | None:
    with app.store.session() as session:
        assignment = session.scalar(select(Assignment).where(Assignment.public_id == link.ref))
        contact = session.get(Contact, assignment.contact_id) if assignment else None
        if assignment is None or contact is None:
            return None
        session.expunge_all()
        return assignment, contact


def _open_lead(
    app: App, link_of: Callable[[], Link], title: str
) -> tuple[Link, Assignment, Contact] | Page:
    """The link's lead and its assignment, still open; else the page that says why not (a
    link not valid, a lead gone, an assignment no longer open)."""
    try:
        link = link_of()
    except LinkError as exc:
        return refused(exc)
    found = _assignment(app, link)
    if found is None:
        return GONE
    assignment, contact = found
    if assignment.status != "open":
        return Page(title, [_not_open(assignment)])
    return link, assignment, contact


# --- accept ---------------------------------------------------------------------------------


def accept_page(app: App, token: str) -> Page:
    """GET: the lead and an Accept button; nothing changes."""
    opened = _open_lead(app, lambda: verify_accept(app.settings, token), "Accept lead")
    if isinstance(opened, Page):
        return opened
    _link, assignment, contact = opened
    lines = [f"Lead {contact.id}: {_lead_line(contact)}."]
    if assignment.sla_policy:
        lines.append(f"Accepting stops its SLA clock ({assignment.sla_policy}).")
    return Page("Accept lead", lines, buttons=[Choice("Accept lead")])


def accept_by_link(app: App, token: str, now: datetime) -> Page:
    """POST: accept the lead for the person the link was sent to."""
    try:
        link = verify_accept(app.settings, token)
    except LinkError as exc:
        return refused(exc)
    with app.store.session() as session:
        # The lead before its assignment: the order the SLA clock locks them in.
        contact_id = session.scalar(
            select(Assignment.contact_id).where(Assignment.public_id == link.ref)
        )
        contact = session.get(Contact, contact_id, with_for_update=True) if contact_id else None
        assignment = session.scalar(
            select(Assignment).where(Assignment.public_id == link.ref).with_for_update()
        )
        if assignment is None or contact is None:
            return GONE
        if assignment.status != "open":
            return Page("Accept lead", [_not_open(assignment)])
        cause, reader = "accepted by link", link.reader
        text = accept_assignment(session, app.config, assignment, contact, now, cause, reader)
    return Page("Lead accepted", [f"Thank you: {text}."])


# --- assign (a manager's page) --------------------------------------------------------------


def _assign_link(app: App, token: str) -> Link:
    return verify(app.settings, ASSIGN, token, ACCEPT_LINK_MAX_AGE)


def _team_reps(app: App, assignment: Assignment, manager: str | None) -> list[str]:
    """Whom the manager may give the lead to: the members of the team it was routed to, else
    of the teams the manager leads, else every team's members."""
    teams = app.config.team.teams
    if assignment.team in teams:
        names = list(teams[assignment.team].members)
    else:
        names = [r for t in teams.values() if t.manager == manager for r in t.members]
    if not names:
        names = [r for t in teams.values() for r in t.members]
    return list(dict.fromkeys(r for r in names if r in app.config.team.reps))


def assign_page(app: App, token: str) -> Page:
    """GET: the lead and one Assign button per rep of the team; nothing changes."""
    opened = _open_lead(app, lambda: _assign_link(app, token), "Assign lead")
    if isinstance(opened, Page):
        return opened
    link, assignment, contact = opened
    reps = app.config.team.reps
    holder = reps[assignment.rep].name if assignment.rep in reps else "nobody yet"
    buttons = [
        Choice(f"Assign to {reps[rep].name}", "rep", rep)
        for rep in _team_reps(app, assignment, link.reader)
        if rep != assignment.rep
    ]
    lines = [f"Lead {contact.id}: {_lead_line(contact)}.", f"It is with {holder}."]
    return Page("Assign lead", lines, buttons=buttons)


def assign_by_link(app: App, token: str, rep: str, now: datetime) -> Page:
    """POST: give the lead to ``rep`` for the manager the link was sent to."""
    opened = _open_lead(app, lambda: _assign_link(app, token), "Assign lead")
    if isinstance(opened, Page):
        return opened
    link, assignment, contact = opened
    if rep not in _team_reps(app, assignment, link.reader):
        return Page("Assign lead", [f"'{rep}' is not a rep of this team."], status=400)
    try:
        done = assign_lead(app, str(contact.id), rep, link.reader, now)
    except AssignRefused as exc:
        return Page("Assign lead", [f"{exc}."], status=409)
    return Page("Lead assigned", [f"Done: {done.text}."], message_ids=done.message_ids)


# --- unsubscribe ----------------------------------------------------------------------------


def unsubscribe_page(app: App, token: str) -> Page:
    """GET: whose address, and an Unsubscribe button; nothing changes."""
    try:
        contact_id = verify_unsubscribe(app.settings, token)
    except UnsubscribeLinkError as exc:
        return refused(exc)
    with app.store.session() as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            return Page("Unsubscribe", ["This address is not on our lists."])
        email, done = contact.email, contact.unsubscribed_at is not None
    if done:
        return Page("Unsubscribe", [f"{mask_email(email)} is unsubscribed already."])
    return Page(
        "Unsubscribe",
        [f"Stop e-mails like this one to {mask_email(email)}?"],
        buttons=[Choice("Unsubscribe", "List-Unsubscribe", "One-Click")],
    )


def unsubscribe_by_link(app: App, token: str, now: datetime) -> Page:
    """POST (the page's button, or a mailbox provider's one-click): unsubscribe."""
    try:
        contact_id = verify_unsubscribe(app.settings, token)
    except UnsubscribeLinkError as exc:
        return refused(exc)
    with app.store.session() as session:
        contact = session.get(Contact, contact_id)
        email = contact.email if contact is not None else None
    if email is None or not unsubscribe(app.store, contact_id, now):
        return Page("Unsubscribe", ["This address is not on our lists."])
    log.info("lead %s (%s) unsubscribed by link", contact_id, mask_email(email))
    return Page("Unsubscribed", [f"{mask_email(email)} gets no more of these e-mails."])
