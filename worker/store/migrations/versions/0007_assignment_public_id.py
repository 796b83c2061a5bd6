"""assignments: an unguessable public id for links, and who accepted

Accept links named the assignment by its sequential id, so one link showed how to make the
next. They now carry ``public_id`` (random, 128 bits) instead; assignments made before this
revision get one here, and links mailed before it stop working (``leadwerk accept`` still
does). ``accepted_by`` records the rep who accepted: from the link, the Slack click or
``leadwerk accept --by``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("public_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("accepted_by", sa.String(100), nullable=True))
    connection = op.get_bind()
    assignments = sa.table("assignments", sa.column("id"), sa.column("public_id"))
    ids = connection.execute(sa.select(assignments.c.id)).scalars().all()
    for assignment_id in ids:
        connection.execute(
            assignments.update()
            .where(assignments.c.id == assignment_id)
            .values(public_id=secrets.token_urlsafe(16))
        )
    op.create_index("uq_assignments_public_id", "assignments", ["public_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_assignments_public_id", table_name="assignments")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("accepted_by")
        batch.drop_column("public_id")
