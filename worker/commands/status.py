"""``leadwerk status``: the admin's view of queue health, from the store and the broker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from worker.pipeline.crm import crm_status
from worker.runtime.app import App
from worker.runtime.broker import QUEUES
from worker.runtime.embedded import account
from worker.store.models import (
    Assignment,
    DeadLetter,
    Event,
    Heartbeat,
    Message,
    SlaTimer,
    SourceState,
)
from worker.web.metrics import message_counts


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def broker_queues(app: App) -> dict[str, Any]:
    """Depths of the Redis queues (ready, delayed, dead); in single-process mode the queue
    lives in memory and the store's pending work is the truth."""
    if not app.settings.redis_url:
        return {"mode": "single-process"}
    import redis

    client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
    ns = f"leadwerk-{app.settings.redis_namespace}"
    queues = {}
    try:
        for queue in QUEUES:
            queues[queue] = {
                "ready": client.hlen(f"{ns}:{queue}.msgs"),
                "delayed": client.hlen(f"{ns}:{queue}.DQ.msgs"),
                "dead": client.zcard(f"{ns}:{queue}.XQ"),
            }
    except redis.RedisError as exc:
        return {"mode": "redis", "error": str(exc)}
    return {"mode": "redis", "queues": queues}


def collect_status(app: App, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    with app.store.session() as session:
        oldest_event = session.scalar(
            select(func.min(Event.received_at)).where(Event.status == "pending")
        )
        oldest_message = session.scalar(
            select(func.min(Message.created_at)).where(Message.status.in_(("pending", "sending")))
        )
        dead = session.scalar(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.status == "open")
        )
        running = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(
                Assignment.status == "open",
                Assignment.due_at.is_not(None),
                Assignment.due_at >= now,
            )
        )
        breached = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.status == "open", Assignment.due_at < now)
        )
        # Reminders and breaches due but not yet fired: above zero for long, the clock lags.
        timers_due = session.scalar(
            select(func.count())
            .select_from(SlaTimer)
            .join(Assignment, Assignment.id == SlaTimer.assignment_id)
            .where(
                Assignment.status == "open",
                SlaTimer.fired_at.is_(None),
                SlaTimer.fire_at <= now,
            )
        )
        sources = {
            s.source: {
                "last_run_at": s.last_run_at,
                "last_success_at": s.last_success_at,
                "runs": s.runs,
                "failures": s.failures,
                "error_rate": round(s.failures / s.runs, 3) if s.runs else 0.0,
                "consecutive_failures": s.consecutive_failures,
                "last_error": s.last_error,
                "records_total": s.records_total,
            }
            for s in session.scalars(select(SourceState))
        }
        heartbeats = {
            h.process: {"kind": h.kind, "seen_at": h.seen_at, "age_s": _age(now, h.seen_at)}
            for h in session.scalars(select(Heartbeat))
        }
    for name in app.config.sources:
        sources.setdefault(
            name,
            {
                "last_run_at": None,
                "last_success_at": None,
                "runs": 0,
                "failures": 0,
                "error_rate": 0.0,
                "consecutive_failures": 0,
                "last_error": None,
                "records_total": 0,
            },
        )
    acc = account(app)
    messages = message_counts(app.store)
    return {
        "at": now,
        "broker": broker_queues(app),
        "pending": {
            "events": acc.pending,
            "oldest_event_age_s": _age(now, oldest_event),
            "messages": acc.messages_pending,
            "oldest_message_age_s": _age(now, oldest_message),
        },
        "leads": acc.as_dict(),
        "dead_letters": dead or 0,
        "quarantine": acc.quarantined,
        "sla": {
            "running": running or 0,
            "breached": breached or 0,
            "timers_due": timers_due or 0,
        },
        "messages_resent_after_crash": messages["resent_after_crash"],
        "messages": messages,
        "sources": sources,
        "heartbeats": heartbeats,
        "crm": crm_status(app.store, app.config, now, dead_limit=0) if app.config.crm else None,
    }


def _oldest(age: float | None) -> str:
    return "" if age is None else f" (oldest {age} s)"


def render_status(data: dict[str, Any]) -> str:
    lines = [f"Leadwerk status at {data['at']:%Y-%m-%d %H:%M:%S %Z}"]
    broker = data["broker"]
    if broker.get("queues"):
        for name, q in broker["queues"].items():
            lines.append(
                f"  queue {name:8} ready {q['ready']:>6}  delayed {q['delayed']:>6}  "
                f"dead {q['dead']:>6}"
            )
    else:
        lines.append(f"  broker: {broker.get('mode')} {broker.get('error', '')}".rstrip())
    p = data["pending"]
    lines.append(
        f"  pending: {p['events']} leads{_oldest(p['oldest_event_age_s'])}, "
        f"{p['messages']} messages{_oldest(p['oldest_message_age_s'])}"
    )
    leads = data["leads"]
    lines.append(
        f"  leads: {leads['events']} in, {leads['processed']} processed, "
        f"{leads['dead']} dead-lettered; {data['quarantine']} quarantined records"
    )
    m = data["messages"]
    lines.append(
        f"  messages: {m['sent']} sent, {m['failed']} failed, {m['pending']} pending, "
        f"{m['resent_after_crash']} sent again after a worker crash"
    )
    lines.append(
        f"  dead letters: {data['dead_letters']}   SLA clocks: {data['sla']['running']} "
        f"running, {data['sla']['breached']} breached, {data['sla']['timers_due']} "
        "reminders/breaches due"
    )
    for name, s in data["sources"].items():
        lines.append(
            f"  source {name}: last success {s['last_success_at'] or 'never'}, "
            f"{s['runs']} runs, error rate {s['error_rate']:.1%}"
            + (f", last error: {s['last_error']}" if s["last_error"] else "")
        )
    for name, h in data["heartbeats"].items():
        lines.append(f"  {h['kind']} {name}: seen {h['age_s']} s ago")
    if data.get("crm"):
        crm = data["crm"]
        lines.append(
            f"  CRM {crm['kind']}: {crm['pending']} waiting{_oldest(crm['oldest_pending_age_s'])}, "
            f"{crm['retrying']} being retried, {crm['dead']} dead"
            + (f", last error: {crm['last_error']}" if crm["last_error"] else "")
        )
    return "\n".join(lines)
