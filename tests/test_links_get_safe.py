"""Links in e-mails are opened by mail scanners (Safe Links, Mimecast, Proofpoint) before any
person reads them: opening one (GET or HEAD) only shows a page; its button POSTs, and only the
POST acts. The e-mails here are real ones, written by the outbox, and the links are parsed out
of them and opened against the web app served on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from config.settings import Settings
from tests.sla_helpers import add_mql, write_config
from tests.source_helpers import web_server
from tests.web_links import (
    FULL_TEAM,
    MAIL_TEAM,
    assignments_of,
    links_in,
    mail_to,
    send_all,
    store_state,
)
from worker.pipeline.route import route_contact
from worker.pipeline.sla import due_timers
from worker.runtime.app import App, init_app
from worker.store.models import Contact, Message, SlaTimer
from worker.web.accept import Link, link_secret, sign_accept, verify_accept

SECRET = "accept-links-secret-for-tests"
T = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday morning


@dataclass
class Site:
    app: App
    url: str
    outbox: Path

    def local(self, link: str) -> str:
        """A link as mailed (on public_url), pointed at the server of this test."""
        public = self.app.settings.public_url.rstrip("/")
        assert link.startswith(public), link
        return self.url + link.removeprefix(public)

    def open_all(self, links: list[str]) -> None:
        """GET and HEAD every link, as a mail scanner does; each answers 200."""
        for link in links:
            for method in ("GET", "HEAD"):
                response = httpx.request(method, self.local(link), timeout=10)
                assert response.status_code == 200, (method, link, response.text)


@pytest.fixture
def serve(
    config_dir: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[[str], Site]]:
    """Leadwerk with a team.yaml of the test's choice, its web app on a free port."""
    with ExitStack() as stack:

        def start(team: str) -> Site:
            write_config(config_dir, team=team)
            app = init_app(make_settings(accept_secret=SECRET))
            stack.callback(app.close)
            url = stack.enter_context(web_server(app))
            return Site(app, url, tmp_path / "outbox")

        yield start


@pytest.fixture
def site(serve: Callable[[str], Site]) -> Site:
    return serve(MAIL_TEAM)


def routed_lead(site: Site, number: int = 1) -> tuple[int, str]:
    """A hot MQL routed at T and its e-mail sent; (the lead, the rep who has it)."""
    lead = add_mql(site.app.store, number, T)
    route_contact(site.app.store, site.app.config, lead, T)
    send_all(site.app, T)
    [assignment] = assignments_of(site.app, lead)
    assert assignment.rep is not None
    return lead, assignment.rep


def test_opening_every_link_of_a_reps_email_changes_nothing_and_posting_accepts(
    site: Site,
) -> None:
    # Given a rep's new-lead e-mail, as the outbox wrote it
    lead, rep = routed_lead(site)
    [mail] = mail_to(site.outbox, f"{rep}@example.com")
    links = links_in(mail)
    [accept] = [link for link in links if "/accept/" in link]
    before = store_state(site.app)

    # When a scanner opens every link of it
    site.open_all(links)

    # Then nothing in the store has changed: the lead is open and its SLA clock runs
    assert store_state(site.app) == before
    assert [a.status for a in assignments_of(site.app, lead)] == ["open"]

    # When the rep presses the page's button (a POST to the same address)
    pressed = httpx.post(site.local(accept), timeout=10)

    # Then the lead is accepted, by that rep, and its SLA clock has stopped
    assert pressed.status_code == 200 and f"accepted by {rep}" in pressed.text
    [assignment] = assignments_of(site.app, lead)
    assert (assignment.status, assignment.accepted_by) == ("accepted", rep)
    assert assignment.accepted_at is not None
    assert due_timers(site.app.store, T + timedelta(days=30)) == []
    with site.app.store.session() as session:
        outcomes = set(session.scalars(select(SlaTimer.outcome)))
    assert outcomes == {"not fired: the lead was accepted"}


def test_the_accept_page_shows_the_lead_and_a_form_and_cannot_be_framed_or_cached(
    site: Site,
) -> None:
    _, rep = routed_lead(site)
    [accept] = links_in(mail_to(site.outbox, f"{rep}@example.com")[0])

    page = httpx.get(site.local(accept), timeout=10)

    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text and "Accept lead</button>" in page.text
    assert "<script" not in page.text
    # The lead by name and company, its address masked
    assert "Eva Lead1 at Company 1 AG" in page.text
    assert "l***@company1.de" in page.text and "lead1@company1.de" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_managers_email_for_an_unassigned_lead_can_be_opened_without_effect(
    serve: Callable[[str], Site],
) -> None:
    # Given every member at capacity, so that the lead goes to the fallback manager
    site = serve(FULL_TEAM)
    app = site.app
    lead = add_mql(app.store, 2, T)
    route_contact(app.store, app.config, lead, T)
    send_all(app, T)
    [mail] = mail_to(site.outbox, "anna@example.com")
    links = links_in(mail)
    assert {link.split("/")[3] for link in links} == {"accept", "assign"}
    before = store_state(app)

    site.open_all(links)

    assert store_state(app) == before


def test_a_nurture_emails_unsubscribe_link_unsubscribes_only_on_the_one_click_post(
    site: Site,
) -> None:
    # Given a nurture e-mail to a lead, with its RFC 8058 headers, as the outbox wrote it
    lead = add_mql(site.app.store, 3, T)
    with site.app.store.session() as session:
        session.add(
            Message(
                key=f"nurture:{lead}:ebook-followup:1",
                contact_id=lead,
                purpose="nurture:ebook-followup:1",
                channel="email",
                recipient="lead3@company3.de",
                subject="Thanks for reading",
                body_text="Here is the case study.",
                message_id="<nurture-3@localhost>",
            )
        )
    send_all(site.app, T)
    [mail] = mail_to(site.outbox, "lead3@company3.de")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [unsubscribe] = links_in(mail)
    before = store_state(site.app)

    # When a scanner opens it
    site.open_all([unsubscribe])
    page = httpx.get(site.local(unsubscribe), timeout=10)

    # Then the lead is still subscribed, and the page asks, naming the address masked
    assert store_state(site.app) == before
    assert "l***@company3.de" in page.text and '<form method="post">' in page.text

    # When the mailbox provider posts the one-click unsubscribe
    done = httpx.post(
        site.local(unsubscribe),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )

    # Then the lead is unsubscribed
    assert done.status_code == 200
    with site.app.store.session() as session:
        contact = session.get(Contact, lead)
        assert contact is not None and contact.unsubscribed_at is not None


def test_a_tampered_link_or_a_link_of_another_kind_is_refused_and_changes_nothing(
    site: Site,
) -> None:
    _, rep = routed_lead(site)
    [accept] = links_in(mail_to(site.outbox, f"{rep}@example.com")[0])
    token = accept.rsplit("/", 1)[1]
    before = store_state(site.app)

    tampered = httpx.post(f"{site.url}/accept/{token[:-2]}xx", timeout=10)
    as_assign = httpx.post(f"{site.url}/assign/{token}", content=b"rep=lea", timeout=10)
    as_unsubscribe = httpx.post(f"{site.url}/unsubscribe/{token}", timeout=10)

    assert [tampered.status_code, as_assign.status_code, as_unsubscribe.status_code] == [403] * 3
    assert "not valid" in tampered.text
    assert store_state(site.app) == before


def test_links_signed_by_itsdangerous_own_serializer_open_and_ours_open_there(
    make_settings: Callable[..., Settings],
) -> None:
    """Leadwerk signs links without trying to compress them; a link already in a rep's
    inbox, compressed as itsdangerous' own serializer makes long ones, still opens."""
    settings = make_settings()
    theirs = URLSafeTimedSerializer(link_secret(settings), salt="leadwerk.links")
    long_ref = "lead-" + "0" * 200
    compressed = theirs.dumps({"k": "accept", "p": long_ref, "r": "jonas"})
    assert compressed.startswith(".")  # itsdangerous' mark of a compressed payload
    assert verify_accept(settings, compressed) == Link("accept", long_ref, "jonas")
    ours = sign_accept(settings, "x7Gk2mQ9rT4v", "jonas")
    assert theirs.loads(ours) == {"k": "accept", "p": "x7Gk2mQ9rT4v", "r": "jonas"}
    assert verify_accept(settings, ours) == Link("accept", "x7Gk2mQ9rT4v", "jonas")
