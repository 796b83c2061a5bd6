"""Many rows into one table in one statement: each row gets its own id back, in row order, and
the columns a row leaves out take the defaults SQLAlchemy's own insert would give them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, insert, select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect

from worker.store.bulk import among, insert_ids, insert_rows, update_rows
from worker.store.db import Store
from worker.store.models import CONTACTS, ENROLMENTS, MESSAGES, UtcDateTime

NOW = datetime(2026, 4, 21, 9, 30, tzinfo=UTC)


def test_each_row_gets_its_own_id_in_row_order_with_the_defaults_of_what_it_leaves_out(
    database_url: str,
) -> None:
    store = Store(database_url)
    with store.transaction() as connection:
        (contact_id,) = insert_ids(
            connection,
            CONTACTS,
            [
                {
                    "email": "eva@firma.de",
                    "email_domain": "firma.de",
                    "fields": {"first_name": "Eva", "tags": ["messe", 2026]},
                    "source": "messe",
                    "stage": "lead",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
        # Ids handed out in between must not shift which row gets which id.
        rows = [
            {
                "key": f"new-lead:{n}",
                "contact_id": contact_id,
                "purpose": "new_lead",
                "channel": "email",
                "recipient": f"rep{n}@firma.de",
                "message_id": f"<{n}@leadwerk>",
                "subject": f"Lead {n}: Schäfer & Söhne",
                "body_text": f'Zeile {n}\n"zitiert" \\ {"ü" * n}',
                "blocks": [{"type": "section", "n": n}] if n % 2 else None,
                "created_at": NOW + timedelta(minutes=n % 7),
            }
            for n in range(300)
        ]
        ids = insert_ids(connection, MESSAGES, rows)
        stored = {
            row.id: row
            for row in connection.execute(select(MESSAGES).where(MESSAGES.c.id.in_(ids)))
        }
        contact = connection.execute(select(CONTACTS)).one()

    assert len(set(ids)) == 300
    for message_id, row in zip(ids, rows, strict=True):
        message = stored[message_id]
        assert (message.key, message.subject, message.body_text, message.blocks) == (
            row["key"],
            row["subject"],
            row["body_text"],
            row["blocks"],
        )
        assert message.created_at.replace(tzinfo=UTC) == row["created_at"]
        # the defaults of columns the rows leave out
        assert (message.status, message.attempts, message.recipient_name) == ("pending", 0, "")
    assert contact.fields == {"first_name": "Eva", "tags": ["messe", 2026]}
    store.close()


def test_no_rows_insert_nothing(database_url: str) -> None:
    store = Store(database_url)
    with store.transaction() as connection:
        assert insert_ids(connection, MESSAGES, []) == []
    store.close()


def test_rows_are_stored_exactly_as_sqlalchemys_own_insert_stores_them(database_url: str) -> None:
    # SQLite compares dates as text: a stored date in another format would sort wrongly.
    store = Store(database_url)
    row = {
        "email": "jan@firma.de",
        "email_domain": "firma.de",
        "fields": {"name": "Jan \u00d6zdemir", "size": 1.5, "tags": [], "none": None},
        "source": "messe",
        "stage": "lead",
        "score": 42.0,
        "created_at": NOW,
        "updated_at": NOW.astimezone(timezone(timedelta(hours=2))),
    }
    raw = text(
        "SELECT fields, score, created_at, updated_at, unsubscribed_at FROM contacts "
        "WHERE email = :email"
    )
    with store.transaction() as connection:
        connection.execute(insert(CONTACTS), [row])
        insert_ids(connection, CONTACTS, [{**row, "email": "jan2@firma.de"}])
        own = connection.execute(raw, {"email": "jan@firma.de"}).one()
        bulk = connection.execute(raw, {"email": "jan2@firma.de"}).one()

    assert bulk == own
    store.close()


def test_rows_of_different_keys_are_stored_in_order_as_sqlalchemys_own_insert_stores_them(
    database_url: str,
) -> None:
    # Given a batch's enrolments, one leaving out its step (default 1) and its planned time
    store = Store(database_url)
    enrolments = [
        {"sequence": "ebook", "channel": "email", "step": 2, "planned_at": NOW},
        {"sequence": "fair", "channel": "phone"},
        {"sequence": "webinar", "channel": "email", "step": 3, "planned_at": NOW},
    ]
    columns = text(
        "SELECT contact_id, sequence, channel, step, planned_at, status, call_tasks "
        "FROM nurture_enrolments WHERE contact_id IN (:own, :bulk) ORDER BY id"
    )
    with store.transaction() as connection:
        own, bulk = insert_ids(
            connection,
            CONTACTS,
            [
                {"email": f"{name}@firma.de", "email_domain": "firma.de", "fields": {}}
                | {"source": "messe", "stage": "lead", "created_at": NOW, "updated_at": NOW}
                for name in ("own", "bulk")
            ],
        )
        # When SQLAlchemy stores them for one contact and insert_rows for another
        for enrolment in enrolments:
            connection.execute(insert(ENROLMENTS), {"contact_id": own, **enrolment})
        insert_rows(connection, ENROLMENTS, [{"contact_id": bulk, **e} for e in enrolments])
        stored = connection.execute(columns, {"own": own, "bulk": bulk}).all()
        # and among() finds rows by a list of ids as IN does
        found = connection.execute(
            select(CONTACTS.c.email).where(among(connection.dialect.name, CONTACTS.c.id, [bulk]))
        ).scalars()
        assert list(found) == ["bulk@firma.de"]

    # Then both are stored alike, in the order given, with the defaults of what a row left out
    mine = [row[1:] for row in stored if row.contact_id == own]
    theirs = [row[1:] for row in stored if row.contact_id == bulk]
    assert len(mine) == 3 and theirs == mine
    assert [(row.sequence, row.step) for row in stored if row.contact_id == bulk] == [
        ("ebook", 2),
        ("fair", 1),
        ("webinar", 3),
    ]
    store.close()


def test_many_rows_are_updated_in_one_go_and_a_row_given_twice_takes_its_later_values(
    database_url: str,
) -> None:
    store = Store(database_url)
    with store.transaction() as connection:
        ids = insert_ids(
            connection,
            CONTACTS,
            [
                {
                    "email": f"p{n}@firma.de",
                    "email_domain": "firma.de",
                    "fields": {},
                    "source": "messe",
                    "stage": "lead",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(4)
            ],
        )
        later = NOW + timedelta(hours=1)
        update_rows(
            connection,
            CONTACTS,
            "contact_id",
            [
                {"contact_id": ids[0], "stage": "mql", "fields": {"a": 1}, "updated_at": later},
                {"contact_id": ids[2], "stage": "mql", "fields": {"b": None}, "updated_at": later},
                {"contact_id": ids[0], "stage": "sal", "fields": {"a": 2}, "updated_at": later},
            ],
        )
        stored = {
            row.id: (row.stage, row.fields, row.updated_at.replace(tzinfo=UTC))
            for row in connection.execute(select(CONTACTS))
        }

    assert stored == {
        ids[0]: ("sal", {"a": 2}, later),
        ids[1]: ("lead", {}, NOW),
        ids[2]: ("mql", {"b": None}, later),
        ids[3]: ("lead", {}, NOW),
    }
    store.close()


def test_sqlite_keeps_utc_times_in_the_text_sqlalchemys_datetime_reads_and_writes() -> None:
    """UtcDateTime binds and reads SQLite's text in one call a value: the text must be the
    one SQLAlchemy's own DateTime would store (SQLite compares dates as text, and databases
    written before hold that text), and reading it gives the same aware UTC time."""
    sqlite = sqlite_dialect.dialect()
    own_bind = DateTime().dialect_impl(sqlite).bind_processor(sqlite)
    own_read = DateTime().dialect_impl(sqlite).result_processor(sqlite, None)
    utc = UtcDateTime()
    bind = utc.dialect_impl(sqlite).bind_processor(sqlite)
    read = utc.dialect_impl(sqlite).result_processor(sqlite, None)
    times = [
        NOW,
        NOW.replace(microsecond=7),
        datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
        NOW.astimezone(timezone(timedelta(hours=-9, minutes=-30))),
        datetime(2026, 4, 21, 9, 30),  # naive: taken as UTC
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        None,
    ]
    for at in times:
        stored = bind(at)
        assert stored == own_bind(utc.process_bind_param(at, sqlite)), at
        assert read(stored) == utc.process_result_value(own_read(stored), sqlite), at
        if at is not None:  # the same instant, in UTC
            assert read(stored) == (at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC))
            assert read(stored).tzinfo is UTC
    # What SQLite's own functions write reads the same way.
    for written in ("2026-04-21 09:30:00", "2026-04-21 09:30", "2026-04-21T09:30:00.5+02:00"):
        assert read(written) == utc.process_result_value(own_read(written), sqlite), written
