"""The clock: APScheduler 3 that only enqueues. Several clocks may run; one leads.

With Redis, leadership is a lease (SET NX PX 5 s, renewed every second); a clock that is not
the leader runs no jobs. Without Redis (single process) the one clock is the leader.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.dialects import postgresql, sqlite

from connectors.errors import ConnectorError
from worker.pipeline.poll import import_inboxes, is_pulled, poll_source
from worker.pipeline.sla import enqueue_due_timers
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.app import App
from worker.store.models import Heartbeat

log = logging.getLogger("leadwerk.clock")

LEASE_MS = 5000


class Leadership:
    def __init__(self, app: App) -> None:
        self.app = app
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._client = None
        if app.settings.redis_url:
            import redis

            self._client = redis.Redis.from_url(app.settings.redis_url, socket_timeout=2)
        self.key = f"leadwerk-{app.settings.redis_namespace}:clock-leader"
        self.leading = self._client is None

    def renew(self) -> bool:
        if self._client is None:
            return True
        try:
            if self._client.set(self.key, self.identity, nx=True, px=LEASE_MS):
                self.leading = True
            elif self._client.get(self.key) == self.identity.encode():
                self._client.pexpire(self.key, LEASE_MS)
                self.leading = True
            else:
                self.leading = False
        except Exception as exc:  # Redis away: stop leading rather than risk two leaders
            log.warning("clock lost Redis (%s); not leading", exc)
            self.leading = False
        return self.leading


def heartbeat(app: App, process: str, kind: str) -> None:
    now = datetime.now(UTC)
    with app.store.session() as session:
        insert = (postgresql.insert if app.store.dialect == "postgresql" else sqlite.insert)(
            Heartbeat
        )
        session.execute(
            insert.values(process=process, kind=kind, seen_at=now).on_conflict_do_update(
                index_elements=["process"], set_={"seen_at": now}
            )
        )


def start_clock(app: App, background: bool) -> BaseScheduler:
    scheduler: BaseScheduler = (
        BackgroundScheduler(timezone="UTC") if background else BlockingScheduler(timezone="UTC")
    )
    leader = Leadership(app)
    lock = threading.Lock()

    def leading(job):  # type: ignore[no-untyped-def]
        def run() -> None:
            if not leader.leading:
                return
            with lock:
                try:
                    job()
                except ConnectorError as exc:
                    log.warning("%s", exc)
                except Exception:
                    log.exception("clock job failed")

        return run

    def sweep() -> None:
        # Older than a few seconds: fresh work is already on its way through the queue.
        lease = timedelta(seconds=app.settings.send_lease)
        enqueue(
            find_pending(
                app.store, datetime.now(UTC), older_than=timedelta(seconds=5), send_lease=lease
            )
        )

    scheduler.add_job(leader.renew, "interval", seconds=1, id="leader", max_instances=1)
    scheduler.add_job(leading(sweep), "interval", seconds=5, id="sweep", max_instances=1)
    scheduler.add_job(
        leading(lambda: enqueue_due_timers(app.store, datetime.now(UTC))),
        "interval",
        seconds=5,
        id="sla",
        max_instances=1,
    )
    scheduler.add_job(
        leading(lambda: import_inboxes(app.store, app.config)),
        "interval",
        seconds=10,
        id="inboxes",
        max_instances=1,
    )
    scheduler.add_job(
        lambda: heartbeat(app, leader.identity, "clock"),
        "interval",
        seconds=10,
        id="heartbeat",
        max_instances=1,
    )
    if app.crm is not None and app.config.crm is not None:
        from worker.commands.crmsync import crm_tick

        scheduler.add_job(
            leading(lambda: crm_tick(app, read_back=False)),
            "interval",
            seconds=5,
            id="crm:sync",
            max_instances=1,
        )
        scheduler.add_job(
            leading(lambda: crm_tick(app, read_back=True)),
            "interval",
            seconds=app.config.crm.poll_every.total_seconds(),
            id="crm:read_back",
            max_instances=1,
        )
    for name, source in app.config.sources.items():
        if not is_pulled(source):
            continue
        every = (source.poll_every or timedelta(seconds=60)).total_seconds()
        scheduler.add_job(
            leading(lambda n=name: poll_source(app.store, app.config, n)),
            "interval",
            seconds=every,
            id=f"poll:{name}",
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
    leader.renew()
    log.info("clock started (%s)", "leader" if leader.leading else "standby")
    scheduler.start()
    return scheduler
