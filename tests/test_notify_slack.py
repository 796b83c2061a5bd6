"""Slack notifications through a real local HTTP server that answers like Slack."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest

from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.notify.base import OutboundMessage
from connectors.notify.slack import SlackNotifier, SlackWebhookNotifier, lead_card_blocks
from tests.servers.slack import SlackApiServer

TOKEN = "xoxb-leadwerk-test-token"
REP = "U024BE7LH"

CARD = lead_card_blocks(
    title="New lead: Anna Schäfer, ACME GmbH",
    fields=[("Company", "ACME GmbH"), ("Score", "87")],
    reasons=["Visited pricing 3×", "Company size 500+"],
    due_text="Accept by 14:30 (SLA 30 min)",
    accept_url="https://leadwerk.example.com/accept/abc",
    accept_value="lead-42",
)

LEAD_MESSAGE = OutboundMessage(
    key="lead-42:assign:1",
    channel="slack",
    to_address=REP,
    to_name="Jörg Müller",
    subject="New lead",
    text="New lead: Anna Schäfer, ACME GmbH 🚀",
    blocks=CARD,
)


def lead_message(**changes: object) -> OutboundMessage:
    return dataclasses.replace(LEAD_MESSAGE, **changes)  # type: ignore[arg-type]


@pytest.fixture
def slack() -> Iterator[SlackApiServer]:
    with SlackApiServer(token=TOKEN, unknown_users={"U0GONE"}) as server:
        yield server


@pytest.fixture
def notifier(slack: SlackApiServer) -> Iterator[SlackNotifier]:
    notifier = SlackNotifier(TOKEN, base_url=slack.base_url, timeout=5.0)
    yield notifier
    notifier.close()


@pytest.fixture
def webhooks(slack: SlackApiServer) -> Iterator[SlackWebhookNotifier]:
    notifier = SlackWebhookNotifier({"sales": slack.webhook_url("sales")}, timeout=5.0)
    yield notifier
    notifier.close()


# --- chat.postMessage ----------------------------------------------------------------------


def test_a_lead_is_posted_as_json_with_the_bot_token(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    notifier.send(LEAD_MESSAGE)

    [call] = slack.wait_for(1)
    assert call.path == "/api/chat.postMessage"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json; charset=utf-8"
    assert call.body == {
        "channel": REP,
        "text": "New lead: Anna Schäfer, ACME GmbH 🚀",
        "blocks": CARD,
    }


def test_send_returns_the_ts_slack_gave_each_message(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    first = notifier.send(LEAD_MESSAGE)
    second = notifier.send(LEAD_MESSAGE)

    assert first.remote_id == "1700000000.000100"
    assert second.remote_id == "1700000000.000101"


def test_a_text_only_message_sends_no_blocks(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    notifier.send(lead_message(blocks=None))

    [call] = slack.wait_for(1)
    assert "blocks" not in call.body


def test_a_rate_limit_is_retriable_after_the_time_slack_asks_for(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    slack.queue_response(status=429, headers={"Retry-After": "1"})

    with pytest.raises(RetriableError) as caught:
        notifier.send(LEAD_MESSAGE)

    assert caught.value.retry_after == 1.0
    assert slack.calls == []


def test_a_rate_limit_without_retry_after_waits_one_second(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    slack.queue_error("ratelimited")

    with pytest.raises(RetriableError) as caught:
        notifier.send(LEAD_MESSAGE)

    assert caught.value.retry_after == 1.0


def test_a_wrong_token_is_fatal_and_names_the_setting(slack: SlackApiServer) -> None:
    notifier = SlackNotifier("xoxb-wrong", base_url=slack.base_url)

    with pytest.raises(FatalError, match="LEADWERK_SLACK_TOKEN") as caught:
        notifier.send(LEAD_MESSAGE)
    notifier.close()

    assert "invalid_auth" in str(caught.value)
    assert not isinstance(caught.value, UndeliverableError)


def test_a_token_without_the_chat_write_scope_is_fatal(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    slack.queue_response(body={"ok": False, "error": "missing_scope", "needed": "chat:write"})

    with pytest.raises(FatalError, match="chat:write"):
        notifier.send(LEAD_MESSAGE)


def test_an_unknown_user_is_undeliverable_so_the_caller_can_fall_back_to_email(
    slack: SlackApiServer, notifier: SlackNotifier
) -> None:
    with pytest.raises(UndeliverableError, match="channel_not_found"):
        notifier.send(lead_message(to_address="U0GONE"))

    assert slack.calls == []


@pytest.mark.parametrize("error", ["not_in_channel", "is_archived", "user_disabled"])
def test_a_channel_slack_cannot_post_to_is_undeliverable(
    slack: SlackApiServer, notifier: SlackNotifier, error: str
) -> None:
    slack.queue_error(error)

    with pytest.raises(UndeliverableError, match=error):
        notifier.send(LEAD_MESSAGE)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"ok": False, "error": "internal_error"}),
        (200, {"ok": False, "error": "service_unavailable"}),
        (503, "upstream unavailable"),
    ],
)
def test_trouble_on_slacks_side_is_retriable(
    slack: SlackApiServer, notifier: SlackNotifier, status: int, body: dict[str, object] | str
) -> None:
    slack.queue_response(status=status, body=body)

    with pytest.raises(RetriableError):
        notifier.send(LEAD_MESSAGE)


def test_slack_out_of_reach_is_retriable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        notifier = SlackNotifier(TOKEN, base_url=f"http://127.0.0.1:{port}/api", timeout=2.0)

        with pytest.raises(RetriableError, match="unreachable"):
            notifier.send(LEAD_MESSAGE)
    notifier.close()


# --- incoming webhooks ---------------------------------------------------------------------


def test_a_webhook_gets_the_text_and_blocks(
    slack: SlackApiServer, webhooks: SlackWebhookNotifier
) -> None:
    result = webhooks.send(lead_message(to_address="sales"))

    [call] = slack.wait_for(1)
    assert call.webhook == "sales"
    assert call.body == {"text": LEAD_MESSAGE.text, "blocks": CARD}
    assert "authorization" not in call.headers
    assert result.remote_id is None


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (404, "channel_not_found", UndeliverableError),
        (410, "channel_is_archived", UndeliverableError),
        (403, "invalid_token", FatalError),
        (404, "no_service", FatalError),
        (400, "invalid_payload", FatalError),
    ],
)
def test_a_webhook_refusal_is_fatal_or_undeliverable_by_what_slack_says(
    slack: SlackApiServer,
    webhooks: SlackWebhookNotifier,
    status: int,
    body: str,
    error_class: type[FatalError],
) -> None:
    slack.queue_response(status=status, body=body)

    with pytest.raises(FatalError, match=body) as caught:
        webhooks.send(lead_message(to_address="sales"))

    assert type(caught.value) is error_class
    assert slack.webhook_url("sales") not in str(caught.value)


def test_a_rate_limited_webhook_is_retriable_after_the_time_slack_asks_for(
    slack: SlackApiServer, webhooks: SlackWebhookNotifier
) -> None:
    slack.queue_response(status=429, body="rate_limited", headers={"Retry-After": "1"})

    with pytest.raises(RetriableError) as caught:
        webhooks.send(lead_message(to_address="sales"))

    assert caught.value.retry_after == 1.0


def test_a_webhook_name_that_is_not_configured_is_undeliverable(
    webhooks: SlackWebhookNotifier,
) -> None:
    with pytest.raises(UndeliverableError, match="marketing"):
        webhooks.send(lead_message(to_address="marketing"))


# --- the lead card -------------------------------------------------------------------------


def test_the_lead_card_has_a_header_fields_reasons_due_line_and_accept_button() -> None:
    assert [block["type"] for block in CARD] == [
        "header",
        "section",
        "section",
        "context",
        "actions",
    ]
    header, fields, reasons, due, actions = CARD
    assert header["text"] == {
        "type": "plain_text",
        "text": "New lead: Anna Schäfer, ACME GmbH",
        "emoji": True,
    }
    assert fields["fields"] == [
        {"type": "mrkdwn", "text": "*Company*\nACME GmbH"},
        {"type": "mrkdwn", "text": "*Score*\n87"},
    ]
    assert "• Visited pricing 3×\n• Company size 500+" in reasons["text"]["text"]
    assert due["elements"][0]["text"].endswith("Accept by 14:30 (SLA 30 min)")
    [button] = actions["elements"]
    assert button["action_id"] == "accept_lead"
    assert button["value"] == "lead-42"
    assert button["url"] == "https://leadwerk.example.com/accept/abc"
    assert button["style"] == "primary"
    assert button["text"]["text"] == "Accept"


def test_the_accept_button_has_no_url_when_none_is_given() -> None:
    blocks = lead_card_blocks(
        title="New lead",
        fields=[],
        reasons=[],
        due_text=None,
        accept_url=None,
        accept_value="lead-42",
    )

    assert [block["type"] for block in blocks] == ["header", "actions"]
    [button] = blocks[-1]["elements"]
    assert "url" not in button
    assert button["value"] == "lead-42"


def test_the_lead_card_stays_within_slacks_limits() -> None:
    blocks = lead_card_blocks(
        title="T" * 400,
        fields=[(f"Field {number}", "v" * 3000) for number in range(15)],
        reasons=["r" * 1000] * 5,
        due_text="Accept soon",
        accept_url=None,
        accept_value="lead-42",
    )

    header, fields, reasons = blocks[:3]
    assert len(header["text"]["text"]) == 150
    assert len(fields["fields"]) == 10
    assert all(len(field["text"]) <= 2000 for field in fields["fields"])
    assert len(reasons["text"]["text"]) <= 3000


def test_lead_data_cannot_turn_into_mentions_or_links() -> None:
    blocks = lead_card_blocks(
        title="New lead",
        fields=[("Company", "<!channel> & <https://evil.example|click>")],
        reasons=[],
        due_text=None,
        accept_url=None,
        accept_value="lead-42",
    )

    assert blocks[1]["fields"][0]["text"] == (
        "*Company*\n&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    )
