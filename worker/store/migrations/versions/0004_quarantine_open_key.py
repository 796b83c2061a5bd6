"""quarantine: one open entry per source and record key, enforced by the database

A bad record that arrives again (re-poll, re-delivered webhook, re-imported file) is reported
again but listed once; the partial unique index makes that hold under concurrent writers.
Open duplicates from before are marked ``superseded`` first.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    op.execute(
        "UPDATE quarantine SET status = 'superseded' WHERE status = 'open' "
        "AND record_key IS NOT NULL AND id NOT IN (SELECT MIN(id) FROM quarantine "
        "WHERE status = 'open' AND record_key IS NOT NULL GROUP BY source, record_key)"
    )
    op.create_index(
        "uq_quarantine_open_key",
        "quarantine",
        ["source", "record_key"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("uq_quarantine_open_key", table_name="quarantine")
