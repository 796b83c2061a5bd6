"""Nurture sequences that run: contacts enrol after scoring, steps go out once when due, on a
real SMTP server, over SQLite and PostgreSQL, through restarts, races and limits.

Times: Monday 7 Dec 2026, 09:00 UTC (10:00 in Berlin) a contact in Germany downloads an e-book.
The example ebook-followup sends after 1d, 3d and 7d, Monday to Friday 09:00-17:00 in the
contact's zone: Tuesday 10:00, Friday 10:00, then the Friday after (Berlin time).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from typer.testing import CliRunner

from config.settings import Settings
from connectors.sources.base import RawRecord, SourceConfig
from tests.hygiene_helpers import maildir_with
from tests.pipeline_helpers import Running, running
from tests.servers.hubspot import HubSpotServer
from tests.servers.smtp import SmtpServer
from tests.test_crm_sync import OWNER_IDS, crm_yaml
from worker.commands.cli import app as cli
from worker.commands.crmsync import drain as crm_drain
from worker.commands.erasure import forget
from worker.pipeline.actors import simulate_clock
from worker.pipeline.hygiene import import_bounces, resume_list
from worker.pipeline.ingest import ingest_records
from worker.pipeline.nurture import claim_due_steps, pause, resume, run_step, status
from worker.runtime.app import App, init_app
from worker.runtime.embedded import drain
from worker.store.models import ListState, Message, NurtureEnrolment, NurtureRefusal
from worker.web.app import create_app

MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
TUESDAY = MONDAY + timedelta(days=1)
FRIDAY = MONDAY + timedelta(days=4)


def add_event(app: App, email: str, kind: str, at: datetime, **data: Any) -> None:
    """One record as a source would deliver it: an e-book download, a fair scan, a form."""
    record = {
        "email": email,
        "first_name": "Eva",
        "last_name": "Roth",
        "company": "Maschinenbau Nord",
        "company_size": 250,  # fit 30: a demo request on top makes an MQL, an e-book does not
        "country": "DE",
        "title": "Engineer",
        "phone": "+49 511 123456",
        **data,
    }
    source = SourceConfig(
        name=f"test-{kind}",
        kind="demo",
        event={"type": kind, **{k: f"$.{k}" for k in ("rating", "asset", "form") if k in data}},
    )
    raw = RawRecord(data=record, record_id=f"{kind}-{email}-{at.isoformat()}", occurred_at=at)
    ingest_records(app.store, app.config, source, [raw])


def pass_at(leadwerk: Running, at: datetime) -> None:
    """One pass of the pipeline and the clock as if it were ``at``."""
    simulate_clock(at)
    try:
        drain(leadwerk.app, leadwerk.broker, leadwerk.worker, now=at)
    finally:
        simulate_clock(None)


def subjects(smtp: SmtpServer) -> list[str]:
    return [str(mail.message["Subject"]) for mail in smtp.messages]


def enrolments(app: App) -> list[NurtureEnrolment]:
    with app.store.session() as session:
        return list(session.scalars(select(NurtureEnrolment).order_by(NurtureEnrolment.id)))


def set_limits(config_dir: Path, limits: str) -> None:
    path = config_dir / "nurture.yaml"
    text = re.sub(r"^limits:.*$", f"limits: {limits}", path.read_text(), flags=re.M)
    path.write_text(text)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def leadwerk(
    smtp: SmtpServer, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Running]:
    with running(make_settings(smtp_url=smtp.url, database_url=database_url)) as running_:
        yield running_


def test_an_ebook_download_enrols_and_each_step_arrives_once_when_due(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    # Given an e-book download on Monday morning
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY, asset="industrie-4-0-guide")
    pass_at(leadwerk, MONDAY)
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.sequence, enrolment.status, enrolment.step) == ("ebook-followup", "active", 1)
    assert enrolment.next_due_at == TUESDAY
    assert subjects(smtp) == []

    # When the clock passes just before and at the first step's time, and again after it
    pass_at(leadwerk, TUESDAY - timedelta(minutes=1))
    assert subjects(smtp) == []
    pass_at(leadwerk, TUESDAY)
    pass_at(leadwerk, TUESDAY + timedelta(hours=1))

    # Then the thank-you arrives once, with one-click unsubscribe, and the case study is next
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["eva@mb-nord.de"]
    assert mail.message["Subject"] == ('Your guide "industrie-4-0-guide": thank you, Eva')
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in mail.message["List-Unsubscribe"]
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.step, enrolment.next_due_at) == (2, FRIDAY)


def test_a_one_click_unsubscribe_mid_sequence_stops_the_next_step(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    pass_at(leadwerk, TUESDAY)
    link = re.fullmatch(r"<(.+)/unsubscribe/(.+)>", smtp.messages[0].message["List-Unsubscribe"])
    assert link is not None

    # The mailbox provider POSTs to the link from the header, over HTTP
    with served(leadwerk.app) as base:
        shown = httpx.get(f"{base}/unsubscribe/{link.group(2)}")
        assert [e.status for e in enrolments(leadwerk.app)] == ["active"]  # a GET changes nothing
        answer = httpx.post(
            f"{base}/unsubscribe/{link.group(2)}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        forged = httpx.post(f"{base}/unsubscribe/{link.group(2)}x")
    assert (shown.status_code, answer.status_code, forged.status_code) == (200, 200, 403)

    pass_at(leadwerk, FRIDAY)
    assert len(smtp.messages) == 1
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "unsubscribed")

    # A later download does not enrol the address again
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", FRIDAY)
    pass_at(leadwerk, FRIDAY)
    assert len(enrolments(leadwerk.app)) == 1
    assert refusals(leadwerk.app) == [("ebook-followup", "suppressed")]


def test_a_contact_that_becomes_an_mql_mid_sequence_leaves_it_at_once(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    pass_at(leadwerk, TUESDAY)
    # A demo request on Wednesday makes Eva an MQL (fit 30 + 10 + 50)
    add_event(
        leadwerk.app, "eva@mb-nord.de", "form", TUESDAY + timedelta(days=1), form="demo-request"
    )
    pass_at(leadwerk, TUESDAY + timedelta(days=1))
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "mql")
    pass_at(leadwerk, FRIDAY)
    nurture_mails = [s for s in subjects(smtp) if not s.startswith(("New lead", "Unassigned"))]
    assert nurture_mails == ["Your guide: thank you, Eva"]


def test_a_reply_from_any_source_ends_the_sequence(leadwerk: Running, smtp: SmtpServer) -> None:
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    add_event(leadwerk.app, "eva@mb-nord.de", "reply", MONDAY + timedelta(hours=2))
    pass_at(leadwerk, TUESDAY)
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "replied")
    assert smtp.messages == []


def test_a_contact_on_the_phone_is_not_also_mailed_and_the_refusal_is_recorded(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    # A warm conversation at the fair puts Eva on the phone sequence
    add_event(leadwerk.app, "eva@mb-nord.de", "tradefair", MONDAY, rating="warm")
    pass_at(leadwerk, MONDAY)
    # then she downloads an e-book: the e-mail sequence refuses her
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY + timedelta(hours=1))
    pass_at(leadwerk, MONDAY + timedelta(hours=1))
    assert [(e.sequence, e.channel, e.status) for e in enrolments(leadwerk.app)] == [
        ("fair-warm-calls", "phone", "active")
    ]
    assert refusals(leadwerk.app) == [("ebook-followup", "channel_conflict")]
    report = status(leadwerk.app.store, leadwerk.app.config)
    assert report["ebook-followup"]["refused_channel"] == 1
    assert report["fair-warm-calls"]["active"] == 1

    # The first call is a task for the fallback manager (Eva has no rep), with her phone
    pass_at(leadwerk, TUESDAY)
    [task] = smtp.messages
    assert task.rcpt_tos == ["anna.schulz@example.com"]
    assert task.message["Subject"] == (
        "Call task: Eva Roth (Maschinenbau Nord): Call about the conversation at the fair"
    )
    body = task.message.get_body(("plain",)).get_content()
    assert "+49511123456" in body
    assert "Tue 10:00 CET (Europe/Berlin)" in body
    assert "tradefair via test-tradefair, rating warm" in body
    assert "List-Unsubscribe" not in task.message
    assert status(leadwerk.app.store, leadwerk.app.config)["fair-warm-calls"]["call_tasks"] == 1


def refusals(app: App) -> list[tuple[str, str]]:
    with app.store.session() as session:
        return [(r.sequence, r.reason) for r in session.scalars(select(NurtureRefusal))]


def test_a_restart_between_two_steps_loses_nothing_and_sends_nothing_twice(
    smtp: SmtpServer, make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(smtp_url=smtp.url, database_url=database_url)
    with running(settings) as first:
        add_event(first.app, "eva@mb-nord.de", "ebook", MONDAY)
        pass_at(first, MONDAY)
        pass_at(first, TUESDAY)
        # The clock claims Friday's step, then the process dies before a worker ran it
        assert len(claim_due_steps(first.app.store, first.app.config, FRIDAY).enqueued) == 1
    with running(settings) as second:
        pass_at(second, FRIDAY + timedelta(minutes=1))  # claimed: not rung again yet
        assert len(smtp.messages) == 1
        pass_at(second, FRIDAY + timedelta(minutes=6))  # the claim's lease has run out
        pass_at(second, FRIDAY + timedelta(minutes=7))
    assert Counter(subjects(smtp)) == {
        "Your guide: thank you, Eva": 1,
        "How a machine builder like Maschinenbau Nord cut lead response time": 1,
    }


def test_two_workers_racing_on_the_same_due_steps_send_each_once(
    smtp: SmtpServer, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    with running(make_settings(smtp_url=smtp.url, database_url=postgres_url)) as leadwerk:
        app = leadwerk.app
        for index in range(20):
            add_event(app, f"eva{index}@mb-nord-{index}.de", "ebook", MONDAY)
        pass_at(leadwerk, MONDAY)
        ids = [e.id for e in enrolments(app)]
        assert len(ids) == 20
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def worker() -> None:
            start.wait()
            for enrolment_id in ids:
                outcomes.append(run_step(app.store, app.config, enrolment_id, TUESDAY).status)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with app.store.session() as session:
            keys = list(session.scalars(select(Message.key)))
    assert Counter(outcomes) == {"sent": 20, "skipped": 20}
    assert len(keys) == len(set(keys)) == 20


def test_limits_spread_the_surplus_to_the_next_opening_and_drop_nothing(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    # Three a day per recipient domain: five downloads from one company
    set_limits(config_dir, "{per_domain_per_day: 3}")
    with running(make_settings(smtp_url=smtp.url)) as leadwerk:
        for index in range(5):
            add_event(leadwerk.app, f"person{index}@bigcorp.de", "ebook", MONDAY)
        pass_at(leadwerk, MONDAY)
        pass_at(leadwerk, TUESDAY)
        assert len(smtp.messages) == 3
        waiting = [e.next_due_at for e in enrolments(leadwerk.app) if e.step == 1]
        wednesday_opening = datetime(2026, 12, 9, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
        assert waiting == [wednesday_opening, wednesday_opening]
        pass_at(leadwerk, wednesday_opening)
    assert len(smtp.messages) == 5


def test_the_per_minute_limit_sends_the_rest_in_the_minutes_after(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    set_limits(config_dir, "{per_minute: 2}")
    with running(make_settings(smtp_url=smtp.url)) as leadwerk:
        for index in range(5):
            add_event(leadwerk.app, f"person@firm{index}.de", "ebook", MONDAY)
        pass_at(leadwerk, MONDAY)
        sent = []
        for minute in range(3):
            pass_at(leadwerk, TUESDAY + timedelta(minutes=minute))
            sent.append(len(smtp.messages))
    assert sent == [2, 4, 5]


def test_pausing_a_sequence_freezes_it_and_resuming_moves_its_dates_by_the_pause(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    store = leadwerk.app.store
    assert pause(store, "ebook-followup", MONDAY + timedelta(hours=1)) == 1
    pass_at(leadwerk, TUESDAY)
    assert smtp.messages == []
    assert status(store, leadwerk.app.config)["ebook-followup"]["paused_contacts"] == 1
    assert resume(store, "ebook-followup", MONDAY + timedelta(hours=3)) == 1
    [enrolment] = enrolments(leadwerk.app)
    assert enrolment.next_due_at == TUESDAY + timedelta(hours=2)
    pass_at(leadwerk, TUESDAY + timedelta(hours=2))
    assert len(smtp.messages) == 1


def test_forgetting_a_contact_removes_its_enrolments(leadwerk: Running) -> None:
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    add_event(leadwerk.app, "eva@mb-nord.de", "tradefair", MONDAY, rating="warm")
    pass_at(leadwerk, MONDAY)
    assert enrolments(leadwerk.app) and refusals(leadwerk.app)
    forget(leadwerk.app, "eva@mb-nord.de")
    assert enrolments(leadwerk.app) == []
    assert refusals(leadwerk.app) == []


def test_run_once_now_walks_three_days_and_mails_arrive_when_due(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path, tmp_path: Path
) -> None:
    (config_dir / "sources.yaml").write_text("sources: []\n")
    settings = make_settings(smtp_url=smtp.url)
    app = init_app(settings)
    add_event(app, "eva@mb-nord.de", "ebook", MONDAY)
    app.close()
    env = {
        "LEADWERK_DATABASE_URL": settings.database_url,
        "LEADWERK_SMTP_URL": smtp.url,
        "LEADWERK_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    arrived = {}
    for day in (MONDAY, TUESDAY, TUESDAY + timedelta(days=1), TUESDAY + timedelta(days=2), FRIDAY):
        result = CliRunner().invoke(
            cli, ["run", "--once", "--now", day.isoformat(), "--config", str(config_dir)], env=env
        )
        assert result.exit_code == 0, result.output
        arrived[day.strftime("%a")] = subjects(smtp)[sum(len(v) for v in arrived.values()) :]
    assert arrived == {
        "Mon": [],
        "Tue": ["Your guide: thank you, Eva"],
        "Wed": [],
        "Thu": [],
        "Fri": ["How a machine builder like Maschinenbau Nord cut lead response time"],
    }
    shown = CliRunner().invoke(
        cli, ["nurture", "status", "--json", "--config", str(config_dir)], env=env
    )
    report = json.loads(shown.output)
    assert report["ebook-followup"]["active"] == 1
    assert report["ebook-followup"]["emails_sent"] == 2


def test_a_sequence_naming_a_template_that_does_not_exist_is_a_located_error(
    config_dir: Path,
) -> None:
    path = config_dir / "nurture.yaml"
    path.write_text(path.read_text().replace("template: case_study", "template: case_stduy"))
    result = CliRunner().invoke(cli, ["rules", "check", "--config", str(config_dir)])
    assert result.exit_code == 1
    assert re.search(
        r"nurture\.yaml:\d+:\d+: template 'case_stduy' does not exist", result.output
    ), result.output


class served:
    """Leadwerk's web app on a free port of 127.0.0.1."""

    def __init__(self, app: App) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(app), host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:  # start-up, not a timing assertion
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_e_mail_steps_go_only_to_contacts_whose_consent_allows_them(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    path = config_dir / "nurture.yaml"
    path.write_text("consent_field: newsletter\n" + path.read_text())
    with running(make_settings(smtp_url=smtp.url)) as leadwerk:
        add_event(leadwerk.app, "yes@firm-a.de", "ebook", MONDAY, newsletter=True)
        add_event(leadwerk.app, "no@firm-b.de", "ebook", MONDAY)
        pass_at(leadwerk, MONDAY)
        pass_at(leadwerk, TUESDAY)
        assert [mail.rcpt_tos for mail in smtp.messages] == [["yes@firm-a.de"]]
        assert refusals(leadwerk.app) == [("ebook-followup", "no_consent")]


def test_a_contact_silent_for_longer_than_the_stale_limit_leaves_a_sequence_that_exits_on_stale(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    path = config_dir / "nurture.yaml"
    path.write_text(
        path.read_text().replace(
            "exit_when: mql or replied or unsubscribed",
            "exit_when: stale or mql or replied or unsubscribed",
        )
    )
    hygiene = config_dir / "hygiene.yaml"
    hygiene.write_text(
        hygiene.read_text().replace("no_engagement_for: 540d", "no_engagement_for: 2d")
    )
    with running(make_settings(smtp_url=smtp.url)) as leadwerk:
        add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
        pass_at(leadwerk, MONDAY)
        pass_at(leadwerk, TUESDAY)
        pass_at(leadwerk, FRIDAY)
        [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "stale")
    assert len(smtp.messages) == 1


def test_a_hard_bounce_ends_the_sequence_before_its_next_email(
    leadwerk: Running, smtp: SmtpServer, tmp_path: Path
) -> None:
    # Given a contact who got the first e-mail of ebook-followup on Tuesday
    add_event(leadwerk.app, "eva.mueller@bigcorp.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    pass_at(leadwerk, TUESDAY)
    assert len(smtp.messages) == 1
    # When the mail server's DSN says the mailbox does not exist (5.1.1, a hard bounce)
    folder = maildir_with(tmp_path / "bounces", "postfix_user_unknown.eml")
    result = import_bounces(leadwerk.app.store, leadwerk.app.config, folder, TUESDAY)
    assert result.hard == 1
    # Then Friday's step is not sent: the sequence ends on its exit_when `bounced`
    pass_at(leadwerk, FRIDAY + timedelta(hours=2))
    assert len(smtp.messages) == 1
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "bounced")


def test_a_suspended_lists_next_email_waits_until_the_list_is_resumed(
    leadwerk: Running, smtp: SmtpServer
) -> None:
    # Given a contact of the list test-ebook, enrolled on Monday
    add_event(leadwerk.app, "eva@mb-nord.de", "ebook", MONDAY)
    pass_at(leadwerk, MONDAY)
    # When its list is suspended for bouncing too much before the first step is due
    with leadwerk.app.store.session() as session:
        session.add(ListState(name="test-ebook", status="suspended", changed_at=MONDAY))
    pass_at(leadwerk, TUESDAY + timedelta(hours=1))
    # Then nothing is sent and the step waits, still active
    assert subjects(smtp) == []
    [enrolment] = enrolments(leadwerk.app)
    assert (enrolment.status, enrolment.step) == ("active", 1)
    # And once an admin resumes the list, the step goes out at its next look
    assert resume_list(leadwerk.app.store, "test-ebook", TUESDAY, "admin")
    pass_at(leadwerk, enrolment.next_due_at)
    assert len(smtp.messages) == 1


def test_a_call_task_of_a_phone_step_reaches_the_crm_with_its_contact(
    smtp: SmtpServer, make_settings: Callable[..., Settings], config_dir: Path, database_url: str
) -> None:
    # Given a HubSpot as the CRM and a warm card from the fair (the phone sequence)
    with HubSpotServer(token="pat-eu1-leadwerk", owners=OWNER_IDS) as hubspot:
        (config_dir / "crm.yaml").write_text(crm_yaml(hubspot.base_url), encoding="utf-8")
        settings = make_settings(
            smtp_url=smtp.url, database_url=database_url, env={"HUBSPOT_TOKEN": hubspot.token}
        )
        with running(settings) as leadwerk:
            add_event(leadwerk.app, "eva@mb-nord.de", "tradefair", MONDAY, rating="warm")
            pass_at(leadwerk, MONDAY)
            # When the first call is due and the CRM outbox is sent
            pass_at(leadwerk, TUESDAY + timedelta(hours=1))
            sent = crm_drain(leadwerk.app, TUESDAY + timedelta(hours=1)).sent
        # Then the contact (no MQL: upserted as it stands) and its task are in the CRM, once
        assert sent == 2
        contact_id, _ = hubspot.by_email("eva@mb-nord.de")
        [task] = hubspot.tasks
        assert task["properties"]["hs_task_subject"] == "Call about the conversation at the fair"
        assert task["associations"][0]["to"]["id"] == contact_id
