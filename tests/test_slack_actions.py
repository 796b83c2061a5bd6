"""Accepting from Slack and by link, over HTTP against a real uvicorn server on 127.0.0.1:
Slack's request signature is checked (tampered or stale → 401), accept links too (→ 403).
What the rep then sees in Slack goes to the click's response_url, here a local Slack server."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from config.settings import Settings
from connectors.notify.slack import lead_card_blocks
from connectors.notify.slack_actions import parse_block_actions
from tests.servers.recorded import Recorded
from tests.servers.slack import SlackApiServer
from tests.sla_helpers import add_mql, write_config
from worker.pipeline.route import route_contact
from worker.pipeline.sla import due_timers
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, Contact, StageChange
from worker.web.accept import sign_accept
from worker.web.app import create_app

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ACCEPT_SECRET = "accept-links-secret-for-tests"
JONAS_SLACK = "U024BE7LH"
T = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)

ONLY_JONAS = """
teams:
  enterprise-dach: {manager: anna, members: [jonas]}
  inside-sales: {manager: anna, members: [tom]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com, slack: U024BE7LH, notify: slack}
  tom: {name: Tom Fischer, email: tom@example.com, slack: U031TOMF1, notify: slack}
"""


@dataclass
class Served:
    app: App
    url: str
    lead: int

    def assignment(self) -> Assignment:
        with self.app.store.session() as session:
            found = session.scalar(select(Assignment).where(Assignment.contact_id == self.lead))
        assert found is not None
        return found


@pytest.fixture
def slack() -> Iterator[SlackApiServer]:
    """Slack, as far as Leadwerk talks to it: the Web API and the response_url of clicks."""
    with SlackApiServer() as server:
        yield server


@pytest.fixture
def served(
    config_dir: Path, make_settings: Callable[..., Settings], slack: SlackApiServer
) -> Iterator[Served]:
    """Leadwerk's web app on a free port, with one lead routed to Jonas at T; any Slack API
    call it would make goes to ``slack``."""
    write_config(config_dir, team=ONLY_JONAS)
    app = init_app(
        make_settings(
            slack_signing_secret=SIGNING_SECRET,
            accept_secret=ACCEPT_SECRET,
            slack_token=slack.token,
            slack_base_url=slack.base_url,
        )
    )
    lead = add_mql(app.store, 1, T)
    route_contact(app.store, app.config, lead, T)
    server = uvicorn.Server(
        uvicorn.Config(create_app(app), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up, not a timing assertion
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(app, f"http://127.0.0.1:{port}", lead)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.close()


@pytest.fixture
def warnings() -> Iterator[Recorded[str]]:
    """The web process's warnings as they are logged, from whichever thread logs them."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.add(record.getMessage())

    logged: Recorded[str] = Recorded("warning(s)")
    handler = Handler(logging.WARNING)
    logger = logging.getLogger("leadwerk.web")
    logger.addHandler(handler)
    try:
        yield logged
    finally:
        logger.removeHandler(handler)


def card(lead: int) -> list[dict[str, Any]]:
    """The lead card as our notifier sends it, with the block ids Slack gives each block, as
    Slack sends the message back with a click."""
    blocks = lead_card_blocks(
        title="New lead: Eva Lead1",
        fields=[("Name", "Eva Lead1"), ("Company", "Company 1 AG"), ("Score", "80")],
        reasons=["Head of IT at a company of 5000", "asked for a demo"],
        due_text="Respond by Mon 16 Nov 2026, 10:05 CET (hot)",
        accept_url=None,
        accept_value=str(lead),
    )
    return [{**block, "block_id": f"b{number}"} for number, block in enumerate(blocks)]


def click(
    lead: int,
    user: str = JONAS_SLACK,
    response_url: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> bytes:
    """The form body Slack posts when a user clicks our "Accept" button; ``response_url`` and
    the clicked message's ``blocks`` only when given."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "jonas"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "is_ephemeral": False},
        "actions": [
            {"action_id": "accept_lead", "value": str(lead), "type": "button"},
        ],
    }
    if response_url is not None:
        payload["response_url"] = response_url
    if blocks is not None:
        payload["message"] = {"type": "message", "text": "New lead", "blocks": blocks}
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Headers as Slack signs them (api.slack.com/authentication/verifying-requests-from-slack)."""
    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def post(served: Served, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{served.url}/slack/actions", content=body, headers=headers, timeout=10)


def test_a_signed_click_on_accept_in_slack_accepts_the_lead(served: Served) -> None:
    body = click(served.lead)

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assignment = served.assignment()
    assert assignment.status == "accepted" and assignment.accepted_at is not None
    with served.app.store.session() as session:
        contact = session.get(Contact, served.lead)
        change = session.scalars(select(StageChange).where(StageChange.to_stage == "sal")).one()
    assert contact is not None and contact.stage == "sal"
    assert change.cause == "accepted in Slack by jonas"
    # and the clock has stopped: nothing fires, even long after the due time
    assert due_timers(served.app.store, T + timedelta(days=1)) == []


def test_a_click_with_a_tampered_body_is_refused_with_401(served: Served) -> None:
    headers = signed(click(served.lead), int(time.time()))
    tampered = click(served.lead + 1)

    response = post(served, tampered, headers)

    assert response.status_code == 401
    assert "signature does not match" in response.json()["error"]
    assert served.assignment().status == "open"


def test_a_click_signed_with_another_secret_is_refused_with_401(served: Served) -> None:
    body = click(served.lead)

    response = post(served, body, signed(body, int(time.time()), secret="not-our-secret"))

    assert response.status_code == 401
    assert served.assignment().status == "open"


def test_a_replayed_click_older_than_five_minutes_is_refused_with_401(served: Served) -> None:
    body = click(served.lead)
    six_minutes_ago = int(time.time()) - 6 * 60

    response = post(served, body, signed(body, six_minutes_ago))

    assert response.status_code == 401
    assert "5 minutes" in response.json()["error"]
    assert served.assignment().status == "open"


def test_an_unsigned_click_is_refused_with_401(served: Served) -> None:
    response = post(
        served, click(served.lead), {"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert response.status_code == 401
    assert served.assignment().status == "open"


def test_another_rep_cannot_accept_a_lead_that_is_not_theirs(served: Served) -> None:
    # Tom clicks a button he should never have had: the lead is Jonas'
    body = click(served.lead, user="U031TOMF1")

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "text": f"lead {served.lead} is assigned to jonas; only they can accept it",
    }
    assert served.assignment().status == "open"


def test_an_accepted_click_replaces_the_card_with_one_that_says_who_accepted(
    served: Served, slack: SlackApiServer
) -> None:
    original = card(served.lead)
    body = click(served.lead, response_url=slack.response_url(), blocks=original)

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200 and response.json()["accepted"] == 1
    [call] = slack.wait_for(1)
    assert call.response_url == "click"
    assert call.headers["content-type"].startswith("application/json")
    assert call.body["replace_original"] is True
    # the plain fallback (notifications): T is long gone, so the SLA was due
    assert call.body["text"] == f"lead {served.lead} accepted by jonas (after the SLA was due)"
    blocks = call.body["blocks"]
    # the card as it was, minus its button: nothing is left to click twice
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "context"]
    assert blocks[0]["text"] == original[0]["text"]
    assert blocks[1]["fields"] == original[1]["fields"]
    assert blocks[3]["elements"] == original[3]["elements"]
    # and a closing line naming the rep (Slack shows the mention as their name) and the time
    # on their clock (Europe/Berlin, the team's default)
    line = blocks[-1]["elements"][0]
    assert line["type"] == "mrkdwn"
    assert re.fullmatch(
        rf":white_check_mark: Accepted by <@{JONAS_SLACK}> on "
        r"\w{3} \d{2} \w{3} \d{4}, \d{2}:\d{2} CES?T",
        line["text"],
    ), line["text"]
    assert served.assignment().status == "accepted"


def test_an_accepted_click_on_a_message_without_blocks_leaves_just_the_line(
    served: Served, slack: SlackApiServer
) -> None:
    body = click(served.lead, response_url=slack.response_url())

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200
    [call] = slack.wait_for(1)
    assert call.body["replace_original"] is True
    [line] = call.body["blocks"]
    assert line["type"] == "context"
    assert f"Accepted by <@{JONAS_SLACK}>" in line["elements"][0]["text"]


def test_a_refused_click_tells_only_the_clicking_rep_why_and_leaves_the_card(
    served: Served, slack: SlackApiServer
) -> None:
    # Tom clicks a button he should never have had: the lead is Jonas'
    body = click(
        served.lead, user="U031TOMF1", response_url=slack.response_url(), blocks=card(served.lead)
    )

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200 and response.json()["accepted"] == 0
    [call] = slack.wait_for(1)
    assert call.body == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f"lead {served.lead} is assigned to jonas; only they can accept it",
    }
    assert served.assignment().status == "open"


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection there is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("failure", ["answers 500", "is unreachable"])
def test_a_failing_response_url_leaves_the_lead_accepted(
    served: Served, slack: SlackApiServer, warnings: Recorded[str], failure: str
) -> None:
    if failure == "answers 500":
        slack.queue_response(500, "internal_error")
        url, expected = slack.response_url(), "answered HTTP 500 (internal_error)"
    else:
        url, expected = f"http://127.0.0.1:{_closed_port()}/actions/click", "unreachable"
    body = click(served.lead, response_url=url, blocks=card(served.lead))

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200 and response.json()["accepted"] == 1
    [warning] = warnings.wait_for(1)
    assert expected in warning and "127.0.0.1" in warning
    assert "/actions/" not in warning  # the URL itself lets anyone post: it is not logged
    assert served.assignment().status == "accepted"


def test_a_response_url_that_is_not_http_is_not_posted_to(
    served: Served, slack: SlackApiServer, warnings: Recorded[str]
) -> None:
    url = slack.response_url().replace("http://", "ftp://", 1)
    body = click(served.lead, response_url=url, blocks=card(served.lead))

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200 and response.json()["accepted"] == 1
    [warning] = warnings.wait_for(1)
    assert "not an http(s) URL" in warning
    assert slack.calls == []
    assert served.assignment().status == "accepted"


def test_a_click_without_a_response_url_posts_nothing(
    served: Served, slack: SlackApiServer
) -> None:
    body = click(served.lead, blocks=card(served.lead))

    response = post(served, body, signed(body, int(time.time())))

    assert response.status_code == 200 and response.json()["accepted"] == 1
    with pytest.raises(TimeoutError):
        slack.wait_for(1, timeout=0.5)
    assert served.assignment().status == "accepted"


def test_payload_fields_of_the_wrong_type_read_as_absent() -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": 42},
        "response_url": ["https://hooks.slack.com/actions/T0/1/x"],
        "message": {"blocks": "not a list"},
        "actions": [{"action_id": "accept_lead", "value": 7}],
    }

    interaction = parse_block_actions(urlencode({"payload": json.dumps(payload)}).encode())

    assert interaction.response_url is None and interaction.message_blocks is None
    [action] = interaction.actions
    assert action.value is None and action.user_id is None


def test_the_signed_accept_link_accepts_once_when_posted(served: Served) -> None:
    token = sign_accept(served.app.settings, served.assignment().public_id or "", "jonas")

    first = httpx.post(f"{served.url}/accept/{token}", timeout=10)
    second = httpx.post(f"{served.url}/accept/{token}", timeout=10)

    assert first.status_code == 200 and "accepted by jonas" in first.text
    assert second.status_code == 200 and "already accepted by jonas" in second.text
    assert served.assignment().status == "accepted"
    assert served.assignment().accepted_by == "jonas"


def test_a_tampered_accept_link_is_refused_with_403(served: Served) -> None:
    token = sign_accept(served.app.settings, served.assignment().public_id or "", "jonas")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")

    response = httpx.post(f"{served.url}/accept/{tampered}", timeout=10)

    assert response.status_code == 403
    assert "not valid" in response.text
    assert served.assignment().status == "open"


def test_an_accept_link_older_than_a_week_is_refused_with_403(served: Served) -> None:
    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 24 * 3600

    # Signed with Leadwerk's own secret and salt, as a link mailed eight days ago was
    old = URLSafeTimedSerializer(ACCEPT_SECRET, salt="leadwerk.links", signer=EightDaysAgo)
    token = old.dumps({"k": "accept", "p": served.assignment().public_id, "r": "jonas"})

    response = httpx.post(f"{served.url}/accept/{token}", timeout=10)

    assert response.status_code == 403
    assert "expired" in response.text
    assert served.assignment().status == "open"
