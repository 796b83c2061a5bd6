"""dramatiq actors: thin. Each loads state, asks the step module, persists, starts the next.

The next step runs at once in the same thread (:func:`_next`): a queue round trip costs more
than the step itself, and speed to lead is the point. Only when it fails does it go on the
queue, to be retried there with its own backoff.

A message's retries have one owner, its outbox row: a send that fails for a passing reason
sets the row's ``retry_at`` and enqueues one delayed ``send_message`` for then; dramatiq's own
retries never see such a failure. A fatal error (a configuration the admin must fix) is not
retried at all (``throws``): it is dead-lettered at once.

Every actor is idempotent (the store decides whether work is still due), so a redelivered
message or a sweep that re-enqueues work never does it twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from connectors.errors import ConnectorError, FatalError, SkippableError
from worker.pipeline import lead, notify, nurture, route, score, sla
from worker.pipeline.backlog import work_backlog
from worker.runtime.app import get_app
from worker.runtime.broker import BACKLOG_QUEUE
from worker.store.models import Message

log = logging.getLogger("leadwerk.actors")

# Declared on a private stub broker; worker.runtime.broker.setup_broker re-binds them.
_declaring = StubBroker()

# A next step that failed on the fast path is queued to run again after this long.
FAST_PATH_RETRY_MS = 1000


# ``leadwerk run --once --now``: this process's pass runs as if the clock read that time.
_simulated_now: datetime | None = None


def simulate_clock(at: datetime | None) -> None:
    """Make this process's actors read ``at`` as the time (``None``: the real clock again)."""
    global _simulated_now
    _simulated_now = at


def _now() -> datetime:
    return _simulated_now or datetime.now(UTC)


# Errors no retry can mend: the admin must fix a configuration or the data.
NOT_RETRIED = (FatalError, SkippableError)


def _at_once(run: Callable[[], None], actor: dramatiq.Actor[Any, Any], *args: Any) -> None:
    """Run the next step now, in this thread; if it fails, queue ``actor(*args)`` to retry
    it on its own."""
    try:
        run()
    except Exception as exc:
        # Only the class: the queued retry logs the details if it fails again.
        log.warning(
            "%s%s failed at once (%s); queued to retry", actor.actor_name, args, type(exc).__name__
        )
        actor.send_with_options(args=args, delay=FAST_PATH_RETRY_MS)


def _next(actor: dramatiq.Actor[Any, Any], *args: Any) -> None:
    _at_once(lambda: actor.fn(*args), actor, *args)


@dramatiq.actor(queue_name="score", max_retries=8, throws=NOT_RETRIED, broker=_declaring)
def score_lead(event_id: int) -> None:
    app = get_app()
    try:
        messages = lead.score_and_route(app.store, app.config, event_id, _now())
    except Exception as exc:
        # One step at a time instead: the score is kept even when routing fails (a template
        # that does not render, say), and routing is retried on its own.
        log.warning(
            "event %s: scoring and routing together failed (%s); one step at a time",
            event_id,
            type(exc).__name__,
        )
        contact_id = score.score_event(app.store, app.config, event_id, _now())
        if contact_id is not None:
            _next(route_lead, contact_id)
        return
    deliver_claimed(messages)


# A batch may wait for the teams' counters, which the other threads' batches hold until they
# commit (see batchroute.py), some seconds each behind a long queue of batches.
BACKLOG_TIME_LIMIT_MS = 600_000


# Lower priority (a larger number) than a new lead's: a worker works a new lead it fetched
# after some batches before them.
BACKLOG_PRIORITY = 10


@dramatiq.actor(
    queue_name=BACKLOG_QUEUE,
    priority=BACKLOG_PRIORITY,
    max_retries=8,
    throws=NOT_RETRIED,
    time_limit=BACKLOG_TIME_LIMIT_MS,
    broker=_declaring,
)
def score_backlog(event_ids: list[int]) -> None:
    """A batch of a backlog's events (an import, a sweep) in one transaction
    (:func:`~worker.pipeline.backlog.work_backlog`), its claimed messages sent after the
    commit. The events of a batch that failed go the per-lead way, each its own message.

    Redelivered (a worker died), it changes nothing already done: events no longer pending
    are skipped, under the lock that also keeps two workers from scoring one event twice.
    """
    app = get_app()
    worked = work_backlog(app.store, app.config, event_ids, _now, deliver_batch)
    for event_id in worked.handed_back:
        score_lead.send(event_id)


def deliver_batch(messages: list[Message]) -> None:
    """A backlog batch's claimed messages: those for the file outbox written and marked sent
    together, the others sent one by one (:func:`deliver_claimed`)."""
    deliver_claimed(notify.deliver_to_outbox(get_app(), messages, _now))


def deliver_claimed(messages: list[Message]) -> None:
    """Send messages claimed for this thread when they were written; one that fails is
    queued to be sent on its own."""
    app = get_app()
    for message in messages:
        send = functools.partial(notify.deliver, app, message, _now)
        _at_once(functools.partial(_deliver, send, message.id), send_message, message.id)


@dramatiq.actor(queue_name="route", max_retries=8, throws=NOT_RETRIED, broker=_declaring)
def route_lead(contact_id: int) -> None:
    app = get_app()
    for message_id in route.route_contact(app.store, app.config, contact_id, _now()):
        _next(send_message, message_id)


# A connector's error never reaches dramatiq from here (the outbox row handles it); what does
# is the store failing, which dramatiq retries.
@dramatiq.actor(
    queue_name="notify", max_retries=8, min_backoff=1000, throws=ConnectorError, broker=_declaring
)
def send_message(message_id: int) -> None:
    app = get_app()
    _deliver(functools.partial(notify.send_message, app, message_id, _now), message_id)


def _deliver(send: Callable[[], notify.Outcome], message_id: int) -> None:
    """Run ``send``; a retry the outbox row asks for is enqueued for its time, and the e-mail
    a failed Slack message falls back to is queued."""
    outcome = send()
    if outcome.retry_at is not None:
        wait_ms = (outcome.retry_at - _now()).total_seconds() * 1000
        send_message.send_with_options(args=(message_id,), delay=max(int(wait_ms), 0))
    if outcome.follow_up is not None:
        send_message.send(outcome.follow_up)


@dramatiq.actor(queue_name="route", max_retries=8, throws=NOT_RETRIED, broker=_declaring)
def fire_sla_timer(timer_id: int) -> None:
    app = get_app()
    for message_id in sla.fire_timer(app.store, app.config, timer_id, _now()).message_ids:
        send_message.send(message_id)


@dramatiq.actor(queue_name="nurture", max_retries=8, broker=_declaring)
def run_nurture_steps(enrolment_ids: list[int], at: str) -> None:
    """Due nurture steps, as of the clock's time ``at`` (ISO 8601) that found them due."""
    app = get_app()
    now = datetime.fromisoformat(at)
    for enrolment_id in enrolment_ids:
        try:
            result = nurture.run_step(app.store, app.config, enrolment_id, now)
        except Exception as exc:
            # The others in the batch go on; this one stays claimed and is due again once
            # the clock's lease on it ends.
            log.warning("nurture enrolment %s failed (%s)", enrolment_id, type(exc).__name__)
            continue
        for message_id in result.messages:
            _next(send_message, message_id)


ALL = (score_lead, score_backlog, route_lead, send_message, fire_sla_timer, run_nurture_steps)
