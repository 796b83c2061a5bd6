"""Working hours, holidays, away periods and SLA arithmetic in a rep's own time zone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.calendar import HoursError, WorkCalendar, parse_hours

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = parse_hours({"mon-fri": "08:00-17:00"})


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def new_york(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def office(holidays: str = "DE-NI", away: Sequence[tuple[date, date]] = ()) -> WorkCalendar:
    """Weekday office hours 08:00-17:00 in Berlin."""
    return WorkCalendar("Europe/Berlin", OFFICE, holidays, away)


# Weekly hours as written in team.yaml


def test_office_hours_are_open_on_weekdays_and_closed_at_the_weekend() -> None:
    hours = parse_hours({"mon-fri": "08:00-17:00"})
    assert hours.days[:5] == (((8 * 60, 17 * 60),),) * 5
    assert hours.days[5:] == ((), ())


def test_days_can_be_listed_ranged_and_closed() -> None:
    hours = parse_hours(
        {"mon-thu": "09:00-18:00", "fri": "09:00-14:00", "sat,sun": "closed"},
    )
    assert hours.days[3] == ((9 * 60, 18 * 60),)
    assert hours.days[4] == ((9 * 60, 14 * 60),)
    assert hours.days[5] == hours.days[6] == ()


def test_a_lunch_break_splits_the_day_into_two_windows() -> None:
    hours = parse_hours({"mon": "13:00-17:00, 08:00-12:00"})
    assert hours.days[0] == ((8 * 60, 12 * 60), (13 * 60, 17 * 60))


def test_windows_that_touch_are_one_stretch_of_work() -> None:
    assert parse_hours({"mon": "08:00-12:00, 12:00-17:00"}).days[0] == ((8 * 60, 17 * 60),)


def test_24_00_ends_the_day_and_a_night_shift_carries_over_midnight() -> None:
    nights = WorkCalendar(
        "Europe/Berlin", parse_hours({"mon": "22:00-24:00", "tue": "00:00-06:00"})
    )
    due = nights.add_business_time(berlin(2026, 6, 1, 23), timedelta(hours=3))
    assert due == berlin(2026, 6, 2, 2)
    assert nights.is_open(berlin(2026, 6, 2, 0))


@pytest.mark.parametrize(
    ("spec", "key", "problem"),
    [
        ({"mon-fri": "08:00-12:00, 11:00-17:00"}, "mon-fri", "overlap"),
        ({"mon-fri": "08:00-17:00", "fri": "08:00-14:00"}, "fri", "already given by 'mon-fri'"),
        ({"fri-mon": "08:00-17:00"}, "fri-mon", "runs backwards"),
        ({"mon-fri": "8-17"}, "mon-fri", "not a time window"),
        ({"mon": "17:00-08:00"}, "mon", "does not end after it starts"),
        ({"mon": "08:00-25:00"}, "mon", "does not exist"),
        ({"mon": "24:00-24:00"}, "mon", "only the end of a window can be 24:00"),
        ({"monnday": "08:00-17:00"}, "monnday", "not a day"),
        ({"sat,sat": "closed"}, "sat,sat", "appears twice"),
        ({"sat": False}, "sat", 'expected hours like "08:00-17:00"'),
    ],
)
def test_a_mistake_in_the_hours_names_the_key_it_is_in(
    spec: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(HoursError, match=problem) as caught:
        parse_hours(spec)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_hours_with_no_days_at_all_are_rejected() -> None:
    with pytest.raises(ValueError, match="no working hours given"):
        parse_hours({})


# Business time across nights, weekends and DST changes


def test_a_4h_sla_started_friday_afternoon_is_due_monday_late_morning() -> None:
    # The clocks go forward in the night to Sunday 2026-03-29.
    due = office().add_business_time(berlin(2026, 3, 27, 16), timedelta(hours=4))
    assert due == berlin(2026, 3, 30, 11)
    assert due.tzinfo is UTC


def test_the_same_sla_over_the_autumn_clock_change_is_also_due_at_11() -> None:
    due = office().add_business_time(berlin(2026, 10, 23, 16), timedelta(hours=4))
    assert due == berlin(2026, 10, 26, 11)


def test_easter_holidays_push_the_due_time_to_tuesday() -> None:
    # Good Friday 2026-04-03 and Easter Monday 2026-04-06 are closed all over Germany.
    due = office().add_business_time(berlin(2026, 4, 2, 16), timedelta(hours=4))
    assert due == berlin(2026, 4, 7, 11)


def test_an_sla_that_runs_out_at_closing_time_is_due_at_closing_not_next_morning() -> None:
    due = office().add_business_time(berlin(2026, 6, 1, 16), timedelta(hours=1))
    assert due == berlin(2026, 6, 1, 17)


def test_a_lead_arriving_at_night_starts_its_clock_when_the_office_opens() -> None:
    due = office().add_business_time(berlin(2026, 6, 2, 3), timedelta(minutes=5))
    assert due == berlin(2026, 6, 2, 8, 5)


def test_the_calendar_clock_counts_real_time_so_dst_nights_are_shorter_or_longer() -> None:
    clock = WorkCalendar("Europe/Berlin", None)
    spring = clock.add_business_time(berlin(2026, 3, 28, 12), timedelta(hours=24))
    autumn = clock.add_business_time(berlin(2026, 10, 24, 12), timedelta(hours=24))
    assert spring == berlin(2026, 3, 29, 13)
    assert autumn == berlin(2026, 10, 25, 11)
    spring_weekend = clock.business_time_between(berlin(2026, 3, 28), berlin(2026, 3, 30))
    autumn_weekend = clock.business_time_between(berlin(2026, 10, 24), berlin(2026, 10, 26))
    assert spring_weekend == timedelta(hours=47)
    assert autumn_weekend == timedelta(hours=49)


def test_a_window_starting_in_the_skipped_spring_hour_opens_when_the_clock_jumps() -> None:
    # On 2026-03-29 the clock jumps from 02:00 straight to 03:00.
    early = WorkCalendar("Europe/Berlin", parse_hours({"sun": "02:30-04:00"}))
    sunday = berlin(2026, 3, 29)
    assert early.next_open(sunday) == berlin(2026, 3, 29, 3)
    assert early.business_time_between(sunday, sunday + timedelta(days=1)) == timedelta(hours=1)


def test_a_working_week_holds_45_hours_of_business_time() -> None:
    week = office().business_time_between(berlin(2026, 6, 1), berlin(2026, 6, 8))
    assert week == timedelta(hours=45)


def test_business_time_between_is_negative_when_the_end_comes_first() -> None:
    # How far past its due time a lead is, in business time.
    due, answered = berlin(2026, 6, 1, 16), berlin(2026, 6, 2, 10)
    assert office().business_time_between(answered, due) == -timedelta(hours=3)


def test_a_lunch_break_does_not_count_towards_the_sla() -> None:
    calendar = WorkCalendar(
        "Europe/Berlin", parse_hours({"mon-fri": "08:00-12:00, 13:00-17:00"}), "DE-NI"
    )
    due = calendar.add_business_time(berlin(2026, 6, 1, 11, 30), timedelta(hours=1))
    assert due == berlin(2026, 6, 1, 13, 30)
    assert not calendar.is_open(berlin(2026, 6, 1, 12, 15))
    assert calendar.closed_for(berlin(2026, 6, 1, 12, 15)) == timedelta(minutes=45)


# Opening, closing and reminders


def test_an_open_calendar_is_open_now_and_closed_for_nothing() -> None:
    calendar = office()
    monday_morning = berlin(2026, 6, 1, 9, 30)
    assert calendar.is_open(monday_morning)
    assert calendar.next_open(monday_morning) == monday_morning
    assert calendar.closed_for(monday_morning) == timedelta(0)


def test_after_closing_on_friday_the_office_is_closed_until_monday_8() -> None:
    calendar = office()
    assert not calendar.is_open(berlin(2026, 6, 5, 17))
    assert calendar.next_open(berlin(2026, 6, 5, 17, 40)) == berlin(2026, 6, 8, 8)
    assert calendar.closed_for(berlin(2026, 6, 5, 17, 40)) == timedelta(hours=62, minutes=20)


def test_reminders_fall_at_50_and_80_percent_of_the_business_time_budget() -> None:
    calendar = office()
    start, budget = berlin(2026, 3, 27, 16), timedelta(hours=4)
    assert calendar.at_fraction(start, budget, 0.5) == berlin(2026, 3, 30, 9)
    assert calendar.at_fraction(start, budget, 0.8) == berlin(2026, 3, 30, 10, 12)
    assert calendar.at_fraction(start, budget, 1.0) == calendar.add_business_time(start, budget)


# Public holidays by region


@pytest.mark.parametrize(
    ("region", "day", "holiday"),
    [
        ("DE-SN", date(2026, 11, 18), "Buß- und Bettag"),
        ("DE-NI", date(2026, 11, 18), None),
        ("DE-NI", date(2026, 10, 31), "Reformationstag"),
        ("DE-BY", date(2026, 10, 31), None),
        ("DE-BY", date(2026, 6, 4), "Fronleichnam"),
        ("DE-NI", date(2026, 6, 4), None),
        ("AT-9", date(2026, 12, 8), "Mariä Empfängnis"),
        ("US-NY", date(2026, 7, 3), "Independence Day (observed)"),
    ],
)
def test_public_holidays_follow_the_reps_region(
    region: str, day: date, holiday: str | None
) -> None:
    country_hours = parse_hours({"mon-sun": "08:00-17:00"})
    calendar = WorkCalendar("Europe/Berlin", country_hours, region)
    midday = berlin(day.year, day.month, day.day, 12)
    assert calendar.holiday(midday) == holiday
    assert calendar.is_open(midday) is (holiday is None)


def test_bus_und_bettag_closes_saxony_but_not_lower_saxony() -> None:
    tuesday_evening = berlin(2026, 11, 17, 17)
    assert office("DE-NI").next_open(tuesday_evening) == berlin(2026, 11, 18, 8)
    assert office("DE-SN").next_open(tuesday_evening) == berlin(2026, 11, 19, 8)


def test_reformation_day_on_a_friday_delays_lower_saxony_until_monday() -> None:
    thursday_afternoon, two_hours = berlin(2025, 10, 30, 16), timedelta(hours=2)
    lower_saxony = office("DE-NI").add_business_time(thursday_afternoon, two_hours)
    bavaria = office("DE-BY").add_business_time(thursday_afternoon, two_hours)
    assert lower_saxony == berlin(2025, 11, 3, 9)
    assert bavaria == berlin(2025, 10, 31, 9)


def test_an_unknown_holiday_region_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="DE-XX"):
        WorkCalendar("Europe/Berlin", OFFICE, "DE-XX")
    with pytest.raises(ValueError, match="'QQ'"):
        WorkCalendar("Europe/Berlin", OFFICE, "QQ")


def test_an_unknown_time_zone_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="Europe/Hannover"):
        WorkCalendar("Europe/Hannover", OFFICE)


# Away periods


def test_an_away_period_includes_its_first_and_last_day() -> None:
    calendar = office(away=[(date(2026, 12, 23), date(2027, 1, 2))])
    assert calendar.away_until(berlin(2026, 12, 23, 9)) == date(2027, 1, 2)
    assert calendar.away_until(berlin(2027, 1, 2, 23, 59)) == date(2027, 1, 2)
    assert calendar.away_until(berlin(2026, 12, 22, 16)) is None
    assert not calendar.is_open(berlin(2026, 12, 23, 9))


def test_an_sla_started_before_christmas_leave_is_due_after_it() -> None:
    calendar = office(away=[(date(2026, 12, 23), date(2027, 1, 2))])
    due = calendar.add_business_time(berlin(2026, 12, 22, 16, 30), timedelta(hours=1))
    assert due == berlin(2027, 1, 4, 8, 30)


def test_back_to_back_away_periods_read_as_one() -> None:
    calendar = office(
        away=[(date(2027, 1, 3), date(2027, 1, 8)), (date(2026, 12, 23), date(2027, 1, 2))]
    )
    assert calendar.away_until(berlin(2026, 12, 28, 9)) == date(2027, 1, 8)


def test_an_away_period_that_ends_before_it_starts_is_rejected() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        office(away=[(date(2027, 1, 2), date(2026, 12, 23))])


def test_away_days_are_read_in_the_reps_own_time_zone() -> None:
    calendar = WorkCalendar("America/New_York", None, away=[(date(2026, 7, 6), date(2026, 7, 10))])
    # 23:30 on the 5th in New York is already the 6th in UTC, but the rep is not away yet.
    assert calendar.away_until(new_york(2026, 7, 5, 23, 30)) is None
    assert calendar.away_until(new_york(2026, 7, 10, 23, 30)) == date(2026, 7, 10)
    assert calendar.is_open(new_york(2026, 7, 11, 0, 0))


# A rep in New York


def test_a_new_york_rep_works_new_york_hours_and_us_holidays() -> None:
    calendar = WorkCalendar("America/New_York", parse_hours({"mon-fri": "09:00-17:00"}), "US-NY")
    assert not calendar.is_open(berlin(2026, 7, 2, 10))  # 04:00 in New York
    assert calendar.is_open(berlin(2026, 7, 2, 16))  # 10:00 in New York
    # Thursday 16:00 + 2h: one hour on Thursday, Friday is Independence Day (observed).
    due = calendar.add_business_time(new_york(2026, 7, 2, 16), timedelta(hours=2))
    assert due == new_york(2026, 7, 6, 10)
    assert due == berlin(2026, 7, 6, 16)


# Calendars that never open, and careless input


def test_a_calendar_without_any_open_time_fails_clearly_instead_of_looping() -> None:
    never = WorkCalendar("Europe/Berlin", parse_hours({"mon-sun": "closed"}))
    with pytest.raises(ValueError, match="no working time in the 400 days"):
        never.add_business_time(berlin(2026, 6, 1), timedelta(minutes=5))
    with pytest.raises(ValueError, match="no working time"):
        never.next_open(berlin(2026, 6, 1))
    assert not never.is_open(berlin(2026, 6, 1, 12))
    assert never.business_time_between(berlin(2026, 6, 1), berlin(2027, 6, 1)) == timedelta(0)


def test_a_rep_away_for_more_than_400_days_has_no_working_time() -> None:
    sabbatical = office(away=[(date(2026, 1, 1), date(2027, 12, 31))])
    with pytest.raises(ValueError, match="no working time"):
        sabbatical.closed_for(berlin(2026, 6, 1))


def test_times_without_a_time_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        office().is_open(datetime(2026, 6, 1, 9))


def test_negative_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        office().add_business_time(berlin(2026, 6, 1, 9), timedelta(minutes=-5))


def test_a_zero_budget_is_due_immediately() -> None:
    assert office().add_business_time(berlin(2026, 6, 6, 9), timedelta(0)) == berlin(2026, 6, 6, 9)


# Properties over many starts and budgets

CALENDARS: dict[str, WorkCalendar] = {
    "Lower Saxony office": office("DE-NI"),
    "Saxony with lunch break and leave": WorkCalendar(
        "Europe/Berlin",
        parse_hours({"mon-thu": "08:00-12:00, 13:00-17:30", "fri": "08:00-14:00"}),
        "DE-SN",
        away=[(date(2026, 8, 3), date(2026, 8, 21)), (date(2026, 12, 23), date(2027, 1, 2))],
    ),
    "New York": WorkCalendar("America/New_York", parse_hours({"mon-fri": "09:00-17:00"}), "US-NY"),
    "calendar clock": WorkCalendar("Europe/Berlin", None),
    "night desk": WorkCalendar(
        "Europe/Berlin", parse_hours({"mon-fri": "00:00-03:00, 22:00-24:00", "sun": "02:00-04:00"})
    ),
}

instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
budgets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=300))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CALENDARS)), start=instants, amount=budgets)
def test_business_time_up_to_the_due_time_is_exactly_the_budget(
    name: str, start: datetime, amount: timedelta
) -> None:
    calendar = CALENDARS[name]
    due = calendar.add_business_time(start, amount)
    assert due >= start
    assert calendar.business_time_between(start, due) == amount


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(CALENDARS)), start=instants, first=budgets, second=budgets)
def test_business_time_adds_up_over_consecutive_stretches(
    name: str, start: datetime, first: timedelta, second: timedelta
) -> None:
    calendar = CALENDARS[name]
    middle, end = start + first, start + first + second
    whole = calendar.business_time_between(start, end)
    parts = calendar.business_time_between(start, middle) + calendar.business_time_between(
        middle, end
    )
    assert whole == parts
    assert timedelta(0) <= whole <= end - start


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(CALENDARS)), at=instants)
def test_the_calendar_is_open_exactly_when_it_is_closed_for_no_time(
    name: str, at: datetime
) -> None:
    calendar = CALENDARS[name]
    opens = calendar.next_open(at)
    assert calendar.is_open(at) is (opens == at)
    assert calendar.is_open(opens)
    assert calendar.business_time_between(at, opens) == timedelta(0)
