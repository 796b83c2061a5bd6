"""nurture runtime: enrolments with their durable schedule, refusals, paused sequences, and
the time a contact unsubscribed

Revision ID: 0014
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UtcDateTime

revision = "0014"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("unsubscribed_at", UtcDateTime(), nullable=True))
    op.create_table(
        "nurture_enrolments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("planned_at", UtcDateTime(), nullable=True),
        sa.Column("next_due_at", UtcDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.Column("call_tasks", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", UtcDateTime(), nullable=True),
        sa.Column("paused_at", UtcDateTime(), nullable=True),
        sa.Column("enrolled_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Room in each page for the row's next version: claiming a step rewrites the row
        # without touching its indexes (a HOT update).
        op.execute("ALTER TABLE nurture_enrolments SET (fillfactor = 80)")
    op.create_index("ix_nurture_enrolments_contact_id", "nurture_enrolments", ["contact_id"])
    op.create_index("ix_nurture_enrolments_due", "nurture_enrolments", ["status", "next_due_at"])
    op.create_index("ix_nurture_enrolments_sequence", "nurture_enrolments", ["sequence", "status"])
    op.create_table(
        "nurture_refusals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "event_id", sa.Integer(), sa.ForeignKey("events.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("sequence", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_nurture_refusals_contact_id", "nurture_refusals", ["contact_id"])
    op.create_index("ix_nurture_refusals_sequence", "nurture_refusals", ["sequence"])
    op.create_table(
        "nurture_pauses",
        sa.Column("sequence", sa.String(200), primary_key=True),
        sa.Column("paused_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nurture_pauses")
    op.drop_index("ix_nurture_refusals_sequence", table_name="nurture_refusals")
    op.drop_index("ix_nurture_refusals_contact_id", table_name="nurture_refusals")
    op.drop_table("nurture_refusals")
    op.drop_index("ix_nurture_enrolments_sequence", table_name="nurture_enrolments")
    op.drop_index("ix_nurture_enrolments_due", table_name="nurture_enrolments")
    op.drop_index("ix_nurture_enrolments_contact_id", table_name="nurture_enrolments")
    op.drop_table("nurture_enrolments")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("unsubscribed_at")
