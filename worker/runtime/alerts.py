"""Alerts of ``config/alerts.yaml``, checked by the clock every minute.

The figures come from :func:`worker.commands.status.collect_status`, the same facts that
``leadwerk status``, ``/admin/`` and ``/metrics`` show. Each alert's state lives in the store
(``alert_states``), locked while a check decides, and the messages it owes are written to the
outbox in the same transaction with a key made of the alert, its episode and what it says:
a clock that takes over from another one that died neither repeats an alert nor forgets to
say that it cleared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.loader import CompiledAlert, Config
from rules.alerts import (
    ALERT_METRICS,
    LIST_STATUS_ORDER,
    AlertState,
    next_state,
    worst_list_status,
)
from rules.expr import Context, FieldType
from worker.commands.status import collect_status
from worker.pipeline.notify import channel_for, message_id_domain
from worker.runtime.app import App
from worker.store.models import AlertState as AlertRow
from worker.store.models import Assignment, ListState, Message

log = logging.getLogger("leadwerk.alerts")


def list_statuses(app: App, now: datetime) -> dict[str, str]:
    """Each mailing list's bounce status (``ok`` | ``warn`` | ``suspended``) as the last list
    check left it (``hygiene.yaml``); lists never checked are not listed."""
    with app.store.session() as session:
        return dict(session.execute(select(ListState.name, ListState.status)).all())


def sla_breach_rate_1h(app: App, now: datetime) -> float:
    """Of the SLA clocks due in the last hour, the share not accepted in time."""
    since = now - timedelta(hours=1)
    with app.store.session() as session:
        due = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.due_at > since, Assignment.due_at <= now)
        )
        late = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(
                Assignment.due_at > since,
                Assignment.due_at <= now,
                or_(Assignment.accepted_at.is_(None), Assignment.accepted_at > Assignment.due_at),
            )
        )
    return round((late or 0) / due, 4) if due else 0.0


def alert_metrics(app: App, status: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The values of :data:`rules.alerts.ALERT_METRICS` for the facts of ``status``."""
    pending = status["pending"]
    ages = [a for a in (pending["oldest_event_age_s"], pending["oldest_message_age_s"]) if a]
    queues = status["broker"].get("queues") or {}
    depth = pending["events"] + pending["messages"]
    depth += sum(q["ready"] + q["delayed"] for q in queues.values())
    sources = status["sources"].values()
    workers = [h["age_s"] for h in status["heartbeats"].values() if h["kind"] == "worker"]
    metrics = {
        "queue_age": max(ages, default=0.0),
        "queue_depth": depth,
        "dead_letters": status["dead_letters"],
        "quarantined": status["quarantine"],
        "source_failures": max((s["consecutive_failures"] for s in sources), default=0),
        "sla_breached": status["sla"]["breached"],
        "sla_breach_rate_1h": sla_breach_rate_1h(app, now),
        "messages_failed": status["messages"]["failed"],
        "messages_pending": status["messages"]["pending"],
        "list_status": worst_list_status(list(list_statuses(app, now).values())),
        "worker_silence": min(workers) if workers else None,
    }
    assert set(metrics) == set(ALERT_METRICS)
    return metrics


@dataclass(frozen=True)
class AlertView:
    """One alert as ``leadwerk alerts`` and ``/admin/`` show it."""

    name: str
    when: str
    notify: list[str]
    holds: bool
    firing: bool
    episode: int
    since: datetime | None
    checked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def alert_views(app: App, metrics: dict[str, Any]) -> list[AlertView]:
    """Every alert: its state as the last check left it, and whether it holds now."""
    with app.store.session() as session:
        rows = {row.name: row for row in session.scalars(select(AlertRow))}
    views = []
    for alert in app.config.alerts:
        row = rows.get(alert.name)
        views.append(
            AlertView(
                name=alert.name,
                when=alert.when.source,
                notify=alert.notify,
                holds=alert.when(Context(metrics)),
                firing=bool(row and row.firing),
                episode=row.episode if row else 0,
                since=row.since if row else None,
                checked_at=row.checked_at if row else None,
            )
        )
    return views


def check_alerts(app: App, now: datetime) -> list[int]:
    """One check of every alert: an alert that starts to hold fires, one that stops holding
    resolves; the outbox messages written (their ids) go out with the next sweep."""
    if not app.config.alerts:
        return []
    metrics = alert_metrics(app, collect_status(app, now), now)
    facts = json.dumps({k: v for k, v in metrics.items() if v is not None}, sort_keys=True)
    written: list[int] = []
    with app.store.session() as session:
        _ensure_rows(app, session, [a.name for a in app.config.alerts])
        for alert in app.config.alerts:
            row = session.scalars(
                select(AlertRow).where(AlertRow.name == alert.name).with_for_update()
            ).one()
            holds = alert.when(Context(metrics))
            change = next_state(AlertState(row.firing, row.episode), holds)
            row.checked_at = now
            row.value = facts
            if change.say is None:
                continue
            row.firing, row.episode, row.since = change.state.firing, change.state.episode, now
            messages = alert_messages(app.config, alert, change.state.episode, change.say, metrics)
            session.add_all(messages)
            session.flush()
            written += [m.id for m in messages]
            log.warning("alert '%s' %s (episode %d)", alert.name, change.say, row.episode)
    return written


def _ensure_rows(app: App, session: Session, names: list[str]) -> None:
    """A state row for every alert, made once even when two clocks check at the same time."""
    insert = (postgresql.insert if app.store.dialect == "postgresql" else sqlite.insert)(AlertRow)
    for name in names:
        session.execute(
            insert.values(name=name, firing=False, episode=0).on_conflict_do_nothing(
                index_elements=["name"]
            )
        )


def alert_messages(
    config: Config, alert: CompiledAlert, episode: int, say: str, metrics: dict[str, Any]
) -> list[Message]:
    """One outbox message per person the alert tells; the key names the episode, so the
    same news is never written twice."""
    started = say == "fired"
    subject = f"[Leadwerk] {'ALERT' if started else 'resolved'}: {alert.name}"
    read = sorted(name for name in ALERT_METRICS if name in alert.when.source)
    figures = ", ".join(f"{name} = {_shown(name, metrics[name])}" for name in read)
    text = (
        f"{alert.name}: {alert.when.source} "
        + ("holds" if started else "no longer holds")
        + (f" ({figures})" if figures else "")
        + ".\n"
        + ("See /admin/ or `leadwerk status`.\n" if started else "")
    )
    domain = message_id_domain(config)
    slug = "".join(ch if ch.isalnum() else "-" for ch in alert.name.lower())
    messages = []
    for person in alert.notify:
        rep = config.team.reps[person]
        channel = channel_for(config, rep)
        messages.append(
            Message(
                key=f"alert:{alert.name}:{episode}:{say}:{person}",
                contact_id=None,
                purpose=f"alert_{say}",
                channel=channel,
                recipient=rep.slack if channel == "slack" and rep.slack else rep.email,
                recipient_name=rep.name,
                rep=person,
                subject=subject,
                # a Slack message has no subject line: it leads the text there
                body_text=f"*{subject}*\n{text}" if channel == "slack" else text,
                message_id=f"<alert-{slug}.{episode}.{say}.{person}@{domain}>",
                status="pending",
            )
        )
    return messages


def _shown(name: str, value: Any) -> str:
    """A metric as a person reads it: durations in seconds, shares as percentages."""
    if value is None:
        return "none"
    kind = ALERT_METRICS[name].value
    if kind == "duration":
        return f"{value:.0f}s"
    if kind == "percent":
        return f"{value:.0%}"
    return str(value)


class AlertCollector(Collector):
    """Every figure alerts.yaml can read, on ``/metrics``: ``leadwerk_alert_metric{metric=}``
    (durations in seconds, shares as fractions), ``leadwerk_list_status{status=}`` (1 for the
    worst list status) and ``leadwerk_alert_firing{alert=}``."""

    def __init__(self, app: App) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        try:
            metrics = alert_metrics(self._app, collect_status(self._app, now), now)
            views = alert_views(self._app, metrics)
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", type(exc).__name__)
            return
        values = GaugeMetricFamily(
            "leadwerk_alert_metric",
            "The figures alerts.yaml reads (seconds for durations, fractions for shares)",
            labels=["metric"],
        )
        for name, value in metrics.items():
            if ALERT_METRICS[name] is not FieldType.STRING and value is not None:
                values.add_metric([name], float(value))
        yield values
        lists = GaugeMetricFamily(
            "leadwerk_list_status", "1 for the worst status of any mailing list", labels=["status"]
        )
        for status in LIST_STATUS_ORDER:
            lists.add_metric([status], 1 if metrics["list_status"] == status else 0)
        yield lists
        firing = GaugeMetricFamily(
            "leadwerk_alert_firing", "1 while an alert of alerts.yaml holds", labels=["alert"]
        )
        for view in views:
            firing.add_metric([view.name], 1 if view.holds else 0)
        yield firing
