"""A large file is prepared by a pool of processes while its earlier batches are stored: what
is stored, quarantined and reported is what one process preparing record after record stores,
quarantines and reports; a pool process that dies leaves its work to the importing process."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from config.loader import load_config
from connectors.sources.base import RawRecord
from connectors.sources.files import read_export_bytes
from worker.pipeline.ingest import IngestReport, ingest_records, preparer
from worker.pipeline.poll import import_file
from worker.pipeline.prepare import (
    PARALLEL_FROM,
    PoolUse,
    json_safe,
    pool_size,
    prepared_batches,
)
from worker.store.db import Store

FAIR = "messe-hannover-2026"
NOW = datetime(2026, 4, 21, 9, 30, tzinfo=UTC)
HEADER = "E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"

needs_cores = pytest.mark.skipif(pool_size() < 2, reason="one core: imports use no pool here")


def export(rows: int) -> bytes:
    """A German fair export with what real ones hold: bad e-mails, rows cut short or one cell
    too long, words in the phone column, a row scanned twice, and people scanned at two booths
    (the later scan's fields win), many of them in different batches."""
    lines = [HEADER]
    for n in range(rows):
        person = n % (rows - 300)
        email = f"besucher{person}@firma{person % 97}.de"
        phone = "bitte nicht anrufen" if n % 250 == 3 else f"0511 {4000000 + n}"
        title = ["Geschäftsführer", "Einkauf", "Head of IT"][n % 3]
        cells = [email, "Jörg", f"Müller{n}", f"Firma {n % 97} GmbH", title, phone]
        cells += ["Deutschland", str(50 + n % 400), ["hot", "warm", "kalt"][n % 3], "Rückruf"]
        if n % 400 == 7:
            cells[0] = f"kein-at-{n}.de"
        if n % 1000 == 11:
            cells = cells[:4]
        if n % 1000 == 13:
            cells.append("Halle 4")
        lines.append(";".join(cells))
        if n % 700 == 5:
            lines.append(";".join(cells))  # the same badge scanned twice
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def stored(store: Store) -> dict[str, Any]:
    """Everything an import leaves in the store: the contacts, each with its events in the
    order they were stored (the order they are scored in), and the quarantine. On PostgreSQL
    a large file's batches are stored two at a time, so contacts of different batches may
    take their ids in either order."""
    with store.session() as session:

        def rows(sql: str) -> list[Any]:
            return [tuple(row) for row in session.execute(text(sql))]

        events: dict[str, list[Any]] = {}
        for email, *event in rows(
            "SELECT c.email, e.record_key, e.type, e.attrs, e.raw, e.occurred_at, e.status "
            "FROM events e JOIN contacts c ON c.id = e.contact_id ORDER BY e.id"
        ):
            events.setdefault(email, []).append(tuple(event))
        return {
            "events": events,
            "contacts": rows(
                "SELECT email, email_domain, fields, stage FROM contacts ORDER BY email"
            ),
            "quarantine": rows(
                "SELECT record_key, row, file, field, reason, raw FROM quarantine ORDER BY row"
            ),
        }


def summary(report: IngestReport) -> dict[str, Any]:
    return {**report.as_dict(), "events": len(report.event_ids)}


@needs_cores
def test_a_large_file_prepared_by_the_pool_is_stored_as_one_process_stores_it(
    make_settings: Callable[..., Any], database_url: str, second_database_url: str
) -> None:
    records = list(read_export_bytes(export(PARALLEL_FROM + 1500), "scans.csv"))
    outcomes = []
    for url, processes in ((database_url, 0), (second_database_url, 2)):
        config = load_config(make_settings(database_url=url))
        store = Store(url)
        use = PoolUse()
        report = ingest_records(
            store,
            config,
            config.sources[FAIR],
            records,
            now=NOW,
            file="scans.csv",
            batch_size=500,
            processes=processes,
            pool_use=use,
        )
        outcomes.append((summary(report), stored(store), use.pids))
        store.close()
    (alone, alone_stored, alone_pids), (pooled, pooled_stored, pool_pids) = outcomes

    assert alone_pids == {os.getpid()}
    assert len(pool_pids) >= 1 and os.getpid() not in pool_pids
    assert pooled == alone
    assert pooled_stored == alone_stored
    assert alone["quarantined"] >= 20 and alone["duplicates"] >= 8 and alone["warnings"]
    # people scanned twice are one contact each, with the later scan's fields
    assert len(alone_stored["contacts"]) < sum(map(len, alone_stored["events"].values()))


@needs_cores
def test_import_prepares_a_large_file_in_the_pool(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings()
    config, store = load_config(settings), Store(settings.database_url)
    path = tmp_path / "scans.csv"
    path.write_bytes(export(PARALLEL_FROM + 100))
    use = PoolUse()

    report = import_file(store, config, config.sources[FAIR], path, NOW, pool_use=use)

    assert report.received == PARALLEL_FROM + 100 + len(range(5, PARALLEL_FROM + 100, 700))
    assert use.pids and os.getpid() not in use.pids
    store.close()


def test_a_small_input_is_prepared_by_the_importing_process(
    make_settings: Callable[..., Any],
) -> None:
    config = load_config(make_settings())
    records = list(read_export_bytes(export(PARALLEL_FROM - 300), "scans.csv"))
    use = PoolUse()

    batches = list(
        prepared_batches(records, 500, preparer(config, config.sources[FAIR], NOW), 2, use)
    )

    assert use.pids == {os.getpid()}
    assert [len(batch.records) for batch in batches][-1] == len(records) % 500 or 500
    assert [batch.last for batch in batches] == [False] * (len(batches) - 1) + [True]


@needs_cores
def test_a_pool_process_killed_midway_leaves_the_rest_to_the_importing_process(
    make_settings: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(make_settings())
    prepare = preparer(config, config.sources[FAIR], NOW)
    records: list[RawRecord] = list(read_export_bytes(export(3 * PARALLEL_FROM), "scans.csv"))
    one_by_one = prepare.batch(records)
    use = PoolUse()
    results = []

    with caplog.at_level(logging.WARNING, logger="leadwerk.ingest"):
        for number, batch in enumerate(prepared_batches(records, 500, prepare, 2, use)):
            results.extend(batch.results)
            if number == 0:
                for pid in use.pids:
                    os.kill(pid, signal.SIGKILL)

    assert results == one_by_one
    assert os.getpid() in use.pids  # the batches after the kill were prepared here
    assert "the processes preparing records stopped; going on here" in caplog.text


def test_raw_data_is_stored_as_json_text_without_nul_characters() -> None:
    when = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
    raw = {
        "name": "Eva\u0000",
        "scanned": when,
        "answers": {1: ["a\u0000b", None, 2.5], "big": 2**70},
        "path\\u0000": "kept",
    }

    assert json_safe(raw) == {
        "name": "Eva",
        "scanned": "2026-11-03 09:30:00+00:00",
        "answers": {"1": ["ab", None, 2.5], "big": 2**70},
        "path\\u0000": "kept",
    }
    assert json_safe({"booth": "B12", "size": 200}) == {"booth": "B12", "size": 200}
