"""List hygiene, the pure part: bounce classification (RFC 3463), the soft → hard state
machine, a list's status from its bounce rate, and the expected decay of a list by its age.

Contact data decays by about 2.1 % a month; bounces are the measurable sign of it. Mailbox
providers and ESPs act on the hard-bounce rate (HubSpot suspends sending at 5 %, Amazon SES
reviews an account at 5 % and pauses it at 10 %), so a list is warned and then suspended before
the sender's reputation pays for it. Tools that classify by anything but the status code get it
wrong (a HubSpot user restored 4,864 "hard bounced" contacts and a third were active), so every
decision here names its cause and can be reversed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

HARD, SOFT, POLICY, DELIVERED, UNPARSEABLE = "hard", "soft", "policy", "delivered", "unparseable"
BOUNCE_KINDS = (HARD, SOFT, POLICY)

OK, WARN, SUSPENDED = "ok", "warn", "suspended"
LIST_SEVERITY = {SUSPENDED: 2, WARN: 1, OK: 0}

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


def normalise_status(status: object) -> str | None:
    """``5.1.1`` from ``5.1.1 (bad destination mailbox)`` or ``#5.1.1``; None if none."""
    if status is None or status == "":
        return None
    match = STATUS_IN_TEXT.search(str(status))
    return match.group(1) if match else None


def best_status(status: object, text: object) -> str | None:
    """The status code, the more specific one where ``status`` is generic (``5.0.0``, as
    Exim and some ESPs report) and the SMTP reply in ``text`` says more (``550 5.1.1``)."""
    code = normalise_status(status)
    from_text = normalise_status(text)
    if code is None:
        return from_text
    if from_text and code.endswith(".0.0") and from_text[0] == code[0]:
        return from_text
    return code


def classify(status: str | None, action: str | None = None) -> str:
    """The kind of a report by its status code (RFC 3463) and action (RFC 3464).

    ``5.1.x`` (bad mailbox or domain) and ``5.2.1`` (mailbox disabled) are hard; ``4.x.x``
    and ``5.2.2`` (mailbox full) soft; ``5.7.x`` (refused by policy) is policy, the sender's
    problem rather than the address's. Any other permanent code (``5.0.0``, ``5.4.x``,
    ``5.3.x``) is soft: it does not prove the address is gone, and soft bounces in a row still
    turn it hard. A report with action ``delivered``/``relayed``/``expanded`` or a ``2.x.x``
    status is a delivery.
    """
    if action and action.strip().lower() in ("delivered", "relayed", "expanded"):
        return DELIVERED
    code = normalise_status(status)
    match = _STATUS.match(code or "")
    if match is None:
        return UNPARSEABLE
    klass, subject, detail = match.groups()
    if klass == "2":
        return DELIVERED
    if klass == "4":
        return SOFT
    if subject == "1" or (subject == "2" and detail == "1"):
        return HARD
    if subject == "7":
        return POLICY
    return SOFT


@dataclass(frozen=True)
class AddressStep:
    """An address's state after one report; ``cause`` is set when the state changed."""

    state: str
    soft_in_row: int
    cause: str | None


def next_state(
    state: str, soft_in_row: int, kind: str, status: str | None, soft_to_hard_after: int
) -> AddressStep:
    """The soft → hard state machine. A hard bounce makes the address hard; a soft one counts,
    and ``soft_to_hard_after`` of them in a row without a delivery in between make it hard; a
    delivery resets the count (and a soft address is ok again). Policy refusals change nothing.
    A hard address stays hard until someone restores it."""
    code = status or "no status"
    if kind == HARD:
        if state == HARD:
            return AddressStep(HARD, 0, None)
        return AddressStep(HARD, 0, f"hard bounce {code}")
    if kind == SOFT:
        count = soft_in_row + 1
        if state == HARD:
            return AddressStep(HARD, count, None)
        if count >= soft_to_hard_after:
            return AddressStep(
                HARD,
                count,
                f"{count} soft bounces in a row without a delivery (last {code})",
            )
        return AddressStep(SOFT, count, None if state == SOFT else f"soft bounce {code}")
    if kind == DELIVERED:
        if state == SOFT:
            return AddressStep(OK, 0, "delivered")
        return AddressStep(state, 0, None)
    return AddressStep(state, soft_in_row, None)


def list_status(current: str, bounce_rate: float, warn: float, suspend: float) -> str:
    """A list's status for its measured rate. Suspended stays suspended until an admin resumes
    the list: its mail stops at once and starts again only by decision."""
    if current == SUSPENDED or bounce_rate > suspend:
        return SUSPENDED
    return WARN if bounce_rate > warn else OK


def bounce_rate(hard: int, sent: int) -> float:
    """Hard bounces per e-mail sent in the window. A list not mailed in the window has no rate
    (its late bounces alone suspend nothing); bounces of mail sent just before the window may
    outnumber its sends, so the rate is capped at 1."""
    return min(hard / sent, 1.0) if sent else 0.0


def expected_bad(decay_per_month: float, months: float) -> float:
    """The share of a list expected to have gone bad after ``months``: 1 − (1 − r)^m."""
    return 1 - (1 - decay_per_month) ** max(months, 0)


def month_list(source: str, arrived: datetime) -> str:
    """The monthly list of a contact: ``source/YYYY-MM`` by its month of arrival (UTC)."""
    return f"{source}/{arrived.year:04d}-{arrived.month:02d}"


def lists_of(source: str, arrived: datetime) -> tuple[str, str]:
    """The two lists a contact belongs to: its source, and its source and month."""
    return source, month_list(source, arrived)


def months_between(year: int, month: int, now: datetime) -> int:
    """Whole calendar months from ``year-month`` to ``now``'s month."""
    return max((now.year * 12 + now.month) - (year * 12 + month), 0)
