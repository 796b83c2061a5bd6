"""A digest instead of a flood: an import that routes 50 leads to a team of two reps tells
each rep of the first few one by one and of the rest in one digest e-mail (real SMTP); every
lead keeps its own SLA clock, and accepting one from the digest's page stops that one only."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from config.settings import Settings
from tests.pipeline_helpers import Running, running
from tests.servers.smtp import ReceivedMail, SmtpServer
from tests.source_helpers import web_server
from tests.test_walking_skeleton import ALWAYS_OPEN_TEAM, HEADER
from worker.commands.erasure import forget
from worker.pipeline.actors import send_message
from worker.pipeline.poll import import_file
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.broker import QUEUES
from worker.runtime.embedded import account
from worker.store.models import Assignment, Message, SlaTimer

LEADS = 50
DIGEST_AFTER = 5
WINDOW = timedelta(hours=1)


def fair_export(path: Path) -> Path:
    """50 hot leads of large German companies: all for the enterprise team (jonas, lea)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    for n in range(LEADS):
        person = [f"lead{n}@firma{n}.de", "Vera", f"Kunde{n}", f"Firma {n} AG", "CTO"]
        writer.writerow([*person, "", "DE", "5.000", "hot", ""])
    path.write_bytes(buffer.getvalue().encode("cp1252"))
    return path


def send_due_digests(leadwerk: Running) -> None:
    """What the clock's sweep does once the digests' window has passed: the window is made to
    end now (a digest waits for its ``retry_at``, and the sender reads the real clock)."""
    now = datetime.now(UTC)
    with leadwerk.app.store.session() as session:
        session.execute(
            update(Message)
            .where(Message.purpose == "digest", Message.status == "pending")
            .values(retry_at=now - timedelta(seconds=1))
        )
    enqueue(find_pending(leadwerk.app.store, now))
    for queue in QUEUES:
        leadwerk.broker.join(queue, fail_fast=False)  # type: ignore[attr-defined]
    leadwerk.worker.join()


def digest_text_of(mail: ReceivedMail) -> str:
    return mail.message.get_body(("plain",)).get_content()


def digest_mails(mails: list[ReceivedMail]) -> list[ReceivedMail]:
    return [m for m in mails if "new leads for you" in str(m.message["Subject"])]


@pytest.fixture
def team_of_two(config_dir: Path) -> Path:
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    return config_dir


def test_an_import_of_50_leads_for_two_reps_gives_each_one_digest_and_keeps_every_clock(
    team_of_two: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
) -> None:
    export = fair_export(tmp_path / "messe.csv")
    with SmtpServer() as smtp:
        settings = make_settings(
            smtp_url=smtp.url,
            database_url=database_url,
            digest_after=DIGEST_AFTER,
            digest_window=WINDOW,
        )
        with running(settings) as leadwerk:
            app = leadwerk.app
            report = import_file(
                app.store, app.config, app.config.sources["messe-hannover-2026"], export
            )
            leadwerk.drain()
            one_by_one = list(smtp.wait_for(2 * DIGEST_AFTER))
            while_gathering = account(app)
            # When the window has passed, the clock's sweep sends the digests
            send_due_digests(leadwerk)
            mails = smtp.wait_for(2 * DIGEST_AFTER + 2)
            # And a redelivered digest sends nothing again
            with app.store.session() as session:
                digests = list(
                    session.scalars(select(Message.id).where(Message.purpose == "digest"))
                )
            for digest_id in digests:
                send_message.send(digest_id)
            leadwerk.drain()
            with app.store.session() as session:
                assignments = list(session.scalars(select(Assignment)))
                timers = Counter(session.scalars(select(SlaTimer.assignment_id)))
                held = session.scalar(select(func.count()).where(Message.status == "held"))

            with web_server(app) as base_url:
                jonas_digest = next(
                    m for m in digest_mails(mails) if m.rcpt_tos == ["jonas@example.com"]
                )
                link = re.search(r"/digest/\S+", digest_text_of(jonas_digest))
                assert link is not None
                page = httpx.get(base_url + link.group(0))
                again = httpx.get(base_url + link.group(0))
                with app.store.session() as session:
                    accepted_after_looking = session.scalar(
                        select(func.count()).where(Assignment.status == "accepted")
                    )
                first_action = re.search(r'action="([^"]+)"', page.text)
                assert first_action is not None
                accepted = httpx.post(base_url + first_action.group(1), follow_redirects=True)
                with app.store.session() as session:
                    statuses = Counter(session.scalars(select(Assignment.status)))
                    accepted_one = session.scalars(
                        select(Assignment).where(Assignment.status == "accepted")
                    ).one()
            # And erasing a lead the digest named erases the digest's text
            forget(app, re.findall(r"lead\d+@firma\d+\.de", digest_text_of(jonas_digest))[0])
            with app.store.session() as session:
                digest_bodies = set(
                    session.scalars(select(Message.body_text).where(Message.purpose == "digest"))
                )

    # Then all 50 leads came in and were routed, half to each rep
    assert report.accepted == LEADS
    assert Counter(a.rep for a in assignments) == {"jonas": 25, "lea": 25}
    # Each rep was told of the first 5 one by one, then of the other 20 in one digest
    assert len(one_by_one) == 2 * DIGEST_AFTER
    assert len(mails) == 2 * DIGEST_AFTER + 2  # 12 e-mails, not 50, and none twice
    by_rep = Counter(m.rcpt_tos[0] for m in digest_mails(mails))
    assert by_rep == {"jonas@example.com": 1, "lea@example.com": 1}
    digest_text = digest_text_of(jonas_digest)
    assert str(jonas_digest.message["Subject"]).startswith("20 new leads for you")
    assert digest_text.count("@firma") == 20  # every lead listed, with its address
    assert held == 0  # every held message went out with its digest
    # While a digest gathers, every lead counts as accounted for (run --once exits 0)
    assert while_gathering.complete and while_gathering.messages_pending == 0
    # Every lead has its own SLA clock and counts as notified
    assert all(a.due_at is not None and a.notified_at is not None for a in assignments)
    assert all(timers[a.id] >= 1 for a in assignments)
    # The page lists the 20 leads, each with an Accept button, and looking changes nothing
    assert page.status_code == 200 and again.status_code == 200
    assert page.text.count("<button") == 20
    assert accepted_after_looking == 0
    # Accepting one from the page stops that lead's clock only
    assert accepted.status_code == 200
    assert accepted.text.count("<button") == 19
    assert statuses == {"accepted": 1, "open": LEADS - 1}
    assert accepted_one.rep == "jonas"
    assert "(erased)" in digest_bodies and len(digest_bodies) == 2


def test_without_digest_after_every_lead_gets_its_own_message(
    team_of_two: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    export = fair_export(tmp_path / "messe.csv")
    with SmtpServer() as smtp:
        settings = make_settings(smtp_url=smtp.url)
        with running(settings) as leadwerk:
            app = leadwerk.app
            import_file(app.store, app.config, app.config.sources["messe-hannover-2026"], export)
            leadwerk.drain()
            mails = smtp.wait_for(LEADS)

    assert len(mails) == LEADS
    assert digest_mails(mails) == []


def test_a_digest_link_that_was_tampered_with_shows_nothing(
    team_of_two: Path, make_settings: Callable[..., Settings]
) -> None:
    with running(make_settings()) as leadwerk, web_server(leadwerk.app) as base_url:
        looked = httpx.get(f"{base_url}/digest/not-a-token")
        posted = httpx.post(f"{base_url}/digest/not-a-token/accept/1")

    assert (looked.status_code, posted.status_code) == (403, 403)
    assert "not valid" in looked.text
