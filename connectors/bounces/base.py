"""The one shape every delivery status report takes, whatever it came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class BounceReport:
    """What a DSN or an ESP event says about one recipient.

    ``kind`` is already classified (``hard``, ``soft``, ``policy``, ``delivered`` or
    ``unparseable``); ``key`` identifies the report so that it counts once however often it
    arrives; ``message_id`` is the Message-ID header of the mail we sent, where the report
    names it."""

    key: str
    origin: str
    kind: str
    recipient: str | None
    status: str | None = None
    message_id: str | None = None
    detail: str | None = None
    file: str | None = None
    occurred_at: datetime | None = None
