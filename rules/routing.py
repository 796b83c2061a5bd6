"""Routing decisions and SLA policy choice: pure, from plain data to a decision with reasons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from rules.assign import Pick, RepState, Skip, pick_rep
from rules.calendar import WorkCalendar
from rules.expr import Context, Expr


class RouteRule(Protocol):
    name: str
    when: Expr | None
    assign: str | None
    team: str | None
    strategy: str


class SlaChoice(Protocol):
    name: str
    when: Expr | None


@dataclass(frozen=True)
class RouteDecision:
    rule: str
    team: str | None
    rep: str | None
    strategy: str | None
    reason: str
    skipped: tuple[Skip, ...] = ()
    seed: int | None = None
    fallback: tuple[str, ...] = field(default_factory=tuple)

    @property
    def answerer(self) -> str | None:
        """Whose working hours the SLA clock runs on: the rep, else the first fallback
        manager (a lead nobody in the team could take waits on the manager's calendar)."""
        return self.rep or (self.fallback[0] if self.fallback else None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "team": self.team,
            "rep": self.rep,
            "reason": self.reason,
            "skipped": [{"rep": s.name, "reason": s.reason} for s in self.skipped],
            "fallback": list(self.fallback),
        }


def choose_sla(policies: Sequence[SlaChoice], ctx: Context) -> SlaChoice | None:
    """First matching policy; a policy without ``when`` matches everything."""
    for policy in policies:
        if policy.when is None or policy.when(ctx):
            return policy
    return None


def due_time(
    start: datetime, within: timedelta, clock: str, calendar: WorkCalendar | None
) -> datetime:
    """When the SLA is due: business time on the rep's calendar, else wall-clock time."""
    if clock == "business_hours" and calendar is not None:
        return calendar.add_business_time(start, within)
    return start + within


def decide_route(
    rules: Sequence[RouteRule],
    ctx: Context,
    *,
    states: Mapping[str, Sequence[RepState]],
    account_owner: str | None,
    fallback: Sequence[str],
    max_wait: timedelta | None,
    seed: int,
    open_leads: Mapping[str, int] | None = None,
) -> RouteDecision:
    """First matching rule wins. ``states[team]`` are the team's reps with their counts.
    ``max_wait``: the budget of a calendar-clock SLA, which skips reps who open later (see
    :func:`rules.assign.pick_rep`); ``None`` for a business-hours SLA or none.

    Nobody available under the matching rule: the fallback managers get the lead, so nothing
    is dropped; the decision says so and lists who was skipped and why.
    """
    for rule in rules:
        if rule.when is not None and not rule.when(ctx):
            continue
        if rule.assign == "account_owner":
            if account_owner:
                return RouteDecision(
                    rule.name,
                    None,
                    account_owner,
                    None,
                    f"rule '{rule.name}': {account_owner} owns the account",
                )
            continue
        team = rule.team or ""
        pick: Pick = pick_rep(
            states.get(team, ()),
            rule.strategy,  # type: ignore[arg-type]
            now=ctx.now,
            max_wait=max_wait,
            seed=seed,
            open_leads=open_leads,
        )
        if pick.rep is not None:
            return RouteDecision(
                rule.name,
                team,
                pick.rep,
                rule.strategy,
                f"rule '{rule.name}': {pick.reason}",
                pick.skipped,
                pick.seed,
            )
        return RouteDecision(
            rule.name,
            team,
            None,
            rule.strategy,
            f"rule '{rule.name}': {pick.reason}; sent to {', '.join(fallback) or 'nobody'}",
            pick.skipped,
            pick.seed,
            tuple(fallback),
        )
    return RouteDecision(
        "fallback",
        None,
        None,
        None,
        f"no routing rule matched; sent to {', '.join(fallback) or 'nobody'}",
        fallback=tuple(fallback),
    )
