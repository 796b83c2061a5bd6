"""Why messages wait: the delivery outage of each channel, read from the outbox rows.

Every failed send leaves its reason and times on its row (``error``, ``first_failed_at``,
``retry_at``), so any process (``leadwerk status`` on another machine) can name the cause
without asking the workers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from worker.pipeline.notify import CHANNEL_NAMES
from worker.store.db import Store
from worker.store.models import Message


def delivery_outages(store: Store) -> list[dict[str, Any]]:
    """Per channel with messages waiting out a retry: since when sends fail, the latest
    reason, how many wait and when the next attempt is due."""
    waiting = (Message.status == "pending", Message.first_failed_at.is_not(None))
    outages = []
    with store.session() as session:
        rows = session.execute(
            select(
                Message.channel,
                func.count(),
                func.min(Message.first_failed_at),
                func.min(Message.retry_at),
            )
            .where(*waiting)
            .group_by(Message.channel)
            .order_by(Message.channel)
        ).all()
        for channel, count, since, next_attempt in rows:
            latest = session.scalar(
                select(Message.error)
                .where(*waiting, Message.channel == channel)
                .order_by(Message.claimed_at.desc(), Message.id.desc())
                .limit(1)
            )
            outages.append(
                {
                    "channel": channel,
                    "since": since,
                    "error": latest,
                    "waiting": count,
                    "next_attempt": next_attempt,
                }
            )
    return outages


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%H:%M:%S} UTC"


def render_outage(outage: dict[str, Any]) -> str:
    """``e-mail: failing since 14:02:11 UTC: SMTP server 127.0.0.1:2525 unreachable
    (connection refused); 17 messages waiting, next attempt 14:03:40 UTC``"""
    channel = CHANNEL_NAMES.get(outage["channel"], outage["channel"])
    count = outage["waiting"]
    return (
        f"{channel}: failing since {_clock(outage['since'])}: {outage['error']}; "
        f"{count} message{'s' if count != 1 else ''} waiting, "
        f"next attempt {_clock(outage['next_attempt'])}"
    )
