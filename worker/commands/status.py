"""``leadwerk status``: the admin's view of queue health, from the store and the broker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dramatiq
from sqlalchemy import func, select

from worker.commands.outages import delivery_outages, render_outage
from worker.pipeline.crm import crm_status
from worker.runtime.app import App
from worker.runtime.broker import QUEUES
from worker.runtime.embedded import account
from worker.runtime.processes import HEARTBEAT_LIVE_S
from worker.store.db import Store
from worker.store.models import (
    Assignment,
    ConfigReload,
    Contact,
    DeadLetter,
    Event,
    Heartbeat,
    Message,
    SlaTimer,
    SourceState,
)
from worker.web.hooks import webhook_source
from worker.web.metrics import message_counts

# The process kinds that heartbeat (``run`` in one process beats as web and clock).
KINDS = ("web", "worker", "clock")


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def broker_queues(app: App) -> dict[str, Any]:
    """Depths of the queues (ready, delayed, dead) in Redis or RabbitMQ; in single-process
    mode the queue lives in memory and the store's pending work is the truth."""
    if app.settings.broker_url:
        return _rabbitmq_queues(app.settings.broker_url)
    if not app.settings.redis_url:
        return {"mode": "single-process"}
    import redis

    client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
    ns = f"leadwerk-{app.settings.redis_namespace}"
    queues = {}
    now = datetime.now(UTC)
    try:
        for queue in QUEUES:
            queues[queue] = {
                "ready": client.hlen(f"{ns}:{queue}.msgs"),
                "delayed": client.hlen(f"{ns}:{queue}.DQ.msgs"),
                "dead": client.zcard(f"{ns}:{queue}.XQ"),
                "oldest_age_s": _oldest_waiting(client, f"{ns}:{queue}", now),
            }
    except redis.RedisError as exc:
        return {"mode": "redis", "error": str(exc)}
    return {"mode": "redis", "queues": queues}


def _rabbitmq_queues(url: str) -> dict[str, Any]:
    """RabbitMQ tells how many messages wait, not since when: reading the oldest one would
    take it off the queue, so its age stays unknown (None)."""
    from worker.runtime.rabbitmq import RABBITMQ_ERRORS, rabbitmq_depths, rabbitmq_error_text

    try:
        depths = rabbitmq_depths(url)
    except RABBITMQ_ERRORS as exc:
        return {"mode": "rabbitmq", "error": rabbitmq_error_text(exc)}
    return {
        "mode": "rabbitmq",
        "queues": {name: {**counts, "oldest_age_s": None} for name, counts in depths.items()},
    }


def _oldest_waiting(client: Any, queue: str, now: datetime) -> float | None:
    """Age of the message longest in line: dramatiq appends to the queue's list and takes
    from its head, and keeps each message in the ``.msgs`` hash."""
    head = client.lindex(queue, 0)
    data = client.hget(f"{queue}.msgs", head) if head is not None else None
    if data is None:
        return None
    try:
        enqueued = dramatiq.Message.decode(data).message_datetime
    except dramatiq.errors.DecodeError:
        return None
    return _age(now, enqueued)


def process_facts(app: App, now: datetime) -> dict[str, Any]:
    """Contacts and MQLs, webhook sources' last delivery, the rules on disk and in force in
    each live process, reloads they refused, and how many processes of each kind live."""
    with app.store.session() as session:
        # count(mql_at) counts the contacts that became MQLs: one pass for both figures
        contacts, mqls = session.execute(
            select(func.count(), func.count(Contact.mql_at)).select_from(Contact)
        ).one()
        hooks = [name for name in app.config.sources if webhook_source(app, name) is not None]
        delivered = dict(
            session.execute(
                select(Event.source, func.max(Event.received_at))
                .where(Event.source.in_(hooks))
                .group_by(Event.source)
            ).all()
        )
    facts = rules_in_force(app.store, now)
    facts["rules"]["on_disk"] = f"v{app.config.ruleset.version} ({app.config.hash})"
    return {
        "contacts": {"total": contacts, "mqls": mqls},
        "webhooks": {
            name: {"last_delivery_at": delivered.get(name), "age_s": _age(now, delivered.get(name))}
            for name in hooks
        },
        **facts,
    }


def rules_in_force(store: Store, now: datetime) -> dict[str, Any]:
    """The rule sets live processes run and the reloads they refused (a refusal a later
    reload superseded is no longer news), from the store alone: this still answers when
    the files in config/ do not load."""
    with store.session() as session:
        beats = list(session.scalars(select(Heartbeat)))
        reloads = list(session.scalars(select(ConfigReload).order_by(ConfigReload.id)))
    live = [b for b in beats if (now - b.seen_at).total_seconds() <= HEARTBEAT_LIVE_S]
    latest: dict[str, ConfigReload] = {}
    for reload in reloads:
        latest[reload.process] = reload
    # A reload is recorded as host:pid; a clock's heartbeat adds its leadership identity.
    alive = {":".join(b.process.split(":")[:2]) for b in live}
    refused = [
        {
            "process": r.process,
            "at": r.at,
            "errors": r.errors,
            "first_error": r.first_error,
            "still_running": f"v{r.rules_version} ({r.rules_hash})",
        }
        for r in latest.values()
        if r.outcome == "refused" and r.process in alive
    ]
    return {
        "rules": {
            "on_disk": None,
            "in_force": sorted(
                {f"v{b.rules_version} ({b.rules_hash})" for b in live if b.rules_version}
            ),
            "refused_reloads": refused,
            "refused_total": sum(1 for r in reloads if r.outcome == "refused"),
        },
        "live": {kind: sum(1 for b in live if b.kind == kind) for kind in KINDS},
    }


def health(app: App, data: dict[str, Any]) -> list[str]:
    """Why Leadwerk is unhealthy; empty when it is healthy. Unhealthy: the store does not
    answer (then there is no status at all), or, with Redis, the broker does not answer or no
    worker or no clock is alive. Dead letters and quarantine are work for a person, shown
    but not counted as unhealthy."""
    if not app.settings.redis_url:
        return []
    problems = []
    if data["broker"].get("error"):
        name = "RabbitMQ" if data["broker"]["mode"] == "rabbitmq" else "Redis"
        problems.append(f"{name} does not answer: {data['broker']['error']}")
    for kind in ("worker", "clock"):
        if not data["live"][kind]:
            problems.append(f"no live {kind} (no heartbeat within {HEARTBEAT_LIVE_S:.0f} s)")
    return problems


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
            h.process: {
                "kind": h.kind,
                "seen_at": h.seen_at,
                "age_s": _age(now, h.seen_at),
                "live": (now - h.seen_at).total_seconds() <= HEARTBEAT_LIVE_S,
                "rules": f"v{h.rules_version} ({h.rules_hash})" if h.rules_version else None,
            }
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
    data = {
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
        "outages": delivery_outages(app.store),
        "sources": sources,
        "heartbeats": heartbeats,
        "crm": crm_status(app.store, app.config, now, dead_limit=0) if app.config.crm else None,
    }
    data.update(process_facts(app, now))
    data["problems"] = health(app, data)
    data["healthy"] = not data["problems"]
    return data


def _oldest(age: float | None) -> str:
    return "" if age is None else f" (oldest {age} s)"


def render_status(data: dict[str, Any], more: Sequence[str] = ()) -> str:
    """The status for a person; ``more`` (the dashboard's facts) goes before the verdict."""
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
    lines.extend(f"  {render_outage(outage)}" for outage in data["outages"])
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
        lines.append(
            f"  {h['kind']} {name}: seen {h['age_s']} s ago"
            + (f", rules {h['rules']}" if h["rules"] else "")
            + ("" if h["live"] else " (not alive)")
        )
    if data.get("crm"):
        crm = data["crm"]
        lines.append(
            f"  CRM {crm['kind']}: {crm['pending']} waiting{_oldest(crm['oldest_pending_age_s'])}, "
            f"{crm['retrying']} being retried, {crm['dead']} dead"
            + (f", last error: {crm['last_error']}" if crm["last_error"] else "")
        )
    lines.extend(render_process_facts(data))
    lines.extend(more)
    lines.append(
        "  health: ok" if data["healthy"] else "  health: UNHEALTHY: " + "; ".join(data["problems"])
    )
    return "\n".join(lines)


def render_rules(rules: dict[str, Any]) -> list[str]:
    in_force = ", ".join(rules["in_force"]) or "no live process"
    on_disk = rules["on_disk"] or "do not load"
    lines = [f"  rules: {on_disk} on disk; in force: {in_force}"]
    for refusal in rules["refused_reloads"]:
        lines.append(
            f"  reload refused at {refusal['at']:%Y-%m-%d %H:%M:%S %Z} in {refusal['process']} "
            f"({refusal['errors']} error(s), first: {refusal['first_error']}); "
            f"still running {refusal['still_running']}"
        )
    return lines


def render_process_facts(data: dict[str, Any]) -> list[str]:
    contacts = data["contacts"]
    lines = [f"  contacts: {contacts['total']}, of which {contacts['mqls']} MQLs"]
    for name, hook in data["webhooks"].items():
        when = hook["last_delivery_at"]
        lines.append(
            f"  webhook {name}: last delivery "
            + (f"{when:%Y-%m-%d %H:%M:%S %Z} ({hook['age_s']} s ago)" if when else "never")
        )
    lines.extend(render_rules(data["rules"]))
    return lines
