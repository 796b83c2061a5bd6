"""Errors a connector raises, classified by what the caller should do.

Vendor exceptions (httpx, smtplib, csv, openpyxl, ...) are translated into these at the
boundary and never leak past ``connectors/``. Messages name the thing and the likely fix and
carry no personal data.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error a connector raises."""


class RetriableError(ConnectorError):
    """A passing fault (timeout, 5xx, 429): try again later.

    ``retry_after`` is the delay in seconds the remote side asked for, if it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """A configuration error (401, 403, 404, bad token): stop and tell the admin."""


class SkippableError(ConnectorError):
    """One bad record: quarantine it with the reason; the batch goes on."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UndeliverableError(FatalError):
    """The recipient cannot be reached on this channel (Slack user/channel not found):
    the caller falls back to another channel instead of retrying."""


class IgnoredDelivery(ConnectorError):
    """A pushed delivery that carries nothing to take in (a partial form response): the
    receiver acknowledges it with a 2xx, so the sender does not deliver it again, and stores
    nothing."""


class SignatureError(ConnectorError):
    """A pushed delivery that must be refused: unsigned, wrongly signed, stale or too large."""


class BodyTooLargeError(SignatureError):
    """The body is larger than the source accepts (a receiver answers 413)."""
