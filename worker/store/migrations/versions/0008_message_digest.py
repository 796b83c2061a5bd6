"""messages.digest_key: a new-lead message held for a digest names the digest's outbox key;
an index on (rep, created_at) counts the leads a person was told of lately

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest_key", sa.String(length=300), nullable=True))
        batch_op.create_index("ix_messages_digest_key", ["digest_key"], unique=False)
        batch_op.create_index("ix_messages_rep_created_at", ["rep", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_rep_created_at")
        batch_op.drop_index("ix_messages_digest_key")
        batch_op.drop_column("digest_key")
