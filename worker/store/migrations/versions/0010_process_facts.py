"""what status reads about the processes: the rules each one runs, and refused reloads

A heartbeat carries the rule set its process has in force (scoring version and hash), so
``leadwerk status`` shows what runs rather than what lies on disk. A rule change that a
process refused (it did not load) is recorded with its time and first error.

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.models

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("heartbeats") as batch:
        batch.add_column(sa.Column("rules_version", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("rules_hash", sa.String(length=64), nullable=True))
    op.create_table(
        "config_reloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", worker.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("rules_version", sa.String(length=50), nullable=False),
        sa.Column("rules_hash", sa.String(length=64), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("first_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_config_reloads_at", "config_reloads", ["at"])


def downgrade() -> None:
    op.drop_index("ix_config_reloads_at", table_name="config_reloads")
    op.drop_table("config_reloads")
    with op.batch_alter_table("heartbeats") as batch:
        batch.drop_column("rules_hash")
        batch.drop_column("rules_version")
