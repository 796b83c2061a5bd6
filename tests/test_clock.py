"""The clock: several may run, exactly one leads; heartbeats show who is alive."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import select

from tests.pipeline_helpers import running
from tests.redis_namespace import own_namespace
from tests.servers.jsonapi import JsonApiServer
from worker.runtime.clock import LEASE_MS, Leadership, heartbeat, start_clock
from worker.runtime.reload import ConfigReloader
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


def test_a_clock_whose_lease_ran_out_cannot_extend_the_next_leaders_lease(
    make_settings, redis_url: str
) -> None:
    with (
        own_namespace(redis_url) as namespace,
        running(make_settings(redis_url=redis_url, redis_namespace=namespace)) as leadwerk,
    ):
        client = redis.Redis.from_url(redis_url)
        old, new = Leadership(leadwerk.app, lease_ms=60_000), Leadership(leadwerk.app)
        assert old.renew() is True
        # The old leader stops renewing (a long pause) and its lease runs out
        client.pexpire(old.key, 1)
        while client.exists(old.key):
            time.sleep(0.01)
        assert new.renew() is True
        # When it wakes up, it renews: the lease stays the new leader's, not extended
        assert old.renew() is False
        assert client.get(new.key) == new.identity.encode()
        assert client.pttl(new.key) <= new.lease_ms
        assert new.renew() is True


SOURCES_WITH_FORMS = """
  - name: website-forms
    kind: http_json
    url: {url}
    poll_every: {every}
    cursor: {{param: since, field: submitted_at}}
    records: data
    event: {{type: form, form: "$.form_id"}}
    map: {{email: "$.fields.email", first_name: "$.fields.first_name"}}
"""


def test_reloading_sources_adds_reschedules_and_removes_poll_jobs(
    make_settings, config_dir: Path, tmp_path: Path
) -> None:
    sources = config_dir / "sources.yaml"
    original = sources.read_text(encoding="utf-8")
    with (
        JsonApiServer([]) as forms,
        running(make_settings(inbox_dir=tmp_path / "inbox")) as leadwerk,
    ):
        clock = start_clock(leadwerk.app, background=True)
        reloader = ConfigReloader(leadwerk.app)
        try:
            assert clock.get_job("poll:website-forms") is None
            # A pulled source is added: it gets its poll job, and is polled
            sources.write_text(
                original + SOURCES_WITH_FORMS.format(url=forms.url, every="30s"), encoding="utf-8"
            )
            assert reloader.reload("sources.yaml changed") is True
            job = clock.get_job("poll:website-forms")
            assert job is not None and job.trigger.interval == timedelta(seconds=30)
            deadline = time.monotonic() + 15
            while not forms.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert forms.requests, "the added source was never polled"
            # Its poll_every changes: the job follows
            sources.write_text(
                original + SOURCES_WITH_FORMS.format(url=forms.url, every="2m"), encoding="utf-8"
            )
            assert reloader.reload("sources.yaml changed") is True
            job = clock.get_job("poll:website-forms")
            assert job is not None and job.trigger.interval == timedelta(minutes=2)
            # It is removed: so is its job
            sources.write_text(original, encoding="utf-8")
            assert reloader.reload("sources.yaml changed") is True
            assert clock.get_job("poll:website-forms") is None
        finally:
            clock.shutdown(wait=False)
