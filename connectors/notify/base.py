"""The notification seam: one message out through one channel."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


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


class Notifier(ABC):
    """Sends one message through one channel.

    :meth:`send` raises ``connectors.errors`` classes, translated from the vendor's errors at
    this boundary: :class:`~connectors.errors.RetriableError` for a passing fault,
    :class:`~connectors.errors.UndeliverableError` when the recipient cannot be reached on
    this channel (the caller falls back to e-mail), :class:`~connectors.errors.FatalError`
    for a configuration the admin must fix.
    """

    channel: ClassVar[str]

    @abstractmethod
    def send(self, message: OutboundMessage) -> SendResult:
        """Send ``message``; what the channel answered."""

    def close(self) -> None:  # noqa: B027 (an optional hook, a no-op unless overridden)
        """Release connections. Optional."""
