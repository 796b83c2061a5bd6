"""Working calendars: when a rep can be expected to answer, and SLA arithmetic on that time.

A :class:`WorkCalendar` combines a rep's weekly hours, time zone, public holidays and away
periods. SLA budgets such as "respond within 4h" are counted only in open time, so a lead that
arrives on Friday afternoon is due on Monday morning. The calendar clock of an SLA policy is
simply a calendar that is always open (``hours=None``).

All instants go in as timezone-aware datetimes and come out in UTC. Wall-clock times are read in
the rep's time zone, so a DST change shortens or lengthens the night, never the working day.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    import holidays as holiday_data

SEARCH_DAYS = 400
"""How far ahead a calendar looks for open time before declaring that it has none."""

_MINUTES_PER_DAY = 24 * 60
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")

Window = tuple[int, int]
"""An opening window as (start, end) in minutes after local midnight; an end of 1440 is 24:00."""


class HoursError(ValueError):
    """A problem with one entry of a ``hours:`` mapping; ``key`` is the entry at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class NoWorkingTime(ValueError):
    """Raised when a calendar has no open time at all within :data:`SEARCH_DAYS` days."""


@dataclass(frozen=True)
class WeeklyHours:
    """Opening windows for each weekday, Monday first; build it with :func:`parse_hours`.

    Each day holds its windows sorted and without overlaps; touching windows are merged.
    """

    days: tuple[tuple[Window, ...], ...]


def parse_hours(spec: Mapping[str, str]) -> WeeklyHours:
    """Read weekly hours such as ``{"mon-fri": "08:00-12:00, 13:00-17:00", "sat": "closed"}``.

    Keys are day names (``mon`` or ``monday``), ranges (``mon-fri``) or lists (``sat,sun``);
    days that no key mentions are closed. Values are one or more ``HH:MM-HH:MM`` windows separated
    by commas, or ``closed``; ``24:00`` may end a window. A window that crosses midnight is
    written as two windows on consecutive days. Raises :class:`HoursError` naming the key.
    """
    if not spec:
        raise ValueError('no working hours given; write them like mon-fri: "08:00-17:00"')
    days: list[tuple[Window, ...]] = [()] * 7
    given_by: dict[int, str] = {}
    for raw_key, value in spec.items():
        key = str(raw_key)
        windows = _parse_windows(key, value)
        for day in _parse_days(key):
            if day in given_by:
                raise HoursError(
                    key,
                    f"{_DAY_NAMES[day]} is already given by {given_by[day]!r}; list each day once",
                )
            given_by[day] = key
            days[day] = windows
    return WeeklyHours(days=tuple(days))


def _parse_days(key: str) -> list[int]:
    days: list[int] = []
    for part in key.split(","):
        first, dash, last = part.strip().lower().partition("-")
        start = _day_index(key, first)
        end = _day_index(key, last) if dash else start
        if end < start:
            raise HoursError(
                key,
                f"the day range {part.strip()!r} runs backwards; weeks run from mon to sun, so "
                f"write {_DAY_NAMES[end]}-{_DAY_NAMES[start]}, or list the days, e.g. fri-sun,mon",
            )
        for day in range(start, end + 1):
            if day in days:
                raise HoursError(key, f"{_DAY_NAMES[day]} appears twice")
            days.append(day)
    return days


def _day_index(key: str, name: str) -> int:
    name = name.strip()
    if name in _DAY_NAMES:
        return _DAY_NAMES.index(name)
    if name in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(name)
    raise HoursError(key, f"{name!r} is not a day; use mon, tue, wed, thu, fri, sat or sun")


def _parse_windows(key: str, value: object) -> tuple[Window, ...]:
    if not isinstance(value, str):
        raise HoursError(key, f'expected hours like "08:00-17:00" or "closed", got {value!r}')
    if value.strip().lower() == "closed":
        return ()
    windows: list[tuple[Window, str]] = []
    for part in value.split(","):
        text = part.strip()
        match = _WINDOW.match(text)
        if not match:
            raise HoursError(key, f'{text!r} is not a time window; write it like "08:00-17:00"')
        start = _minutes(key, text, int(match[1]), int(match[2]), may_be_midnight=False)
        end = _minutes(key, text, int(match[3]), int(match[4]), may_be_midnight=True)
        if end <= start:
            raise HoursError(
                key,
                f"{text!r} does not end after it starts; a window past midnight is written "
                'as two windows, e.g. mon: "22:00-24:00", tue: "00:00-06:00"',
            )
        windows.append(((start, end), text))
    windows.sort()
    merged: list[Window] = []
    for index, ((start, end), text) in enumerate(windows):
        if merged and start < merged[-1][1]:
            raise HoursError(key, f"{windows[index - 1][1]!r} and {text!r} overlap")
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _minutes(key: str, text: str, hour: int, minute: int, *, may_be_midnight: bool) -> int:
    if (hour, minute) == (24, 0):
        if may_be_midnight:
            return _MINUTES_PER_DAY
        raise HoursError(key, f"{text!r} starts at 24:00; only the end of a window can be 24:00")
    if hour > 23 or minute > 59:
        raise HoursError(key, f"{text!r} contains a time of day that does not exist")
    return hour * 60 + minute


class WorkCalendar:
    """When one rep (or an always-open SLA clock) is working, and business-time arithmetic.

    ``hours=None`` means open around the clock. ``holidays`` is a country or region code such
    as ``DE``, ``DE-NI``, ``AT-9``, ``CH-ZH`` or ``US-CA``; holiday names are given in the
    region's own language. ``away`` periods are (first day, last day), both inclusive, as dates
    in the rep's time zone.

    Wall-clock times that a DST change makes ambiguous are read as their first occurrence; a
    window that would start or end inside the hour skipped in spring does so when the clock
    jumps past it.
    """

    def __init__(
        self,
        timezone: str,
        hours: WeeklyHours | None,
        holidays: str | None = None,
        away: Sequence[tuple[date, date]] = (),
    ) -> None:
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {timezone!r}; use a name like Europe/Berlin"
            ) from exc
        self.timezone = timezone
        self._hours = hours
        self._holidays = _public_holidays(holidays) if holidays else None
        self._away = _merge_away(away)
        # Answers of next_open and add_business_time: a calendar never changes once made, and
        # scoring a file asks the same question for every lead at one ``now``.
        self._memo: dict[tuple[datetime, timedelta | None], datetime] = {}
        # A day's open spans, likewise: routing a backlog asks about today for every pick.
        self._days: dict[date, tuple[tuple[datetime, datetime], ...]] = {}

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` falls in working hours, on a day that is neither a holiday nor away."""
        _require_aware(at)
        return any(start <= at < end for start, end in self._day_spans(self._local_date(at)))

    def next_open(self, at: datetime) -> datetime:
        """The first open moment at or after ``at`` (``at`` itself, in UTC, if open)."""
        _require_aware(at)
        key = (at, None)
        found = self._memo.get(key)
        if found is None:
            found, _ = next(self._spans(at))
            self._remember(key, found)
        return found

    def closed_for(self, at: datetime) -> timedelta:
        """How long from ``at`` until the calendar next opens; zero if it is open."""
        return self.next_open(at) - at

    def add_business_time(self, start: datetime, amount: timedelta) -> datetime:
        """The moment ``amount`` of open time has passed after ``start``: an SLA's due time.

        Open time ends exactly at the end of a window, so 1h started at 16:00 with hours until
        17:00 is due at 17:00 that day, not at the next opening.
        """
        _require_aware(start)
        if amount < timedelta(0):
            raise ValueError(f"cannot add a negative amount of business time ({amount})")
        if not amount:
            return start.astimezone(UTC)
        key = (start, amount)
        found = self._memo.get(key)
        if found is not None:
            return found
        remaining = amount
        spans = self._spans(start)
        while True:
            span_start, span_end = next(spans)
            if span_end - span_start >= remaining:
                self._remember(key, span_start + remaining)
                return span_start + remaining
            remaining -= span_end - span_start

    def _remember(self, key: tuple[datetime, timedelta | None], answer: datetime) -> None:
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[key] = answer

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Open time between two instants; negative when ``end`` comes before ``start``."""
        _require_aware(start)
        _require_aware(end)
        if end < start:
            return -self.business_time_between(end, start)
        total = timedelta(0)
        for span_start, span_end in self._spans(start, until=end):
            if span_start >= end:
                break
            total += min(span_end, end) - span_start
        return total

    def at_fraction(self, start: datetime, amount: timedelta, fraction: float) -> datetime:
        """The moment ``fraction`` of a business-time budget is used, e.g. 0.5 for a reminder."""
        if fraction < 0:
            raise ValueError(f"a fraction of an SLA budget cannot be negative ({fraction})")
        return self.add_business_time(start, amount * fraction)

    def holiday(self, at: datetime) -> str | None:
        """The name of the public holiday on ``at``'s local date, if it is one."""
        _require_aware(at)
        if self._holidays is None:
            return None
        names = self._holidays.get_list(self._local_date(at))
        return "; ".join(names) if names else None

    def away_until(self, at: datetime) -> date | None:
        """The last away day, if ``at``'s local date falls in an away period."""
        _require_aware(at)
        return self._away_until(self._local_date(at))

    def away_before(self, at: datetime, until: datetime) -> tuple[date, date] | None:
        """The first away period (first day, last day) that starts by ``until``'s local date
        and ends on or after ``at``'s: e.g. leave that begins before the rep's next opening."""
        _require_aware(at)
        _require_aware(until)
        start, end = self._local_date(at), self._local_date(until)
        for first, last in self._away:
            if first <= end and last >= start:
                return first, last
        return None

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(self._zone).date()

    def _away_until(self, day: date) -> date | None:
        for first, last in self._away:
            if first <= day <= last:
                return last
        return None

    def _spans(
        self, start: datetime, until: datetime | None = None
    ) -> Iterator[tuple[datetime, datetime]]:
        """Open spans (UTC, in order) that end after ``start``, clipped to begin no earlier.

        Stops after the day containing ``until``; without ``until`` it runs as long as open time
        keeps coming and raises :class:`NoWorkingTime` after :data:`SEARCH_DAYS` days without any.
        """
        start = start.astimezone(UTC)
        day = self._local_date(start)
        last_day = self._local_date(until) if until is not None else None
        days_without = 0
        while last_day is None or day <= last_day:
            spans = [(max(s, start), e) for s, e in self._day_spans(day) if e > start]
            yield from spans
            days_without = 0 if spans else days_without + 1
            if days_without > SEARCH_DAYS and last_day is None:
                raise NoWorkingTime(
                    f"no working time in the {SEARCH_DAYS} days after {start.isoformat()} "
                    f"(time zone {self.timezone}); check the hours, holidays and away periods"
                )
            day += timedelta(days=1)

    def _day_spans(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        spans = self._days.get(day)
        if spans is None:
            if len(self._days) > 4096:
                self._days.clear()
            spans = self._days[day] = self._open_spans(day)
        return spans

    def _open_spans(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        if self._away_until(day) is not None:
            return ()
        if self._holidays is not None and day in self._holidays:
            return ()
        windows = (
            ((0, _MINUTES_PER_DAY),) if self._hours is None else self._hours.days[day.weekday()]
        )
        spans = [(self._instant(day, start), self._instant(day, end)) for start, end in windows]
        return tuple((start, end) for start, end in spans if start < end)

    def _instant(self, day: date, minute: int) -> datetime:
        """The UTC instant at which the local clock on ``day`` first shows ``minute``."""
        wall = datetime.combine(day, time()) + timedelta(minutes=minute)
        while True:
            instant = wall.replace(tzinfo=self._zone).astimezone(UTC)
            if instant.astimezone(self._zone).replace(tzinfo=None) == wall:
                return instant
            # The spring DST change skips this wall time; the clock reaches the next existing
            # minute at the very moment it jumps.
            wall += timedelta(minutes=1)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; Leadwerk only compares aware times")


def _public_holidays(code: str) -> holiday_data.HolidayBase:
    # Loaded for the first calendar with holidays: 28 ms that most processes never need.
    import holidays as holiday_data

    country, _, subdivision = code.strip().upper().partition("-")
    try:
        found = holiday_data.country_holidays(country, subdiv=subdivision or None)
        # Name holidays in the region's own language rather than whatever the host's locale says.
        return holiday_data.country_holidays(
            country, subdiv=subdivision or None, language=found.default_language
        )
    except NotImplementedError as exc:
        raise ValueError(
            f"unknown holiday calendar {code!r}; use a country code like DE or a region like DE-NI"
        ) from exc


def _merge_away(periods: Sequence[tuple[date, date]]) -> tuple[tuple[date, date], ...]:
    """Sort away periods and join overlapping or back-to-back ones into one."""
    merged: list[tuple[date, date]] = []
    for first, last in sorted(periods):
        if last < first:
            raise ValueError(f"away period {first} to {last} ends before it starts")
        if merged and first <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)
