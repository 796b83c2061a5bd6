"""Accepting from Slack and by link, over HTTP against a real uvicorn server on 127.0.0.1:
Slack's request signature is checked (tampered or stale → 401), accept links too (→ 403)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from config.settings import Settings
from tests.sla_helpers import add_mql, write_config
from worker.accept import sign_accept
from worker.app import App, init_app
from worker.pipeline.route import route_contact
from worker.pipeline.sla import due_timers
from worker.store.models import Assignment, Contact, StageChange
from worker.web import create_app

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
def served(config_dir: Path, make_settings: Callable[..., Settings]) -> Iterator[Served]:
    """Leadwerk's web app on a free port, with one lead routed to Jonas at T."""
    write_config(config_dir, team=ONLY_JONAS)
    app = init_app(make_settings(slack_signing_secret=SIGNING_SECRET, accept_secret=ACCEPT_SECRET))
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


def click(lead: int, user: str = JONAS_SLACK) -> bytes:
    """The form body Slack posts when a user clicks our "Accept" button."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "jonas"},
        "actions": [
            {"action_id": "accept_lead", "value": str(lead), "type": "button"},
        ],
    }
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


def test_the_signed_accept_link_accepts_once(served: Served) -> None:
    token = sign_accept(served.app.settings, served.assignment().id)

    first = httpx.get(f"{served.url}/accept/{token}", timeout=10)
    second = httpx.get(f"{served.url}/accept/{token}", timeout=10)

    assert first.status_code == 200 and "accepted by jonas" in first.text
    assert second.status_code == 200 and "already accepted" in second.text
    assert served.assignment().status == "accepted"


def test_a_tampered_accept_link_is_refused_with_403(served: Served) -> None:
    token = sign_accept(served.app.settings, served.assignment().id)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")

    response = httpx.get(f"{served.url}/accept/{tampered}", timeout=10)

    assert response.status_code == 403
    assert "not valid" in response.text
    assert served.assignment().status == "open"


def test_an_accept_link_older_than_a_week_is_refused_with_403(served: Served) -> None:
    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 24 * 3600

    # Signed with Leadwerk's own secret and salt, as a link mailed eight days ago was
    old = URLSafeTimedSerializer(ACCEPT_SECRET, salt="leadwerk.accept", signer=EightDaysAgo)
    token = old.dumps({"a": served.assignment().id})

    response = httpx.get(f"{served.url}/accept/{token}", timeout=10)

    assert response.status_code == 403
    assert "expired" in response.text
    assert served.assignment().status == "open"
