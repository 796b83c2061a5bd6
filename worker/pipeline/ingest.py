"""Ingest: raw records → stored events and contacts, or quarantine. Nothing is dropped.

Each record gets an idempotency key (source + the record's own id, or a hash of its
normalised content), so re-polling, a webhook's re-delivery or a re-imported file adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from config.loader import Config
from connectors.sources.base import RawRecord, SourceConfig
from connectors.sources.mapping import RecordMapper
from rules.contact import (
    STANDARD_FIELDS,
    FieldError,
    bound_event,
    coerce_datetime,
    mask_phone,
    normalise_contact,
)
from worker.pipeline.batch import Bad, is_transient, store_alone, store_batch, store_quarantined
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


@dataclass
class Prepared:
    key: str
    contact: dict[str, Any]
    event: dict[str, Any]
    occurred_at: datetime
    # (field, why) for each value dropped from the contact; the lead is taken in without it.
    dropped: list[tuple[str, str]] = field(default_factory=list)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _json_safe(value: Any) -> Any:
    """The value as storable JSON: non-JSON types as text, and NUL characters removed
    (PostgreSQL refuses them in text and JSONB, and no lead needs one)."""
    # A flat dict of plain values (every CSV row) is JSON as it is: skip the round trip.
    if type(value) is dict and all(
        type(k) is str and type(v) in _PLAIN and not (type(v) is str and "\x00" in v)
        for k, v in value.items()
    ):
        return dict(value)
    return _without_nul(json.loads(json.dumps(value, default=str, ensure_ascii=False)))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def record_key(record: RawRecord, contact: dict[str, Any], event: dict[str, Any]) -> str:
    if record.record_id:
        return f"id:{record.record_id}"[:200]
    canonical = json.dumps({"c": contact, "e": event}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def record_mapper(config: Config, source: SourceConfig) -> RecordMapper:
    """The source's mapping, worked out once for all the records of an ingest."""
    return RecordMapper(
        kind=source.kind,
        field_map=source.map,
        event_spec=source.event,
        contact_fields=set(STANDARD_FIELDS) | set(config.custom_fields),
    )


def prepare(
    config: Config,
    source: SourceConfig,
    record: RawRecord,
    now: datetime,
    mapper: RecordMapper | None = None,
) -> Prepared:
    """Map and normalise one record; raises :class:`FieldError` for a bad one. ``mapper``
    is the source's :func:`record_mapper`, made once by a caller with many records."""
    if record.error:
        raise FieldError("record", record.error)
    raw_contact, event = (mapper or record_mapper(config, source))(record)
    contact = _json_safe(normalise_contact(raw_contact, config.custom_fields))
    at = coerce_datetime("event.at", event.pop("at", None)) or record.occurred_at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    event = _json_safe(bound_event(event))
    key = record_key(record, contact, event)
    return Prepared(key, contact, event, at, _dropped(raw_contact, contact))


def _dropped(raw: dict[str, Any], contact: dict[str, Any]) -> list[tuple[str, str]]:
    """Values given but not kept: a phone cell that holds no number (``bitte nicht
    anrufen``). The value is masked: the reason goes to logs and summaries."""
    phone = raw.get("phone")
    if "phone" in contact or phone is None or not str(phone).strip():
        return []
    return [("phone", f"not a phone number ({mask_phone(str(phone).strip())}); left out")]


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
    store_quarantined(session, source, [Bad(record, reason, field_name, file, key)], _json_safe)


def store_prepared(
    session: Session, source: str, prepared: Prepared, raw: RawRecord, now: datetime
) -> int | None:
    """Insert the event (and upsert its contact); None when the key was already taken in."""
    return store_batch(session, source, [(prepared, raw)], now, _json_safe)[0]


def ingest_records(
    store: Store,
    config: Config,
    source: SourceConfig,
    records: Iterable[RawRecord],
    *,
    now: datetime | None = None,
    file: str | None = None,
    batch_size: int = 500,
    on_batch: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Take records in, in batches of one transaction each; returns what happened to each.

    ``on_batch(session)`` runs inside each batch's transaction (a pull source stores its
    cursor there, so the cursor never runs ahead of stored records). ``on_progress(n)`` is
    told after each committed batch how many records have been taken in so far.
    """
    now = now or datetime.now(UTC)
    report = IngestReport(source.name)
    batch: list[RawRecord] = []
    mapper = record_mapper(config, source)

    def flush() -> None:
        # Mapping and validation happen before the transaction: on SQLite the transaction
        # holds the database, and webhooks should not wait for our CPU work.
        good: list[tuple[Prepared, RawRecord]] = []
        bad: list[Bad] = []
        for record in batch:
            try:
                good.append((prepare(config, source, record, now, mapper), record))
            except FieldError as exc:
                bad.append(Bad(record, str(exc).split(": ", 1)[-1], exc.field, file))
        # A lone good record (a webhook delivery) on PostgreSQL is one statement, which
        # needs no transaction around it.
        alone = len(good) == 1 and not bad and on_batch is None and store.dialect == "postgresql"

        def store_records() -> list[int | None]:
            if alone:
                prepared, raw = good[0]
                return [store_alone(store, source.name, prepared, raw, now, _json_safe)]
            with store.session() as session:
                event_ids = store_batch(session, source.name, good, now, _json_safe)
                store_quarantined(session, source.name, bad, _json_safe)
                if on_batch is not None:
                    on_batch(session)
            return event_ids

        event_ids = _deadlock_retry(source.name)(store_records)
        _count(report, event_ids, bad, good)
        batch.clear()
        if on_progress is not None:
            on_progress(report.received)

    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            flush()
    if batch or on_batch is not None:
        flush()
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
