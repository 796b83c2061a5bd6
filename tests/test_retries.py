"""A message that cannot go out now is owned by its outbox row until it does: tried again at
its ``retry_at`` and not before, whoever enqueues it; with capped, jittered backoff for
``retry_for``; one warning per failed try, one error when it gives up; and ``leadwerk status``
names the cause from the rows alone.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row
from tests.pipeline_helpers import Running, running
from tests.servers.smtp import SmtpServer
from worker.commands.status import collect_status, render_status
from worker.pipeline import notify
from worker.pipeline.ingest import ingest_records
from worker.store.models import DeadLetter, Event, Message

LEA = "lea.hoffmann@example.com"
T0 = datetime(2026, 12, 5, 14, 2, 11, tzinfo=UTC)
# What PostgreSQL raises in the transaction it picks as a deadlock's victim.
DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"


def at(moment: datetime) -> notify.Clock:
    """A clock that stands at ``moment``."""
    return lambda: moment


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def down_smtp_url() -> str:
    return f"smtp://127.0.0.1:{closed_port()}"


def a_new_lead_email(leadwerk: Running, recipient: str = LEA) -> int:
    """An e-mail for a rep waiting in the outbox, as routing writes it."""
    with leadwerk.app.store.session() as session:
        message = Message(
            key=f"lead:1:assignment:1:new_lead:{recipient}",
            purpose="new_lead",
            channel="email",
            recipient=recipient,
            recipient_name="Lea Hoffmann",
            rep="lea",
            subject="New lead: Eva Müller",
            body_text="Eva Müller, Head of IT at Bigcorp AG",
            message_id="<lead-1.a1.lea@localhost>",
            status="pending",
            created_at=T0,
        )
        session.add(message)
        session.flush()
        return message.id


def row(leadwerk: Running, message_id: int) -> Message:
    with leadwerk.app.store.session() as session:
        message = session.get(Message, message_id)
        assert message is not None
        return message


def dead_letters(leadwerk: Running) -> list[DeadLetter]:
    with leadwerk.app.store.session() as session:
        return list(session.scalars(select(DeadLetter)))


@pytest.fixture
def leadwerk_down(
    make_settings: Callable[..., Settings], database_url: str, down_smtp_url: str
) -> Iterator[Running]:
    """Leadwerk whose mail server refuses connections, retries capped at 30 s, given up
    after an hour."""
    settings = make_settings(
        database_url=database_url, smtp_url=down_smtp_url, retry_cap=30, retry_for=3600
    )
    with running(settings) as leadwerk:
        yield leadwerk


def test_a_message_waiting_out_a_retry_is_not_sent_before_its_time_whoever_enqueues_it(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with (
        SmtpServer() as smtp,
        running(make_settings(database_url=database_url, smtp_url=smtp.url)) as leadwerk,
    ):
        message_id = a_new_lead_email(leadwerk)
        with leadwerk.app.store.session() as session:
            session.get(Message, message_id).retry_at = T0 + timedelta(seconds=30)  # type: ignore[union-attr]

        # A redelivered message, the fast path and the sweep all try to send it early
        early = [
            notify.send_message(leadwerk.app, message_id, at(T0 + timedelta(seconds=s)))
            for s in (0, 5, 29)
        ]
        # and once more when it is due
        due = notify.send_message(leadwerk.app, message_id, at(T0 + timedelta(seconds=30)))
        mails = smtp.wait_for(1)

    assert [outcome.status for outcome in early] == ["skipped"] * 3
    assert due.status == "sent"
    assert len(mails) == 1 and row(leadwerk, message_id).attempts == 1


def test_an_unreachable_mail_server_is_one_warning_with_the_cause_and_the_next_attempt(
    leadwerk_down: Running, caplog: pytest.LogCaptureFixture
) -> None:
    leadwerk = leadwerk_down
    message_id = a_new_lead_email(leadwerk)
    caplog.set_level(logging.INFO)

    outcome = notify.send_message(leadwerk.app, message_id, at(T0))

    message = row(leadwerk, message_id)
    # The row waits for its next attempt, within the cap, with the reason
    assert outcome.status == "retry" and outcome.retry_at == message.retry_at
    assert message.status == "pending" and message.first_failed_at == T0
    assert message.retry_at is not None and T0 <= message.retry_at <= T0 + timedelta(seconds=30)
    assert "unreachable (connection refused)" in (message.error or "")
    # One warning: channel, masked recipient, cause, next attempt; no traceback, no address
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = warning.getMessage()
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert text.startswith("e-mail ") and "l***@example.com" in text
    assert "connection refused" in text
    assert f"next attempt {message.retry_at:%H:%M:%S} UTC" in text
    assert LEA not in caplog.text
    assert dead_letters(leadwerk) == []


def test_a_passing_fault_is_retried_until_retry_for_then_dead_lettered_with_an_error(
    leadwerk_down: Running, caplog: pytest.LogCaptureFixture
) -> None:
    leadwerk = leadwerk_down
    message_id = a_new_lead_email(leadwerk)
    # Failing for 59 minutes: still retried
    moment = T0
    while moment < T0 + timedelta(minutes=59):
        assert notify.send_message(leadwerk.app, message_id, at(moment)).status == "retry"
        moment = row(leadwerk, message_id).retry_at or moment
    assert dead_letters(leadwerk) == []
    caplog.clear()

    # After retry_for (an hour) of failing, the next failure gives up
    outcome = notify.send_message(leadwerk.app, message_id, at(T0 + timedelta(hours=1)))

    message = row(leadwerk, message_id)
    assert outcome.status == "failed" and message.status == "failed"
    [dead] = dead_letters(leadwerk)
    assert dead.args == [message_id]
    assert f"gave up after {message.attempts} attempts in 1.0 h" in dead.error
    assert "connection refused" in dead.error
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR and "l***@example.com" in error.getMessage()


def test_a_recipient_the_server_refuses_for_good_is_dead_lettered_at_once(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with (
        SmtpServer(reject_rcpt=[LEA]) as smtp,
        running(make_settings(database_url=database_url, smtp_url=smtp.url)) as leadwerk,
    ):
        message_id = a_new_lead_email(leadwerk)
        outcome = notify.send_message(leadwerk.app, message_id, at(T0))

    assert outcome.status == "failed"
    assert (row(leadwerk, message_id).status, row(leadwerk, message_id).attempts) == ("failed", 1)
    [dead] = dead_letters(leadwerk)
    assert "550" in dead.error


def test_backoff_grows_to_the_cap_with_full_jitter_and_honours_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(retry_base=2, retry_cap=50)
    waits = {
        attempt: [notify.retry_delay(settings, attempt) for _ in range(200)]
        for attempt in (1, 3, 40, 5000)
    }

    assert all(0 <= wait <= 2 for wait in waits[1])
    assert all(0 <= wait <= 8 for wait in waits[3])
    # capped, and spread over the whole range rather than all at the cap
    assert all(0 <= wait <= 50 for wait in waits[40] + waits[5000])
    assert min(waits[40]) < 10 and max(waits[40]) > 40
    # what the server asked for wins
    assert notify.retry_delay(settings, 3, retry_after=120) == 120


def test_status_names_the_outage_of_a_channel_from_the_outbox_rows(
    leadwerk_down: Running, down_smtp_url: str
) -> None:
    leadwerk = leadwerk_down
    first, second = a_new_lead_email(leadwerk), a_new_lead_email(leadwerk, "jonas@example.com")
    notify.send_message(leadwerk.app, first, at(T0))
    notify.send_message(leadwerk.app, second, at(T0 + timedelta(seconds=4)))
    next_attempt = min(row(leadwerk, first).retry_at, row(leadwerk, second).retry_at)  # type: ignore[type-var]

    data = collect_status(leadwerk.app)

    server = down_smtp_url.removeprefix("smtp://")
    [outage] = data["outages"]
    assert outage == {
        "channel": "email",
        "since": T0,
        "error": f"SMTP server {server} unreachable (connection refused)",
        "waiting": 2,
        "next_attempt": next_attempt,
    }
    assert (
        f"e-mail: failing since 14:02:11 UTC: SMTP server {server} unreachable "
        f"(connection refused); 2 messages waiting, next attempt {next_attempt:%H:%M:%S} UTC"
    ) in render_status(data)


def test_an_import_batch_rolled_back_for_a_deadlock_runs_again_and_keeps_every_record_once(
    make_settings: Callable[..., Settings], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [fair_row(f"lead{n}@firm{n}.de") for n in range(3)]
    deadlocks = [1]

    def first_try_deadlocks(session: Session) -> None:
        if deadlocks:
            deadlocks.pop()
            session.execute(text(DEADLOCK))

    with running(make_settings(database_url=postgres_url)) as leadwerk:
        app = leadwerk.app
        report = ingest_records(
            app.store, app.config, app.config.sources[FAIR], rows, on_batch=first_try_deadlocks
        )
        with app.store.session() as session:
            events = session.scalar(select(func.count()).select_from(Event))

    assert (report.accepted, report.duplicates, events) == (3, 0, 3)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"batch from {FAIR} hit a deadlock; running it again"
    ]
