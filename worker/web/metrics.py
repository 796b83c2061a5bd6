"""Prometheus metrics read from the store at scrape time.

Messages are sent by the worker processes, while ``/metrics`` is served by the web process; a
counter kept in a worker's memory would be invisible there and lost when it restarts. The
outbox table already holds the truth for every process, so the figures come from it: one
grouped query per scrape. Erasing a contact (``leadwerk forget``) deletes its messages, which
Prometheus sees like a counter reset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from worker.store.db import Store

if TYPE_CHECKING:
    from worker.runtime.app import App
from worker.store.models import Message

log = logging.getLogger("leadwerk.metrics")

CHANNELS = ("email", "slack")


def message_counts(store: Store) -> dict[str, Any]:
    """Outbox messages by status (``sending`` counts as pending) and channel, plus how many
    were sent again after a worker died between the server's OK and the mark."""
    with store.session() as session:
        rows = session.execute(
            select(Message.status, Message.channel, func.count()).group_by(
                Message.status, Message.channel
            )
        ).all()
        resent = session.scalar(select(func.coalesce(func.sum(Message.resent_after_crash), 0)))
    by_channel = {status: dict.fromkeys(CHANNELS, 0) for status in ("sent", "failed", "pending")}
    for status, channel, count in rows:
        key = "pending" if status == "sending" else status
        if key in by_channel:
            by_channel[key][channel] = by_channel[key].get(channel, 0) + count
    return {
        "sent": sum(by_channel["sent"].values()),
        "failed": sum(by_channel["failed"].values()),
        "pending": sum(by_channel["pending"].values()),
        "resent_after_crash": int(resent or 0),
        "by_channel": by_channel,
    }


class OutboxCollector(Collector):
    """``leadwerk_messages_{sent,failed,resent_after_crash}_total``,
    ``leadwerk_messages_pending`` and ``leadwerk_store_up``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("leadwerk_store_up", "1 when the store answered this scrape")
        try:
            counts = message_counts(self._store)
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        channels = counts["by_channel"]
        for status, help_text in (
            ("sent", "Messages the e-mail server or Slack accepted"),
            ("failed", "Messages that failed for good (see leadwerk dlq list)"),
        ):
            family = CounterMetricFamily(
                f"leadwerk_messages_{status}", help_text, labels=["channel"]
            )
            for channel, count in sorted(channels[status].items()):
                family.add_metric([channel], count)
            yield family
        pending = GaugeMetricFamily(
            "leadwerk_messages_pending", "Messages waiting to be sent", labels=["channel"]
        )
        for channel, count in sorted(channels["pending"].items()):
            pending.add_metric([channel], count)
        yield pending
        resent = CounterMetricFamily(
            "leadwerk_messages_resent_after_crash",
            "Messages sent again because a worker died between the server's OK and the mark",
        )
        resent.add_metric([], counts["resent_after_crash"])
        yield resent


class StatusCollector(Collector):
    """What ``leadwerk status`` shows, for Prometheus: queue depth and the oldest message's
    age per queue (with Redis), pending leads, open quarantine, open dead letters, SLA
    breaches, refused rule reloads, contacts and MQLs, live processes."""

    def __init__(self, app: App) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        # Here, not at the top: the status module reads this module's outbox counts.
        from worker.commands.status import KINDS, collect_status

        try:
            data = collect_status(self._app)
        except SQLAlchemyError:
            return  # leadwerk_store_up says so
        queues = data["broker"].get("queues") or {}
        depth = GaugeMetricFamily(
            "leadwerk_queue_depth",
            "Messages on a queue: ready (or in a worker's hands) and delayed (retries)",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "leadwerk_queue_oldest_age_seconds",
            "Age of the message longest in line on a queue (0 when none waits)",
            labels=["queue"],
        )
        # RabbitMQ does not tell how old its messages are: no age then, rather than a 0.
        ages_known = data["broker"].get("mode") != "rabbitmq"
        for name, queue in sorted(queues.items()):
            depth.add_metric([name, "ready"], queue["ready"])
            depth.add_metric([name, "delayed"], queue["delayed"])
            if ages_known:
                oldest.add_metric([name], queue["oldest_age_s"] or 0)
        yield depth
        yield oldest
        pending = data["pending"]
        yield _gauge("leadwerk_leads_pending", "Leads not yet scored and routed", pending["events"])
        yield _gauge(
            "leadwerk_leads_pending_oldest_age_seconds",
            "Age of the oldest lead not yet scored and routed (0 when none waits)",
            pending["oldest_event_age_s"] or 0,
        )
        yield _gauge(
            "leadwerk_quarantine_open", "Records that could not be taken in", data["quarantine"]
        )
        yield _gauge(
            "leadwerk_dead_letters_open", "Work that failed for good", data["dead_letters"]
        )
        yield _gauge(
            "leadwerk_sla_breached",
            "Open assignments past their SLA's due time",
            data["sla"]["breached"],
        )
        refused = CounterMetricFamily(
            "leadwerk_config_reloads_refused",
            "Rule changes a process refused because they did not load",
        )
        refused.add_metric([], data["rules"]["refused_total"])
        yield refused
        yield _gauge("leadwerk_contacts", "Contacts in the store", data["contacts"]["total"])
        yield _gauge("leadwerk_mqls", "Contacts that became MQLs", data["contacts"]["mqls"])
        live = GaugeMetricFamily(
            "leadwerk_processes_live", "Processes with a recent heartbeat", labels=["kind"]
        )
        for kind in KINDS:
            live.add_metric([kind], data["live"][kind])
        yield live


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def store_registry(store: Store, app: App | None = None) -> CollectorRegistry:
    """A registry of the store-backed metrics, exposed beside the process's own; with the
    App, the status figures too."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OutboxCollector(store))
    if app is not None:
        registry.register(StatusCollector(app))
    return registry
