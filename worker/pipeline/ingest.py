"""Ingest: raw records → stored events and contacts, or quarantine. Nothing is dropped.

Each record gets an idempotency key (source + the record's own id, or a hash of its
normalised content), so re-polling, a webhook's re-delivery or a re-imported file adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.loader import Config
from connectors.sources.base import RawRecord, SourceConfig
from connectors.sources.mapping import map_record
from rules.contact import (
    STANDARD_FIELDS,
    FieldError,
    coerce_datetime,
    email_domain,
    mask_email,
    normalise_contact,
)
from worker.store.db import Store
from worker.store.models import Contact, Event, Quarantine

log = logging.getLogger("leadwerk.ingest")


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
    event_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass
class Prepared:
    key: str
    contact: dict[str, Any]
    event: dict[str, Any]
    occurred_at: datetime


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def record_key(
    source: str, record: RawRecord, contact: dict[str, Any], event: dict[str, Any]
) -> str:
    if record.record_id:
        return f"id:{record.record_id}"[:200]
    canonical = json.dumps({"c": contact, "e": event}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def prepare(config: Config, source: SourceConfig, record: RawRecord, now: datetime) -> Prepared:
    """Map and normalise one record; raises :class:`FieldError` for a bad one."""
    if record.error:
        raise FieldError("record", record.error)
    contact_names = set(STANDARD_FIELDS) | set(config.custom_fields)
    raw_contact, event = map_record(
        record,
        kind=source.kind,
        field_map=source.map,
        event_spec=source.event,
        contact_fields=contact_names,
    )
    contact = normalise_contact(raw_contact, config.custom_fields)
    at = coerce_datetime("event.at", event.pop("at", None)) or record.occurred_at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    event = _json_safe(event)
    key = record_key(source.name, record, _json_safe(contact), event)
    return Prepared(key, contact, event, at)


def quarantine(
    session: Session,
    source: str,
    record: RawRecord,
    reason: str,
    field_name: str | None,
    file: str | None = None,
    key: str | None = None,
) -> None:
    session.add(
        Quarantine(
            source=source,
            record_key=key,
            record_id=record.record_id,
            row=record.row,
            file=file,
            field=field_name,
            reason=reason,
            raw=_json_safe(record.data),
        )
    )


def upsert_contact(
    session: Session, source: str, contact: dict[str, Any], now: datetime
) -> Contact:
    """The contact by e-mail: created, or its fields updated with what this record knows."""
    email = contact["email"]
    found = session.scalars(select(Contact).where(Contact.email == email)).first()
    if found is None:
        try:
            with session.begin_nested():
                found = Contact(
                    email=email,
                    email_domain=email_domain(email),
                    fields=_json_safe(contact),
                    source=source,
                    created_at=now,
                    updated_at=now,
                )
                session.add(found)
                session.flush()
            return found
        except IntegrityError:  # created meanwhile by another process
            found = session.scalars(select(Contact).where(Contact.email == email)).one()
    merged = {**found.fields, **_json_safe(contact)}
    if merged != found.fields:
        found.fields = merged
        found.updated_at = now
    return found


def store_prepared(
    session: Session, source: str, prepared: Prepared, raw: RawRecord, now: datetime
) -> int | None:
    """Insert the event (and upsert its contact); None when the key was already taken in."""
    exists = session.scalars(
        select(Event.id).where(Event.source == source, Event.record_key == prepared.key)
    ).first()
    if exists is not None:
        return None
    try:
        with session.begin_nested():
            contact = upsert_contact(session, source, prepared.contact, now)
            event = Event(
                contact_id=contact.id,
                source=source,
                record_key=prepared.key,
                type=str(prepared.event.get("type")),
                attrs=prepared.event,
                raw=_json_safe(raw.data),
                occurred_at=prepared.occurred_at,
                received_at=now,
                status="pending",
            )
            session.add(event)
            session.flush()
    except IntegrityError:
        return None  # the same record arrived concurrently: a duplicate
    return event.id


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
) -> IngestReport:
    """Take records in, in batches of one transaction each; returns what happened to each.

    ``on_batch(session)`` runs inside each batch's transaction (a pull source stores its
    cursor there, so the cursor never runs ahead of stored records).
    """
    now = now or datetime.now(UTC)
    report = IngestReport(source.name)
    batch: list[RawRecord] = []

    def flush() -> None:
        with store.session() as session:
            for record in batch:
                _one(session, record)
            if on_batch is not None:
                on_batch(session)
        batch.clear()

    def _one(session: Session, record: RawRecord) -> None:
        report.received += 1
        try:
            prepared = prepare(config, source, record, now)
        except FieldError as exc:
            reason = str(exc).split(": ", 1)[-1]
            quarantine(session, source.name, record, reason, exc.field, file)
            report.quarantined += 1
            report.problems.append(Problem(record.row, record.record_id, exc.field, reason))
            log.warning(
                "quarantined a record from %s (row %s): %s",
                source.name,
                record.row,
                f"{exc.field}: {reason}" if exc.field != "email" else "bad e-mail",
            )
            return
        event_id = store_prepared(session, source.name, prepared, record, now)
        if event_id is None:
            report.duplicates += 1
            return
        report.accepted += 1
        report.event_ids.append(event_id)
        log.info("accepted %s from %s", mask_email(prepared.contact["email"]), source.name)

    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            flush()
    if batch or on_batch is not None:
        flush()
    return report
