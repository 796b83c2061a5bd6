"""The notification seam: one message out through one channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OutboundMessage:
    """A message recorded in the outbox before it is sent.

    ``key`` is the deterministic outbox key (lead, purpose, attempt); ``message_id`` is the
    RFC 5322 Message-ID used for e-mail, the same on a resend so clients collapse duplicates.
    For Slack, ``blocks`` holds Block Kit blocks and ``text`` the fallback text.
    """

    key: str
    channel: str  # "email" | "slack"
    to_address: str  # e-mail address, Slack user/channel id or webhook name
    to_name: str
    subject: str
    text: str
    html: str | None = None
    blocks: list[dict[str, Any]] | None = None
    message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What the channel answered: its own id for the message (Slack ts, SMTP queue id)."""

    remote_id: str | None = None


class Notifier:
    """Sends one message. Raises ``connectors.errors`` classes on failure."""

    channel: str = ""

    def send(self, message: OutboundMessage) -> SendResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Optional."""
