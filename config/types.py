"""Value types used across config files: durations like ``60s`` / ``4h`` / ``30d``, percents,
and numbers that must be written as numbers (``threshold: "60"`` is refused, not converted)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from rules.expr import DURATION_UNITS
from rules.nurture import Delay, parse_delay

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = DURATION_UNITS


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"5m"``, ``"4h"``, ``"30d"``, ``"2w"`` or seconds as a number, as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 60s, 5m, 4h or 30d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write it like 60s, 5m, 4h or 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_percent(value: Any) -> float:
    """``"2%"`` or ``"2.1%"`` as the fraction 0.02 / 0.021; a bare number is taken as a fraction."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage like 2%")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.endswith("%"):
        try:
            return float(text[:-1]) / 100
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a percentage; write it like 2% or 2.1%")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
NurtureDelay = Annotated[Delay, BeforeValidator(parse_delay)]

# Strict: a quoted "60" or a `true` where a number belongs is a mistake to point at; an int
# is still a fine float.
Number = Annotated[float, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]
