"""The decision for an MQL: its SLA policy, who gets it and why, and when it is due. Pure.

One function, :func:`decide`, makes it for every caller: the worker routing a lead (with the
team's live counts, read from the store under lock), ``leadwerk score``, ``leadwerk rules
test`` and ``leadwerk rules diff`` (with counts as a stateless evaluation assumes them). What
differs between them is only the :class:`TeamSnapshot` they pass, so a rule tool can never
drift from production. No I/O, no clock: ``now`` is given.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from rules.assign import RepState, Skip
from rules.calendar import NoWorkingTime, WorkCalendar
from rules.expr import Context, Expr
from rules.routing import RouteDecision, RouteRule, choose_sla, decide_route, due_time

PASSED_OVER = "let the SLA on this lead pass"


class SlaEntry(Protocol):
    """A policy of sla.yaml with its compiled ``when`` (``config.loader.CompiledSla``)."""

    @property
    def name(self) -> str: ...

    @property
    def when(self) -> Expr | None: ...

    @property
    def policy(self) -> Any: ...  # respond_within, clock, remind_at, on_breach


class DecisionRules(Protocol):
    """The parts of the config the decision reads (``config.loader.Config``)."""

    @property
    def routing(self) -> Sequence[RouteRule]: ...

    @property
    def sla(self) -> Sequence[SlaEntry]: ...

    @property
    def fallback(self) -> Sequence[str]: ...


class TeamSnapshot(Protocol):
    """The state the decision reads at one moment: the lead's account, each team's reps with
    their counts and calendars, and any rep's calendar (the fallback manager's, too)."""

    @property
    def account(self) -> Mapping[str, Any] | None: ...

    def members(self, team: str) -> Sequence[RepState]: ...

    def calendar(self, rep: str) -> WorkCalendar | None: ...


@dataclass(frozen=True)
class Decision:
    """What happens to an MQL: ``policy`` (an sla.yaml entry, or ``None``), the route, when
    the SLA clock starts (``now``, or under business hours the answerer's next opening) and
    when it is due, and one sentence explaining it all."""

    policy: Any
    route: RouteDecision
    starts: datetime | None
    due: datetime | None

    @property
    def explanation(self) -> str:
        text = self.route.reason
        if self.policy is not None and self.due is not None:
            terms = self.policy.policy
            text += f"; SLA {self.policy.name} due {self.due.isoformat()}"
            if terms.clock == "business_hours" and self.starts is not None:
                text += f" (business hours from {self.starts.isoformat()})"
        return text


def seed_for(email: str) -> int:
    """The seed of a lead's draw between equally placed reps: from its e-mail, so that the
    worker, a replay and ``leadwerk score`` draw alike, and distinct leads draw apart. Below
    2**31, as the store keeps it."""
    return zlib.crc32(email.encode()) & 0x7FFFFFFF


def decide(
    rules: DecisionRules,
    contact: Mapping[str, Any],
    event: Mapping[str, Any] | None,
    state: TeamSnapshot,
    now: datetime,
    *,
    seed: int,
    passed_over: Collection[str] = (),
) -> Decision:
    """The decision for ``contact`` (its fields as rules read them, with ``score``, ``fit``,
    ``engagement`` and ``mql``) after its latest ``event``.

    ``passed_over``: reps who let this lead's SLA pass; they are skipped with that reason, and
    an account owner among them is passed over too (a reassignment after a breach).
    """
    account = state.account
    ctx = Context(contact=contact, event=event, account=account, now=now)
    policy = choose_sla(rules.sla, ctx)
    terms = policy.policy if policy is not None else None
    # Only a wall-clock SLA skips a rep for their hours: a business-hours one waits for them.
    max_wait = terms.respond_within if terms is not None and terms.clock == "calendar" else None
    owner = (account or {}).get("owner")
    route = decide_route(
        rules.routing,
        ctx,
        states=_Members(state, passed_over),
        account_owner=None if owner in passed_over else owner,
        fallback=rules.fallback,
        max_wait=max_wait,
        seed=seed,
    )
    if passed_over:
        skips = tuple(Skip(rep, PASSED_OVER) for rep in sorted(passed_over))
        route = replace(route, skipped=skips + route.skipped)
    starts = due = None
    if terms is not None:
        answerer = route.answerer
        calendar = state.calendar(answerer) if answerer else None
        starts, due = sla_clock(now, terms.respond_within, terms.clock, calendar)
    return Decision(policy, route, starts, due)


def sla_clock(
    now: datetime, within: timedelta, clock: str, calendar: WorkCalendar | None
) -> tuple[datetime, datetime]:
    """When the SLA clock starts and when it is due. A calendar without any working time
    ahead (only a fallback manager can have one: members without are skipped) counts on the
    wall clock, so the lead still has a due time."""
    if clock == "business_hours" and calendar is not None:
        try:
            return calendar.next_open(now), due_time(now, within, clock, calendar)
        except NoWorkingTime:
            pass
    return now, now + within


class _Members(Mapping[str, Sequence[RepState]]):
    """A team's reps as routing asks for them (only the teams a matching rule names are
    read), without those passed over."""

    def __init__(self, state: TeamSnapshot, passed_over: Collection[str]) -> None:
        self._state = state
        self._passed_over = passed_over

    def __getitem__(self, team: str) -> Sequence[RepState]:
        members = self._state.members(team)
        if self._passed_over:
            return [rep for rep in members if rep.name not in self._passed_over]
        return members

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0
