"""Webhook deliveries that meet other writers of the same lead: the same record delivered
several times at once, records of one person at once, a re-delivery after newer records, and
on PostgreSQL a delivery that has to wait for another writer's open transaction. What the
sender is told, and what the store then holds, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from config.settings import Settings
from connectors.sources.webhook import WebhookConfig, record_from_webhook
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.source_helpers import (
    EBOOK_SECRET,
    HOOK_SOURCES,
    as_body,
    contact,
    counts,
    leadwerk,
    sign_hex,
    web_server,
    write_sources,
)
from worker.pipeline.ingest import ingest_records
from worker.runtime.app import App, init_app
from worker.runtime.broker import setup_broker
from worker.store.db import Store
from worker.web.hooks import receive_webhook

ENV = {"EBOOK_HOOK_SECRET": EBOOK_SECRET}
EMAIL = "eva.mueller@bigcorp.de"
T = TypeVar("T")


@dataclass
class Hooks:
    app: App
    url: str
    config_dir: Path
    database_url: str

    def ebook(self, payload: dict[str, object]) -> httpx.Response:
        body = as_body(payload)
        return httpx.post(
            f"{self.url}/hooks/ebooks",
            content=body,
            headers={"X-Signature-256": sign_hex(body)},
            timeout=60,
        )


@contextmanager
def serving(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Hooks]:
    """Leadwerk with the e-book webhooks on a free port; the in-process broker and no worker,
    so that the store holds only what the deliveries did."""
    write_sources(config_dir, HOOK_SOURCES)
    settings = make_settings(database_url=database_url, env=ENV)
    app = init_app(settings)
    broker = setup_broker(settings)
    try:
        with web_server(app) as url:
            yield Hooks(app, url, config_dir, database_url)
    finally:
        broker.close()
        app.close()


@pytest.fixture
def hooks(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Hooks]:
    with serving(config_dir, make_settings, database_url) as served:
        yield served


@pytest.fixture
def pg_hooks(
    config_dir: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> Iterator[Hooks]:
    with serving(config_dir, make_settings, postgres_url) as served:
        yield served


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run ``calls`` in threads of their own, released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def answers(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(response.status_code, response.json()["status"]) for response in responses]


def test_the_same_delivery_arriving_eight_times_at_once_is_stored_once(hooks: Hooks) -> None:
    download = {"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"}

    responses = at_once([lambda: hooks.ebook(download)] * 8)

    assert sorted(answers(responses)) == [(202, "accepted")] + [(202, "duplicate")] * 7
    assert counts(hooks.app.store) == {"contacts": 1, "events": 1, "quarantined": 0}


def test_downloads_of_one_person_arriving_at_once_merge_into_one_contact(hooks: Hooks) -> None:
    downloads = [
        {"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"},
        {"email": EMAIL, "company": "BigCorp", "asset": "pricing"},
        {"email": EMAIL, "asset": "roi-calculator"},
        {"email": EMAIL, "asset": "case-study"},
    ]

    responses = at_once([lambda d=d: hooks.ebook(d) for d in downloads])  # type: ignore[misc]

    assert answers(responses) == [(202, "accepted")] * 4
    stored = contact(hooks.app.store, EMAIL)
    assert stored is not None
    assert stored.fields == {"email": EMAIL, "first_name": "Eva", "company": "BigCorp"}
    assert counts(hooks.app.store) == {"contacts": 1, "events": 4, "quarantined": 0}


def test_a_redelivery_leaves_the_contact_as_newer_downloads_left_it(hooks: Hooks) -> None:
    first = {"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"}
    newer = {"email": EMAIL, "first_name": "Evelyn", "asset": "pricing"}

    responses = [hooks.ebook(first), hooks.ebook(newer), hooks.ebook(first)]

    assert answers(responses) == [(202, "accepted"), (202, "accepted"), (202, "duplicate")]
    stored = contact(hooks.app.store, EMAIL)
    assert stored is not None and stored.fields["first_name"] == "Evelyn"
    assert counts(hooks.app.store)["events"] == 2


def test_a_contact_counts_as_updated_only_when_a_download_changes_its_fields(
    hooks: Hooks,
) -> None:
    created = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def deliver(payload: dict[str, object], at: datetime) -> str:
        body = as_body(payload)
        headers = {"X-Signature-256": sign_hex(body)}
        return receive_webhook(hooks.app, "ebooks", headers, body, at).outcome

    outcomes = [
        deliver({"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"}, created),
        deliver({"email": EMAIL, "first_name": "Eva", "asset": "pricing"}, created + timedelta(1)),
    ]
    unchanged = contact(hooks.app.store, EMAIL)
    changed_at = created + timedelta(2)
    outcomes.append(deliver({"email": EMAIL, "company": "BigCorp", "asset": "roi"}, changed_at))
    changed = contact(hooks.app.store, EMAIL)

    assert outcomes == ["accepted"] * 3
    assert unchanged is not None and changed is not None
    assert (unchanged.created_at, unchanged.updated_at) == (created, created)
    assert (changed.created_at, changed.updated_at) == (created, changed_at)
    assert changed.fields == {"email": EMAIL, "first_name": "Eva", "company": "BigCorp"}


def test_downloads_quarantined_for_a_wrong_mapping_are_taken_in_by_retry(hooks: Hooks) -> None:
    # The sender calls the field "mail"; the mapping expects "email".
    downloads = [
        {"mail": EMAIL, "first_name": "Eva", "asset": "crm-guide"},
        {"mail": EMAIL, "company": "BigCorp", "asset": "pricing"},
    ]
    refused = answers([hooks.ebook(download) for download in downloads])
    sources = hooks.config_dir / "sources.yaml"
    sources.write_text(sources.read_text().replace('email: "$.email"', 'email: "$.mail"', 1))

    retried = leadwerk(
        hooks.config_dir,
        "quarantine",
        "retry",
        env={**ENV, "LEADWERK_DATABASE_URL": hooks.database_url},
    )

    assert refused == [(400, "bad_request")] * 2
    assert retried.exit_code == 0, retried.output
    assert "2 record(s) taken in, 0 still quarantined" in retried.stdout
    stored = contact(hooks.app.store, EMAIL)
    assert stored is not None
    assert stored.fields == {"email": EMAIL, "first_name": "Eva", "company": "BigCorp"}
    assert counts(hooks.app.store) == {"contacts": 1, "events": 2, "quarantined": 0}


# --- PostgreSQL: a delivery that waits for another writer's transaction ---------------------


def waiting_for_a_lock(store: Store) -> None:
    """Return once a connection of the test's database waits for a lock (a delivery that
    waits for the open transaction of another writer)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(6000):
        with store.engine.connect() as connection:  # a fresh snapshot of the activity
            if connection.execute(query).scalar():
                return
        threading.Event().wait(0.01)
    raise AssertionError("no delivery ever waited for the other writer")


def deliver_meanwhile(
    hooks: Hooks, payload: dict[str, object], *taken_in: dict[str, object]
) -> httpx.Response:
    """Deliver ``payload`` while another writer (a pull, a file import) takes ``taken_in`` in,
    in a transaction that commits only once the delivery waits for it; the answer."""
    source = hooks.app.config.sources["ebooks"]
    assert isinstance(source, WebhookConfig)
    records = [record_from_webhook(source, data) for data in taken_in]
    answer: list[Future[httpx.Response]] = []
    with ThreadPoolExecutor(1) as pool:

        def meanwhile(_session: Session) -> None:
            answer.append(pool.submit(hooks.ebook, payload))
            waiting_for_a_lock(hooks.app.store)

        ingest_records(hooks.app.store, hooks.app.config, source, records, on_batch=meanwhile)
        return answer[0].result()


def test_a_delivery_whose_twin_another_writer_is_storing_answers_duplicate(
    pg_hooks: Hooks,
) -> None:
    download = {"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"}

    answer = deliver_meanwhile(pg_hooks, download, download)

    assert (answer.status_code, answer.json()["status"]) == (202, "duplicate")
    assert counts(pg_hooks.app.store) == {"contacts": 1, "events": 1, "quarantined": 0}


def test_a_delivery_merges_its_fields_over_a_new_contact_another_writer_is_creating(
    pg_hooks: Hooks,
) -> None:
    answer = deliver_meanwhile(
        pg_hooks,
        {"email": EMAIL, "company": "BigCorp", "asset": "pricing"},
        {"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"},
    )

    assert (answer.status_code, answer.json()["status"]) == (202, "accepted")
    stored = contact(pg_hooks.app.store, EMAIL)
    assert stored is not None
    assert stored.fields == {"email": EMAIL, "first_name": "Eva", "company": "BigCorp"}
    assert counts(pg_hooks.app.store) == {"contacts": 1, "events": 2, "quarantined": 0}


def test_a_delivery_merges_its_fields_over_what_another_writer_just_changed(
    pg_hooks: Hooks,
) -> None:
    pg_hooks.ebook({"email": EMAIL, "first_name": "Eva", "asset": "crm-guide"})

    answer = deliver_meanwhile(
        pg_hooks,
        {"email": EMAIL, "first_name": "Evelyn", "asset": "roi-calculator"},
        # two records: the known contact is locked and updated by the batch's statements
        {"email": EMAIL, "company": "BigCorp", "asset": "pricing"},
        {"email": "tom@acme.de", "first_name": "Tom", "asset": "pricing"},
    )

    assert (answer.status_code, answer.json()["status"]) == (202, "accepted")
    stored = contact(pg_hooks.app.store, EMAIL)
    assert stored is not None
    assert stored.fields == {"email": EMAIL, "first_name": "Evelyn", "company": "BigCorp"}
    assert counts(pg_hooks.app.store) == {"contacts": 2, "events": 4, "quarantined": 0}
