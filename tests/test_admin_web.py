"""/admin/ and /metrics: only with the admin token; buttons only with the page's CSRF token;
the figures of a known state on the page and on /metrics."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from starlette.testclient import TestClient

from config.settings import Settings
from rules.alerts import ALERT_METRICS
from rules.expr import FieldType
from tests.admin_helpers import ADMIN_TOKEN, KnownState, known_state, mail_team
from tests.pipeline_helpers import Running, running
from worker.commands.overview import overview
from worker.store.models import Assignment, DeadLetter, Message, Quarantine
from worker.web.app import create_app
from worker.web.links import SECURITY_HEADERS

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextmanager
def leadwerk_web(
    settings: Settings, client: tuple[str, int] = ("203.0.113.9", 50000)
) -> Iterator[tuple[Running, TestClient]]:
    """A running Leadwerk and its web app, asked from ``client`` (not loopback by default)."""
    with (
        running(settings) as leadwerk,
        TestClient(create_app(leadwerk.app), client=client, follow_redirects=False) as web,
    ):
        yield leadwerk, web


@pytest.fixture
def with_token(make_settings: Callable[..., Settings], config_dir: Path) -> Settings:
    mail_team(config_dir)
    return make_settings(env={"LEADWERK_ADMIN_TOKEN": ADMIN_TOKEN})


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def test_without_an_admin_token_the_dashboard_does_not_exist_and_metrics_answer_only_loopback(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with leadwerk_web(settings) as (_, web):
        assert web.get("/admin/").status_code == 404
        assert web.get("/admin").status_code == 404
        assert web.get("/admin/live").status_code == 404
        assert web.post("/admin/login", data={"token": ""}).status_code == 404
        assert web.get("/metrics").status_code == 404
    with leadwerk_web(settings, client=("127.0.0.1", 50000)) as (_, web):
        assert web.get("/metrics").status_code == 200
        assert web.get("/admin/").status_code == 404


def test_with_a_token_set_nothing_is_shown_without_it(with_token: Settings) -> None:
    with leadwerk_web(with_token, client=("127.0.0.1", 50000)) as (_, web):
        assert web.get("/admin").headers["location"] == "/admin/"
        page = web.get("/admin/")
        assert page.status_code == 401
        assert 'name="token"' in page.text  # the login form
        assert "Dead letters" not in page.text
        assert web.get("/admin/live").status_code == 401
        assert web.get("/metrics").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert web.get("/metrics", headers=wrong).status_code == 401
        assert web.get("/admin/", headers=wrong).status_code == 401
        assert web.post("/admin/dead-letters/1/replay").status_code == 401
        refused = web.post("/admin/login", data={"token": "guess"})
        assert refused.status_code == 401
        assert "not the admin token" in refused.text
        assert "set-cookie" not in refused.headers


def test_the_login_form_sets_a_signed_http_only_strict_cookie_that_opens_the_dashboard(
    with_token: Settings,
) -> None:
    with leadwerk_web(with_token) as (_, web):
        login = web.post("/admin/login", data={"token": ADMIN_TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/admin/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = web.get("/admin/")
        assert page.status_code == 200
        assert "Dead letters" in page.text
        # a cookie forged or changed by a byte opens nothing
        value = web.cookies["leadwerk_admin"]
        web.cookies.clear()
        web.cookies.set("leadwerk_admin", value[:-2] + ("A" if value[-1] != "A" else "B") + "x")
        assert web.get("/admin/").status_code == 401


def test_every_admin_page_carries_the_security_headers(with_token: Settings) -> None:
    with leadwerk_web(with_token) as (_, web):
        for path in ("/admin/", "/admin/live", "/admin/static/admin.js"):
            answer = web.get(path, headers=BEARER)
            assert answer.status_code == 200, path
            for header in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"):
                assert answer.headers[header] == SECURITY_HEADERS[header], (path, header)
            assert answer.headers["Cache-Control"] == "no-store"
            policy = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert web.get("/admin/", headers={}).headers["X-Frame-Options"] == "DENY"


def test_the_dashboard_shows_the_figures_of_a_known_state(with_token: Settings) -> None:
    with leadwerk_web(with_token) as (leadwerk, web):
        state = known_state(leadwerk.app, datetime.now(UTC))
        page = web.get("/admin/", headers=BEARER).text
    assert re.search(rf'id="mqls-day">{state.mqls}<', page)
    assert re.search(r'id="dead-letters">1<', page)
    assert re.search(r'id="quarantined">1<', page)
    # leads per source: the three scans of the fair came in within the hour
    assert re.search(
        r'data-source="messe-hannover-2026"><td>messe-hannover-2026</td>'
        r'<td class="n">3</td><td class="n">3</td>',
        page,
    )
    assert re.search(r'data-source="ebooks"><td>ebooks</td><td class="n">0</td>', page)
    assert f'data-dead-letter="{state.dead_letter}"' in page
    assert "550 5.1.1 mailbox unavailable" in page
    assert f'data-quarantined="{state.quarantined}"' in page
    # the last MQLs with why: rules hit and how they were routed; e-mails masked
    assert page.count('class="mql"') == state.mqls
    assert "Rules hit:" in page and "Routed by rule" in page
    assert "e***@bigcorp.de" in page and "eva.mueller@bigcorp.de" not in page
    # the alert on dead letters holds, so the page says unhealthy
    assert 'id="health" class="badge bad"' in page


def test_a_replay_needs_the_csrf_token_of_the_session_and_then_sends_the_message(
    with_token: Settings,
) -> None:
    with leadwerk_web(with_token) as (leadwerk, web):
        state = known_state(leadwerk.app, datetime.now(UTC))
        web.post("/admin/login", data={"token": ADMIN_TOKEN})
        csrf = csrf_of(web.get("/admin/").text)
        replay = f"/admin/dead-letters/{state.dead_letter}/replay"
        # Without the CSRF token, or with another, nothing changes
        for form in ({}, {"csrf": "forged"}):
            answer = web.post(replay, data=form)
            assert answer.status_code == 303 and "notice=csrf" in answer.headers["location"]
        assert letter_status(leadwerk, state) == "open"
        # A GET on the button's address changes nothing either
        assert web.get(replay).status_code == 405
        # With it, the dead letter is replayed and the message goes out
        answer = web.post(replay, data={"csrf": csrf})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/admin/?notice=replayed&id={state.dead_letter}"
        leadwerk.drain()
        assert letter_status(leadwerk, state) == "replayed"
        with leadwerk.app.store.session() as session:
            assert session.get(Message, state.failed_message).status == "sent"  # type: ignore[union-attr]
        shown = web.get(answer.headers["location"]).text
        assert f"Dead letter {state.dead_letter} replayed" in shown
        # A second click finds nothing left to do
        again = web.post(replay, data={"csrf": csrf})
        assert "notice=gone" in again.headers["location"]


def test_retry_takes_in_a_quarantined_record_once_the_mapping_accepts_it(
    with_token: Settings, config_dir: Path
) -> None:
    with leadwerk_web(with_token) as (leadwerk, web):
        state = known_state(leadwerk.app, datetime.now(UTC))
        retry = f"/admin/quarantine/{state.quarantined}/retry"
        # The record still lacks an e-mail: it stays, and the page says so
        answer = web.post(retry, headers=BEARER)
        assert "notice=still" in answer.headers["location"]
        with leadwerk.app.store.session() as session:
            record = session.get(Quarantine, state.quarantined)
            assert record is not None and record.status == "open"
            # Fixed at the source: the scan now carries an address
            record.raw = {**record.raw, "E-Mail": "fixed@nomail.de"}
        answer = web.post(retry, headers=BEARER)
        assert answer.headers["location"] == f"/admin/?notice=retried&id={state.quarantined}"
        with leadwerk.app.store.session() as session:
            assert session.get(Quarantine, state.quarantined).status == "replayed"  # type: ignore[union-attr]


def test_metrics_parse_and_carry_every_figure_alerts_can_read(with_token: Settings) -> None:
    with leadwerk_web(with_token) as (leadwerk, web):
        known_state(leadwerk.app, datetime.now(UTC))
        scraped = web.get("/metrics", headers=BEARER)
    assert scraped.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    figures = {
        dict(labels)["metric"]: value
        for (name, labels), value in samples.items()
        if name == "leadwerk_alert_metric"
    }
    numeric = {n for n, t in ALERT_METRICS.items() if t is not FieldType.STRING}
    assert numeric - {"worker_silence"} <= set(figures)  # no worker has reported yet
    assert figures["dead_letters"] == 1
    assert figures["quarantined"] == 1
    assert figures["messages_failed"] == 1
    assert samples[("leadwerk_list_status", (("status", "ok"),))] == 1
    assert samples[("leadwerk_alert_firing", (("alert", "dead letters"),))] == 1
    assert samples[("leadwerk_alert_firing", (("alert", "queue stuck"),))] == 0


def letter_status(leadwerk: Running, state: KnownState) -> str:
    with leadwerk.app.store.session() as session:
        return session.scalars(
            select(DeadLetter.status).where(DeadLetter.id == state.dead_letter)
        ).one()


def test_sla_clocks_are_at_risk_once_80_percent_of_their_time_is_gone(
    with_token: Settings,
) -> None:
    with running(with_token) as leadwerk:
        now = datetime.now(UTC)
        known_state(leadwerk.app, now)
        with leadwerk.app.store.session() as session:
            clocks = session.execute(select(Assignment.created_at, Assignment.due_at)).all()
        assert clocks and all(due is not None for _, due in clocks)
        created, due = min(clocks, key=lambda c: c[1])
        soon = overview(leadwerk.app, created + (due - created) * 0.5)
        late = overview(leadwerk.app, created + (due - created) * 0.85)
        after = overview(leadwerk.app, due + timedelta(seconds=1))
    assert soon["sla"]["at_risk"] == 0
    assert late["sla"]["at_risk"] >= 1
    assert after["sla"]["breached"] >= 1
    assert soon["sla"]["running"] == len(clocks)
