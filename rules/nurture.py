"""Nurture planning: which sequence a contact joins, on which one channel, and when steps are due.

Pure: takes the contact, its events, its score, the enrolments it already has and ``now``; reads
no clock and touches no store. ``leadwerk nurture plan`` prints what this decides, and the
scheduler asks the same functions, so what marketing ops preview is what contacts get.

Timing follows the contract: a step is due ``after`` the time the previous step was planned for
(the first one after the enrolment); ``1d`` and ``12h`` are calendar time, ``2bd`` business days of
the contact's country (Monday to Friday less its public holidays, keeping the time of day). The
due time then moves into the send window, read in the contact's time zone (its ``timezone``
field, else its country's most populous zone, else the ``timezone`` setting), with the country's
public holidays closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytz

from rules.calendar import WorkCalendar, parse_hours
from rules.expr import Context, Expr

_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bd|m|h|d|w)\s*$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}

# Countries spanning several zones, by their most populous one; pytz lists a country's zones
# in geographical order (Canada starts with St John's, Russia with Kaliningrad).
_MOST_POPULOUS_ZONE = {
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "CD": "Africa/Kinshasa",
    "PS": "Asia/Hebron",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "US": "America/New_York",
    "UZ": "Asia/Tashkent",
}

CHANNELS = ("email", "phone")


@dataclass(frozen=True)
class Delay:
    """A step's ``after:``: calendar time, or whole business days of the contact's country."""

    span: timedelta = timedelta(0)
    business_days: int = 0

    def __str__(self) -> str:
        if self.business_days:
            return f"{self.business_days}bd"
        return str(self.span)


def parse_delay(value: Any) -> Delay:
    """``"1d"``, ``"12h"``, ``"30m"``, ``"1w"`` or ``"2bd"`` (business days) as a :class:`Delay`."""
    if isinstance(value, Delay):
        return value
    match = _DELAY.match(str(value)) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(
            f"{value!r} is not a delay; write it like 12h, 1d, 1w or 2bd (business days)"
        )
    amount, unit = float(match.group(1)), match.group(2)
    if unit == "bd":
        if not amount.is_integer():
            raise ValueError(f"{value!r}: business days are whole days, like 2bd")
        return Delay(business_days=int(amount))
    return Delay(span=timedelta(seconds=amount * _SECONDS[unit]))


class StepRules(Protocol):
    after: Delay
    template: str | None
    task: str | None


class SequenceRules(Protocol):
    """One sequence of ``nurture.yaml`` as the planner reads it."""

    name: str
    channel: str
    steps: Sequence[StepRules]
    enroll_when: Expr
    exit_when: Expr | None


@dataclass(frozen=True)
class SendWindow:
    """``send_window``: the days and hours steps go out, in the contact's zone or a fixed one."""

    days: str = "mon-fri"
    hours: str = "09:00-17:00"
    timezone: str = "contact"


@dataclass(frozen=True)
class NurtureRules:
    sequences: Sequence[SequenceRules]
    window: SendWindow = field(default_factory=SendWindow)
    consent_field: str | None = None
    default_timezone: str = "UTC"


@dataclass(frozen=True)
class Active:
    """An enrolment the contact already has."""

    sequence: str
    channel: str


@dataclass(frozen=True)
class PlannedStep:
    n: int
    at: datetime
    template: str | None = None
    task: str | None = None

    def as_dict(self, zone: ZoneInfo) -> dict[str, Any]:
        data: dict[str, Any] = {"n": self.n, "at": self.at.astimezone(zone).isoformat()}
        if self.template:
            data["template"] = self.template
        if self.task:
            data["task"] = self.task
        return data


@dataclass(frozen=True)
class Plan:
    """What nurture would do with one contact: a sequence and its dated steps, or a refusal."""

    sequence: str | None
    channel: str | None
    refused: str | None
    steps: tuple[PlannedStep, ...]
    timezone: str

    def as_dict(self) -> dict[str, Any]:
        zone = ZoneInfo(self.timezone)
        return {
            "sequence": self.sequence,
            "channel": self.channel,
            "refused": self.refused,
            "steps": [step.as_dict(zone) for step in self.steps],
            "timezone": self.timezone,
        }


def contact_timezone(contact: Mapping[str, Any], default: str) -> str:
    """The contact's zone: its ``timezone`` field, else its country's, else ``default``."""
    own = contact.get("timezone")
    if own and _known_zone(str(own)):
        return str(own)
    country = str(contact.get("country") or "").upper()
    if country in _MOST_POPULOUS_ZONE:
        return _MOST_POPULOUS_ZONE[country]
    zones = pytz.country_timezones.get(country) if country else None
    if zones:
        return zones[0]
    return default


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=256)
def _holiday_code(country: str) -> str | None:
    """The country's code when the holidays package knows it, else ``None`` (no holidays)."""
    if not country:
        return None
    import holidays  # loaded when first needed, as in rules.calendar

    try:
        holidays.country_holidays(country)
    except NotImplementedError:
        return None
    return country


@lru_cache(maxsize=1024)
def _window_calendar(window: SendWindow, zone: str, country: str) -> WorkCalendar:
    return WorkCalendar(zone, parse_hours({window.days: window.hours}), _holiday_code(country))


@lru_cache(maxsize=1024)
def _business_calendar(zone: str, country: str) -> WorkCalendar:
    return WorkCalendar(zone, parse_hours({"mon-fri": "00:00-24:00"}), _holiday_code(country))


def send_calendar(rules: NurtureRules, contact: Mapping[str, Any]) -> WorkCalendar:
    """The calendar a contact's steps are windowed on."""
    zone = window_zone(rules, contact)
    country = str(contact.get("country") or "").upper()
    return _window_calendar(rules.window, zone, country)


def window_zone(rules: NurtureRules, contact: Mapping[str, Any]) -> str:
    if rules.window.timezone != "contact":
        return rules.window.timezone
    return contact_timezone(contact, rules.default_timezone)


def add_delay(start: datetime, delay: Delay, zone: str, country: str) -> datetime:
    """``start`` plus the delay: calendar time, or business days keeping the local time of day."""
    if not delay.business_days:
        return (start + delay.span).astimezone(UTC)
    calendar = _business_calendar(zone, country.upper())
    local_zone = ZoneInfo(zone)
    local = start.astimezone(local_zone)
    day = local.date()
    left = delay.business_days
    while left:
        day += timedelta(days=1)
        noon = datetime.combine(day, time(12), tzinfo=local_zone)
        if calendar.is_open(noon):
            left -= 1
    wall = datetime.combine(day, local.time()).replace(tzinfo=local_zone)
    return wall.astimezone(UTC)


def schedule(
    rules: NurtureRules,
    sequence: SequenceRules,
    contact: Mapping[str, Any],
    enrolled_at: datetime,
    first_step: int = 1,
) -> tuple[PlannedStep, ...]:
    """The dated steps from ``first_step`` on, each after its delay and moved into the window."""
    planned = enrolled_at.astimezone(UTC)
    steps = []
    for n, step in enumerate(sequence.steps, start=1):
        planned = step_time(rules, sequence, contact, planned, n)
        if n >= first_step:
            steps.append(PlannedStep(n, planned, step.template, step.task))
    return tuple(steps)


def step_time(
    rules: NurtureRules,
    sequence: SequenceRules,
    contact: Mapping[str, Any],
    previous: datetime,
    n: int,
) -> datetime:
    """When step ``n`` is planned: its delay after ``previous`` (the time the step before was
    planned for, or the enrolment), moved into the send window."""
    zone = window_zone(rules, contact)
    due = add_delay(previous, sequence.steps[n - 1].after, zone, str(contact.get("country") or ""))
    return send_calendar(rules, contact).next_open(due)


def exit_reason(sequence: SequenceRules, ctx: Context) -> str | None:
    """Why the contact leaves (or may not join) ``sequence`` now, or ``None``.

    The reason names the flag that holds (``mql``, ``replied``, ...) where ``exit_when`` is one of
    them or an ``or`` of them, else the expression's text.
    """
    exit_when = sequence.exit_when
    if exit_when is None or not exit_when(ctx):
        return None
    for part in (p.strip() for p in exit_when.source.split(" or ")):
        if part.isidentifier() and ctx.contact.get(part):
            return part
    return exit_when.source


def plan_contact(
    rules: NurtureRules,
    contact: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    active: Sequence[Active],
    now: datetime,
) -> Plan:
    """What nurture does with a contact whose newest event arrived ``now``.

    ``contact`` is the contact as expressions read it, with its score's fields (``score``,
    ``mql``, ...) and the nurture flags (``replied``, ``unsubscribed``, ``bounced``,
    ``stale``). The first sequence whose ``enroll_when`` matches one of the events (newest
    first) is the candidate; then, in this order, it is refused when the contact is active on
    the other channel or already in a sequence on the same one (one sequence at a time:
    ``channel_conflict``), when an e-mail sequence lacks consent or the address is
    suppressed, or when ``exit_when`` holds.
    """
    zone = window_zone(rules, contact)
    ctx = Context(contact=contact, event=None, now=now)
    chosen = _candidate(rules, ctx, events)
    if chosen is None:
        return Plan(None, None, None, (), zone)
    refusal = _refusal(rules, chosen, contact, active, ctx)
    steps = () if refusal else schedule(rules, chosen, contact, now)
    return Plan(chosen.name, chosen.channel, refusal, steps, zone)


def _candidate(
    rules: NurtureRules, ctx: Context, events: Sequence[Mapping[str, Any]]
) -> SequenceRules | None:
    for event in reversed(events):
        ctx.event = event
        for sequence in rules.sequences:
            if sequence.enroll_when(ctx):
                return sequence
    ctx.event = None
    return None


def _refusal(
    rules: NurtureRules,
    sequence: SequenceRules,
    contact: Mapping[str, Any],
    active: Sequence[Active],
    ctx: Context,
) -> str | None:
    if any(a.sequence == sequence.name for a in active):
        return "already_enrolled"
    if active:
        return "channel_conflict"
    if sequence.channel == "email":
        if rules.consent_field and contact.get(rules.consent_field) is not True:
            return "no_consent"
        if contact.get("unsubscribed") or contact.get("bounced"):
            return "suppressed"
    reason = exit_reason(sequence, ctx)
    return f"exit: {reason}" if reason else None
