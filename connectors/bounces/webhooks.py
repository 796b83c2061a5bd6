"""Signed event webhooks of e-mail service providers: SendGrid, Mailgun, Postmark and Amazon
SES (through SNS). Each provider is one small class: how its signature is checked and how its
events become :class:`BounceReport` objects. A delivery that fails the check is refused
before its body is read for anything else.

- SendGrid signs ``timestamp + body`` with ECDSA P-256/SHA-256; the verification key (base64
  DER, as SendGrid shows it) is the secret.
- Mailgun signs ``timestamp + token`` with HMAC-SHA256 under the webhook signing key; the
  signature travels in the body.
- Postmark does not sign: its webhooks carry HTTP basic auth credentials (set in the webhook's
  URL or settings) or custom headers. The secret is the basic-auth password, or the value of
  an ``X-Leadwerk-Token`` header.
- SNS signs with an RSA certificate it names by URL (SignatureVersion 1: SHA1, 2: SHA256);
  the URL must be https on an SNS host. Anyone can point an SNS topic at us, so ``topic_arn``
  pins ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from config.models import WebhookBounces
from connectors.bounces.base import BounceReport
from rules.hygiene import DELIVERED, HARD, POLICY, SOFT, best_status, classify

CERT_TIMEOUT = 5.0


class SignatureError(Exception):
    """The delivery is not from the provider (401; nothing is stored)."""


class PayloadError(ValueError):
    """Signed, but not events we can read (400)."""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not JSON ({exc})") from None


def _message_id(value: Any) -> str | None:
    """A Message-ID as our outbox stores it, with its angle brackets."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    return text if text.startswith("<") else f"<{text}>"


def _dict(value: Any) -> dict[str, Any]:
    """A sender's object, or an empty one where it sent something else."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return None if value is None else str(value)[:2000]


def _key(prefix: str, event_id: Any, event: Any) -> str:
    """The provider's event id, or (an event without one) the hash of the event itself."""
    if isinstance(event_id, str | int) and str(event_id):
        return f"{prefix}:{event_id}"
    digest = hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}:sha256:{digest}"


def _when(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _kind(status: str | None, fallback: str) -> str:
    """The status code's verdict; without a code, the provider's own word (``fallback``)."""
    kind = classify(status, "failed")
    return fallback if kind == "unparseable" else kind


def _email(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and "@" in value else None


class BounceProvider(ABC):
    """One ESP's webhook: check the delivery, then read its events."""

    name: ClassVar[str]
    needs_secret: ClassVar[bool] = True

    def __init__(self, source: WebhookBounces) -> None:
        self.source = source

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        """Raise :class:`SignatureError` unless the provider sent exactly this body."""

    @abstractmethod
    def reports(self, body: bytes) -> list[BounceReport]:
        """The delivery's bounce and delivery events; others (opens, clicks) are skipped."""


class SendGrid(BounceProvider):
    name = "sendgrid"
    SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
    TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        signature, timestamp = headers.get(self.SIGNATURE), headers.get(self.TIMESTAMP)
        if not signature or not timestamp or not secret:
            raise SignatureError("missing SendGrid signature or timestamp")
        try:
            key = serialization.load_der_public_key(base64.b64decode(secret))
            raw = base64.b64decode(signature)
        except (ValueError, binascii.Error) as exc:
            raise SignatureError(f"cannot read the key or signature: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SignatureError("the SendGrid verification key is not an ECDSA key")
        try:
            key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError("SendGrid signature does not match") from None

    def reports(self, body: bytes) -> list[BounceReport]:
        events = _json(body)
        if not isinstance(events, list):
            raise PayloadError("SendGrid posts a JSON list of events")
        found = []
        for event in events:
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "bounce":
                status = best_status(event.get("status"), event.get("reason"))
                fallback = POLICY if event.get("type") == "blocked" else HARD
                kind = _kind(status, fallback)
            elif kind == "delivered":
                status, kind = None, DELIVERED
            else:  # deferred (SendGrid retries), dropped, opens, clicks
                continue
            found.append(
                BounceReport(
                    key=_key("sendgrid", event.get("sg_event_id"), event),
                    origin=self.name,
                    kind=kind,
                    recipient=_email(event.get("email")),
                    status=status,
                    message_id=_message_id(event.get("smtp-id")),
                    detail=_str(event.get("reason")),
                    occurred_at=_when(event.get("timestamp")),
                )
            )
        return found


class Mailgun(BounceProvider):
    name = "mailgun"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        data = _json(body) if body else None
        signed = data.get("signature") if isinstance(data, dict) else None
        if not isinstance(signed, dict) or not secret:
            raise SignatureError("missing Mailgun signature")
        token, timestamp = str(signed.get("token", "")), str(signed.get("timestamp", ""))
        expected = hmac.new(
            secret.encode(), (timestamp + token).encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, str(signed.get("signature", ""))):
            raise SignatureError("Mailgun signature does not match")

    def reports(self, body: bytes) -> list[BounceReport]:
        data = _json(body)
        event = _dict(data).get("event-data")
        if not isinstance(event, dict):
            raise PayloadError("no event-data in the Mailgun event")
        name = event.get("event")
        status = detail = None
        if name == "failed":
            delivery = _dict(event.get("delivery-status"))
            detail = " ".join(
                str(delivery.get(k) or "") for k in ("code", "message", "description")
            ).strip()
            status = best_status(delivery.get("enhanced-code"), detail)
            kind = _kind(status, HARD if event.get("severity") == "permanent" else SOFT)
        elif name == "delivered":
            kind = DELIVERED
        else:
            return []
        headers = _dict(_dict(event.get("message")).get("headers"))
        return [
            BounceReport(
                key=_key("mailgun", event.get("id"), event),
                origin=self.name,
                kind=kind,
                recipient=_email(event.get("recipient")),
                status=status,
                message_id=_message_id(headers.get("message-id")),
                detail=detail,
                occurred_at=_when(event.get("timestamp")),
            )
        ]


# Postmark's bounce types, by what they say about the address.
_POSTMARK_TYPES = {
    "HardBounce": HARD,
    "BadEmailAddress": HARD,
    "ManuallyDeactivated": HARD,
    "SoftBounce": SOFT,
    "Transient": SOFT,
    "DnsError": SOFT,
    "AutoResponder": None,
    "SpamNotification": POLICY,
    "Blocked": POLICY,
    "ContentRelated": POLICY,
}


class Postmark(BounceProvider):
    name = "postmark"
    TOKEN = "X-Leadwerk-Token"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        if not secret:
            raise SignatureError("no Postmark webhook secret is configured")
        offered = headers.get(self.TOKEN)
        auth = headers.get("Authorization", "")
        if offered is None and auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (ValueError, binascii.Error):
                raise SignatureError("unreadable basic auth credentials") from None
            offered = decoded.partition(":")[2]
        if offered is None or not hmac.compare_digest(offered.encode(), secret.encode()):
            raise SignatureError("missing or wrong Postmark webhook credentials")

    def reports(self, body: bytes) -> list[BounceReport]:
        event = _json(body)
        if not isinstance(event, dict):
            raise PayloadError("Postmark posts one JSON object")
        record = event.get("RecordType")
        recipient = _email(event.get("Email") or event.get("Recipient"))
        if record == "Delivery":
            key = _key("postmark:delivery", f"{event.get('MessageID')}:{recipient}", event)
            return [
                BounceReport(
                    key,
                    self.name,
                    DELIVERED,
                    recipient,
                    occurred_at=_when(event.get("DeliveredAt")),
                )
            ]
        if record != "Bounce":
            return []
        fallback = _POSTMARK_TYPES.get(str(event.get("Type")))
        if fallback is None:
            return []
        status = best_status(None, event.get("Details"))
        return [
            BounceReport(
                key=_key("postmark", event.get("ID"), event),
                origin=self.name,
                kind=_kind(status, fallback) if fallback != POLICY else POLICY,
                recipient=recipient,
                status=status,
                detail=_str(event.get("Details") or event.get("Description")),
                occurred_at=_when(event.get("BouncedAt")),
            )
        ]


_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_certificates: dict[str, rsa.RSAPublicKey] = {}
_certificates_lock = threading.Lock()


class Ses(BounceProvider):
    """Amazon SES bounce and delivery notifications, delivered by SNS."""

    name = "ses"
    needs_secret = False

    def allowed_url(self, url: Any) -> bool:
        """An https URL on the configured SNS host (``sns.<region>.amazonaws.com``)."""
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        host = parts.hostname or ""
        return (
            parts.scheme == "https"
            and re.fullmatch(self.source.signing_cert_host, host) is not None
        )

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
        message = _json(body) if body else None
        if not isinstance(message, dict):
            raise SignatureError("not an SNS message")
        fields = _SNS_FIELDS.get(str(message.get("Type")))
        algorithm = _SNS_HASHES.get(str(message.get("SignatureVersion")))
        if fields is None or algorithm is None:
            raise SignatureError("not an SNS notification with a known signature version")
        url = message.get("SigningCertURL")
        if not self.allowed_url(url):
            raise SignatureError("the signing certificate is not on an SNS https host")
        if self.source.topic_arn and message.get("TopicArn") != self.source.topic_arn:
            raise SignatureError("a notification of another SNS topic")
        signed = "".join(
            f"{name}\n{message[name]}\n" for name in fields if message.get(name) is not None
        ).encode()
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (ValueError, binascii.Error):
            raise SignatureError("unreadable SNS signature") from None
        key = self._certificate(str(url))
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SignatureError("SNS signature does not match") from None

    def _certificate(self, url: str) -> rsa.RSAPublicKey:
        with _certificates_lock:
            cached = _certificates.get(url)
        if cached is not None:
            return cached
        try:
            response = httpx.get(url, timeout=CERT_TIMEOUT)
            response.raise_for_status()
            key = x509.load_pem_x509_certificate(response.content).public_key()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignatureError(f"cannot fetch the SNS signing certificate: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("the SNS signing certificate does not hold an RSA key")
        with _certificates_lock:
            _certificates[url] = key
        return key

    def subscribe_url(self, body: bytes) -> str | None:
        """For a verified SubscriptionConfirmation: the URL that confirms it."""
        message = _dict(_json(body))
        if message.get("Type") != "SubscriptionConfirmation":
            return None
        url = message.get("SubscribeURL")
        return url if self.allowed_url(url) else None

    def reports(self, body: bytes) -> list[BounceReport]:
        envelope = _dict(_json(body))
        if envelope.get("Type") != "Notification":
            return []
        inner = envelope.get("Message")
        message = _json(inner.encode()) if isinstance(inner, str) else inner
        if not isinstance(message, dict):
            raise PayloadError("the SNS message holds no SES notification")
        kind = message.get("notificationType") or message.get("eventType")
        mail = _dict(message.get("mail"))
        message_id = _message_id(_dict(mail.get("commonHeaders")).get("messageId"))
        if kind == "Bounce":
            bounce = _dict(message.get("bounce"))
            fallback = HARD if bounce.get("bounceType") == "Permanent" else SOFT
            found = []
            for rec in map(_dict, _list(bounce.get("bouncedRecipients"))):
                recipient = _email(rec.get("emailAddress"))
                status = best_status(rec.get("status"), rec.get("diagnosticCode"))
                found.append(
                    BounceReport(
                        key=f"ses:{bounce.get('feedbackId')}:{recipient}",
                        origin=self.name,
                        kind=_kind(status, fallback),
                        recipient=recipient,
                        status=status,
                        message_id=message_id,
                        detail=_str(rec.get("diagnosticCode") or bounce.get("bounceSubType")),
                        occurred_at=_when(bounce.get("timestamp")),
                    )
                )
            return found
        if kind == "Delivery":
            delivery = _dict(message.get("delivery"))
            return [
                BounceReport(
                    key=f"ses:delivery:{mail.get('messageId')}:{_email(r)}",
                    origin=self.name,
                    kind=DELIVERED,
                    recipient=_email(r),
                    message_id=message_id,
                    occurred_at=_when(delivery.get("timestamp")),
                )
                for r in _list(delivery.get("recipients"))
            ]
        return []


PROVIDERS: dict[str, type[BounceProvider]] = {
    cls.name: cls for cls in (SendGrid, Mailgun, Postmark, Ses)
}
