"""Stateless evaluation of one contact with the rules as they are: score, route and SLA.

Used by ``leadwerk score``, ``leadwerk rules test`` and ``leadwerk rules diff``; touches no
store. The route and SLA come from :func:`rules.decision.decide`, the function production
routes with; only the team state differs: every rep as if they had no leads yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from config.loader import Config
from rules import decision
from rules.assign import RepState
from rules.calendar import WorkCalendar
from rules.contact import normalise_contact
from rules.decision import Decision
from rules.memo import PerObject
from rules.routing import RouteDecision
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
    result, made = judge(config, contact, events, now, account)
    if made is None:
        return result, None, None
    sla = None
    if made.policy is not None and made.due is not None:
        sla = {"policy": made.policy.name, "due": made.due.isoformat()}
    return result, made.route, sla


def judge(
    config: Config,
    contact: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    account: Mapping[str, Any] | None = None,
) -> tuple[ScoreResult, Decision | None]:
    """The score and, for an MQL, the decision production would make with the team as
    :class:`OfflineState` sees it."""
    view = contact_view(contact)
    result, last = score_view(config.ruleset, view, events, now, account)
    if not result.mql:  # only MQLs are routed and have an SLA
        return result, None
    view.update(score=result.score, fit=result.fit, engagement=result.engagement, mql=result.mql)
    state = OfflineState(config, account)
    seed = decision.seed_for(contact["email"])
    return result, decision.decide(config, view, last, state, now, seed=seed)


class OfflineState:
    """The team as a stateless evaluation sees it (:class:`rules.decision.TeamSnapshot`):
    every rep with no leads yet, with their calendars, so that availability and working hours
    are judged exactly as in production; the tie between them is drawn with a seed derived
    from the e-mail, so the answer is repeatable."""

    def __init__(self, config: Config, account: Mapping[str, Any] | None) -> None:
        self._config = config
        self.account = account

    def members(self, team: str) -> Sequence[RepState]:
        return _plan(self._config).members.get(team, ())

    def calendar(self, rep: str) -> WorkCalendar | None:
        return self._config.calendars.get(rep)


class _Plan:
    """What is the same for every contact evaluated with one config, worked out once: the
    teams' reps (the same objects each time, so a pick at one ``now`` is prepared once) and
    whether any rule reads the phone."""

    def __init__(self, config: Config) -> None:
        ruleset = config.ruleset
        conditions = [r.when for r in (*ruleset.fit, *ruleset.engagement, *ruleset.disqualify)]
        conditions += [r.when for r in config.routing if r.when is not None]
        conditions += [p.when for p in config.sla if p.when is not None]
        self.reads_phone = any("phone" in c.fields for c in conditions)
        self.members: dict[str, list[RepState]] = {
            team: [
                RepState(
                    name=rep,
                    weight=config.team.reps[rep].weight,
                    capacity_per_day=config.team.reps[rep].capacity.per_day,
                    calendar=config.calendars.get(rep),
                )
                for rep in members.members
                if rep in config.team.reps
            ]
            for team, members in config.team.teams.items()
        }


# The plan of this config object; a reloaded config gets a new one.
_plan: PerObject[Config, _Plan] = PerObject(_Plan)
