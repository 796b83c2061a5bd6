"""SLA clocks: reminder and breach timers of each assignment, in the store

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_timers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("fire_at", worker.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", worker.store.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("fired_at", worker.store.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assignment_id", "kind", name="uq_sla_timers_assignment_kind"),
    )
    with op.batch_alter_table("sla_timers", schema=None) as batch_op:
        batch_op.create_index("ix_sla_timers_due", ["fired_at", "fire_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_timers", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_timers_due")
    op.drop_table("sla_timers")
