"""list hygiene: bounce events, address states with their history, list states, stale flag

A bounce names the Message-ID it is about; the index on messages.message_id keeps matching
it from scanning the whole outbox.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_message_id", "messages", ["message_id"])
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("stale_since", UtcDateTime(), nullable=True))
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("origin", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status_code", sa.String(20), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=True),
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column(
            "message_id",
            sa.Integer(),
            sa.ForeignKey("messages.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("file", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_bounce_events_contact_id", "bounce_events", ["contact_id"])
    op.create_index("ix_bounce_events_kind_occurred", "bounce_events", ["kind", "occurred_at"])
    op.create_table(
        "address_states",
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("soft_in_row", sa.Integer(), nullable=False),
        sa.Column("last_soft_for", sa.String(300), nullable=True),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "address_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("from_state", sa.String(10), nullable=False),
        sa.Column("to_state", sa.String(10), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("bounce_events.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_address_changes_contact_id", "address_changes", ["contact_id"])
    op.create_table(
        "list_states",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        sa.Column("counts_from", UtcDateTime(), nullable=True),
        sa.Column("told", sa.String(20), nullable=True),
        sa.Column("resumed_by", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("list_states")
    op.drop_index("ix_address_changes_contact_id", table_name="address_changes")
    op.drop_table("address_changes")
    op.drop_table("address_states")
    op.drop_index("ix_bounce_events_kind_occurred", table_name="bounce_events")
    op.drop_index("ix_bounce_events_contact_id", table_name="bounce_events")
    op.drop_table("bounce_events")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("stale_since")
    op.drop_index("ix_messages_message_id", table_name="messages")
