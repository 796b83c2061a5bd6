"""SLA clock arithmetic: when an assignment's reminders and its breach fire. Pure.

A policy's budget (``respond_within``) runs on the rep's calendar for ``clock: business_hours``
(their hours, time zone, holidays and away days) and on the wall clock for ``clock: calendar``.
A reminder at 50% fires when half the budget is used; the breach fires at the due time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from rules.calendar import WorkCalendar
from rules.routing import due_time

BREACH = "breach"


class SlaTerms(Protocol):
    respond_within: timedelta
    clock: str
    remind_at: Sequence[float]
    on_breach: Sequence[str]


@dataclass(frozen=True)
class PlannedTimer:
    kind: str  # "remind:50", "remind:80" or "breach"
    fire_at: datetime


def reminder_kind(fraction: float) -> str:
    """``0.5`` → ``remind:50``; the kind names the share of the budget used."""
    return f"remind:{round(fraction * 100, 2):g}"


def plan_timers(
    start: datetime, terms: SlaTerms, calendar: WorkCalendar | None
) -> list[PlannedTimer]:
    """The timers of an SLA clock started at ``start``, in firing order.

    On business hours a reminder that would land exactly where the rep's day ends (the budget
    is used up to closing time) moves to the next opening, so it reaches the rep at work.
    Reminder shares outside 0–100% mean nothing and are left out. The breach timer exists
    only when the policy says what to do on a breach.
    """
    business = terms.clock == "business_hours" and calendar is not None
    timers = []
    for fraction in sorted(set(terms.remind_at)):
        if not 0 < fraction < 1:
            continue
        if business:
            assert calendar is not None
            at = calendar.at_fraction(start, terms.respond_within, fraction)
            if not calendar.is_open(at):
                at = calendar.next_open(at)
        else:
            at = start + terms.respond_within * fraction
        timers.append(PlannedTimer(reminder_kind(fraction), at))
    if terms.on_breach:
        due = due_time(start, terms.respond_within, terms.clock, calendar)
        timers.append(PlannedTimer(BREACH, due))
    return timers
