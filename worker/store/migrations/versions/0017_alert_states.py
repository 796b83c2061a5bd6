"""alert_states: what each alert was at its last check, so that it speaks once per episode

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UtcDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("firing", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("episode", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("checked_at", UtcDateTime(), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("alert_states")
