"""messages.first_failed_at; enqueued_at on events, contacts and messages

A message's retries are owned by its row: ``first_failed_at`` says since when it fails (the give-up
is a duration, ``retry_for``). ``enqueued_at`` marks what the sweep already put on the queue, so a
backlog is enqueued once, not on every pass.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import worker.store.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _column(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, worker.store.models.UtcDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(_column("first_failed_at"))
        batch_op.add_column(_column("enqueued_at"))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(_column("enqueued_at"))
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(_column("enqueued_at"))


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
        batch_op.drop_column("first_failed_at")
