"""The clock: APScheduler 3 that only enqueues. Several clocks may run; one leads.

With Redis, leadership is a lease (SET NX PX 5 s, renewed every second by a compare-and-
pexpire script, so a clock that lost its lease cannot extend the next leader's); a clock that
is not the leader runs no jobs. Without Redis (single process) the one clock is the leader.

Every job runs at most once at a time and a run missed while the last one was busy is
dropped, not queued (``max_instances=1``, ``coalesce=True``); the sweep takes a bounded bite of
a backlog per pass, so no job waits behind another.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, SchedulerEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from config.loader import Config
from connectors.errors import ConnectorError
from worker.pipeline.actors import score_lead
from worker.pipeline.hygiene import check_interval, import_bounce_sources, run_checks
from worker.pipeline.nurture import enqueue_due_steps
from worker.pipeline.poll import import_inboxes, is_pulled, poll_source
from worker.pipeline.sla import enqueue_due_timers
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.alerts import check_alerts
from worker.runtime.app import App
from worker.runtime.broker import QUEUES, in_line
from worker.runtime.processes import HEARTBEAT_S
from worker.runtime.reload import on_reload
from worker.store.models import Heartbeat

log = logging.getLogger("leadwerk.clock")

LEASE_MS = 5000
SWEEP_EVERY_S = 5
DEFAULT_POLL_EVERY = timedelta(seconds=60)

# Extend the lease only if this clock still holds it: one atomic step in Redis. A GET then a
# PEXPIRE could extend a lease that expired and was taken by another clock in between.
_EXTEND_IF_MINE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0
"""


def lease_key(app: App) -> str:
    return f"leadwerk-{app.settings.redis_namespace}:clock-leader"


class Leadership:
    def __init__(self, app: App, lease_ms: int = LEASE_MS) -> None:
        self.app = app
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.lease_ms = lease_ms
        self._client = None
        if app.settings.redis_url:
            import redis

            self._client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
            self._extend = self._client.register_script(_EXTEND_IF_MINE)
        self.key = lease_key(app)
        self.leading = self._client is None

    def renew(self) -> bool:
        if self._client is None:
            return True
        try:
            taken = self._client.set(self.key, self.identity, nx=True, px=self.lease_ms)
            self.leading = bool(
                taken or self._extend(keys=[self.key], args=[self.identity, self.lease_ms])
            )
        except Exception as exc:  # Redis away: stop leading rather than risk two leaders
            log.warning("clock lost Redis (%s); not leading", exc)
            self.leading = False
        return self.leading

    def resign(self) -> None:
        """Give the lease up when this clock stops, so a standby leads at its next renewal
        instead of after the lease runs out."""
        if self._client is None or not self.leading:
            return
        try:
            if self._client.get(self.key) == self.identity.encode():
                self._client.delete(self.key)
        except Exception as exc:  # the lease then simply runs out
            log.warning("clock could not give up the lead (%s)", exc)
        self.leading = False


def clock_leader(app: App) -> str | None:
    """Which clock leads now (``host:pid:...``), as the lease in Redis says; without Redis,
    the single process's own clock. None when no clock holds the lease."""
    if not app.settings.redis_url:
        return "single-process mode: the clock of `leadwerk run`"
    import redis

    client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
    try:
        holder = client.get(lease_key(app))
    except redis.RedisError:
        return None
    finally:
        client.close()
    return holder.decode() if holder else None


def heartbeat(app: App, process: str, kind: str) -> None:
    """This process is alive, with the rule set it has in force."""
    now = datetime.now(UTC)
    rules = {"rules_version": str(app.config.ruleset.version), "rules_hash": app.config.hash}
    with app.store.session() as session:
        insert = (postgresql.insert if app.store.dialect == "postgresql" else sqlite.insert)(
            Heartbeat
        )
        session.execute(
            insert.values(process=process, kind=kind, seen_at=now, **rules).on_conflict_do_update(
                index_elements=["process"], set_={"seen_at": now, **rules}
            )
        )


def forget_heartbeat(app: App, process: str) -> None:
    """A process that stops cleanly takes its heartbeat back: status lists only the living
    and those that died without a word."""
    with app.store.session() as session:
        session.execute(delete(Heartbeat).where(Heartbeat.process == process))


def _when_leading(leader: Leadership, job: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        if not leader.leading:
            return
        try:
            job()
        except ConnectorError as exc:
            log.warning("%s", exc)
        except Exception:
            log.exception("clock job failed")

    return run


def sync_poll_jobs(
    scheduler: BaseScheduler, app: App, leader: Leadership, config: Config | None = None
) -> None:
    """One poll job per pulled source of ``config``, at its ``poll_every``: added for a new
    source, removed with its source, rescheduled when ``poll_every`` changed."""
    config = config or app.config
    wanted = {
        f"poll:{name}": (name, source.poll_every or DEFAULT_POLL_EVERY)
        for name, source in config.sources.items()
        if is_pulled(source)
    }
    for job in scheduler.get_jobs():
        if job.id.startswith("poll:") and job.id not in wanted:
            job.remove()
            log.info("source %s no longer polled", job.id.removeprefix("poll:"))
    for job_id, (name, every) in wanted.items():
        job = scheduler.get_job(job_id)
        if job is None:
            scheduler.add_job(
                _when_leading(leader, lambda n=name: poll_source(app.store, app.config, n)),
                "interval",
                seconds=every.total_seconds(),
                id=job_id,
                next_run_time=datetime.now(UTC),
            )
        elif job.trigger.interval != every:
            job.reschedule("interval", seconds=every.total_seconds())
            log.info("source %s now polled every %s", name, every)


def sweep_once(app: App) -> None:
    """One pass of the sweep: a bounded bite of what is due and not already enqueued."""
    settings = app.settings
    enqueue(
        find_pending(
            app.store,
            datetime.now(UTC),
            older_than=timedelta(seconds=SWEEP_EVERY_S),
            send_lease=timedelta(seconds=settings.send_lease),
            redelivery=timedelta(seconds=settings.redelivery_after),
            limit=settings.sweep_limit,
            busy=[queue for queue in QUEUES if in_line(score_lead.broker, queue)],
        )
    )


def start_clock(app: App, background: bool) -> BaseScheduler:
    defaults = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler: BaseScheduler = (
        BackgroundScheduler(timezone="UTC", job_defaults=defaults)
        if background
        else BlockingScheduler(timezone="UTC", job_defaults=defaults)
    )
    leader = Leadership(app)

    scheduler.add_job(leader.renew, "interval", seconds=1, id="leader")
    scheduler.add_job(
        _when_leading(leader, lambda: sweep_once(app)),
        "interval",
        seconds=SWEEP_EVERY_S,
        id="sweep",
    )
    scheduler.add_job(
        _when_leading(leader, lambda: enqueue_due_timers(app.store, datetime.now(UTC))),
        "interval",
        seconds=5,
        id="sla",
    )
    scheduler.add_job(
        _when_leading(leader, lambda: enqueue_due_steps(app.store, app.config, datetime.now(UTC))),
        "interval",
        seconds=5,
        id="nurture",
    )
    scheduler.add_job(
        _when_leading(leader, lambda: import_inboxes(app.store, app.config)),
        "interval",
        seconds=10,
        id="inboxes",
    )
    scheduler.add_job(
        _when_leading(leader, lambda: check_alerts(app, datetime.now(UTC))),
        "interval",
        seconds=60,
        id="alerts",
        max_instances=1,
    )
    scheduler.add_job(
        _when_leading(leader, lambda: run_checks(app.store, app.config)),
        "interval",
        seconds=check_interval(app.config).total_seconds(),
        id="hygiene",
        max_instances=1,
    )
    if app.crm is not None and app.config.crm is not None:
        from worker.commands.crmsync import crm_tick

        scheduler.add_job(
            _when_leading(leader, lambda: crm_tick(app, read_back=False)),
            "interval",
            seconds=5,
            id="crm:sync",
        )
        scheduler.add_job(
            _when_leading(leader, lambda: crm_tick(app, read_back=True)),
            "interval",
            seconds=app.config.crm.poll_every.total_seconds(),
            id="crm:read_back",
        )
    if app.config.hygiene.bounce_sources:
        scheduler.add_job(
            _when_leading(
                leader, lambda: import_bounce_sources(app.store, app.config, datetime.now(UTC))
            ),
            "interval",
            seconds=60,
            id="bounces",
            max_instances=1,
        )
    scheduler.add_job(
        lambda: heartbeat(app, leader.identity, "clock"),
        "interval",
        seconds=HEARTBEAT_S,
        id="heartbeat",
        next_run_time=datetime.now(UTC),
    )
    sync_poll_jobs(scheduler, app, leader)
    forget = on_reload(lambda config: sync_poll_jobs(scheduler, app, leader, config))

    def stopped(_event: SchedulerEvent) -> None:
        forget()
        leader.resign()
        try:
            forget_heartbeat(app, leader.identity)
        except Exception as exc:
            log.warning("clock heartbeat not removed: %s", type(exc).__name__)

    scheduler.add_listener(stopped, EVENT_SCHEDULER_SHUTDOWN)
    leader.renew()
    log.info("clock started (%s)", "leader" if leader.leading else "standby")
    scheduler.start()
    return scheduler
