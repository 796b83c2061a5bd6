"""the CRM outbox, the contacts' CRM records and the CRM's account owners

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import JsonType, UtcDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("lead", sa.String(320), nullable=False),
        sa.Column("change", sa.String(20), nullable=False),
        sa.Column("payload", JsonType, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_at", UtcDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_crm_changes_status_id", "crm_changes", ["status", "id"])
    op.create_index("ix_crm_changes_contact_id", "crm_changes", ["contact_id"])
    op.create_table(
        "crm_links",
        sa.Column(
            "contact_id",
            sa.Integer(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("crm_id", sa.String(200), nullable=False),
        sa.Column("synced_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_crm_links_crm_id", "crm_links", ["crm_id"])
    op.create_table(
        "crm_accounts",
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("fetched_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("crm_accounts")
    op.drop_index("ix_crm_links_crm_id", table_name="crm_links")
    op.drop_table("crm_links")
    op.drop_index("ix_crm_changes_contact_id", table_name="crm_changes")
    op.drop_index("ix_crm_changes_status_id", table_name="crm_changes")
    op.drop_table("crm_changes")
