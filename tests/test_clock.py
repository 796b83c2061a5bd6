"""The clock: several may run, exactly one leads; heartbeats show who is alive."""

from __future__ import annotations

import time

import redis
from sqlalchemy import select

from tests.pipeline_helpers import running
from tests.redis_namespace import own_namespace
from worker.runtime.clock import LEASE_MS, Leadership, heartbeat
from worker.store.models import Heartbeat


def test_of_two_clocks_on_one_redis_exactly_one_leads_and_the_other_takes_over(
    make_settings, redis_url: str
) -> None:
    with (
        own_namespace(redis_url) as namespace,
        running(make_settings(redis_url=redis_url, redis_namespace=namespace)) as leadwerk,
    ):
        first, second = Leadership(leadwerk.app), Leadership(leadwerk.app)
        assert first.renew() is True
        assert second.renew() is False
        # renewing keeps the lease with the leader
        assert first.renew() is True and second.renew() is False
        # When the leader stops renewing (it died), its lease runs out and the other leads
        redis.Redis.from_url(redis_url).pexpire(first.key, 1)
        time.sleep(0.05)
        assert second.renew() is True
        assert first.renew() is False
        assert LEASE_MS == 5000


def test_heartbeats_are_upserted_per_process(make_settings, database_url: str) -> None:
    with running(make_settings(database_url=database_url)) as leadwerk:
        heartbeat(leadwerk.app, "host:1", "worker")
        heartbeat(leadwerk.app, "host:1", "worker")
        heartbeat(leadwerk.app, "host:2", "clock")
        with leadwerk.app.store.session() as session:
            rows = sorted((h.process, h.kind) for h in session.scalars(select(Heartbeat)))
    assert rows == [("host:1", "worker"), ("host:2", "clock")]
