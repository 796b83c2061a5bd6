"""``leadwerk sla report``: speed to lead per rep and team, and the funnel per source.

For each assignment made in the period: time to accept (made → accepted), whether it was
accepted within the SLA, whether it breached (accepted late, reassigned, or still open past
due), and the time band it was accepted in. Time to accept and the human delay run on each
lead's SLA clock, i.e. on the rep's working hours where the policy says ``business_hours``: a
lead that arrives on Friday evening and is accepted first thing on Monday took minutes, not a
weekend. The system delay (event received → notification sent) is wall-clock time; it is what
Leadwerk itself costs, apart from what people cost. Medians are the usual median, p95 the
nearest-rank 95th percentile.

The funnel follows the MQLs of the period (stage change to ``mql`` in it) to SAL and SQL,
whenever those came, per ``contacts.source``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from config.loader import Config
from rules.calendar import WorkCalendar
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Event, StageChange

BANDS = (("0-5", 0, 5), ("5-15", 5, 15), ("15-60", 15, 60), ("60+", 60, math.inf))
"""Time-to-accept bands in minutes: lower bound included, upper bound excluded."""


@dataclass(frozen=True)
class _Row:
    """One assignment, measured."""

    rep: str
    team: str
    status: str
    accepted_by: str | None
    to_accept: timedelta | None
    human: timedelta | None
    system: timedelta | None
    within: bool
    breached: bool


def sla_report(store: Store, config: Config, now: datetime, since: timedelta) -> dict[str, Any]:
    start = now - since
    rows = _measure(store, config, start, now)
    by_rep: dict[str, list[_Row]] = defaultdict(list)
    by_team: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_rep[row.rep].append(row)
        by_team[row.team].append(row)
    return {
        "period": {"from": start.isoformat(), "to": now.isoformat(), "days": since / timedelta(1)},
        "reps": {rep: _stats(group) for rep, group in sorted(by_rep.items())},
        "teams": {team: _stats(group) for team, group in sorted(by_team.items())},
        "all": _stats(rows),
        "funnel": _funnel(store, start, now),
    }


def _measure(store: Store, config: Config, start: datetime, now: datetime) -> list[_Row]:
    policies = {p.name: p.policy for p in config.sla}
    with store.session() as session:
        first = select(func.min(Assignment.id)).group_by(Assignment.contact_id)
        found = session.execute(
            select(Assignment, Event.received_at, Assignment.id.in_(first))
            .outerjoin(Event, Event.id == Assignment.event_id)
            .where(Assignment.created_at >= start, Assignment.created_at <= now)
            .order_by(Assignment.id)
        ).all()
    rows = []
    for assignment, received_at, is_first in found:
        policy = policies.get(assignment.sla_policy or "")
        calendar = None
        if policy is not None and policy.clock == "business_hours" and assignment.rep:
            calendar = config.calendars.get(assignment.rep)
        accepted, notified, due = assignment.accepted_at, assignment.notified_at, assignment.due_at
        # A reassignment's notice is measured from the reassignment, not the old event.
        began = received_at if is_first and received_at is not None else assignment.created_at
        rows.append(
            _Row(
                rep=assignment.rep or "(managers)",
                team=assignment.team
                or (config.team_of(assignment.rep) if assignment.rep else None)
                or "(no team)",
                status=assignment.status,
                accepted_by=assignment.accepted_by,
                to_accept=_elapsed(calendar, assignment.created_at, accepted),
                human=_elapsed(calendar, notified, accepted),
                system=notified - began if notified is not None else None,
                within=accepted is not None and due is not None and accepted <= due,
                breached=due is not None and (accepted or now) > due,
            )
        )
    return rows


def _elapsed(
    calendar: WorkCalendar | None, begin: datetime | None, end: datetime | None
) -> timedelta | None:
    if begin is None or end is None:
        return None
    if calendar is None:
        return end - begin
    return calendar.business_time_between(begin, end)


def _stats(rows: list[_Row]) -> dict[str, Any]:
    to_accept = [r.to_accept / timedelta(minutes=1) for r in rows if r.to_accept is not None]
    human = [r.human / timedelta(minutes=1) for r in rows if r.human is not None]
    system = [r.system / timedelta(seconds=1) for r in rows if r.system is not None]
    within = sum(r.within for r in rows)
    breaches = sum(r.breached for r in rows)
    decided = within + breaches
    return {
        "leads": len(rows),
        "accepted": len(to_accept),
        "open": sum(r.status == "open" for r in rows),
        "reassigned": sum(r.status == "reassigned" for r in rows),
        "accepted_by": dict(
            Counter(r.accepted_by or "(not recorded)" for r in rows if r.status == "accepted")
        ),
        "time_to_accept_min": _spread(to_accept),
        "within_sla": within,
        "breaches": breaches,
        "within_sla_share": round(within / decided, 3) if decided else None,
        "bands_min": {
            name: sum(low <= minutes < high for minutes in to_accept) for name, low, high in BANDS
        },
        "system_delay_s": _spread(system),
        "human_delay_min": _spread(human),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return {"median": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def _funnel(store: Store, start: datetime, now: datetime) -> dict[str, Any]:
    with store.session() as session:
        cohort = (
            select(StageChange.contact_id)
            .where(StageChange.to_stage == "mql", StageChange.at >= start, StageChange.at <= now)
            .distinct()
        )
        sources = dict(
            session.execute(select(Contact.id, Contact.source).where(Contact.id.in_(cohort))).all()
        )
        later = session.execute(
            select(StageChange.contact_id, StageChange.to_stage).where(
                StageChange.to_stage.in_(("sal", "sql")), StageChange.contact_id.in_(cohort)
            )
        ).all()
    reached: dict[str, set[int]] = {"sal": set(), "sql": set()}
    for contact_id, stage in later:
        reached[stage].add(contact_id)
    reached["sal"] |= reached["sql"]  # straight to SQL passed SAL on the way
    per_source: dict[str, list[int]] = defaultdict(list)
    for contact_id, source in sources.items():
        per_source[source].append(contact_id)
    return {
        "sources": {s: _rates(ids, reached) for s, ids in sorted(per_source.items())},
        "all": _rates(sources, reached),
    }


def _rates(ids: Iterable[int], reached: dict[str, set[int]]) -> dict[str, Any]:
    cohort = set(ids)
    mql, sal, sql = len(cohort), len(cohort & reached["sal"]), len(cohort & reached["sql"])
    return {
        "mql": mql,
        "sal": sal,
        "sql": sql,
        "mql_to_sal": round(sal / mql, 3) if mql else None,
        "sal_to_sql": round(sql / sal, 3) if sal else None,
        "mql_to_sql": round(sql / mql, 3) if mql else None,
    }


# --- text -----------------------------------------------------------------------------------


def render_report(data: dict[str, Any]) -> str:
    period = data["period"]
    lines = [
        f"SLA report {period['from'][:16].replace('T', ' ')} to "
        f"{period['to'][:16].replace('T', ' ')} UTC ({period['days']:g} days)",
        "Time to accept and human delay count on each lead's SLA clock (business hours where "
        "the policy says so).",
        "",
        f"{'':22}{'leads':>6}{'accepted':>9}{'median':>8}{'p95':>8}{'in SLA':>8}"
        f"{'breaches':>9}{'0–5m':>7}{'5–15m':>7}{'15–60m':>7}{'60m+':>7}",
    ]
    for title, groups in (("rep", data["reps"]), ("team", data["teams"])):
        lines.append(f"per {title}")
        lines += [_speed_line(name, stats) for name, stats in groups.items()]
    lines.append(_speed_line("all", data["all"], indent=""))
    who = data["all"]["accepted_by"]
    if who:
        lines.append("accepted by: " + ", ".join(f"{n} {c}" for n, c in sorted(who.items())))
    lines += ["", f"{'delays':22}{'system: median':>16}{'p95':>9}{'human: median':>16}{'p95':>9}"]
    for name, stats in [*data["reps"].items(), ("all", data["all"])]:
        system, human = stats["system_delay_s"], stats["human_delay_min"]
        lines.append(
            f"  {name:20}{_seconds(system['median']):>16}{_seconds(system['p95']):>9}"
            f"{_minutes(human['median']):>16}{_minutes(human['p95']):>9}"
        )
    lines += [
        "",
        f"{'funnel (MQLs of the period)':30}{'MQL':>6}{'SAL':>6}{'SQL':>6}"
        f"{'MQL→SAL':>9}{'SAL→SQL':>9}{'MQL→SQL':>9}",
    ]
    funnel = data["funnel"]
    for name, rates in [*funnel["sources"].items(), ("all", funnel["all"])]:
        lines.append(
            f"  {name:28}{rates['mql']:>6}{rates['sal']:>6}{rates['sql']:>6}"
            f"{_share(rates['mql_to_sal']):>9}{_share(rates['sal_to_sql']):>9}"
            f"{_share(rates['mql_to_sql']):>9}"
        )
    return "\n".join(lines)


def _speed_line(name: str, stats: dict[str, Any], indent: str = "  ") -> str:
    bands = stats["bands_min"]
    spread = stats["time_to_accept_min"]
    label = f"{indent}{name}"
    return (
        f"{label:22}{stats['leads']:>6}{stats['accepted']:>9}"
        f"{_minutes(spread['median']):>8}{_minutes(spread['p95']):>8}"
        f"{_share(stats['within_sla_share']):>8}{stats['breaches']:>9}"
        + "".join(f"{bands[name]:>7}" for name, _, _ in BANDS)
    )


def _minutes(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f}m"
    if value < 24 * 60:
        return f"{value / 60:.1f}h"
    return f"{value / 1440:.1f}d"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}s" if value < 60 else _minutes(value / 60)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
