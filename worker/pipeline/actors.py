"""dramatiq actors: thin. Each loads state, asks the step module, persists, enqueues the next.

Every actor is idempotent (the store decides whether work is still due), so a redelivered
message or a sweep that re-enqueues work never does it twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dramatiq
from dramatiq.brokers.stub import StubBroker

from connectors.errors import RetriableError
from worker.app import get_app
from worker.pipeline import notify, route, score, sla

# Declared on a private stub broker; worker.broker.setup_broker re-binds them.
_declaring = StubBroker()


def _now() -> datetime:
    return datetime.now(UTC)


@dramatiq.actor(queue_name="score", max_retries=8, broker=_declaring)
def score_lead(event_id: int) -> None:
    app = get_app()
    contact_id = score.score_event(app.store, app.config, event_id, _now())
    if contact_id is not None:
        route_lead.send(contact_id)


@dramatiq.actor(queue_name="route", max_retries=8, broker=_declaring)
def route_lead(contact_id: int) -> None:
    app = get_app()
    for message_id in route.route_contact(app.store, app.config, contact_id, _now()):
        send_message.send(message_id)


@dramatiq.actor(queue_name="notify", max_retries=10, min_backoff=1000, broker=_declaring)
def send_message(message_id: int) -> None:
    try:
        outcome = notify.send_message(get_app(), message_id, _now())
    except RetriableError as exc:
        if exc.retry_after:
            raise dramatiq.Retry(delay=int(exc.retry_after * 1000)) from exc
        raise
    if outcome.follow_up is not None:
        send_message.send(outcome.follow_up)


@dramatiq.actor(queue_name="route", max_retries=8, broker=_declaring)
def fire_sla_timer(timer_id: int) -> None:
    app = get_app()
    for message_id in sla.fire_timer(app.store, app.config, timer_id, _now()).message_ids:
        send_message.send(message_id)


ALL = (score_lead, route_lead, send_message, fire_sla_timer)
