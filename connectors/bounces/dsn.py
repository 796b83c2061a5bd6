"""Delivery status notifications (RFC 3464) as real mail servers write them.

A standard DSN is a ``multipart/report`` with a ``message/delivery-status`` part: one block
of per-message fields, then one block per recipient (``Final-Recipient``, ``Action``,
``Status``, ``Diagnostic-Code``), and the original message or its headers, which carry the
Message-ID we sent. Postfix, Exim, Exchange/Office 365 and Gmail write that, each a little
differently: Exim reports ``Status: 5.0.0`` and puts the real code in the SMTP reply of its
``Diagnostic-Code``, so the more specific code of the two wins. qmail writes plain text only
(``<address>:`` then the reason with ``(#5.1.1)``); that is read from the text. A mail that
names no recipient is unparseable: it is kept with its file name, never dropped.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from connectors.bounces.base import BounceReport
from rules.hygiene import STATUS_IN_TEXT, UNPARSEABLE, best_status, classify


class UnparseableDsn(ValueError):
    """A mail that is not a delivery status report we can read; says why."""


@dataclass(frozen=True)
class DsnRecipient:
    recipient: str
    action: str | None
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True)
class Dsn:
    recipients: list[DsnRecipient]
    original_message_id: str | None
    arrived: datetime | None


_ADDRESS = re.compile(r"<?([^<>\s;\"]+@[^<>\s;\"]+?)>?$")
_QMAIL_RECIPIENT = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:\s*$", re.MULTILINE)
_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
_ORIGINAL_COPY = re.compile(
    r"^--- Below this line is a copy of the message\.|^------ This is a copy of the message",
    re.MULTILINE,
)


def content_key(raw: bytes) -> str:
    """The file's identity: its content hash, line endings made equal (a DSN saved by an IMAP
    client and the same one from the Maildir are one report)."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def _address(value: str | None) -> str | None:
    """``rfc822; Eva@Example.com`` → ``eva@example.com``."""
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value else value
    match = _ADDRESS.search(text.strip())
    return match.group(1).lower() if match else None


def _header(block: Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else None


def _delivery_status(message: Message) -> list[Message] | None:
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return payload
            # A delivery-status part the parser left as text (an odd transfer encoding).
            text = part.get_payload(decode=True) or b""
            blocks = re.split(rb"\r?\n\r?\n", text.strip())
            return [email.message_from_bytes(b) for b in blocks if b.strip()]
    return None


def _original_message_id(message: Message, per_message: Message | None) -> str | None:
    if per_message is not None and per_message.get("X-Original-Message-ID"):
        return str(per_message["X-Original-Message-ID"]).strip()
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and inner[0].get("Message-ID"):
                return str(inner[0]["Message-ID"]).strip()
        if kind == "text/rfc822-headers":
            found = _MESSAGE_ID.search(_text(part))
            if found:
                return found.group(1)
    return None


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return str(part.get_payload())


def _arrival(message: Message, per_message: Message | None) -> datetime | None:
    for value in (per_message.get("Arrival-Date") if per_message else None, message.get("Date")):
        if value:
            try:
                return parsedate_to_datetime(str(value))
            except (TypeError, ValueError):
                continue
    return None


def parse_dsn(raw: bytes) -> Dsn:
    """Read one DSN mail; :class:`UnparseableDsn` if it names no recipient."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    blocks = _delivery_status(message)
    if blocks:
        per_message, per_recipient = blocks[0], blocks[1:]
        if per_message.get("Final-Recipient") or per_message.get("Original-Recipient"):
            per_message, per_recipient = None, blocks  # no per-message block written
        recipients = []
        for block in per_recipient:
            address = _address(_header(block, "Final-Recipient")) or _address(
                _header(block, "Original-Recipient")
            )
            if address is None:
                continue
            diagnostic = _header(block, "Diagnostic-Code")
            recipients.append(
                DsnRecipient(
                    address,
                    _header(block, "Action"),
                    best_status(_header(block, "Status"), diagnostic),
                    diagnostic,
                )
            )
        if recipients:
            return Dsn(
                recipients,
                _original_message_id(message, per_message),
                _arrival(message, per_message),
            )
    return _plain_text(message)


def _plain_text(message: Message) -> Dsn:
    """qmail and other plain-text bounces: ``<address>:`` lines, each followed by the reason,
    and the original message quoted below a separator line."""
    body = "\n".join(
        _text(part) for part in message.walk() if part.get_content_type() == "text/plain"
    )
    parts = _ORIGINAL_COPY.split(body, maxsplit=1)
    report, original = parts[0], parts[1] if len(parts) == 2 else ""
    found = list(_QMAIL_RECIPIENT.finditer(report))
    if not found:
        raise UnparseableDsn("no delivery-status part and no recipient in the text")
    recipients = []
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(report)
        reason = " ".join(report[match.end() : end].split())
        code = STATUS_IN_TEXT.search(reason)
        action = "failed" if "permanent" in report.lower() or code else None
        recipients.append(
            DsnRecipient(match.group(1).lower(), action, code.group(1) if code else None, reason)
        )
    found_id = _MESSAGE_ID.search(original)
    return Dsn(recipients, found_id.group(1) if found_id else None, _arrival(message, None))


def dsn_reports(raw: bytes, origin: str, file: str) -> list[BounceReport]:
    """The reports of one DSN mail, classified; an unreadable mail is one ``unparseable``
    report carrying its file name and the reason."""
    key = content_key(raw)
    try:
        dsn = parse_dsn(raw)
    except UnparseableDsn as exc:
        return [BounceReport(f"dsn:{key}", origin, UNPARSEABLE, None, detail=str(exc), file=file)]
    return [
        BounceReport(
            key=f"dsn:{key}:{r.recipient}",
            origin=origin,
            kind=classify(r.status, r.action),
            recipient=r.recipient,
            status=r.status,
            message_id=dsn.original_message_id,
            detail=r.diagnostic,
            file=file,
            occurred_at=dsn.arrived,
        )
        for r in dsn.recipients
    ]
