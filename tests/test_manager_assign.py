"""A manager told about a lead nobody could take gives it to a rep: with `leadwerk assign`, or
from the page their e-mail links to. The rep gets a new assignment under the lead's SLA policy
with a fresh clock and is told through the outbox; the old assignment stays as history.
Accepting records who accepted, and the SLA report shows it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.sla_helpers import add_mql, write_config
from tests.source_helpers import leadwerk, web_server
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
from worker.pipeline.sla import fire_timer
from worker.runtime.app import App, init_app
from worker.store.models import Message, SlaTimer

SECRET = "accept-links-secret-for-tests"
T = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(config_dir: Path, make_settings: Callable[..., Settings], database_url: str) -> App:
    """Leadwerk whose enterprise team is at capacity: a new lead goes to Anna, the manager."""
    write_config(config_dir, team=FULL_TEAM)
    return init_app(make_settings(accept_secret=SECRET, database_url=database_url))


def unassigned_lead(app: App, number: int = 1) -> int:
    lead = add_mql(app.store, number, T)
    route_contact(app.store, app.config, lead, T)
    [fallback] = assignments_of(app, lead)
    assert (fallback.rep, fallback.status) == (None, "open")
    return lead


def cli(app: App, config_dir: Path, *args: str) -> tuple[int, str]:
    result = leadwerk(
        config_dir,
        *args,
        env={
            "LEADWERK_DATABASE_URL": app.settings.database_url,
            "LEADWERK_OUTBOX_DIR": str(app.settings.outbox_dir),
            "LEADWERK_ACCEPT_SECRET": SECRET,
        },
    )
    return result.exit_code, result.output


def test_leadwerk_assign_gives_an_unassigned_lead_to_a_rep_with_a_fresh_clock(
    app: App, config_dir: Path
) -> None:
    lead = unassigned_lead(app)

    code, output = cli(app, config_dir, "assign", str(lead), "jonas", "--by", "anna")

    assert code == 0, output
    assert f"lead {lead} assigned to jonas by anna; hot SLA, respond by" in output
    old, new = assignments_of(app, lead)
    assert (old.rep, old.status) == (None, "reassigned")
    assert (new.rep, new.status, new.sla_policy) == ("jonas", "open", "hot")
    assert new.team == "enterprise-dach" and new.rule == "assigned by anna"
    # A fresh clock: the hot policy's 5 minutes from the assignment, its timers unfired
    assert new.due_at is not None and new.due_at - new.created_at == timedelta(minutes=5)
    with app.store.session() as session:
        timers = session.execute(
            select(SlaTimer.kind, SlaTimer.fired_at).where(SlaTimer.assignment_id == new.id)
        ).all()
    assert sorted(kind for kind, _ in timers) == ["breach", "remind:50", "remind:80"]
    assert all(fired is None for _, fired in timers)
    # And Jonas was told, with a link that accepts the lead for him
    [mail] = mail_to(Path(app.settings.outbox_dir), "jonas@example.com")
    assert "Eva Lead1" in mail["Subject"]
    assert any("/accept/" in link for link in links_in(mail))


def test_leadwerk_assign_refuses_an_unknown_rep_with_the_near_name_and_changes_nothing(
    app: App, config_dir: Path
) -> None:
    lead = unassigned_lead(app)
    before = store_state(app)

    code, output = cli(app, config_dir, "assign", str(lead), "jonsa")

    assert code == 1
    assert "not assigned: no rep named 'jonsa' in team.yaml (did you mean 'jonas'?)" in output
    assert store_state(app) == before


def test_leadwerk_assign_refuses_a_lead_already_accepted_naming_who_accepted_it(
    app: App, config_dir: Path
) -> None:
    lead = unassigned_lead(app)
    accepted = cli(app, config_dir, "accept", str(lead), "--by", "anna")
    before = store_state(app)

    code, output = cli(app, config_dir, "assign", str(lead), "lea")

    assert accepted[0] == 0 and accepted[1].startswith(f"lead {lead} accepted by anna")
    assert code == 1 and f"lead {lead} was already accepted by anna" in output
    assert store_state(app) == before


def test_accept_records_who_accepted_and_the_sla_report_shows_it(
    app: App, config_dir: Path
) -> None:
    first, second = unassigned_lead(app, 1), unassigned_lead(app, 2)
    assert cli(app, config_dir, "assign", str(second), "lea", "--by", "anna")[0] == 0

    by_anna = cli(app, config_dir, "accept", str(first), "--by", "anna")
    by_holder = cli(app, config_dir, "accept", str(second))
    unknown = cli(app, config_dir, "accept", str(first), "--by", "nobody")
    code, report = cli(app, config_dir, "sla", "report", "--json", "--since", "3650d")

    # (the lead routed at T has long passed its due time; Lea's came with a fresh clock)
    assert by_anna == (0, f"lead {first} accepted by anna (after the SLA was due)\n")
    assert by_holder == (0, f"lead {second} accepted by lea\n")
    assert unknown[0] == 2 and "no rep named 'nobody'" in unknown[1]
    assert code == 0, report
    assert json.loads(report)["all"]["accepted_by"] == {"anna": 1, "lea": 1}
    assert [a.accepted_by for a in assignments_of(app, first)] == ["anna"]


def test_the_managers_email_links_to_a_page_that_assigns_on_post_only(app: App) -> None:
    # Given Anna's e-mail about a lead nobody in the team could take
    lead = unassigned_lead(app)
    send_all(app, T)
    [mail] = mail_to(Path(app.settings.outbox_dir), "anna@example.com")
    [assign] = [link for link in links_in(mail) if "/assign/" in link]
    path = assign.removeprefix(app.settings.public_url.rstrip("/"))

    with web_server(app) as url:
        # When she opens the page
        before = store_state(app)
        page = httpx.get(url + path, timeout=10)
        # Then it lists the team's reps, each with a button, and nothing has changed
        assert page.status_code == 200
        assert "Assign to Jonas Weber</button>" in page.text
        assert "Assign to Lea Hoffmann</button>" in page.text
        assert "Mehmet" not in page.text  # another team's rep
        assert page.headers["cache-control"] == "no-store"
        assert store_state(app) == before

        # When she presses Lea's button
        pressed = httpx.post(url + path, data={"rep": "lea"}, timeout=10)
        # And presses it again (a second tab, a double click)
        again = httpx.post(url + path, data={"rep": "jonas"}, timeout=10)
        outsider = httpx.post(url + path, data={"rep": "mehmet"}, timeout=10)

    # Then Lea has the lead, the managers' assignment is history, and Lea is to be told
    assert pressed.status_code == 200 and f"lead {lead} assigned to lea by anna" in pressed.text
    assert "already reassigned" in again.text and "already reassigned" in outsider.text
    old, new = assignments_of(app, lead)
    assert (old.status, new.rep, new.status) == ("reassigned", "lea", "open")
    with app.store.session() as session:
        told = session.scalars(select(Message.recipient).where(Message.rep == "lea")).all()
    assert told == ["lea@example.com"]


def test_a_rep_outside_the_team_is_refused_on_the_managers_page(app: App) -> None:
    unassigned_lead(app)
    send_all(app, T)
    [mail] = mail_to(Path(app.settings.outbox_dir), "anna@example.com")
    [assign] = [link for link in links_in(mail) if "/assign/" in link]
    path = assign.removeprefix(app.settings.public_url.rstrip("/"))
    before = store_state(app)

    with web_server(app) as url:
        refused = httpx.post(url + path, data={"rep": "mehmet"}, timeout=10)

    assert refused.status_code == 400 and "not a rep of this team" in refused.text
    assert store_state(app) == before


def test_an_escalation_links_the_manager_to_a_page_that_hands_the_lead_to_another_rep(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    # Given a standard lead (escalate on breach, no reassignment) that its rep let pass
    write_config(config_dir, team=MAIL_TEAM)
    app = init_app(make_settings(accept_secret=SECRET, database_url=database_url))
    lead = add_mql(app.store, 1, T, form="contact")
    route_contact(app.store, app.config, lead, T)
    [first] = assignments_of(app, lead)
    assert first.sla_policy == "standard" and first.due_at is not None
    with app.store.session() as session:
        breach = session.scalar(
            select(SlaTimer.id).where(SlaTimer.assignment_id == first.id, SlaTimer.kind == "breach")
        )
    assert breach is not None
    fire_timer(app.store, app.config, breach, first.due_at)
    send_all(app, first.due_at)
    [escalation] = mail_to(Path(app.settings.outbox_dir), "anna@example.com")
    [assign] = [link for link in links_in(escalation) if "/assign/" in link]
    path = assign.removeprefix(app.settings.public_url.rstrip("/"))
    other = {"jonas": "lea", "lea": "jonas"}[first.rep or ""]

    with web_server(app) as url:
        page = httpx.get(url + path, timeout=10)
        pressed = httpx.post(url + path, data={"rep": other}, timeout=10)

    # Then the page offers the team's other rep only, and the POST hands the lead over
    names = {"jonas": "Jonas Weber", "lea": "Lea Hoffmann"}
    assert f"Assign to {names[other]}</button>" in page.text
    assert f"Assign to {names[first.rep or '']}</button>" not in page.text
    assert pressed.status_code == 200, pressed.text
    old, new = assignments_of(app, lead)
    assert (old.rep, old.status) == (first.rep, "reassigned")
    assert (new.rep, new.status, new.sla_policy) == (other, "open", "standard")
