"""The web process never blocks its event loop: a request that waits for a row lock in the
store waits in the thread pool, and every other request of the process is answered meanwhile.
/healthz says the process is alive and nothing more; /readyz says whether the store and the
broker answer, without ever showing an error text."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from config.settings import Settings
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.sla_helpers import add_mql, write_config
from tests.source_helpers import (
    EBOOK_SECRET,
    HOOK_SOURCES,
    as_body,
    sign_hex,
    web_server,
    write_sources,
)
from tests.web_links import MAIL_TEAM, assignments_of
from worker.pipeline.route import route_contact
from worker.runtime.app import init_app
from worker.store.db import Store
from worker.web.accept import sign_accept

SECRET = "accept-links-secret-for-tests"
T = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
LOCK_WAIT_DEADLINE = 30.0  # seconds to see the accept queue behind the lock; not a measurement


def waiting_for_a_lock(admin: psycopg.Connection[tuple[object, ...]], holder: int) -> bool:
    """Whether some session of the store waits for a lock the ``holder`` session holds."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (holder,)
    ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def settings(
    config_dir: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> Settings:
    write_config(config_dir, team=MAIL_TEAM)
    write_sources(config_dir, HOOK_SOURCES)
    return make_settings(
        database_url=postgres_url, accept_secret=SECRET, env={"EBOOK_HOOK_SECRET": EBOOK_SECRET}
    )


def test_a_webhook_is_answered_while_an_accept_waits_for_a_row_lock(
    settings: Settings, postgres_url: str
) -> None:
    with running(settings) as leadwerk, web_server(leadwerk.app) as url:
        app = leadwerk.app
        lead = add_mql(app.store, 1, T)
        route_contact(app.store, app.config, lead, T)
        [assignment] = assignments_of(app, lead)
        token = sign_accept(app.settings, assignment.public_id or "", assignment.rep)
        body = as_body({"email": "eva.mueller@bigcorp.de", "asset": "crm-guide"})

        # Given another connection holds the assignment's row locked
        with (
            psycopg.connect(postgres_url) as locker,
            psycopg.connect(postgres_url, autocommit=True) as admin,
            ThreadPoolExecutor(1) as pool,
        ):
            locker.execute("SELECT id FROM assignments WHERE id = %s FOR UPDATE", (assignment.id,))
            # When the rep presses Accept, which has to wait for that lock
            accepting = pool.submit(httpx.post, f"{url}/accept/{token}", timeout=60)
            deadline = time.monotonic() + LOCK_WAIT_DEADLINE
            while not waiting_for_a_lock(admin, locker.info.backend_pid):
                assert time.monotonic() < deadline, "the accept never queued behind the lock"
                time.sleep(0.05)

            # Then a webhook to the same process is still answered, while the lock is held
            hook = httpx.post(
                f"{url}/hooks/ebooks",
                content=body,
                headers={"X-Signature-256": sign_hex(body)},
                timeout=10,
            )
            assert hook.status_code == 202, hook.text
            assert not accepting.done()
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

            # And once the lock is released, the accept goes through
            locker.commit()
            accepted = accepting.result(timeout=60)

    assert accepted.status_code == 200 and "accepted by" in accepted.text
    assert [a.status for a in assignments_of(app, lead)] == ["accepted"]


@pytest.fixture
def healthy(make_settings: Callable[..., Settings], config_dir: Path) -> Iterator[str]:
    write_config(config_dir, team=MAIL_TEAM)
    app = init_app(make_settings(accept_secret=SECRET))
    with web_server(app) as url:
        yield url
    app.close()


def test_healthz_and_readyz_say_ok_when_the_store_answers(healthy: str) -> None:
    live = httpx.get(f"{healthy}/healthz", timeout=10)
    ready = httpx.get(f"{healthy}/readyz", timeout=10)

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ok", "store": "up"})


def test_readyz_says_which_part_is_down_without_an_error_text_and_healthz_stays_ok(
    make_settings: Callable[..., Settings], config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store and a Redis that do not answer (nothing listens on port 1)
    write_config(config_dir, team=MAIL_TEAM)
    dead_store = "postgresql://leadwerk:hunter2@127.0.0.1:1/leadwerk"
    settings = make_settings(
        accept_secret=SECRET, database_url=dead_store, redis_url="redis://127.0.0.1:1/0"
    )
    app = init_app(settings, store=Store(dead_store, run_migrations=False))
    with web_server(app) as url:
        live = httpx.get(f"{url}/healthz", timeout=10)
        ready = httpx.get(f"{url}/readyz", timeout=10)

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "store": "down", "broker": "down"}
    app.close()
    # The details are in the web process's log, the store's password masked
    logged = [r.getMessage() for r in caplog.records if r.name == "leadwerk.web"]
    assert any("leadwerk:***@127.0.0.1:1/leadwerk does not answer" in line for line in logged)
    assert any("Redis does not answer" in line for line in logged)
    assert not any("hunter2" in line for line in logged)
