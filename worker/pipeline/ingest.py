"""Ingest: raw records → stored events and contacts, or quarantine. Nothing is dropped.

Each record gets an idempotency key (source + the record's own id, or a hash of its
normalised content), so re-polling, a webhook's re-delivery or a re-imported file adds nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from config.loader import Config
from connectors.sources.base import RawRecord, SourceConfig
from connectors.sources.mapping import RecordMapper
from rules.contact import STANDARD_FIELDS
from worker.pipeline.batch import (
    Bad,
    is_transient,
    quarantine_key,
    store_alone,
    store_batch,
    store_quarantined,
)
from worker.pipeline.prepare import (
    PoolUse,
    Prepared,
    PreparedBatch,
    Preparer,
    Refused,
    prepared_batches,
)
from worker.store.db import Store

log = logging.getLogger("leadwerk.ingest")

# A batch that hits a PostgreSQL deadlock is rolled back whole and run again, this often.
_ATTEMPTS = 3


def _deadlock_retry(source: str) -> Retrying:
    """Runs a batch again, at once, when PostgreSQL rolled it back for a deadlock."""

    def warn(_state: RetryCallState) -> None:
        log.warning("batch from %s hit a deadlock; running it again", source)

    return Retrying(
        stop=stop_after_attempt(_ATTEMPTS),
        retry=retry_if_exception(
            lambda exc: isinstance(exc, OperationalError) and is_transient(exc)
        ),
        before_sleep=warn,
        reraise=True,
    )


@dataclass
class Problem:
    row: int | None
    record_id: str | None
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "record_id": self.record_id,
            "field": self.field,
            "reason": self.reason,
        }


@dataclass
class IngestReport:
    source: str
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    problems: list[Problem] = field(default_factory=list)
    # Values left out of a lead that was taken in all the same (a phone that is no number).
    warnings: list[Problem] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)
    file: str | None = None
    error: str | None = None  # the whole file could not be read; nothing was taken in

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "file": self.file,
            "error": self.error,
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "problems": [p.as_dict() for p in self.problems],
            "warnings": [w.as_dict() for w in self.warnings],
        }


def record_mapper(config: Config, source: SourceConfig) -> RecordMapper:
    """The source's mapping, worked out once for all the records of an ingest."""
    return RecordMapper(
        kind=source.kind,
        field_map=source.map,
        event_spec=source.event,
        contact_fields=set(STANDARD_FIELDS) | set(config.custom_fields),
    )


def preparer(config: Config, source: SourceConfig, now: datetime) -> Preparer:
    """What prepares the source's records of an ingest at ``now``."""
    return Preparer(record_mapper(config, source), config.custom_fields, now)


def quarantine(
    session: Session,
    source: str,
    record: RawRecord,
    reason: str,
    field_name: str | None,
    file: str | None = None,
    key: str | None = None,
) -> None:
    """Quarantine one record (not again while the same record is still open there)."""
    store_quarantined(session, source, [Bad(record, reason, field_name, file, key)])


def store_prepared(session: Session, source: str, prepared: Prepared, now: datetime) -> int | None:
    """Insert the event (and upsert its contact); None when the key was already taken in."""
    return store_batch(session, source, [prepared], now)[0]


def ingest_records(
    store: Store,
    config: Config,
    source: SourceConfig,
    records: Iterable[RawRecord],
    *,
    now: datetime | None = None,
    file: str | None = None,
    batch_size: int = 500,
    on_batch: Callable[[Session], None] | None = None,
    on_last_batch: Callable[[Session], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    processes: int = 0,
    pool_use: PoolUse | None = None,
) -> IngestReport:
    """Take records in, in batches of one transaction each; returns what happened to each.

    ``on_batch(session)`` runs inside each batch's transaction, ``on_last_batch(session)``
    inside the last one's (a pull source stores its cursor there, so the cursor never runs
    ahead of stored records); with a hook and no records, one empty batch runs it.
    ``on_progress(n)`` is told after each committed batch how many records have been taken
    in so far. With ``processes``, a large input is prepared by that many processes while
    earlier batches are stored (:func:`~worker.pipeline.prepare.prepared_batches`;
    ``pool_use`` learns by which), and on PostgreSQL without hooks its batches are stored two
    at a time (:func:`side_by_side`).
    """
    now = now or datetime.now(UTC)
    report = IngestReport(source.name)

    def split(batch: PreparedBatch) -> _Split:
        split = _Split(batch.last)
        for record, result in zip(batch.records, batch.results, strict=True):
            if isinstance(result, Refused):
                split.bad.append(Bad(record, result.reason, result.field, file))
            else:
                split.good.append((result, record))
        return split

    def store_records(batch: _Split) -> list[int | None]:
        # Mapping and validation happened before the transaction: on SQLite the transaction
        # holds the database, and webhooks should not wait for our CPU work.
        good, bad = batch.good, batch.bad
        last_hook = on_last_batch if batch.last else None
        # A lone good record (a webhook delivery) on PostgreSQL is one statement, which
        # needs no transaction around it.
        if (
            len(good) == 1
            and not bad
            and on_batch is None
            and last_hook is None
            and store.dialect == "postgresql"
        ):
            return [store_alone(store, source.name, good[0][0], now)]

        def transaction() -> list[int | None]:
            with store.session() as session:
                event_ids = store_batch(session, source.name, [p for p, _ in good], now)
                store_quarantined(session, source.name, bad)
                if on_batch is not None:
                    on_batch(session)
                if last_hook is not None:
                    last_hook(session)
            return event_ids

        return _deadlock_retry(source.name)(transaction)

    def counted(batch: _Split, event_ids: list[int | None]) -> None:
        _count(report, event_ids, batch.bad, batch.good)
        if on_progress is not None:
            on_progress(report.received)

    prepare = preparer(config, source, now)
    batches = map(split, prepared_batches(records, batch_size, prepare, processes, pool_use))
    if processes and store.dialect == "postgresql" and on_batch is None and on_last_batch is None:
        # A large file: while one batch waits for the server, the next one's statements are
        # built (100,000 rows, five pairs: 11.5-13.8 s against 12.2-15.2 s).
        side_by_side(batches, _touched, store_records, counted)
    else:
        flushed = False
        for batch in batches:
            counted(batch, store_records(batch))
            flushed = True
        if not flushed and (on_batch is not None or on_last_batch is not None):
            empty = _Split(last=True)
            counted(empty, store_records(empty))
    if report.received:
        log.info(
            "%s: %d received, %d accepted, %d duplicates, %d quarantined",
            source.name,
            report.received,
            report.accepted,
            report.duplicates,
            report.quarantined,
        )
    return report


@dataclass
class _Split:
    """A prepared batch's records: the good ones with what they became, and the bad ones."""

    last: bool
    good: list[tuple[Prepared, RawRecord]] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)


def _touched(batch: _Split) -> set[str]:
    """The contacts (by e-mail) and the record keys a batch writes."""
    touched = {"q:" + quarantine_key(entry.record) for entry in batch.bad}
    for prepared, _ in batch.good:
        touched.add("e:" + prepared.contact["email"])
        touched.add("k:" + prepared.key)
    return touched


T = TypeVar("T")
R = TypeVar("R")


def side_by_side(
    batches: Iterable[T],
    touched: Callable[[T], set[str]],
    store: Callable[[T], R],
    counted: Callable[[T, R], None],
    width: int = 2,
) -> None:
    """``store`` each of ``batches``, up to ``width`` at a time in threads of their own (each
    batch its own transaction), and give ``counted`` each result in the batches' order. A batch
    that ``touched`` shares something with (a contact, a record key) waits until the batches in
    flight that have it are stored: what two batches both write is written in their order, as
    one after the other would (a person scanned at two booths keeps the later scan's fields, a
    row twice in a file is stored once, from its first place). A failure is raised once the
    batches before it are counted."""
    in_flight: deque[tuple[T, set[str], Future[R]]] = deque()
    with ThreadPoolExecutor(width, thread_name_prefix="leadwerk-store") as pool:
        for batch in batches:
            its = touched(batch)
            while in_flight and (
                len(in_flight) >= width or any(its & theirs for _, theirs, _ in in_flight)
            ):
                done, _, future = in_flight.popleft()
                counted(done, future.result())
            in_flight.append((batch, its, pool.submit(store, batch)))
        while in_flight:
            done, _, future = in_flight.popleft()
            counted(done, future.result())


def _count(
    report: IngestReport,
    event_ids: list[int | None],
    bad: list[Bad],
    good: list[tuple[Prepared, RawRecord]],
) -> None:
    """Add a committed batch to the report (never before: a rolled-back try counts nothing)."""
    report.received += len(event_ids) + len(bad)
    for event_id, (prepared, record) in zip(event_ids, good, strict=True):
        if event_id is None:
            report.duplicates += 1
            continue
        report.accepted += 1
        report.event_ids.append(event_id)
        for name, why in prepared.dropped:
            report.warnings.append(Problem(record.row, record.record_id, name, why))
    for entry in bad:
        record = entry.record
        report.quarantined += 1
        report.problems.append(Problem(record.row, record.record_id, entry.field, entry.reason))
    if bad:
        first = bad[0].record
        where = f"row {first.row}" if first.row else f"record {first.record_id or '-'}"
        what = "bad e-mail" if bad[0].field == "email" else f"{bad[0].field}: {bad[0].reason}"
        log.warning(
            "quarantined %d record(s) from %s; first: %s, %s", len(bad), report.source, where, what
        )
