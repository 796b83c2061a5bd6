"""Many rows into one table in one statement: each row gets its own id back, in row order, and
the columns a row leaves out take the defaults SQLAlchemy's own insert would give them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from worker.store.bulk import insert_ids
from worker.store.db import Store
from worker.store.models import CONTACTS, MESSAGES

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
