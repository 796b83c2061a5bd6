"""Stateless evaluation of one contact with the rules as they are: score, route and SLA.

Used by ``leadwerk score`` and ``leadwerk rules test``; touches no store. Routing picks within
a team as if every rep had equal counts, with a seed derived from the e-mail so the answer is
repeatable.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from config.loader import Config
from rules.assign import RepState
from rules.contact import normalise_contact
from rules.expr import Context
from rules.routing import RouteDecision, choose_sla, decide_route, due_time
from rules.scoring import ScoreResult, contact_view, event_view, score_contact


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
    result = score_contact(config.ruleset, contact, events, now, account)
    view = contact_view(contact)
    view.update(score=result.score, fit=result.fit, engagement=result.engagement, mql=result.mql)
    last = event_view(events[-1]) if events else None
    ctx = Context(contact=view, event=last, account=account, now=now)
    policy = choose_sla(config.sla, ctx)
    within = policy.policy.respond_within if policy else None
    route = None
    if result.mql:
        states = {
            team: [
                RepState(
                    name=rep,
                    weight=config.team.reps[rep].weight,
                    capacity_per_day=config.team.reps[rep].capacity.per_day,
                    calendar=config.calendars.get(rep),
                )
                for rep in config.team.teams[team].members
            ]
            for team in config.team.teams
        }
        route = decide_route(
            config.routing,
            ctx,
            states=states,
            account_owner=(account or {}).get("owner"),
            fallback=config.fallback,
            max_wait=within,
            seed=zlib.crc32(contact["email"].encode()),
        )
    sla = None
    if policy is not None and result.mql:
        calendar = config.calendars.get(route.rep) if route and route.rep else None
        due = due_time(now, policy.policy.respond_within, policy.policy.clock, calendar)
        sla = {"policy": policy.name, "due": due.isoformat()}
    return result, route, sla, contact
