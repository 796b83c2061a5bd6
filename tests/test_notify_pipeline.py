"""Reps hear about their leads: a Slack card or an e-mail they can act on, delivered once.

Each test runs Leadwerk on real parts (Redis as the broker, a real SMTP server, a local server
that answers like the Slack Web API) and feeds it a hot lead from the fair; nothing sweeps the
store, so whatever arrives was sent by the actors themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row
from tests.pipeline_helpers import Running, running
from tests.redis_namespace import own_namespace
from tests.servers.slack import SlackApiServer
from tests.servers.smtp import ReceivedMail, SmtpServer
from worker.commands.cli import app as cli
from worker.pipeline.actors import score_lead
from worker.pipeline.ingest import ingest_records
from worker.runtime.broker import QUEUES
from worker.store.models import Assignment, Message

SLACK_TOKEN = "xoxb-leadwerk-test"
JONAS_SLACK = "U024BE7LH"

# One rep at a desk, open around the clock so the lead is never held back for working hours;
# Jonas works from New York, so his deadlines must read in New York time.
ONE_REP_DESK = """
teams:
  desk: {{manager: anna, members: [{rep}]}}
reps:
  anna: {{name: Anna Schulz, email: anna.schulz@example.com}}
  jonas:
    name: Jonas Weber
    email: jonas.weber@example.com
    slack: {slack}
    notify: slack
    timezone: America/New_York
  lea: {{name: Lea Hoffmann, email: lea.hoffmann@example.com, notify: email}}
"""
DESK_ROUTING = """
rules:
  - name: the desk
    team: desk
    strategy: round_robin
fallback: {notify: [anna]}
"""


def staff_desk(config_dir: Path, rep: str) -> None:
    (config_dir / "team.yaml").write_text(
        ONE_REP_DESK.format(rep=rep, slack=JONAS_SLACK), encoding="utf-8"
    )
    (config_dir / "routing.yaml").write_text(DESK_ROUTING, encoding="utf-8")


@pytest.fixture
def leadwerk_settings(
    make_settings: Callable[..., Settings], redis_url: str
) -> Iterator[Callable[..., Settings]]:
    """Settings on Redis, in a namespace of this test's own."""
    with own_namespace(redis_url) as namespace:

        def make(**overrides: object) -> Settings:
            return make_settings(redis_url=redis_url, redis_namespace=namespace, **overrides)

        yield make


def hot_lead_arrives(leadwerk: Running) -> None:
    """Eva, Head of IT at a large German firm, rated hot at the fair: an MQL (score 85)."""
    app = leadwerk.app
    row = fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT")
    row.data.update({"Vorname": "Eva", "Nachname": "Müller", "Firma": "Bigcorp AG"})
    row.data["Telefon"] = "+49 511 123456"
    report = ingest_records(app.store, app.config, app.config.sources[FAIR], [row])
    for event_id in report.event_ids:
        score_lead.send(event_id)


def settle(leadwerk: Running) -> None:
    """Wait until the actors have done all they enqueued, retries included."""
    for queue in QUEUES:
        leadwerk.broker.join(queue, timeout=20_000)  # type: ignore[attr-defined]
    leadwerk.worker.join()


def messages(leadwerk: Running) -> list[Message]:
    with leadwerk.app.store.session() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def assignment(leadwerk: Running) -> Assignment:
    with leadwerk.app.store.session() as session:
        return session.scalars(select(Assignment)).one()


def test_a_slack_rep_gets_a_card_with_the_lead_why_it_scored_when_to_answer_and_accept(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given Jonas, who wants his leads in Slack and works in New York
    staff_desk(config_dir, "jonas")
    with SmtpServer() as smtp, SlackApiServer(token=SLACK_TOKEN) as slack:
        settings = leadwerk_settings(
            smtp_url=smtp.url, slack_token=SLACK_TOKEN, slack_base_url=slack.base_url
        )
        with running(settings) as leadwerk:
            # When a hot lead arrives
            hot_lead_arrives(leadwerk)
            [call] = slack.wait_for(1)
            settle(leadwerk)
            due_at = assignment(leadwerk).due_at

    # Then chat.postMessage got a card for Jonas, and no e-mail went out
    assert call.path == "/api/chat.postMessage"
    assert call.body["channel"] == JONAS_SLACK
    assert smtp.messages == []
    blocks = call.body["blocks"]
    assert blocks[0]["text"]["text"] == "New lead: Eva Müller"
    fields = [field["text"] for field in blocks[1]["fields"]]
    assert "*Name*\nEva Müller" in fields
    assert "*Company*\nBigcorp AG" in fields
    assert "*Score*\n85.0" in fields
    # the reasons, strongest first
    assert blocks[2]["text"]["text"].splitlines()[1:3] == [
        "• hot at the fair (+40)",
        "• large company (+20)",
    ]
    # the deadline in Jonas's time zone, not the company's
    assert due_at is not None
    in_new_york = due_at.astimezone(ZoneInfo("America/New_York"))
    deadline = blocks[3]["elements"][0]["text"]
    assert in_new_york.strftime("%H:%M %Z") in deadline
    assert due_at.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") not in deadline
    [button] = blocks[4]["elements"]
    assert (button["text"]["text"], button["action_id"]) == ("Accept", "accept_lead")
    assert button["url"].startswith("http://127.0.0.1:8000/accept/")


def test_an_email_rep_gets_text_and_html_with_the_leads_fields(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given Lea, who wants her leads by e-mail
    staff_desk(config_dir, "lea")
    with SmtpServer() as smtp, running(leadwerk_settings(smtp_url=smtp.url)) as leadwerk:
        # When a hot lead arrives
        hot_lead_arrives(leadwerk)
        [mail] = smtp.wait_for(1)
        settle(leadwerk)
        [message] = messages(leadwerk)

    # Then one e-mail reached her, with a text and an HTML part naming the lead
    assert mail.rcpt_tos == ["lea.hoffmann@example.com"]
    assert (
        str(mail.message["Subject"]) == "New lead: Eva Müller (Bigcorp AG) · score 85.0 · standard"
    )
    assert mail.message.get_content_type() == "multipart/alternative"
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Eva Müller" in part
        assert "Head of IT" in part
        assert "Bigcorp AG" in part
        assert "eva.mueller@bigcorp.de" in part
        assert "+49511123456" in part  # the number as stored, in E.164
        assert "hot at the fair (+40)" in part
        assert "/accept/" in part
    # And the outbox shows it sent, once
    assert (message.status, message.attempts, message.channel) == ("sent", 1, "email")


def test_a_rep_slack_does_not_know_gets_the_same_notification_by_email(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given Jonas's Slack id is wrong: Slack answers channel_not_found
    staff_desk(config_dir, "jonas")
    with (
        SmtpServer() as smtp,
        SlackApiServer(token=SLACK_TOKEN, unknown_users={JONAS_SLACK}) as slack,
    ):
        settings = leadwerk_settings(
            smtp_url=smtp.url, slack_token=SLACK_TOKEN, slack_base_url=slack.base_url
        )
        with running(settings) as leadwerk:
            # When a hot lead arrives
            hot_lead_arrives(leadwerk)
            [mail] = smtp.wait_for(1)
            settle(leadwerk)
            slack_message, email_message = messages(leadwerk)

    # Then the notification reached him by e-mail instead, without waiting for a sweep
    assert slack.calls == []
    assert mail.rcpt_tos == ["jonas.weber@example.com"]
    assert str(mail.message["Subject"]).startswith("New lead: Eva Müller (Bigcorp AG)")
    assert "hot at the fair (+40)" in mail.message.get_body(("plain",)).get_content()
    # And the outbox says why
    assert slack_message.status == "rerouted"
    assert "channel_not_found" in (slack_message.error or "")
    assert "sent by e-mail instead" in (slack_message.error or "")
    assert (email_message.channel, email_message.status) == ("email", "sent")


def test_a_rejected_slack_token_dead_letters_the_message_for_the_admin(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given a Slack token that Slack rejects (invalid_auth)
    staff_desk(config_dir, "jonas")
    with SmtpServer() as smtp, SlackApiServer(token="xoxb-the-real-one") as slack:
        settings = leadwerk_settings(
            smtp_url=smtp.url, slack_token="xoxb-revoked", slack_base_url=slack.base_url
        )
        with running(settings) as leadwerk:
            # When a hot lead arrives
            hot_lead_arrives(leadwerk)
            settle(leadwerk)
            [message] = messages(leadwerk)

    # Then nothing is sent and the message failed for good, naming the fix
    assert slack.calls == [] and smtp.messages == []
    assert message.status == "failed"
    assert "invalid_auth" in (message.error or "")
    # And `leadwerk dlq list` shows it to the admin
    listed = CliRunner().invoke(
        cli,
        ["--config", str(config_dir), "dlq", "list"],
        env={"LEADWERK_DATABASE_URL": settings.database_url},
    )
    assert listed.exit_code == 0, listed.output
    assert f"send_message({message.id},)" in listed.output
    assert "invalid_auth" in listed.output
    assert "1 open dead letter(s)" in listed.output


def test_a_slack_rate_limit_is_waited_out_and_the_card_delivered_once(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given Slack answers the first post with 429 and Retry-After: 2
    staff_desk(config_dir, "jonas")
    with SmtpServer() as smtp, SlackApiServer(token=SLACK_TOKEN) as slack:
        slack.queue_response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "2"})
        settings = leadwerk_settings(
            smtp_url=smtp.url, slack_token=SLACK_TOKEN, slack_base_url=slack.base_url
        )
        with running(settings) as leadwerk:
            # When a hot lead arrives
            started = datetime.now(UTC)
            hot_lead_arrives(leadwerk)
            slack.wait_for(1, timeout=15)
            settle(leadwerk)
            [message] = messages(leadwerk)

    # Then the card went out once, on a second attempt made no sooner than Slack asked
    assert len(slack.calls) == 1
    assert (message.status, message.attempts) == ("sent", 2)
    assert message.sent_at is not None
    assert (message.sent_at - started).total_seconds() >= 2


def hot_lead_mailed(
    config_dir: Path, leadwerk_settings: Callable[..., Settings], smtp: SmtpServer
) -> tuple[Message, list[ReceivedMail]]:
    """Lea's desk, a hot lead through a running Leadwerk whose mail goes to ``smtp``: its
    outbox row once settled, and what the server received."""
    staff_desk(config_dir, "lea")
    with smtp, running(leadwerk_settings(smtp_url=smtp.url)) as leadwerk:
        hot_lead_arrives(leadwerk)
        smtp.wait_for(1, timeout=15)
        settle(leadwerk)
        [message] = messages(leadwerk)
    return message, smtp.messages


def test_sent_at_is_the_time_the_mail_server_accepted_the_email(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given a busy mail server that takes a second to answer each message
    smtp = SmtpServer(answer_after=1.0)
    # When a hot lead arrives
    message, [mail] = hot_lead_mailed(config_dir, leadwerk_settings, smtp)

    # Then the outbox says it was sent once the server had it, not when the send began
    assert message.status == "sent" and message.sent_at is not None
    assert message.sent_at >= mail.answered_at


def test_a_temporary_smtp_failure_is_retried_and_the_email_delivered_once(
    config_dir: Path, leadwerk_settings: Callable[..., Settings]
) -> None:
    # Given the mail server answers the first message with 451 (try again later)
    smtp = SmtpServer(fail_next=1)
    # When a hot lead arrives
    message, mails = hot_lead_mailed(config_dir, leadwerk_settings, smtp)

    # Then the e-mail arrived once, on the second attempt
    assert len(mails) == 1
    assert (message.status, message.attempts) == ("sent", 2)
