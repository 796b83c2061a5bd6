"""A large file's batches are stored two at a time on PostgreSQL: batches that write the same
contact or record key one after the other in file order, the others side by side, and the
report in file order whatever finishes first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from config.loader import load_config
from connectors.sources.files import read_export_bytes
from worker.pipeline.ingest import ingest_records, side_by_side
from worker.store.db import Store

FAIR = "messe-hannover-2026"
NOW = datetime(2026, 4, 21, 9, 30, tzinfo=UTC)
HEADER = "E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"


class Recorder:
    """Stores a batch by noting when it began and ended; a batch named in ``slow`` takes
    ``pause`` seconds, one named in ``fails`` raises."""

    def __init__(self, slow: Collection[str] = (), fails: Collection[str] = ()) -> None:
        self.slow, self.fails = slow, fails
        self.began: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.pause = 0.3
        self.lock = threading.Lock()

    def store(self, batch: tuple[str, set[str]]) -> str:
        name = batch[0]
        with self.lock:
            self.began[name] = time.monotonic()
        if name in self.slow:
            time.sleep(self.pause)
        if name in self.fails:
            raise RuntimeError(f"batch {name} failed")
        with self.lock:
            self.ended[name] = time.monotonic()
        return f"stored {name}"

    def overlapped(self, first: str, second: str) -> bool:
        return self.began[second] < self.ended[first]


def run(batches: list[tuple[str, set[str]]], recorder: Recorder) -> list[tuple[str, str]]:
    counted: list[tuple[str, str]] = []
    side_by_side(
        batches,
        lambda batch: batch[1],
        recorder.store,
        lambda batch, result: counted.append((batch[0], result)),
    )
    return counted


def test_batches_that_share_nothing_are_stored_at_once_and_counted_in_order() -> None:
    recorder = Recorder(slow={"a"})
    counted = run([("a", {"e:x"}), ("b", {"e:y"}), ("c", {"e:z"})], recorder)

    assert recorder.overlapped("a", "b")  # b was stored while a was still at it
    assert recorder.ended["b"] < recorder.ended["a"]
    assert counted == [("a", "stored a"), ("b", "stored b"), ("c", "stored c")]


def test_a_batch_waits_for_the_one_in_flight_that_writes_the_same_contact() -> None:
    recorder = Recorder(slow={"a"})
    counted = run([("a", {"e:x", "k:1"}), ("b", {"e:y", "e:x"}), ("c", {"k:2"})], recorder)

    assert not recorder.overlapped("a", "b")
    assert recorder.began["b"] >= recorder.ended["a"]
    assert [name for name, _ in counted] == ["a", "b", "c"]


def test_no_more_than_two_batches_are_in_flight() -> None:
    recorder = Recorder(slow={"a", "b"})
    run([("a", set()), ("b", set()), ("c", set())], recorder)

    assert recorder.overlapped("a", "b")
    assert recorder.began["c"] >= min(recorder.ended["a"], recorder.ended["b"])


def test_a_failed_batch_is_raised_after_the_ones_before_it_are_counted() -> None:
    recorder = Recorder(fails={"b"})
    counted: list[str] = []
    with pytest.raises(RuntimeError, match="batch b failed"):
        side_by_side(
            [("a", set()), ("b", set()), ("c", set()), ("d", set())],
            lambda batch: batch[1],
            recorder.store,
            lambda batch, _result: counted.append(batch[0]),
        )
    assert counted == ["a"]
    assert "d" not in recorder.began  # nothing more was started once b's failure was seen


def export(rows: int, gap: int) -> bytes:
    """A fair export in which every visitor is scanned twice, ``gap`` rows apart, the second
    time with another title and rating."""
    lines = [HEADER]
    for n in range(rows):
        person, second = n % gap + (n // (2 * gap)) * gap, (n // gap) % 2 == 1
        title = "Head of IT" if second else "Einkauf"
        rating = "hot" if second else "kalt"
        lines.append(
            f"besucher{person}@firma{person % 50}.de;Jörg;Müller{person};Firma {person % 50};"
            f"{title};0511 {4000000 + person};Deutschland;250;{rating};Halle {n % 7}"
        )
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def test_a_person_scanned_in_two_adjacent_batches_keeps_the_later_scan(
    make_settings: Callable[..., Any], postgres_url: str
) -> None:
    """Two batches in a row hold the same 500 people: the second waits for the first, so each
    contact has the second scan's fields and its two events in file order."""
    config = load_config(make_settings(database_url=postgres_url))
    store = Store(postgres_url)
    records = list(read_export_bytes(export(4000, 500), "scans.csv"))
    report = ingest_records(
        store, config, config.sources[FAIR], records, now=NOW, file="scans.csv", processes=2
    )
    with store.session() as session:
        contacts = session.execute(text("SELECT fields FROM contacts")).scalars().all()
        ratings = session.execute(
            text(
                "SELECT c.email, array_agg(e.raw ->> 'Bewertung' ORDER BY e.id) "
                "FROM events e JOIN contacts c ON c.id = e.contact_id GROUP BY c.email"
            )
        ).all()
    store.close()

    assert report.accepted == 4000 and report.duplicates == 0 and report.quarantined == 0
    assert len(contacts) == 2000
    assert {fields["title"] for fields in contacts} == {"Head of IT"}
    assert {tuple(scans) for _, scans in ratings} == {("kalt", "hot")}
