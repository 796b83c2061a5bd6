"""Who gets the next lead: availability, fair rotation, weights, load and recorded reasons."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rules.assign import Pick, RepState, Skip, Strategy, pick_rep
from rules.calendar import WorkCalendar, parse_hours

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 6, 1, 8, tzinfo=UTC)
OFFICE = parse_hours({"mon-fri": "08:00-17:00"})


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def simulate(
    reps: Iterable[RepState], strategy: Strategy, leads: int, *, now: datetime
) -> tuple[dict[str, RepState], list[str], datetime]:
    """Route ``leads`` leads one minute apart, keeping the counts the way the worker keeps them.

    Returns the reps' final state, who got each lead in order, and the time after the last one.
    """
    team = {rep.name: rep for rep in reps}
    order: list[str] = []
    for number in range(leads):
        result = pick_rep(list(team.values()), strategy, now=now, max_wait=None, seed=number)
        assert result.rep is not None, result.reason
        rep = team[result.rep]
        team[rep.name] = dataclasses.replace(
            rep,
            assigned_total=rep.assigned_total + 1,
            assigned_today=rep.assigned_today + 1,
            last_assigned_at=now,
        )
        order.append(rep.name)
        now += timedelta(minutes=1)
    return team, order, now


def pick(
    reps: list[RepState],
    strategy: Strategy = "round_robin",
    *,
    now: datetime = START,
    max_wait: timedelta | None = timedelta(minutes=5),
    seed: int = 1,
    open_leads: dict[str, int] | None = None,
    team: str | None = None,
) -> Pick:
    """One pick with an SLA of 5 minutes unless a test says otherwise."""
    return pick_rep(
        reps, strategy, now=now, max_wait=max_wait, seed=seed, open_leads=open_leads, team=team
    )


# Round robin


def test_round_robin_over_10000_leads_keeps_every_rep_within_one_lead() -> None:
    team = [RepState(name) for name in ("lea", "jonas", "mia", "paul")]
    final, order, _ = simulate(team, "round_robin", 10_000, now=START)
    counts = Counter(order)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(rep.assigned_total for rep in final.values()) == 10_000
    # Fair at every moment, not just at the end: in any four leads in a row, four different reps.
    assert all(len(set(order[i : i + 4])) == 4 for i in range(10_000 - 3))


def test_the_rep_with_the_fewest_leads_gets_the_next_and_the_reason_says_so() -> None:
    team = [RepState("lea", assigned_total=41), RepState("jonas", assigned_total=42)]
    result = pick(team, team="enterprise-dach")
    assert result == Pick(
        rep="lea",
        skipped=(),
        reason="round robin in team enterprise-dach: lea had the fewest leads (41 vs 42)",
        seed=None,
    )


def test_a_rep_who_joins_after_1000_leads_gets_a_fair_share_and_is_not_flooded() -> None:
    veterans, _, now = simulate(
        [RepState(name) for name in ("lea", "jonas", "mia")], "round_robin", 1_000, now=START
    )
    newcomer = RepState("paul", active_since=now)
    _, order, _ = simulate([*veterans.values(), newcomer], "round_robin", 1_200, now=now)
    assert order[:8].count("paul") <= 2
    assert abs(Counter(order)["paul"] - 300) <= 3
    assert all(count >= 297 for count in Counter(order).values())


def test_a_rep_back_from_two_weeks_of_leave_rejoins_the_rotation_without_a_flood() -> None:
    team, _, now = simulate(
        [RepState(name) for name in ("lea", "jonas", "mia")], "round_robin", 300, now=START
    )
    lea = team.pop("lea")
    team, _, now = simulate(team.values(), "round_robin", 600, now=now)
    returning = dataclasses.replace(lea, active_since=now)
    next_morning = now + timedelta(hours=12)
    _, order, _ = simulate([*team.values(), returning], "round_robin", 900, now=next_morning)
    assert order[:3].count("lea") == 1
    assert Counter(order) == {"lea": 300, "jonas": 300, "mia": 300}


def test_the_reason_explains_that_a_returning_rep_is_counted_level_with_the_others() -> None:
    team = [
        RepState("lea", assigned_total=3, last_assigned_at=START - timedelta(days=14)),
        RepState("jonas", assigned_total=41, last_assigned_at=START - timedelta(minutes=2)),
        RepState("mia", assigned_total=42, last_assigned_at=START - timedelta(minutes=1)),
    ]
    assert pick(team).reason == (
        "round robin: lea and jonas were level at 41 leads; lea has waited longest for a lead "
        "(lea has 3, counted as 41 so that someone new or back from leave rejoins the rotation "
        "instead of catching up)"
    )


def test_lifetime_counts_are_never_changed_by_the_pick() -> None:
    lea = RepState("lea", assigned_total=3)
    pick([lea, RepState("jonas", assigned_total=500)])
    assert lea.assigned_total == 3


def test_between_reps_level_on_leads_the_one_who_waited_longest_goes_first() -> None:
    team = [
        RepState("lea", assigned_total=7, last_assigned_at=START - timedelta(minutes=3)),
        RepState("jonas", assigned_total=7, last_assigned_at=START - timedelta(minutes=9)),
    ]
    result = pick(team)
    assert result.rep == "jonas"
    assert result.reason == (
        "round robin: jonas and lea were level at 7 leads; jonas has waited longest for a lead"
    )
    assert result.seed is None


# Ties and seeds


def test_the_same_seed_always_breaks_a_tie_the_same_way() -> None:
    team = [RepState(name) for name in ("lea", "jonas", "mia")]
    assert len({pick(team, seed=42).rep for _ in range(20)}) == 1


def test_ties_are_not_always_broken_to_the_same_rep_across_seeds() -> None:
    team = [RepState(name) for name in ("lea", "jonas", "mia")]
    winners = Counter(pick(team, seed=seed).rep for seed in range(300))
    assert set(winners) == {"lea", "jonas", "mia"}
    assert min(winners.values()) > 60


def test_the_order_reps_are_listed_in_does_not_decide_a_tie() -> None:
    team = [RepState(name) for name in ("lea", "jonas", "mia")]
    assert pick(team, seed=5).rep == pick(list(reversed(team)), seed=5).rep


def test_a_random_draw_records_its_seed_in_the_pick_and_the_reason() -> None:
    result = pick([RepState("lea"), RepState("jonas")], seed=20261118)
    assert result.seed == 20261118
    assert result.reason.endswith(f"{result.rep} was drawn at random (seed 20261118)")


# Weighted


def test_weighted_2_1_1_is_honoured_within_2_percent_over_10000_leads() -> None:
    team = [RepState("lea", weight=2), RepState("jonas", weight=1), RepState("mia", weight=1)]
    _, order, _ = simulate(team, "weighted", 10_000, now=START)
    counts = Counter(order)
    for name, expected in {"lea": 5_000, "jonas": 2_500, "mia": 2_500}.items():
        assert abs(counts[name] - expected) <= 0.02 * expected


def test_weighted_picks_the_rep_furthest_below_their_share() -> None:
    team = [RepState("lea", weight=2, assigned_total=43), RepState("jonas", assigned_total=22)]
    result = pick(team, "weighted")
    assert result.rep == "lea"
    assert result.reason == (
        "weighted round robin: lea was furthest below their share "
        "(43 leads at weight 2 vs jonas with 22 at weight 1)"
    )


def test_a_heavier_rep_who_joins_late_gets_their_weighted_share_without_a_flood() -> None:
    veterans, _, now = simulate(
        [RepState("lea", weight=2), RepState("jonas"), RepState("mia")],
        "weighted",
        1_000,
        now=START,
    )
    paul = RepState("paul", weight=2, active_since=now)
    _, order, _ = simulate([*veterans.values(), paul], "weighted", 1_200, now=now)
    assert order[:10].count("paul") <= 4
    assert abs(Counter(order)["paul"] - 400) <= 0.1 * 400


# Least loaded


def test_least_loaded_gives_the_lead_to_the_rep_with_the_fewest_open_leads() -> None:
    team = [RepState("lea", assigned_today=9), RepState("jonas", assigned_today=1)]
    result = pick(team, "least_loaded", open_leads={"lea": 3, "jonas": 5})
    assert result.rep == "lea"
    assert result.reason == "least loaded: lea had the fewest open leads (3 vs 5)"


def test_least_loaded_falls_back_to_the_fewest_assigned_today() -> None:
    team = [RepState("lea", assigned_today=9), RepState("jonas", assigned_today=4)]
    result = pick(team, "least_loaded", open_leads={"lea": 2, "jonas": 2})
    assert result.rep == "jonas"
    assert result.reason == (
        "least loaded: jonas and lea had 2 open leads each; "
        "jonas had the fewest assigned today (4 vs 9)"
    )


def test_least_loaded_counts_reps_missing_from_the_open_leads_as_having_none() -> None:
    team = [RepState("lea"), RepState("jonas")]
    assert pick(team, "least_loaded", open_leads={"lea": 1}).rep == "jonas"


def test_least_loaded_draws_between_reps_level_on_everything() -> None:
    team = [RepState("lea"), RepState("jonas")]
    winners = {pick(team, "least_loaded", seed=seed).rep for seed in range(20)}
    assert winners == {"lea", "jonas"}


# Availability


def test_a_rep_on_holiday_leave_is_skipped_with_the_date_they_are_back() -> None:
    jonas = RepState(
        "jonas",
        calendar=WorkCalendar(
            "Europe/Berlin", OFFICE, "DE-NI", [(date(2026, 12, 23), date(2027, 1, 2))]
        ),
    )
    result = pick([jonas, RepState("lea")], now=berlin(2026, 12, 28, 10))
    assert result.rep == "lea"
    assert result.skipped == (Skip("jonas", "away until 2027-01-02"),)


def test_a_rep_whose_day_is_over_is_skipped_when_the_sla_cannot_wait_until_morning() -> None:
    jonas = RepState("jonas", calendar=WorkCalendar("Europe/Berlin", OFFICE, "DE-NI"))
    result = pick([jonas, RepState("lea")], now=berlin(2026, 11, 17, 17, 40))
    assert result.skipped == (Skip("jonas", "outside working hours for 14h 20m (SLA allows 5m)"),)


def test_a_rep_who_starts_within_the_sla_is_not_skipped() -> None:
    jonas = RepState("jonas", calendar=WorkCalendar("Europe/Berlin", OFFICE, "DE-NI"))
    result = pick([jonas], now=berlin(2026, 11, 18, 7, 57), max_wait=timedelta(minutes=5))
    assert result.rep == "jonas"
    assert result.skipped == ()


def test_with_a_calendar_clock_sla_nobody_is_skipped_for_their_hours() -> None:
    jonas = RepState("jonas", calendar=WorkCalendar("Europe/Berlin", OFFICE, "DE-NI"))
    assert pick([jonas], now=berlin(2026, 6, 6, 3), max_wait=None).rep == "jonas"


def test_a_rep_on_a_regional_public_holiday_is_skipped_and_told_which() -> None:
    saxony = RepState("lea", calendar=WorkCalendar("Europe/Berlin", OFFICE, "DE-SN"))
    lower_saxony = RepState("jonas", calendar=WorkCalendar("Europe/Berlin", OFFICE, "DE-NI"))
    result = pick([saxony, lower_saxony], now=berlin(2026, 11, 18, 10))
    assert result.rep == "jonas"
    assert result.skipped == (Skip("lea", "public holiday (Buß- und Bettag)"),)


def test_a_new_york_rep_is_skipped_during_the_berlin_morning() -> None:
    new_york = WorkCalendar("America/New_York", parse_hours({"mon-fri": "09:00-17:00"}), "US-NY")
    result = pick([RepState("sam", calendar=new_york)], now=berlin(2026, 3, 10, 9))
    assert result.skipped == (Skip("sam", "outside working hours for 5h (SLA allows 5m)"),)


def test_a_rep_at_capacity_is_skipped() -> None:
    busy = RepState("lea", assigned_today=20, capacity_per_day=20)
    result = pick([busy, RepState("jonas", assigned_total=900)])
    assert result.rep == "jonas"
    assert result.skipped == (Skip("lea", "at capacity (20/20 today)"),)
    assert result.reason == "round robin: jonas was the only one available"


def test_capacity_is_never_exceeded_however_many_leads_arrive() -> None:
    team = [
        RepState("lea", capacity_per_day=5),
        RepState("jonas", capacity_per_day=12, weight=3),
        RepState("mia", capacity_per_day=20),
    ]
    strategies: tuple[Strategy, ...] = ("round_robin", "weighted", "least_loaded")
    for strategy in strategies:
        state = {rep.name: rep for rep in team}
        given = 0
        result = pick(list(state.values()), strategy, seed=given)
        while result.rep is not None:
            rep = state[result.rep]
            state[rep.name] = dataclasses.replace(rep, assigned_today=rep.assigned_today + 1)
            given += 1
            result = pick(list(state.values()), strategy, seed=given)
        assert given == 5 + 12 + 20
        assert {name: rep.assigned_today for name, rep in state.items()} == {
            "lea": 5,
            "jonas": 12,
            "mia": 20,
        }
        assert result.reason.startswith("nobody available: lea at capacity (5/5 today); ")


def test_when_nobody_is_available_the_pick_says_who_was_skipped_and_why() -> None:
    away = WorkCalendar("Europe/Berlin", OFFICE, "DE-NI", [(date(2026, 12, 23), date(2027, 1, 2))])
    team = [RepState("jonas", calendar=away), RepState("lea", assigned_today=3, capacity_per_day=3)]
    result = pick(team, team="enterprise-dach", now=berlin(2026, 12, 28, 10))
    assert result == Pick(
        rep=None,
        skipped=(Skip("jonas", "away until 2027-01-02"), Skip("lea", "at capacity (3/3 today)")),
        reason=(
            "nobody available in team enterprise-dach: jonas away until 2027-01-02; "
            "lea at capacity (3/3 today)"
        ),
        seed=None,
    )


def test_an_empty_team_has_nobody_to_pick() -> None:
    assert pick([]).reason == "nobody available: the team has no reps"


# Mistakes in the input


def test_two_reps_with_the_same_name_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        pick([RepState("lea"), RepState("lea")])


@pytest.mark.parametrize("weight", [0, -1])
def test_a_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight must be above 0"):
        RepState("lea", weight=weight)


def test_a_pick_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pick([RepState("lea")], now=datetime(2026, 6, 1, 9))


# Working hours under a business-hours SLA (max_wait None): prefer, never drop


def test_a_rep_open_now_is_preferred_and_the_closed_one_is_listed_with_their_opening() -> None:
    new_york = WorkCalendar("America/New_York", parse_hours({"mon-fri": "09:00-17:00"}), "US-NY")
    berlin_office = WorkCalendar("Europe/Berlin", OFFICE, "DE-NI")
    team = [RepState("sam", calendar=new_york), RepState("jonas", calendar=berlin_office)]
    result = pick(team, now=berlin(2026, 3, 10, 9), max_wait=None)
    assert result.rep == "jonas"
    assert result.skipped == (Skip("sam", "outside working hours until 2026-03-10T09:00-04:00"),)


def test_when_nobody_is_open_the_lead_still_goes_to_a_member() -> None:
    office = WorkCalendar("Europe/Berlin", OFFICE, "DE-NI")
    team = [RepState("jonas", calendar=office), RepState("lea", calendar=office)]
    saturday = berlin(2026, 11, 28, 11)
    result = pick(team, now=saturday, max_wait=None)
    assert result.rep in ("jonas", "lea") and result.skipped == ()
    assert result.reason.endswith("nobody is open now, the SLA starts at the rep's next opening")


def test_a_closed_rep_whose_leave_starts_before_they_open_again_is_away() -> None:
    leaving = WorkCalendar(
        "Europe/Berlin", OFFICE, "DE-NI", [(date(2026, 12, 23), date(2027, 1, 2))]
    )
    result = pick(
        [RepState("jonas", calendar=leaving)], now=berlin(2026, 12, 22, 20), max_wait=None
    )
    assert result.rep is None
    assert result.skipped == (Skip("jonas", "away from 2026-12-23 until 2027-01-02"),)
