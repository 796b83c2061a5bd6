"""``webhook``: records pushed to ``POST /hooks/<name>``, signed with HMAC-SHA256.

The sender signs the raw body with the shared secret and sends the digest, hex or base64,
in a header (``X-Signature-256: sha256=<hex>`` by default). With ``timestamp:`` configured the
signed payload is ``"<timestamp>.<raw body>"`` with the timestamp (Unix seconds, exactly as
sent) in its own header, and deliveries outside the tolerance window are refused, so a
captured delivery cannot be replayed later.

The receiver calls :meth:`WebhookSource.verify` (:func:`verify_webhook`) on the raw bytes
before parsing them, then :meth:`WebhookSource.receive` (:func:`record_from_webhook`) on the
parsed JSON object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.types import Duration
from connectors.errors import BodyTooLargeError, SignatureError
from connectors.sources.base import PushedSource, RawRecord, SourceConfig
from connectors.sources.http_json import json_path


class SignatureSpec(BaseModel):
    """Where the signature is and how it is written."""

    model_config = ConfigDict(extra="forbid")

    header: str = "X-Signature-256"
    prefix: str = "sha256="
    encoding: Literal["hex", "base64"] = "hex"


class TimestampSpec(BaseModel):
    """The header with the Unix-seconds timestamp that is signed along with the body."""

    model_config = ConfigDict(extra="forbid")

    header: str
    tolerance: Duration = timedelta(seconds=300)


class WebhookConfig(SourceConfig):
    kind: Literal["webhook"]
    secret_env: str
    signature: SignatureSpec = Field(default_factory=SignatureSpec)
    timestamp: TimestampSpec | None = None
    id_field: str | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _decode_signature(encoding: str, text: str) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def verify_webhook(
    config: WebhookConfig,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` is signed as ``config`` says.

    ``headers`` are looked up without regard to case. ``now`` is the receiving time (naive
    means UTC). The comparison takes constant time.
    """
    if len(body) > config.max_body_bytes:
        raise BodyTooLargeError(
            f"body of {len(body)} bytes is over the {config.max_body_bytes}-byte limit"
        )
    spec = config.signature
    sent = _header(headers, spec.header)
    if not sent:
        raise SignatureError(f"missing {spec.header} header")
    payload = body
    stamp: datetime | None = None
    if config.timestamp is not None:
        stamp_text = _header(headers, config.timestamp.header)
        if not stamp_text:
            raise SignatureError(f"missing timestamp header {config.timestamp.header}")
        stamp_text = stamp_text.strip()
        if not stamp_text.isdigit():
            raise SignatureError(f"timestamp header {config.timestamp.header} is not Unix seconds")
        try:
            stamp = datetime.fromtimestamp(int(stamp_text), UTC)
        except (OverflowError, OSError, ValueError):
            raise SignatureError(
                f"timestamp header {config.timestamp.header} is not Unix seconds"
            ) from None
        payload = stamp_text.encode() + b"." + body
    sent = sent.strip()
    if spec.prefix:
        if not sent.startswith(spec.prefix):
            raise SignatureError(f"signature does not match (no {spec.prefix!r} prefix)")
        sent = sent[len(spec.prefix) :]
    received = _decode_signature(spec.encoding, sent)
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if received is None or not hmac.compare_digest(expected, received):
        raise SignatureError("signature does not match")
    if config.timestamp is not None and stamp is not None:
        received_at = now if now.tzinfo else now.replace(tzinfo=UTC)
        tolerance = config.timestamp.tolerance
        if abs(received_at - stamp) > tolerance:
            raise SignatureError(f"timestamp outside the {tolerance.total_seconds():g} s window")


def record_from_webhook(config: WebhookConfig, payload: dict[str, Any]) -> RawRecord:
    """The delivery's JSON object as a RawRecord; ``record_id`` from ``id_field`` when set."""
    record_id = json_path(payload, config.id_field) if config.id_field else None
    return RawRecord(
        data=payload,
        record_id=None if record_id is None or record_id == "" else str(record_id),
    )


class WebhookSource(PushedSource):
    """Any sender that signs its JSON deliveries with HMAC-SHA256."""

    kind = "webhook"
    config_model = WebhookConfig
    config: WebhookConfig

    @property
    def max_body_bytes(self) -> int | None:
        return self.config.max_body_bytes

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        verify_webhook(self.config, secret, headers, body, now)

    def receive(self, payload: dict[str, Any]) -> RawRecord:
        return record_from_webhook(self.config, payload)
