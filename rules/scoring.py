"""Scoring into MQLs, exactly as the contract states.

``fit`` = sum of the points of the fit rules that match the contact (each once).
``engagement`` = sum over engagement rules of ``min(cap, sum over matching events of
points * 0.5 ** (age / half_life))``. ``score = fit + engagement``. MQL when not disqualified,
``score >= threshold`` and every minimum in ``requires`` holds. Figures are reported rounded to
one decimal; comparisons use the unrounded values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from rules.contact import coerce_datetime, email_domain
from rules.expr import Context, Expr, given_equal, required_equal
from rules.memo import PerObject


@dataclass(frozen=True)
class FitRule:
    name: str
    when: Expr
    points: float


@dataclass(frozen=True)
class EngagementRule:
    name: str
    when: Expr
    points: float
    cap: float | None = None


@dataclass(frozen=True)
class DisqualifyRule:
    name: str
    when: Expr


@dataclass(frozen=True)
class Ruleset:
    version: int | str
    hash: str
    threshold: float
    requires: Mapping[str, float] = field(default_factory=dict)
    half_life: timedelta | None = None
    fit: Sequence[FitRule] = ()
    engagement: Sequence[EngagementRule] = ()
    disqualify: Sequence[DisqualifyRule] = ()


@dataclass(frozen=True)
class Hit:
    rule: str
    kind: str  # fit | engagement | disqualify
    points: float
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": self.rule, "kind": self.kind, "points": r1(self.points)}
        if self.kind == "engagement":
            data["events"] = self.events
        return data


@dataclass(frozen=True)
class ScoreResult:
    score: float
    fit: float
    engagement: float
    mql: bool
    disqualified: str | None
    hits: tuple[Hit, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "score": r1(self.score),
            "fit": r1(self.fit),
            "engagement": r1(self.engagement),
            "mql": self.mql,
            "disqualified": self.disqualified,
            "hits": [hit.as_dict() for hit in self.hits],
        }


def r1(value: float) -> float:
    """Rounded to one decimal for reports (and ``-0.0`` shown as ``0.0``)."""
    if value.__class__ is float and value.is_integer():  # nothing to round, as most points
        return value + 0.0
    return round(value, 1) + 0.0


def contact_view(contact: Mapping[str, Any]) -> dict[str, Any]:
    """The contact as expressions read it: with the derived ``email_domain``."""
    view = dict(contact)
    email = view.get("email")
    if email and "email_domain" not in view:
        view["email_domain"] = email_domain(str(email))
    return view


def event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    view = dict(event)
    if "at" in view:
        view["at"] = coerce_datetime("event.at", view["at"])
    return view


def score_contact(
    ruleset: Ruleset,
    contact: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> ScoreResult:
    """Score one contact with all its events at ``now`` (no I/O, no clock read)."""
    return score_view(ruleset, contact_view(contact), events, now, account)[0]


def score_view(
    ruleset: Ruleset,
    person: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> tuple[ScoreResult, dict[str, Any] | None]:
    """:func:`score_contact` for a contact already seen as expressions read it
    (:func:`contact_view`); also gives the view of the last event (``None`` without events)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    plan = _plan(ruleset)
    ctx = Context(contact=person, event=None, account=account, now=now)
    hits: list[Hit] = []

    fit = 0.0
    for hit, test in plan.fit:
        if test(ctx):
            fit += hit.points
            hits.append(hit)

    # One pass over the events, every engagement rule asked about each; sums per rule add up
    # in event order, as the contract's formula reads.
    points = plan.engagement_points
    by_type, any_type = plan.engagement_by_type, plan.engagement_any_type
    totals = [0.0] * len(points)
    counts = [0] * len(points)
    half_life = plan.half_life
    # The rules see each event with its time read (event_view); where none of them reads the
    # time, they see the event itself, and only the last one is copied (for routing).
    copies = plan.reads_event_time
    view: Mapping[str, Any] | None = None
    at: Any = None
    for event in events:
        if "at" in event:
            at = event["at"]
            # coerce_datetime's own first step for the usual ``2026-11-24T09:30:00+01:00``
            # (or ``...Z``) without the call; anything else, and any failure, goes to it.
            if at.__class__ is str and at[10:11] == "T" and "Z" not in at[:-1]:
                try:
                    at = _fromisoformat(at)
                except ValueError:
                    at = coerce_datetime("event.at", at)
                else:
                    if at.tzinfo is None:
                        at = at.replace(tzinfo=UTC)
            else:
                at = coerce_datetime("event.at", at)
            if copies:
                view = dict(event)
                view["at"] = at
            else:
                view = event
        else:
            at = None
            view = dict(event) if copies else event
        ctx.event = view
        factor = None
        kind = event.get("type")
        for index, test in by_type.get(kind, any_type) if isinstance(kind, str) else any_type:
            if test is None or test(ctx):
                if factor is None:
                    if half_life is None or at is None:  # _decay(half_life, at, now)
                        factor = 1.0
                    else:  # ``/ _SECOND`` is total_seconds() to the bit, without the call
                        age = (now - at) / _SECOND
                        factor = 0.5 ** ((age if age >= 0.0 else 0.0) / half_life)
                totals[index] += points[index] * factor
                counts[index] += 1
    last = None  # the last event as event_view gives it
    if view is not None:
        last = dict(view)
        if "at" in last:
            last["at"] = at
    ctx.event = None
    engagement = 0.0
    for index, count in enumerate(counts):
        if count:
            rule, total = ruleset.engagement[index], totals[index]
            if rule.cap is not None:
                total = min(rule.cap, total)
            engagement += total
            hits.append(Hit(rule.name, "engagement", total, count))

    disqualified = None
    for hit, test in plan.disqualify:
        if test(ctx):
            disqualified = hit.rule
            hits.append(hit)
            break

    total_score = fit + engagement
    mql = disqualified is None and total_score >= ruleset.threshold
    if mql and ruleset.requires:
        parts = {"fit": fit, "engagement": engagement, "score": total_score}
        mql = all(parts[name] >= minimum for name, minimum in ruleset.requires.items())
    result = ScoreResult(total_score, fit, engagement, mql, disqualified, tuple(hits))
    return result, last


class _RulesetPlan:
    """A ruleset's rules as the scoring loop reads them: the compiled tests themselves, so that
    each evaluation is one call, and the hits of fit and disqualify rules, which are the same
    for every contact (a :class:`Hit` is immutable)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.fit = [(Hit(r.name, "fit", r.points), _test_of(r.when)) for r in ruleset.fit]
        self.engagement_points = [rule.points for rule in ruleset.engagement]
        # The rules an event of each type can match, in rule order, as (index, test): most
        # engagement rules name the type (``event.type == "form" and ...``), so an event is
        # asked only the few of its type and those that name none (``engagement_any_type``).
        # Asked only of events of its type, a rule's test leaves that comparison out (None:
        # nothing else to ask, as in ``event.type == "ebook"``).
        typed: dict[str, list[tuple[int, Callable[[Context], Any] | None]]] = {}
        any_type: list[tuple[int, Callable[[Context], Any] | None]] = []
        for index, rule in enumerate(ruleset.engagement):
            test = _test_of(rule.when)
            need = required_equal(test)
            if need is not None and need[:2] == ("event", "type"):
                typed.setdefault(need[2], []).append((index, given_equal(test, need)))
            else:
                any_type.append((index, test))
        self.engagement_any_type = tuple(any_type)
        self.engagement_by_type = {
            kind: tuple(sorted([*tests, *any_type], key=itemgetter(0)))
            for kind, tests in typed.items()
        }
        self.disqualify = [
            (Hit(rule.name, "disqualify", 0.0), _test_of(rule.when)) for rule in ruleset.disqualify
        ]
        self.half_life = ruleset.half_life.total_seconds() if ruleset.half_life else None
        # Whether an engagement rule reads the event's time (or may: a bare callable).
        self.reads_event_time = any(
            not isinstance(rule.when, Expr) or "event.at" in rule.when.fields
            for rule in ruleset.engagement
        )


def _test_of(when: Expr) -> Callable[[Context], Any]:
    return when.test if isinstance(when, Expr) else when


# The plan of this ruleset object; a reloaded ruleset gets a new one.
_plan: PerObject[Ruleset, _RulesetPlan] = PerObject(_RulesetPlan)


_SECOND = timedelta(seconds=1)
_fromisoformat = datetime.fromisoformat


def _decay(half_life: float | None, at: datetime | None, now: datetime) -> float:
    """``0.5 ** (age / half_life)``; 1 without decay or without the event's time."""
    if half_life is None or at is None:
        return 1.0
    age = max((now - at).total_seconds(), 0.0)
    return 0.5 ** (age / half_life)
