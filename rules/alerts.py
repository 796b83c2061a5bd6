"""Alerts: the facts their ``when:`` expressions read, and when an alert speaks.

An alert is sent once when its condition starts to hold and once when it clears, never once
a minute: each check compares the condition with the state kept from the last one. A run of
checks during which the condition holds is an *episode*; its number makes the keys of the two
messages, so the same episode can never be announced twice, whichever clock checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rules.expr import FieldType

# What `when:` may read: the figures `leadwerk status`, /admin/ and /metrics show.
ALERT_METRICS: dict[str, FieldType] = {
    # the age of the oldest lead or message waiting in the store (seconds)
    "queue_age": FieldType.DURATION,
    "queue_depth": FieldType.NUMBER,
    "dead_letters": FieldType.NUMBER,
    "quarantined": FieldType.NUMBER,
    # the highest run of failed polls of any source in a row
    "source_failures": FieldType.NUMBER,
    "sla_breached": FieldType.NUMBER,
    # SLA clocks that ran out in the last hour, of those that ended in it (accepted or not)
    "sla_breach_rate_1h": FieldType.PERCENT,
    "messages_failed": FieldType.NUMBER,
    "messages_pending": FieldType.NUMBER,
    # the worst status of any mailing list: ok | warn | suspended
    "list_status": FieldType.STRING,
    # seconds since any worker last reported (none when no worker ever did)
    "worker_silence": FieldType.DURATION,
}

LIST_STATUS_ORDER = ("ok", "warn", "suspended")


@dataclass(frozen=True)
class AlertState:
    """What the store remembers of one alert between checks."""

    firing: bool = False
    episode: int = 0


@dataclass(frozen=True)
class Transition:
    """What a check decided: the new state and which message (if any) it owes."""

    state: AlertState
    say: Literal["fired", "resolved"] | None


def next_state(previous: AlertState, holds: bool) -> Transition:
    """A condition that starts to hold opens a new episode and fires; one that stops holding
    resolves the episode; otherwise nothing is said."""
    if holds and not previous.firing:
        return Transition(AlertState(True, previous.episode + 1), "fired")
    if not holds and previous.firing:
        return Transition(AlertState(False, previous.episode), "resolved")
    return Transition(previous, None)


def worst_list_status(statuses: list[str]) -> str:
    """The most serious of the lists' statuses; ``ok`` with no list at all."""
    known = [s for s in statuses if s in LIST_STATUS_ORDER]
    return max(known, key=LIST_STATUS_ORDER.index, default="ok")
