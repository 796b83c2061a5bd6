"""Choosing the rep for a lead within one team, and recording why.

First every rep who cannot take the lead is set aside with a reason: away, at today's capacity,
without working hours at all, or (only when the SLA runs on the wall clock, ``max_wait``) opening
later than the SLA allows. Of the rest, those open now are preferred: while anyone is open, the
closed ones are passed over with the time they open. When nobody is open (a night, a weekend),
the lead still goes to one of them, whose business-hours SLA then starts at their next opening.
The reps left are ranked by the team's strategy.

Round robin and weighted share one rule, which keeps rotation fair while reps come and go
without ever resetting anyone's lifetime count. A rep's standing is ``assigned_total / weight``
(weight 1 for round robin) and the lead goes to the rep whose standing after one more lead,
``(assigned_total + 1) / weight``, is lowest. A rep who has fallen more than one of their own
turns behind the rep furthest ahead (someone new, or back from leave) is not owed the gap: they
are moved level with the next rep in line, so they rejoin the rotation instead of taking every
lead until they have caught up. Reps level on this go to whoever has waited longest for a lead
(since their last lead or since (re)joining, scaled by weight); that is what stops a lifted rep,
whose own picks do not move them, from winning again and again. Remaining ties, e.g. on a fresh
team, are drawn with ``random.Random(seed)`` and the seed is kept in the :class:`Pick`.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

from rules.calendar import SEARCH_DAYS, NoWorkingTime, WorkCalendar

Strategy = Literal["round_robin", "weighted", "least_loaded"]

_LABELS: dict[str, str] = {
    "round_robin": "round robin",
    "weighted": "weighted round robin",
    "least_loaded": "least loaded",
}


@dataclass(frozen=True)
class RepState:
    """What the pick needs to know about one rep of the team at the moment of the pick."""

    name: str
    weight: float = 1.0
    assigned_total: int = 0  # lifetime count for this team; never reset
    assigned_today: int = 0  # in the rep's local day
    capacity_per_day: int | None = None
    last_assigned_at: datetime | None = None
    active_since: datetime | None = None  # when the rep (re)joined the team's rotation
    calendar: WorkCalendar | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a rep needs a name")
        if not self.weight > 0:
            raise ValueError(f"{self.name}: weight must be above 0, got {self.weight}")
        if self.assigned_total < 0 or self.assigned_today < 0:
            raise ValueError(f"{self.name}: lead counts cannot be negative")
        if self.capacity_per_day is not None and self.capacity_per_day < 0:
            raise ValueError(f"{self.name}: capacity per day cannot be negative")


@dataclass(frozen=True)
class Skip:
    """A rep who was passed over, and why (e.g. ``at capacity (20/20 today)``)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Pick:
    """The outcome: the chosen rep (``None`` if nobody is available) and the reasoning.

    ``seed`` is set when a random draw between equally placed reps decided the pick, so the
    decision can be replayed; it is ``None`` when the ranking alone decided.
    """

    rep: str | None
    skipped: tuple[Skip, ...]
    reason: str
    seed: int | None


@dataclass(frozen=True)
class _Ranked:
    rep: RepState
    key: tuple[Fraction | float, ...]
    lifted: bool = False


_Explain = Callable[[_Ranked, Sequence[_Ranked], int | None], str]


def pick_rep(
    reps: Sequence[RepState],
    strategy: Strategy,
    *,
    now: datetime,
    max_wait: timedelta | None,
    seed: int,
    open_leads: Mapping[str, int] | None = None,
    team: str | None = None,
) -> Pick:
    """Choose who gets the next lead.

    ``max_wait`` is the time to respond of an SLA on the wall clock (``clock: calendar``): a rep
    whose working hours start later than that is skipped. ``None`` (a business-hours SLA, whose
    clock waits for the rep) skips nobody for their hours. Away reps are always skipped.
    ``open_leads`` counts each rep's unfinished leads for ``least_loaded``; missing reps have
    none. ``team`` only names the team in the reason.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    names = [rep.name for rep in reps]
    if len(set(names)) != len(names):
        raise ValueError(f"rep names must be unique within a team, got {names}")
    if strategy not in _LABELS:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(_LABELS)}")

    # Everything but a random draw is the same whenever the same reps (frozen, with calendars
    # that never change once loaded) are asked at the same moment: worked out once.
    key = None
    if open_leads is None:
        key = (id(reps), strategy, now, max_wait, team)
        cached = _prepared.get(key)
        if cached is not None and _same(cached[0], reps):
            return cached[1].pick(seed)
    prepared = _prepare(reps, strategy, now, max_wait, open_leads, team)
    if key is not None:
        if len(_prepared) > 256:
            _prepared.clear()
        _prepared[key] = (tuple(reps), prepared)
    return prepared.pick(seed)


class _Prepared:
    """A pick up to its random draw: the final :class:`Pick` when no draw is needed, else the
    reps ranked with those drawn between in name order."""

    __slots__ = ("best", "explain", "fixed", "label", "note", "ranked", "skipped")

    def __init__(
        self,
        skipped: tuple[Skip, ...],
        *,
        fixed: Pick | None = None,
        label: str = "",
        ranked: Sequence[_Ranked] = (),
        best: Sequence[_Ranked] = (),
        explain: _Explain | None = None,
        note: str = "",
    ) -> None:
        self.note = note
        self.skipped = skipped
        self.fixed = fixed
        self.label = label
        self.ranked = ranked
        self.best = best
        self.explain = explain

    def pick(self, seed: int) -> Pick:
        if self.fixed is not None:
            return self.fixed
        assert self.explain is not None
        chosen = random.Random(seed).choice(self.best)
        others = [entry for entry in self.ranked if entry is not chosen]
        reason = self.explain(chosen, others, seed)
        return Pick(chosen.rep.name, self.skipped, f"{self.label}: {reason}{self.note}", seed)


_prepared: dict[tuple[object, ...], tuple[tuple[RepState, ...], _Prepared]] = {}


def _same(known: tuple[RepState, ...], reps: Sequence[RepState]) -> bool:
    return len(known) == len(reps) and all(a is b for a, b in zip(known, reps, strict=False))


def _prepare(
    reps: Sequence[RepState],
    strategy: Strategy,
    now: datetime,
    max_wait: timedelta | None,
    open_leads: Mapping[str, int] | None,
    team: str | None,
) -> _Prepared:
    available: list[RepState] = []
    skipped: list[Skip] = []
    for rep in reps:
        reason = _unavailable(rep, now, max_wait)
        if reason is None:
            available.append(rep)
        else:
            skipped.append(Skip(rep.name, reason))
    opens = {rep.name: _opens(rep, now) for rep in available}
    open_now = [rep for rep in available if opens[rep.name] is None]
    if open_now and len(open_now) < len(available):
        for rep in available:
            at = opens[rep.name]
            if at is not None:
                skipped.append(Skip(rep.name, f"outside working hours until {_local(rep, at)}"))
        available = open_now
    nobody_open = ""
    if available and not open_now:
        nobody_open = "; nobody is open now, the SLA starts at the rep's next opening"

    where = f" in team {team}" if team else ""
    if not available:
        why = "; ".join(f"{skip.name} {skip.reason}" for skip in skipped) or "the team has no reps"
        return _Prepared(
            tuple(skipped),
            fixed=Pick(
                rep=None,
                skipped=tuple(skipped),
                reason=f"nobody available{where}: {why}",
                seed=None,
            ),
        )

    label = _LABELS[strategy] + where
    if len(available) == 1:
        only = available[0].name
        reason = f"{label}: {only} was the only one available{nobody_open}"
        return _Prepared(tuple(skipped), fixed=Pick(only, tuple(skipped), reason, None))

    if strategy == "least_loaded":
        loads = open_leads or {}
        ranked = [_Ranked(rep, (loads.get(rep.name, 0), rep.assigned_today)) for rep in available]
        explain: _Explain = _explain_least_loaded
    else:
        ranked = _rotation(available, weighted=strategy == "weighted", now=now)
        explain = _explain_weighted if strategy == "weighted" else _explain_round_robin

    ranked.sort(key=lambda entry: entry.key)
    best = [entry for entry in ranked if entry.key == ranked[0].key]
    if len(best) > 1:  # drawn at random with the seed of each pick
        best.sort(key=lambda entry: entry.rep.name)
        return _Prepared(
            tuple(skipped),
            label=label,
            ranked=ranked,
            best=best,
            explain=explain,
            note=nobody_open,
        )
    chosen = best[0]
    others = [entry for entry in ranked if entry is not chosen]
    reason = explain(chosen, others, None)
    fixed = Pick(chosen.rep.name, tuple(skipped), f"{label}: {reason}{nobody_open}", None)
    return _Prepared(tuple(skipped), fixed=fixed)


def _unavailable(rep: RepState, now: datetime, max_wait: timedelta | None) -> str | None:
    """Why ``rep`` cannot take a lead at ``now``, or ``None`` if they can."""
    calendar = rep.calendar
    if calendar is not None:
        back = calendar.away_until(now)
        if back is not None:
            return f"away until {back.isoformat()}"
    if rep.capacity_per_day is not None and rep.assigned_today >= rep.capacity_per_day:
        return f"at capacity ({rep.assigned_today}/{rep.capacity_per_day} today)"
    if calendar is not None and not calendar.is_open(now):
        try:
            closed = calendar.closed_for(now)
        except NoWorkingTime:
            return f"no working hours in the next {SEARCH_DAYS} days"
        leave = calendar.away_before(now, now + closed)
        if leave is not None:  # the lead would wait for them to come back
            return f"away from {leave[0].isoformat()} until {leave[1].isoformat()}"
        if max_wait is not None and closed > max_wait:
            holiday = calendar.holiday(now)
            if holiday is not None:
                return f"public holiday ({holiday})"
            allowed = _duration(max_wait)
            return f"outside working hours for {_duration(closed)} (SLA allows {allowed})"
    return None


def _opens(rep: RepState, now: datetime) -> datetime | None:
    """When a rep who can take the lead opens: ``None`` if open now (or without hours)."""
    calendar = rep.calendar
    if calendar is None or calendar.is_open(now):
        return None
    return calendar.next_open(now)


def _local(rep: RepState, at: datetime) -> str:
    """``at`` on the rep's own clock, to the minute, with its offset."""
    assert rep.calendar is not None
    local = at.astimezone(ZoneInfo(rep.calendar.timezone))
    return local.isoformat(timespec="minutes")


def _rotation(available: Sequence[RepState], *, weighted: bool, now: datetime) -> list[_Ranked]:
    """Rank reps for round robin or weighted round robin (see the module docstring)."""
    # Exact fractions, so that float noise never makes a rep look a turn behind.
    standings = [_standing(rep.assigned_total, rep.weight if weighted else 1) for rep in available]
    lead = max(standing for standing, _turn, _weight in standings)
    next_in_line = min(turn for _standing, turn, _weight in standings if turn >= lead)
    ranked = []
    for rep, (_standing_now, turn, weight) in zip(available, standings, strict=True):
        lifted = turn < lead  # more than one of their own turns behind the leader
        key = (next_in_line if lifted else turn, -_waited(rep, now) * weight)
        ranked.append(_Ranked(rep, key, lifted))
    return ranked


@functools.lru_cache(maxsize=4096)
def _standing(assigned_total: int, weight: float) -> tuple[Fraction, Fraction, float]:
    """A rep's standing ``assigned_total / weight``, their turn ``(assigned_total + 1) /
    weight`` (both exact) and the weight as a float; worked out once per count and weight."""
    exact = Fraction(weight)
    return assigned_total / exact, (assigned_total + 1) / exact, float(exact)


def _waited(rep: RepState, now: datetime) -> float:
    """Seconds since the rep's last lead or (re)joining; infinite if neither ever happened."""
    since = [moment for moment in (rep.last_assigned_at, rep.active_since) if moment is not None]
    return (now - max(since)).total_seconds() if since else math.inf


def _explain_round_robin(chosen: _Ranked, others: Sequence[_Ranked], seed: int | None) -> str:
    name, runner = chosen.rep.name, others[0]
    count = int(chosen.key[0]) - 1  # the count the ranking used, after any lift
    if runner.key[0] != chosen.key[0]:
        text = f"{name} had the fewest leads ({count} vs {int(runner.key[0]) - 1})"
    else:
        text = f"{_level(chosen, others, seed)} were level at {count} leads" + _tie_break(
            chosen, seed
        )
    if chosen.lifted:
        text += (
            f" ({name} has {chosen.rep.assigned_total}, counted as {count} so that someone new "
            "or back from leave rejoins the rotation instead of catching up)"
        )
    return text


def _explain_weighted(chosen: _Ranked, others: Sequence[_Ranked], seed: int | None) -> str:
    rep, runner = chosen.rep, others[0]
    if runner.key[0] != chosen.key[0]:
        text = (
            f"{rep.name} was furthest below their share ({rep.assigned_total} leads at weight "
            f"{rep.weight:g} vs {runner.rep.name} with {runner.rep.assigned_total} at weight "
            f"{runner.rep.weight:g})"
        )
    else:
        text = f"{_level(chosen, others, seed)} were equally close to their share" + _tie_break(
            chosen, seed
        )
    if chosen.lifted:
        text += (
            f" ({rep.name} was more than a turn behind, so they were moved level with the next "
            "in line rather than catching up)"
        )
    return text


def _level(chosen: _Ranked, others: Sequence[_Ranked], seed: int | None) -> str:
    """Who tied with the chosen rep: on their turn, and also on waiting time if it was drawn."""
    return _names(chosen, others, depth=1 if seed is None else 2)


def _tie_break(chosen: _Ranked, seed: int | None) -> str:
    if seed is None:
        return f"; {chosen.rep.name} has waited longest for a lead"
    return f" and had waited equally long; {chosen.rep.name} was drawn at random (seed {seed})"


def _explain_least_loaded(chosen: _Ranked, others: Sequence[_Ranked], seed: int | None) -> str:
    name, runner = chosen.rep.name, others[0]
    open_now, today = int(chosen.key[0]), int(chosen.key[1])
    if runner.key[0] != chosen.key[0]:
        return f"{name} had the fewest open leads ({open_now} vs {int(runner.key[0])})"
    if runner.key[1] != chosen.key[1]:
        level = _names(chosen, others, depth=1)
        return (
            f"{level} had {open_now} open leads each; {name} had the fewest assigned today "
            f"({today} vs {int(runner.key[1])})"
        )
    level = _names(chosen, others, depth=2)
    return (
        f"{level} had {open_now} open leads and {today} assigned today each; "
        f"{name} was drawn at random (seed {seed})"
    )


def _names(chosen: _Ranked, others: Sequence[_Ranked], *, depth: int) -> str:
    """The chosen rep and those ranked equal with them on the first ``depth`` criteria."""
    level = [chosen.rep.name] + [
        entry.rep.name for entry in others if entry.key[:depth] == chosen.key[:depth]
    ]
    return ", ".join(level[:-1]) + " and " + level[-1]


def _duration(delta: timedelta) -> str:
    """A short human duration with its two largest units, rounded up: ``14h 20m``, ``2d 4h``."""
    seconds = math.ceil(delta.total_seconds())
    if seconds >= 86400:
        first, second = divmod(math.ceil(seconds / 3600), 24)
        units = ("d", "h")
    elif seconds >= 3600:
        first, second = divmod(math.ceil(seconds / 60), 60)
        units = ("h", "m")
    else:
        first, second = divmod(seconds, 60)
        units = ("m", "s")
    parts = [f"{value}{unit}" for value, unit in zip((first, second), units, strict=True) if value]
    return " ".join(parts) or "0s"
