"""Stateless evaluation of one contact with the rules as they are: score, route and SLA.

Used by ``leadwerk score``, ``leadwerk rules test`` and ``leadwerk rules diff``; touches no
store. Routing picks within a team as if every rep had equal counts, with a seed derived from
the e-mail so the answer is repeatable.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from config.loader import CompiledSla, Config
from rules.assign import RepState, pick_rep
from rules.contact import normalise_contact
from rules.expr import Context
from rules.memo import PerObject
from rules.routing import RouteDecision, choose_sla, decide_route, due_time
from rules.scoring import ScoreResult, contact_view, score_view


def evaluate(
    config: Config,
    contact_in: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> tuple[ScoreResult, RouteDecision | None, dict[str, Any] | None, dict[str, Any]]:
    """(score, route, sla, normalised contact). Raises ``FieldError`` for a contact that
    cannot be read (no e-mail, a bad number)."""
    contact = normalise_contact(contact_in, config.custom_fields)
    result, route, sla = decide(config, contact, events, now, account)
    return result, route, sla, contact


def assess(
    config: Config,
    contact_in: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> tuple[ScoreResult, RouteDecision | None, dict[str, Any] | None]:
    """(score, route, sla), for callers that do not need the contact (``leadwerk score``, a
    million lines at a time): a phone number is not normalised when no rule reads it."""
    if "phone" in contact_in and not _plan(config).reads_phone:
        contact_in = {key: value for key, value in contact_in.items() if key != "phone"}
    contact = normalise_contact(contact_in, config.custom_fields)
    return decide(config, contact, events, now, account)


def decide(
    config: Config,
    contact: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> tuple[ScoreResult, RouteDecision | None, dict[str, Any] | None]:
    """(score, route, sla) for a contact already normalised."""
    view = contact_view(contact)
    result, last = score_view(config.ruleset, view, events, now, account)
    if not result.mql:  # only MQLs are routed and have an SLA
        return result, None, None
    plan = _plan(config)
    view.update(score=result.score, fit=result.fit, engagement=result.engagement, mql=result.mql)
    ctx = Context(contact=view, event=last, account=account, now=now)
    policy = choose_sla(config.sla, ctx)
    within = policy.policy.respond_within if policy else None
    route = decide_route(
        config.routing,
        ctx,
        states=plan.team_states(now, within),
        account_owner=(account or {}).get("owner"),
        fallback=config.fallback,
        max_wait=within,
        seed=zlib.crc32(contact["email"].encode()),
    )
    sla = None
    if policy is not None:
        due = plan.due(now, policy, route.answerer)
        sla = {"policy": policy.name, "due": due.isoformat()}
    return result, route, sla


class _Plan:
    """What is the same for every contact evaluated with one config at one ``now``, worked
    out once: the reps' availability, SLA due times, whether any rule reads the phone."""

    def __init__(self, config: Config) -> None:
        self.config = config
        ruleset = config.ruleset
        conditions = [r.when for r in (*ruleset.fit, *ruleset.engagement, *ruleset.disqualify)]
        conditions += [r.when for r in config.routing if r.when is not None]
        conditions += [p.when for p in config.sla if p.when is not None]
        self.reads_phone = any("phone" in c.fields for c in conditions)
        self._states: dict[tuple[datetime, timedelta | None], dict[str, list[RepState]]] = {}
        self._due: dict[tuple[datetime, str, str | None], datetime] = {}

    def team_states(self, now: datetime, within: timedelta | None) -> dict[str, list[RepState]]:
        """Every team's reps as a stateless pick sees them: no leads yet. A rep who can take
        a lead at ``now`` is given without a calendar, which the pick then need not consult
        again for each contact; one who cannot keeps it, so the skip keeps its reason."""
        key = (now, within)
        states = self._states.get(key)
        if states is None:
            if len(self._states) > 64:
                self._states.clear()
            config = self.config
            states = {}
            for team, members in config.team.teams.items():
                states[team] = []
                for rep in members.members:
                    settings = config.team.reps[rep]
                    state = RepState(
                        name=rep,
                        weight=settings.weight,
                        capacity_per_day=settings.capacity.per_day,
                        calendar=config.calendars.get(rep),
                    )
                    alone = pick_rep([state], "round_robin", now=now, max_wait=within, seed=0)
                    if alone.rep is not None:
                        state = replace(state, calendar=None)
                    states[team].append(state)
            self._states[key] = states
        return states

    def due(self, now: datetime, policy: CompiledSla, rep: str | None) -> datetime:
        key = (now, policy.name, rep)
        due = self._due.get(key)
        if due is None:
            if len(self._due) > 4096:
                self._due.clear()
            calendar = self.config.calendars.get(rep) if rep else None
            within, clock = policy.policy.respond_within, policy.policy.clock
            due = self._due[key] = due_time(now, within, clock, calendar)
        return due


# The plan of this config object; a reloaded config gets a new one.
_plan: PerObject[Config, _Plan] = PerObject(_Plan)
