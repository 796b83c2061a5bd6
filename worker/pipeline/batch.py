"""Storing a batch of records with a handful of statements, however large the batch.

Per batch: one SELECT for the keys already taken in, one for the contacts already known
(locked ``FOR UPDATE`` on PostgreSQL, in e-mail order, so that two writers merging fields
into one contact do not lose each other's fields), then ``INSERT ... ON CONFLICT DO NOTHING
RETURNING`` for new contacts and for the events. A record that a concurrent writer stored
between the SELECT and the INSERT (a webhook's re-delivery, the same file imported twice at
once) is simply not returned by the INSERT and counts as a duplicate: never a second event,
never an error. On SQLite every write transaction holds the database from its first
statement (``BEGIN IMMEDIATE``), so there is no such race there.

A lone record on PostgreSQL (a webhook delivery, above all) takes one statement instead, with
the same outcome (see :func:`_store_one_statement`); :func:`store_alone` runs it with no
transaction around it, in one round trip.

The statements are built once per database, with named parameters: SQLAlchemy keeps the cache
key of a statement object, so each execution finds the compiled SQL without building and
hashing the statement again, and psycopg prepares the unchanging SQL on the server.

Quarantined records are known by a key too (the record's own id, else a hash of its raw
data): a bad record that arrives again (a re-imported file, a re-delivered webhook) is not
listed twice while the first entry is still open.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Executable,
    Table,
    Text,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from connectors.sources.base import RawRecord
from rules.contact import email_domain
from worker.pipeline.prepare import Prepared, json_safe
from worker.store.bulk import packed, unpacked
from worker.store.db import Store
from worker.store.models import CONTACTS, EVENTS, QUARANTINE

# PostgreSQL's deadlock and serialization failures: the transaction is rolled back whole
# and may simply be run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})

# The columns of the rows that store_batch inserts, in this order.
_CONTACT_COLUMNS = (
    "email",
    "email_domain",
    "fields",
    "source",
    "stage",
    "created_at",
    "updated_at",
)
_EVENT_COLUMNS = (
    "contact_id",
    "source",
    "record_key",
    "type",
    "attrs",
    "raw",
    "occurred_at",
    "received_at",
    "status",
    "attempts",
)


@dataclass(frozen=True)
class Bad:
    """A record to quarantine, with why and where."""

    record: RawRecord
    reason: str
    field: str | None
    file: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class _Statements:
    """One database's statements. Parameters: ``known_keys`` :source, :keys; ``lock_contacts``
    :emails; ``open_quarantined`` :source, :keys. The inserts of new contacts and events
    take their rows as one JSON :document (see :func:`_insert_new`)."""

    postgresql: bool
    # The value of a list parameter (:keys, :emails): JSON text on PostgreSQL.
    texts: Callable[[list[str]], Any]
    known_keys: Executable
    lock_contacts: Executable
    insert_contacts: Executable
    insert_events: Executable
    open_quarantined: Executable
    insert_quarantined: Executable


def _postgresql_statements() -> _Statements:
    def texts(name: str) -> Any:
        # A list of keys or e-mails as one JSON text, unpacked by PostgreSQL: psycopg quotes
        # the strings of an array parameter one by one in Python (9 ms for 2,000 keys, the
        # JSON text 1.6 ms). One parameter however many values, one prepared statement.
        return func.jsonb_array_elements_text(cast(bindparam(name, type_=Text), postgresql.JSONB))

    def among(column_: Any, name: str) -> Any:
        return column_ == any_(func.array(select(texts(name)).scalar_subquery()))

    # The known keys as one index probe per key: each key looked up in a ``LATERAL``
    # subquery with ``LIMIT 1``, which the planner cannot turn into a join. Before the events
    # table has statistics (a fresh database, a first big import), ``IN (...)``, ``= ANY`` and
    # ``EXISTS`` are all planned as a scan of every event of the source, tested against every
    # key: 40-400 ms per batch of 500 at 20-100k events, against 3 ms.
    wanted = texts("keys").table_valued("key").render_derived()
    hit = (
        select(literal(1).label("hit"))
        .where(EVENTS.c.source == bindparam("source"), EVENTS.c.record_key == wanted.c.key)
        .limit(1)
        .lateral()
    )
    return _Statements(
        postgresql=True,
        texts=lambda values: orjson.dumps(values).decode(),
        known_keys=select(wanted.c.key).select_from(wanted.join(hit, true())),
        lock_contacts=_lock_contacts(among(CONTACTS.c.email, "emails")),
        insert_contacts=_unpacked_insert(
            "postgresql", CONTACTS, _CONTACT_COLUMNS, ["email"], "email"
        ),
        insert_events=_unpacked_insert(
            "postgresql", EVENTS, _EVENT_COLUMNS, ["source", "record_key"], "record_key"
        ),
        open_quarantined=_open_quarantined(among(QUARANTINE.c.record_key, "keys")),
        insert_quarantined=postgresql.insert(QUARANTINE).on_conflict_do_nothing(),
    )


def _sqlite_statements() -> _Statements:
    return _Statements(
        postgresql=False,
        texts=list,
        known_keys=select(EVENTS.c.record_key).where(
            EVENTS.c.source == bindparam("source"),
            EVENTS.c.record_key.in_(bindparam("keys", expanding=True)),
        ),
        lock_contacts=_lock_contacts(CONTACTS.c.email.in_(bindparam("emails", expanding=True))),
        insert_contacts=_unpacked_insert("sqlite", CONTACTS, _CONTACT_COLUMNS, ["email"], "email"),
        insert_events=_unpacked_insert(
            "sqlite", EVENTS, _EVENT_COLUMNS, ["source", "record_key"], "record_key"
        ),
        open_quarantined=_open_quarantined(
            QUARANTINE.c.record_key.in_(bindparam("keys", expanding=True))
        ),
        insert_quarantined=sqlite.insert(QUARANTINE).on_conflict_do_nothing(),
    )


def _unpacked_insert(
    dialect: str, table: Table, names: tuple[str, ...], unique: list[str], key: str
) -> Executable:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id, <key>`` of the rows in the JSON
    :document (see ``worker.store.bulk``): one short statement, where a ``VALUES`` list is
    5,000 parameters (on PostgreSQL, arrays of JSON escaped element by element: 66 ms per 500
    events; this: 20-30 ms)."""
    rows = unpacked(dialect, table, names)
    # ``WHERE true``: SQLite would read the ON of ON CONFLICT as a join's after a bare SELECT.
    chosen = select(*[rows.c[name] for name in names]).where(true())
    dml = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return (
        dml.from_select(list(names), chosen)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(table.c.id, table.c[key])
    )


def _lock_contacts(among: Any) -> Executable:
    return (
        select(CONTACTS.c.id, CONTACTS.c.email, CONTACTS.c.fields)
        .where(among)
        .order_by(CONTACTS.c.email)
        .with_for_update()  # PostgreSQL only; SQLite already holds the whole database
    )


def _open_quarantined(among: Any) -> Executable:
    return select(QUARANTINE.c.record_key).where(
        QUARANTINE.c.source == bindparam("source"), QUARANTINE.c.status == "open", among
    )


def _store_one_statement() -> Executable:
    """The events row of one record and the upsert of its contact, as one PostgreSQL
    statement; returns the new event's id, or no row for a duplicate.

    The contact is inserted only if the record's key is not taken yet (so that a re-delivery
    leaves the contact as it is); a known contact gets the record's fields merged over its own
    by ``ON CONFLICT DO UPDATE``, which locks the newest version of the row and merges into it,
    however recently a concurrent writer committed it: no writer loses another's fields. Its
    ``updated_at`` changes only when the merge changes its fields. The event is inserted with
    ``ON CONFLICT DO NOTHING``: the same record stored by a concurrent writer (committed after
    the key was checked, or still in its transaction, which the insert waits for) makes it a
    duplicate, never an error."""
    taken = exists().where(
        EVENTS.c.source == bindparam("source"), EVENTS.c.record_key == bindparam("record_key")
    )
    new_contact = select(
        bindparam("email", type_=CONTACTS.c.email.type),
        bindparam("email_domain", type_=CONTACTS.c.email_domain.type),
        bindparam("fields", type_=CONTACTS.c.fields.type),
        bindparam("source", type_=CONTACTS.c.source.type),
        literal("lead", CONTACTS.c.stage.type),
        bindparam("now", type_=CONTACTS.c.created_at.type),
        bindparam("now", type_=CONTACTS.c.updated_at.type),
    ).where(~taken)
    insert_contact = postgresql.insert(CONTACTS).from_select(_CONTACT_COLUMNS, new_contact)
    merged = CONTACTS.c.fields.op("||", return_type=postgresql.JSONB)(
        insert_contact.excluded.fields
    )
    contact = (
        insert_contact.on_conflict_do_update(
            index_elements=[CONTACTS.c.email],
            set_={
                "fields": merged,
                "updated_at": case(
                    (merged == CONTACTS.c.fields, CONTACTS.c.updated_at),
                    else_=insert_contact.excluded.updated_at,
                ),
            },
        )
        .returning(CONTACTS.c.id)
        .cte("contact")
    )
    event = select(
        contact.c.id,
        bindparam("source", type_=EVENTS.c.source.type),
        bindparam("record_key", type_=EVENTS.c.record_key.type),
        bindparam("type", type_=EVENTS.c.type.type),
        bindparam("attrs", type_=EVENTS.c.attrs.type),
        bindparam("raw", type_=EVENTS.c.raw.type),
        bindparam("occurred_at", type_=EVENTS.c.occurred_at.type),
        bindparam("now", type_=EVENTS.c.received_at.type),
        literal("pending", EVENTS.c.status.type),
        literal(0, EVENTS.c.attempts.type),
    )
    return (
        postgresql.insert(EVENTS)
        .add_cte(contact)
        .from_select(_EVENT_COLUMNS, event)
        .on_conflict_do_nothing(index_elements=["source", "record_key"])
        .returning(EVENTS.c.id)
    )


_POSTGRESQL = _postgresql_statements()
_SQLITE = _sqlite_statements()
_STORE_ONE = _store_one_statement()
_UPDATE_FIELDS = (
    update(CONTACTS)
    .where(CONTACTS.c.id == bindparam("contact_id"))
    .values(fields=bindparam("new_fields"), updated_at=bindparam("changed_at"))
)


def _statements(session: Session) -> _Statements:
    return _POSTGRESQL if session.get_bind().dialect.name == "postgresql" else _SQLITE


def _insert_new(
    session: Session,
    statement: Executable,
    table: Table,
    names: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> list[tuple[Any, Any]]:
    """Insert ``rows`` (of ``table``'s columns ``names``) except those whose unique columns
    are taken; returns (id, key) of the rows inserted. The whole batch travels as one JSON
    document."""
    if not rows:
        return []
    connection = session.connection()
    data = packed(connection.dialect, table, names, rows)
    return [tuple(row) for row in connection.execute(statement, {"document": data})]


def store_batch(
    session: Session, source: str, items: Sequence[Prepared], now: datetime
) -> list[int | None]:
    """Store the events of ``items`` and upsert their contacts; returns, per item, the new
    event's id, or None for a duplicate (a key stored before, earlier in the batch, or by
    a concurrent writer)."""
    results: list[int | None] = [None] * len(items)
    first: dict[str, int] = {}
    for index, prepared in enumerate(items):
        first.setdefault(prepared.key, index)
    if not first:
        return results
    statements = _statements(session)
    if statements.postgresql and len(first) == 1:
        index = next(iter(first.values()))
        results[index] = _store_one(session.connection(), source, items[index], now)
        return results
    known = set(
        session.scalars(
            statements.known_keys, {"source": source, "keys": statements.texts(list(first))}
        )
    )
    fresh = [index for key, index in first.items() if key not in known]
    if not fresh:
        return results
    fields: dict[str, dict[str, Any]] = {}
    for index in fresh:
        contact = items[index].contact
        fields.setdefault(contact["email"], {}).update(contact)
    contact_ids = _upsert_contacts(session, statements, source, fields, now)
    rows = []
    for index in fresh:
        prepared = items[index]
        rows.append(
            {
                "contact_id": contact_ids[prepared.contact["email"]],
                "source": source,
                "record_key": prepared.key,
                "type": str(prepared.event.get("type")),
                "attrs": prepared.event,
                "raw": prepared.raw,
                "occurred_at": prepared.occurred_at,
                "received_at": now,
                "status": "pending",
                "attempts": 0,
            }
        )
    created = _insert_new(session, statements.insert_events, EVENTS, _EVENT_COLUMNS, rows)
    inserted = {key: event_id for event_id, key in created}
    for index in fresh:
        results[index] = inserted.get(items[index].key)
    return results


def store_alone(store: Store, source: str, prepared: Prepared, now: datetime) -> int | None:
    """Store one record in a transaction of its own, on PostgreSQL; returns the new event's
    id, or None for a duplicate, as :func:`store_batch` does.

    Its one statement is atomic by itself, so it runs in autocommit: the delivery costs one
    round trip to the database, not ``BEGIN``, the statement and ``COMMIT``. When it returns,
    the record is committed."""
    with store.autocommit() as connection:
        return _store_one(connection, source, prepared, now)


def _store_one(
    connection: Connection, source: str, prepared: Prepared, now: datetime
) -> int | None:
    fields = prepared.contact
    email = fields["email"]
    parameters = {
        "source": source,
        "record_key": prepared.key,
        "email": email,
        "email_domain": email_domain(email),
        "fields": fields,
        "type": str(prepared.event.get("type")),
        "attrs": prepared.event,
        "raw": prepared.raw,
        "occurred_at": prepared.occurred_at,
        "now": now,
    }
    event_id: int | None = connection.execute(_STORE_ONE, parameters).scalar()
    return event_id


def _upsert_contacts(
    session: Session,
    statements: _Statements,
    source: str,
    fields: dict[str, dict[str, Any]],
    now: datetime,
) -> dict[str, int]:
    """Contact id per e-mail: created with ``fields``, or the known contact with ``fields``
    merged over what it had (a later record's values win, as they are newer)."""
    emails = sorted(fields)
    known = _lock_known(session, statements, emails)
    new = [email for email in emails if email not in known]
    ids: dict[str, int] = {}
    if new:
        rows = [
            {
                "email": email,
                "email_domain": email_domain(email),
                "fields": fields[email],
                "source": source,
                "stage": "lead",
                "created_at": now,
                "updated_at": now,
            }
            for email in new
        ]
        created = _insert_new(session, statements.insert_contacts, CONTACTS, _CONTACT_COLUMNS, rows)
        ids.update({email: contact_id for contact_id, email in created})
        raced = [email for email in new if email not in ids]  # created meanwhile elsewhere
        if raced:
            known.update(_lock_known(session, statements, raced))
    changes = []
    for email, (contact_id, stored) in known.items():
        ids[email] = contact_id
        merged = {**stored, **fields[email]}
        if merged != stored:
            changes.append({"contact_id": contact_id, "new_fields": merged, "changed_at": now})
    if changes:
        session.execute(_UPDATE_FIELDS, changes)
    return ids


def _lock_known(
    session: Session, statements: _Statements, emails: list[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    if not emails:
        return {}
    rows = session.execute(statements.lock_contacts, {"emails": statements.texts(emails)})
    return {email: (contact_id, stored or {}) for contact_id, email, stored in rows}


def quarantine_key(record: RawRecord) -> str:
    """The record's own id, else a hash of its raw data: the same bad record twice is one
    quarantine entry."""
    if record.record_id:
        return f"id:{record.record_id}"[:200]
    canonical = json.dumps(record.data, sort_keys=True, default=str, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def store_quarantined(session: Session, source: str, bad: Sequence[Bad]) -> int:
    """Add quarantine entries for ``bad``, except those already open under the same key;
    returns how many were added."""
    if not bad:
        return 0
    statements = _statements(session)
    keyed = [(entry.key or quarantine_key(entry.record), entry) for entry in bad]
    open_keys = set(
        session.scalars(
            statements.open_quarantined,
            {"source": source, "keys": statements.texts(list({key for key, _ in keyed}))},
        )
    )
    rows = []
    for key, entry in keyed:
        if key in open_keys:
            continue
        open_keys.add(key)
        rows.append(
            {
                "source": source,
                "record_key": key,
                "record_id": entry.record.record_id,
                "row": entry.record.row,
                "file": entry.file,
                "field": entry.field,
                "reason": entry.reason,
                "raw": json_safe(entry.record.data),
                "status": "open",
            }
        )
    if not rows:
        return 0
    # A concurrent writer may have quarantined the same record meanwhile: the partial unique
    # index on open entries refuses the twin, and the insert skips it.
    result = session.execute(statements.insert_quarantined, rows)
    return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(rows)


def is_transient(error: OperationalError) -> bool:
    """A deadlock or serialization failure on PostgreSQL: run the transaction again."""
    return getattr(error.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES
