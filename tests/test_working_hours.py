"""Routing by working hours, as the contract words it: a rep open now is preferred; when nobody
is open (a night, a weekend, a holiday) the lead still goes to a member and a business-hours
SLA starts at that rep's next opening; only a calendar-clock SLA skips a rep who opens later
than it allows; the fallback managers get the lead only when every member is away or at
capacity. Through the production path (store and routing) on fixed clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.sla_helpers import add_mql, write_config
from worker.pipeline.route import route_contact
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, SlaTimer

TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [jonas, sam]}
reps:
  anna:
    name: Anna Schulz
    email: anna@example.com
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-18:00"}
    holidays: DE-NI
  jonas:
    name: Jonas Weber
    email: jonas@example.com
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-17:00"}
    holidays: DE-NI
    away: [{from: 2026-12-23, to: 2027-01-02}]
  lea:
    name: Lea Hoffmann
    email: lea@example.com
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-17:00"}
    holidays: DE-NI
    away: [{from: 2026-12-21, to: 2026-12-31}]
  sam:
    name: Sam Miller
    email: sam@example.com
    timezone: America/New_York
    hours: {mon-fri: "09:00-17:00"}
    holidays: US-NY
"""

BUSINESS_HOURS = """
policies:
  - name: hot
    when: event.form == "demo-request"
    respond_within: 5m
    clock: business_hours
    remind_at: [50%, 80%]
    on_breach: [escalate, reassign]
"""

WALL_CLOCK = BUSINESS_HOURS.replace("clock: business_hours", "clock: calendar")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def leadwerk(
    config_dir: Path, make_settings: Callable[..., Settings], request: pytest.FixtureRequest
) -> Iterator[App]:
    sla = getattr(request, "param", BUSINESS_HOURS)
    write_config(config_dir, team=TEAM, sla=sla)
    app = init_app(make_settings())
    yield app
    app.close()


def routed(app: App, at: datetime, number: int = 1, **fields: object) -> Assignment:
    """A demo request from a big German company (enterprise-dach), routed at ``at``."""
    contact = add_mql(app.store, number, at, **fields)
    route_contact(app.store, app.config, contact, at)
    with app.store.session() as session:
        return session.scalars(select(Assignment).where(Assignment.contact_id == contact)).one()


def timers(app: App, assignment: Assignment) -> dict[str, datetime]:
    with app.store.session() as session:
        rows = session.scalars(select(SlaTimer).where(SlaTimer.assignment_id == assignment.id))
        return {timer.kind: timer.fire_at for timer in rows}


def test_a_saturday_demo_request_is_a_members_first_task_on_monday(leadwerk: App) -> None:
    saturday = utc(2026, 11, 28, 11, 0)
    assignment = routed(leadwerk, saturday)
    assert assignment.rep in ("jonas", "lea")
    assert assignment.skipped == []
    # Monday 30 Nov, 08:00 Berlin is 07:00 UTC; five working minutes later
    assert assignment.due_at == utc(2026, 11, 30, 7, 5)
    assert timers(leadwerk, assignment) == {
        "remind:50": utc(2026, 11, 30, 7, 2, 30),
        "remind:80": utc(2026, 11, 30, 7, 4),
        "breach": utc(2026, 11, 30, 7, 5),
    }
    assert "nobody is open now, the SLA starts at the rep's next opening" in assignment.reason


def test_a_lead_at_night_goes_to_a_member_due_in_the_morning(leadwerk: App) -> None:
    tuesday_night = utc(2026, 11, 24, 22, 30)  # 23:30 in Berlin
    assignment = routed(leadwerk, tuesday_night)
    assert assignment.rep in ("jonas", "lea")
    assert assignment.due_at == utc(2026, 11, 25, 7, 5)


def test_on_a_public_holiday_the_lead_waits_for_the_next_working_day(leadwerk: App) -> None:
    # Reformation Day falls on a Saturday in 2026; take Whit Monday, 25 May 2026
    whit_monday = utc(2026, 5, 25, 9, 0)
    assignment = routed(leadwerk, whit_monday)
    assert assignment.rep in ("jonas", "lea")
    assert assignment.due_at == utc(2026, 5, 26, 6, 5)  # Tuesday 08:05 CEST


def test_a_rep_open_now_is_preferred_over_a_colleague_still_asleep(leadwerk: App) -> None:
    # Monday 09:30 in Berlin, 03:30 in New York; inside sales is jonas (open) and sam (closed)
    monday = utc(2026, 11, 30, 8, 30)
    small = {"company_size": 50}
    reps = [routed(leadwerk, monday + timedelta(minutes=n), n, **small) for n in range(1, 4)]
    assert [assignment.rep for assignment in reps] == ["jonas", "jonas", "jonas"]
    assert reps[0].skipped == [
        {"rep": "sam", "reason": "outside working hours until 2026-11-30T09:00-05:00"}
    ]
    assert reps[0].due_at == monday + timedelta(minutes=6)


@pytest.mark.parametrize("leadwerk", [WALL_CLOCK], indirect=True)
def test_a_calendar_clock_skips_a_rep_who_opens_later_than_it_allows(leadwerk: App) -> None:
    # Monday 17:40 in Berlin, 11:40 in New York
    evening = utc(2026, 11, 30, 16, 40)
    assignment = routed(leadwerk, evening, company_size=50)
    assert assignment.rep == "sam"
    assert assignment.skipped == [
        {"rep": "jonas", "reason": "outside working hours for 14h 20m (SLA allows 5m)"}
    ]
    assert assignment.due_at == evening + timedelta(minutes=5)


@pytest.mark.parametrize("leadwerk", [WALL_CLOCK], indirect=True)
def test_a_calendar_clock_with_every_member_closed_too_long_goes_to_the_fallback(
    leadwerk: App,
) -> None:
    saturday = utc(2026, 11, 28, 11, 0)
    assignment = routed(leadwerk, saturday)
    assert assignment.rep is None
    assert [skip["rep"] for skip in assignment.skipped] == ["jonas", "lea"]
    assert "sent to anna" in assignment.reason


def test_when_every_member_is_away_the_fallback_manager_gets_the_lead(leadwerk: App) -> None:
    between_the_years = utc(2026, 12, 28, 9, 0)  # Monday; jonas and lea are both on leave
    assignment = routed(leadwerk, between_the_years)
    assert assignment.rep is None
    assert assignment.skipped == [
        {"rep": "jonas", "reason": "away until 2027-01-02"},
        {"rep": "lea", "reason": "away until 2026-12-31"},
    ]
    assert assignment.reason.endswith("sent to anna")
    # the SLA runs on anna's hours: she is at work, so five minutes from now
    assert assignment.due_at == between_the_years + timedelta(minutes=5)


def test_a_rep_away_is_skipped_and_a_closed_colleague_still_gets_the_lead(leadwerk: App) -> None:
    # Monday 21 Dec, 20:00 in Berlin: lea is on leave, jonas closed until Tuesday 08:00
    evening = utc(2026, 12, 21, 19, 0)
    assignment = routed(leadwerk, evening)
    assert assignment.rep == "jonas"
    assert assignment.skipped == [{"rep": "lea", "reason": "away until 2026-12-31"}]
    assert assignment.due_at == utc(2026, 12, 22, 7, 5)


def test_a_rep_whose_leave_starts_before_their_next_opening_is_skipped(leadwerk: App) -> None:
    # Tuesday 22 Dec, 20:00 in Berlin: jonas is closed, and on leave from tomorrow; lea is
    # on leave already: the lead does not wait for jonas until January
    evening = utc(2026, 12, 22, 19, 0)
    assignment = routed(leadwerk, evening)
    assert assignment.rep is None
    assert assignment.skipped == [
        {"rep": "jonas", "reason": "away from 2026-12-23 until 2027-01-02"},
        {"rep": "lea", "reason": "away until 2026-12-31"},
    ]
    assert assignment.reason.endswith("sent to anna")
