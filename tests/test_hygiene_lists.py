"""Lists watched against their decay: bounce rates crossing warn and suspend and back, the
owner told once through the outbox, suspended lists resumed by an admin, stale contacts
flagged, and the report on an aged list."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from starlette.testclient import TestClient

from config.settings import Settings
from connectors.bounces.base import BounceReport
from tests.hygiene_helpers import add_contact, cli, hygiene_app, sent_nurture
from tests.servers.smtp import SmtpServer
from worker.pipeline.hygiene import (
    check_lists,
    list_figures,
    list_suspended,
    record_reports,
    sweep_stale,
)
from worker.pipeline.notify import send_message
from worker.pipeline.sweep import find_pending
from worker.runtime.app import App
from worker.runtime.clock import start_clock
from worker.store.models import Contact, Event, Message
from worker.web.app import create_app

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
REPORT_FIELDS = {
    "list",
    "size",
    "age_months",
    "expected_bad",
    "sent",
    "hard",
    "soft",
    "policy",
    "bounce_rate",
    "status",
    "stale",
    "last_mailed",
    "cold",
}


@pytest.fixture
def app(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[App]:
    with hygiene_app(config_dir, make_settings, database_url) as application:
        yield application


def mailed_list(
    app: App, source: str, arrived: datetime, size: int, sent_at: datetime
) -> list[int]:
    """``size`` contacts from ``source`` who arrived at ``arrived``, each sent one nurture
    e-mail at ``sent_at``."""
    ids = []
    for n in range(size):
        contact = add_contact(app, f"p{n}@{source}.example", source, arrived)
        sent_nurture(app, contact, sent_at)
        ids.append(contact)
    return ids


def hard_bounces(app: App, contacts: list[int], at: datetime) -> None:
    with app.store.session() as session:
        emails = session.scalars(select(Contact.email).where(Contact.id.in_(contacts))).all()
    reports = [
        BounceReport(
            f"test:{email}:{at.isoformat()}", "test", "hard", email, "5.1.1", occurred_at=at
        )
        for email in emails
    ]
    record_reports(app.store, app.config, reports, at)


def owner_messages(app: App) -> list[tuple[str, str, str]]:
    with app.store.session() as session:
        rows = session.scalars(
            select(Message).where(Message.purpose.like("list_%")).order_by(Message.id)
        )
        return [(m.purpose, m.recipient, m.subject) for m in rows]


def status_of(app: App, name: str, now: datetime) -> str:
    return next(f.status for f in check_lists(app.store, app.config, now) if f.name == name)


def test_a_list_is_warned_then_suspended_and_its_owner_told_once_each_time(app: App) -> None:
    contacts = mailed_list(
        app, "webinar", datetime(2026, 10, 5, tzinfo=UTC), 100, NOW - timedelta(days=5)
    )
    assert status_of(app, "webinar/2026-10", NOW) == "ok"

    hard_bounces(app, contacts[:3], NOW - timedelta(days=4))  # 3 % > warn 2 %
    assert status_of(app, "webinar/2026-10", NOW) == "warn"
    assert status_of(app, "webinar/2026-10", NOW + timedelta(hours=1)) == "warn"
    with app.store.transaction() as connection:
        assert not list_suspended(connection, contacts[50])

    hard_bounces(app, contacts[3:6], NOW - timedelta(days=3))  # 6 % > suspend 5 %
    assert status_of(app, "webinar/2026-10", NOW) == "suspended"
    with app.store.session() as session:
        assert list_suspended(session, contacts[50])
    told = owner_messages(app)
    # The source list and its month: warned once each, suspended once each.
    assert sorted(p for p, _, _ in told) == ["list_suspended"] * 2 + ["list_warn"] * 2
    assert {r for _, r, _ in told} == {"anna.schulz@example.com"}
    assert "List webinar/2026-10 suspended: 6.0% hard bounces" in {s for _, _, s in told}


def test_a_warned_list_goes_back_to_ok_when_its_window_is_clean(app: App) -> None:
    contacts = mailed_list(
        app, "fair", datetime(2026, 9, 1, tzinfo=UTC), 100, NOW - timedelta(days=20)
    )
    hard_bounces(app, contacts[:3], NOW - timedelta(days=19))
    assert status_of(app, "fair", NOW) == "warn"
    later = NOW + timedelta(days=40)  # the window (30d) has moved past the bounces
    for contact in contacts:
        sent_nurture(app, contact, later - timedelta(days=1), step=2)
    assert status_of(app, "fair", later) == "ok"


def test_a_suspended_list_stays_suspended_until_an_admin_resumes_it(
    app: App, config_dir: Path
) -> None:
    contacts = mailed_list(
        app, "expo", datetime(2026, 8, 1, tzinfo=UTC), 20, NOW - timedelta(days=5)
    )
    hard_bounces(app, contacts[:2], NOW - timedelta(days=4))  # 10 %
    assert status_of(app, "expo", NOW) == "suspended"
    assert status_of(app, "expo", NOW + timedelta(days=45)) == "suspended"

    refused = cli(app, config_dir, "hygiene", "resume", "nosuchlist")
    assert refused.exit_code == 1
    for name in ("expo", "expo/2026-08"):
        resumed = cli(app, config_dir, "hygiene", "resume", name)
        assert resumed.exit_code == 0, resumed.output
    with app.store.session() as session:
        assert not list_suspended(session, contacts[5])
    # The bounces that suspended it count no more: its rate starts again from the resume.
    assert status_of(app, "expo", datetime.now(UTC) + timedelta(minutes=1)) == "ok"


def test_contacts_without_engagement_for_18_months_are_stale_until_they_engage(app: App) -> None:
    old = datetime(2025, 3, 1, tzinfo=UTC)
    quiet = add_contact(app, "quiet@old.example", "ebook", old)
    active = add_contact(app, "active@old.example", "ebook", old, engaged=NOW - timedelta(days=30))
    assert sweep_stale(app.store, app.config, NOW) == 1
    assert sweep_stale(app.store, app.config, NOW) == 0  # nothing changes the second time
    with app.store.session() as session:
        assert session.get(Contact, quiet).stale_since == NOW
        assert session.get(Contact, active).stale_since is None
        session.add(
            Event(
                contact_id=quiet,
                source="ebook",
                record_key="quiet:again",
                type="form",
                occurred_at=NOW + timedelta(days=1),
                status="processed",
            )
        )
    assert sweep_stale(app.store, app.config, NOW + timedelta(days=2)) == 1
    with app.store.session() as session:
        assert session.get(Contact, quiet).stale_since is None


def test_the_report_on_an_aged_list_shows_its_decay_worst_first(app: App, config_dir: Path) -> None:
    # A white-paper list whose youngest address is a year and a half old, mailed again:
    # 40 % hard bounces, as measured in the field.
    aged = mailed_list(
        app, "whitepaper", datetime(2025, 5, 20, tzinfo=UTC), 20, NOW - timedelta(days=10)
    )
    hard_bounces(app, aged[:8], NOW - timedelta(days=9))
    fresh = add_contact(app, "new@fresh.example", "demo-requests", NOW - timedelta(days=3))
    assert fresh
    sweep_stale(app.store, app.config, NOW)

    result = cli(app, config_dir, "hygiene", "report", "--json", "--now", NOW.isoformat())
    assert result.exit_code == 0, result.output
    lists = json.loads(result.stdout)
    assert all(set(item) == REPORT_FIELDS for item in lists)
    by_name = {item["list"]: item for item in lists}
    aged_month = by_name["whitepaper/2025-05"]
    assert aged_month["size"] == 20
    assert aged_month["age_months"] == 19
    assert aged_month["expected_bad"] == pytest.approx(1 - (1 - 0.021) ** 19, abs=1e-4)
    assert (aged_month["sent"], aged_month["hard"], aged_month["bounce_rate"]) == (20, 8, 0.4)
    assert aged_month["status"] == "suspended"
    assert aged_month["stale"] == 20
    assert aged_month["cold"] is False
    assert by_name["demo-requests"]["status"] == "ok"
    assert (
        by_name["demo-requests"]["cold"] is True and by_name["demo-requests"]["last_mailed"] is None
    )
    assert [item["list"] for item in lists][:2] == ["whitepaper", "whitepaper/2025-05"]
    assert lists[-1]["bounce_rate"] == 0.0

    text = cli(app, config_dir, "hygiene", "report", "--now", NOW.isoformat())
    assert text.stdout.splitlines()[1].split()[:2] == ["whitepaper", "20"]


def test_the_report_reads_only(app: App) -> None:
    contacts = mailed_list(
        app, "webinar", datetime(2026, 10, 5, tzinfo=UTC), 10, NOW - timedelta(days=5)
    )
    hard_bounces(app, contacts[:5], NOW - timedelta(days=4))
    figures = list_figures(app.store, app.config, NOW)
    assert figures[0].status == "suspended"
    with app.store.session() as session:
        assert not list_suspended(session, contacts[0])
    assert owner_messages(app) == []


def test_metrics_show_each_lists_figures_and_status(app: App) -> None:
    now = datetime.now(UTC)
    contacts = mailed_list(app, "webinar", now - timedelta(days=40), 10, now - timedelta(days=2))
    hard_bounces(app, contacts[:1], now - timedelta(days=1))
    with TestClient(create_app(app), client=("127.0.0.1", 50000)) as web:  # loopback: no token
        scraped = web.get("/metrics")
    samples = {
        (s.name, s.labels.get("list"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
        if s.name.startswith("leadwerk_list_")
    }
    assert samples[("leadwerk_list_sent", "webinar", None)] == 10
    assert samples[("leadwerk_list_hard", "webinar", None)] == 1
    assert samples[("leadwerk_list_bounce_rate", "webinar", None)] == pytest.approx(0.1)
    assert samples[("leadwerk_list_status", "webinar", "suspended")] == 1
    assert samples[("leadwerk_list_status", "webinar", "ok")] == 0


def test_the_clock_runs_the_list_check_every_check_every(app: App) -> None:
    now = datetime.now(UTC)
    contacts = mailed_list(app, "expo", now - timedelta(days=40), 10, now - timedelta(days=2))
    hard_bounces(app, contacts[:1], now - timedelta(days=1))
    scheduler = start_clock(app, background=True)
    try:
        job = scheduler.get_job("hygiene")
        assert job.trigger.interval == timedelta(days=1)
        job.func()  # the tick, without waiting a day for it
    finally:
        scheduler.shutdown(wait=False)
    with app.store.session() as session:
        assert list_suspended(session, contacts[3])


def test_the_owner_hears_of_a_suspension_by_e_mail(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    with (
        SmtpServer() as smtp,
        hygiene_app(config_dir, make_settings, database_url, LEADWERK_SMTP_URL=smtp.url) as app,
    ):
        contacts = mailed_list(
            app, "expo", datetime(2026, 8, 1, tzinfo=UTC), 10, NOW - timedelta(days=5)
        )
        hard_bounces(app, contacts[:1], NOW - timedelta(days=4))
        check_lists(app.store, app.config, NOW)
        pending = find_pending(app.store, NOW + timedelta(minutes=1)).messages
        assert len(pending) == 2  # the source list and its month
        for message_id in pending:
            assert send_message(app, message_id, lambda: NOW).status == "sent"
        mails = smtp.wait_for(2)
    subjects = sorted(m.message["Subject"] for m in mails)
    assert subjects == [
        "List expo suspended: 10.0% hard bounces",
        "List expo/2026-08 suspended: 10.0% hard bounces",
    ]
    assert {tuple(m.rcpt_tos) for m in mails} == {("anna.schulz@example.com",)}
    assert (
        "leadwerk hygiene resume expo/2026-08"
        in mails[0].message.get_content() + mails[1].message.get_content()
    )
