"""dramatiq set-up: RabbitMQ when ``LEADWERK_BROKER_URL`` is set, else Redis when
``LEADWERK_REDIS_URL`` is set, else the in-process broker.

Actors are declared once at import (on a stub broker) and re-bound to the process's broker by
:func:`setup_broker`, so tests and commands can choose the broker after import.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from config.settings import Settings

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

log = logging.getLogger("leadwerk.broker")
# pika logs each failed connection attempt as several errors with a traceback; Leadwerk says
# it in one line where it matters (at start, in /readyz, in status, dramatiq's consumers).
logging.getLogger("pika").setLevel(logging.CRITICAL)

# A backlog's batches (an import, a sweep) wait on a queue of their own: a new lead on "score"
# is fetched at once, not after the hundreds of batches of a fair's import, and worked before
# the batches a worker has fetched (``score_backlog`` has the lower priority).
BACKLOG_QUEUE = "backlog"
QUEUES = ("score", BACKLOG_QUEUE, "route", "notify", "nurture")

# New leads arrive on "score": its consumer polls Redis as often as the worker's timeout says
# (speed to lead). The other queues carry retries, SLA timers and e-mail fallbacks, and the
# delay queues retries that wait anyway: they are polled at most once a second, so that an
# idle worker's five other consumers do not cost Redis and the worker 50 round trips a second.
FAST_QUEUE = "score"
SLOW_POLL_MS = 1000


class DeadLetters(Middleware):
    """Work that failed for good is written to the store's dead-letter table, where
    ``leadwerk dlq list | replay`` finds it; nothing fails silently."""

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed:
            return
        from worker.runtime.app import get_app
        from worker.store.models import DeadLetter

        text = f"{type(exception).__name__}: {exception}"
        with get_app().store.session() as session:
            session.add(DeadLetter(actor=message.actor_name, args=list(message.args), error=text))
        log.error("dead-lettered %s%s: %s", message.actor_name, tuple(message.args), text)


@functools.cache
def _redis_broker_class() -> type[RedisBroker]:
    """dramatiq's Redis broker, polling only the new-lead queue at the worker's short
    timeout; made when first needed: a process without Redis does not load the client."""
    from dramatiq.brokers.redis import RedisBroker

    class LeadwerkRedisBroker(RedisBroker):
        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
            if queue_name != FAST_QUEUE:
                timeout = max(timeout, SLOW_POLL_MS)
            return super().consume(queue_name, prefetch, timeout)

    return LeadwerkRedisBroker


def _middleware() -> list[Middleware]:
    return [
        AgeLimit(),
        TimeLimit(time_limit=120_000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=8, min_backoff=500, max_backoff=300_000),
        CurrentMessage(),
        DeadLetters(),
    ]


def make_broker(settings: Settings) -> dramatiq.Broker:
    if settings.broker_url:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # pika: loaded for RabbitMQ only

        # RabbitMQ hands a dead worker's unacknowledged messages back as soon as its
        # connection drops: no heartbeat or maintenance to tune. Publisher confirms: a
        # connection RabbitMQ closed while idle (the web process between webhooks) fails the
        # publish, which dramatiq retries on a new one, instead of losing it unnoticed.
        broker: dramatiq.Broker = RabbitmqBroker(
            url=settings.broker_url, confirm_delivery=True, middleware=_middleware()
        )
    elif settings.redis_url:
        # Fast recovery of a killed worker's messages (default ~13 min, here ~16 s).
        broker = _redis_broker_class()(
            url=settings.redis_url,
            namespace=f"leadwerk-{settings.redis_namespace}",
            heartbeat_timeout=15_000,
            maintenance_chance=100_000,
            middleware=_middleware(),
        )
    else:
        broker = StubBroker(middleware=_middleware())
        broker.emit_after("process_boot")  # TimeLimit needs it, or Worker.stop hangs
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Make the process's broker current and bind every actor to it."""
    from worker.pipeline import actors

    broker = make_broker(settings)
    dramatiq.set_broker(broker)
    for actor in actors.ALL:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


def in_line(broker: dramatiq.Broker, queue: str) -> int:
    """How many messages a queue holds, waiting or being worked on (not yet acknowledged).
    RabbitMQ is not asked (a connection per sweep pass): there it counts as empty, and the
    sweep's plain redelivery window applies."""
    if isinstance(broker, StubBroker):
        return int(broker.queues[queue].unfinished_tasks) if queue in broker.queues else 0
    # A Redis broker exists only once its module is loaded (with Redis set only).
    redis = sys.modules.get("dramatiq.brokers.redis")
    if redis is not None and isinstance(broker, redis.RedisBroker):
        return int(broker.client.hlen(f"{broker.namespace}:{queue}.msgs"))
    return 0
