"""What an admin sees of a running Leadwerk: the facts of ``leadwerk status`` and then some.

``/admin/`` and ``leadwerk status`` both read :func:`overview`, so the page and the command
never disagree. It builds on :func:`worker.commands.status.collect_status` and adds what a
person watching the flow asks next: leads per source in the last hour and day, MQLs and routed
leads, SLA clocks at risk, the clock leader, the alerts, and the last MQLs with the reasons
behind them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from rules.contact import mask_email
from worker.commands.operations import dead_letters, quarantined
from worker.commands.status import collect_status
from worker.pipeline.crm import crm_status
from worker.runtime.alerts import alert_metrics, alert_views, list_statuses
from worker.runtime.app import App
from worker.runtime.clock import clock_leader
from worker.store.models import Assignment, Contact, Event, Score

# An open SLA clock is at risk once this share of its time has run (the 80 % reminder).
AT_RISK_SHARE = 0.8
RECENT_MQLS = 50
LISTED_ROWS = 100


def overview(app: App, now: datetime) -> dict[str, Any]:
    """``collect_status`` plus the dashboard's facts; an alert of alerts.yaml that holds is
    one more of ``problems``, so ``healthy`` is false while it does."""
    status = collect_status(app, now)
    metrics = alert_metrics(app, status, now)
    alerts = [view.as_dict() for view in alert_views(app, metrics)]
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    with app.store.session() as session:
        per_source: dict[str, dict[str, int]] = {
            name: {"hour": 0, "day": 0} for name in app.config.sources
        }
        for source, in_hour, in_day in session.execute(
            select(
                Event.source,
                func.count().filter(Event.received_at >= hour),
                func.count(),
            )
            .where(Event.received_at >= day)
            .group_by(Event.source)
        ):
            per_source[source] = {"hour": in_hour, "day": in_day}
        flow = {
            "mqls": _last_hour_and_day(session, Contact.mql_at, hour, day),
            "routed": _last_hour_and_day(session, Assignment.created_at, hour, day),
        }
        open_clocks = session.execute(
            select(Assignment.created_at, Assignment.due_at).where(
                Assignment.status == "open", Assignment.due_at >= now
            )
        ).all()
    at_risk = sum(
        1
        for created, due in open_clocks
        if (now - created).total_seconds() >= AT_RISK_SHARE * (due - created).total_seconds()
    )
    problems = [*status["problems"], *(f"alert '{a['name']}' holds" for a in alerts if a["holds"])]
    return {
        **status,
        "problems": problems,
        "healthy": not problems,
        "clock_leader": clock_leader(app),
        "leads_per_source": per_source,
        "flow": flow,
        "sla": {**status["sla"], "at_risk": at_risk},
        "alert_metrics": metrics,
        "alerts": alerts,
        "lists": list_statuses(app, now),
        "crm_outbox": _crm_counts(app, now) if app.config.crm is not None else None,
    }


def _crm_counts(app: App, now: datetime) -> dict[str, Any]:
    """The CRM outbox as the dashboard shows it: waiting, being retried, dead."""
    crm = crm_status(app.store, app.config, now)
    return {key: crm[key] for key in ("pending", "retrying", "dead") if key in crm}


def _last_hour_and_day(session: Any, column: Any, hour: datetime, day: datetime) -> dict[str, int]:
    in_hour, in_day = session.execute(
        select(func.count().filter(column >= hour), func.count()).where(column >= day)
    ).one()
    return {"hour": in_hour, "day": in_day}


def recent_mqls(app: App, limit: int = RECENT_MQLS) -> list[dict[str, Any]]:
    """The last MQLs, newest first, each with why: the rules it hit (the score that made it an
    MQL), and how it was routed (rule, reason, who was skipped and why). E-mail masked."""
    with app.store.session() as session:
        contacts = list(
            session.scalars(
                select(Contact)
                .where(Contact.mql_at.is_not(None))
                .order_by(Contact.mql_at.desc(), Contact.id.desc())
                .limit(limit)
            )
        )
        ids = [c.id for c in contacts]
        scores: dict[int, Score] = {}
        for score in session.scalars(
            select(Score).where(Score.contact_id.in_(ids), Score.mql.is_(True)).order_by(Score.id)
        ):
            scores.setdefault(score.contact_id, score)  # the one that made it an MQL
        routes: dict[int, Assignment] = {}
        for assignment in session.scalars(
            select(Assignment).where(Assignment.contact_id.in_(ids)).order_by(Assignment.id)
        ):
            routes[assignment.contact_id] = assignment  # the latest
        rows = []
        for contact in contacts:
            score, route = scores.get(contact.id), routes.get(contact.id)
            rows.append(
                {
                    "id": contact.id,
                    "email": mask_email(contact.email),
                    "company": contact.fields.get("company"),
                    "source": contact.source,
                    "stage": contact.stage,
                    "mql_at": contact.mql_at,
                    "score": contact.score,
                    "hits": score.hits if score else [],
                    "route": (
                        {
                            "rule": route.rule,
                            "team": route.team,
                            "rep": route.rep,
                            "reason": route.reason,
                            "skipped": route.skipped,
                            "status": route.status,
                            "due_at": route.due_at,
                        }
                        if route
                        else None
                    ),
                }
            )
    return rows


def open_dead_letters(app: App) -> list[dict[str, Any]]:
    """The open dead letters, newest first (as ``leadwerk dlq list`` lists them)."""
    rows = [row for row in dead_letters(app) if row["status"] == "open"]
    return rows[::-1][:LISTED_ROWS]


def open_quarantine(app: App) -> list[dict[str, Any]]:
    """Quarantined records waiting for a fix, newest first, without their raw content."""
    rows = quarantined(app, None)[::-1][:LISTED_ROWS]
    return [{k: v for k, v in row.items() if k != "raw"} for row in rows]


def render_overview(data: dict[str, Any]) -> list[str]:
    """The lines ``leadwerk status`` adds under :func:`render_status`'s."""
    lines = [f"  clock leader: {data['clock_leader'] or 'none (no clock holds the lease)'}"]
    flow = data["flow"]
    lines.append(
        f"  last hour / day: {flow['mqls']['hour']} / {flow['mqls']['day']} MQLs, "
        f"{flow['routed']['hour']} / {flow['routed']['day']} routed; "
        f"SLA clocks at risk: {data['sla']['at_risk']}"
    )
    for name, counts in data["leads_per_source"].items():
        lines.append(f"  leads from {name}: {counts['hour']} last hour, {counts['day']} last day")
    for name, status in data["lists"].items():
        lines.append(f"  list {name}: {status}")
    for alert in data["alerts"]:
        state = "FIRING" if alert["holds"] else "ok"
        lines.append(f"  alert {alert['name']}: {state} ({alert['when']})")
    return lines
