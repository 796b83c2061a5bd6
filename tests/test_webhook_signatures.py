"""Signed webhook deliveries: which are accepted, which are refused and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.sources.webhook import (
    BodyTooLargeError,
    SignatureError,
    WebhookConfig,
    record_from_webhook,
    verify_webhook,
)

SECRET = "ebook-hook-secret"
NOW = datetime(2026, 11, 5, 9, 0, 0, tzinfo=UTC)
PAYLOAD = {"id": "dl-42", "asset": "crm-guide", "email": "ada@example.com", "company": "Acme"}
BODY = json.dumps(PAYLOAD).encode()


def config(**overrides: Any) -> WebhookConfig:
    settings: dict[str, Any] = {
        "name": "ebooks",
        "kind": "webhook",
        "secret_env": "EBOOK_HOOK_SECRET",
        "event": {"type": "ebook", "asset": "$.asset"},
        "map": {"email": "$.email"},
    }
    settings.update(overrides)
    return WebhookConfig.model_validate(settings)


def hmac_sha256(payload: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def hex_signature(payload: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac_sha256(payload, secret).hex()


TIMESTAMPED = {"timestamp": {"header": "X-Timestamp", "tolerance": "300s"}}


def timestamped_headers(stamp: datetime, body: bytes = BODY) -> dict[str, str]:
    seconds = str(int(stamp.timestamp()))
    return {
        "X-Timestamp": seconds,
        "X-Signature-256": hex_signature(seconds.encode() + b"." + body),
    }


# --- plain signatures --------------------------------------------------------------------------


def test_a_hex_signature_of_the_raw_body_is_accepted() -> None:
    verify_webhook(config(), SECRET, {"X-Signature-256": hex_signature(BODY)}, BODY, NOW)


def test_an_upper_case_hex_signature_is_accepted() -> None:
    signature = "sha256=" + hmac_sha256(BODY).hex().upper()
    verify_webhook(config(), SECRET, {"X-Signature-256": signature}, BODY, NOW)


def test_a_base64_signature_is_accepted_when_configured() -> None:
    hook = config(signature={"header": "X-Hub-Signature", "prefix": "", "encoding": "base64"})
    signature = base64.b64encode(hmac_sha256(BODY)).decode()
    verify_webhook(hook, SECRET, {"X-Hub-Signature": signature}, BODY, NOW)


def test_headers_are_found_whatever_their_case() -> None:
    verify_webhook(config(), SECRET, {"x-signature-256": hex_signature(BODY)}, BODY, NOW)


def test_a_missing_signature_header_is_refused() -> None:
    with pytest.raises(SignatureError, match="missing X-Signature-256 header"):
        verify_webhook(config(), SECRET, {}, BODY, NOW)


def test_a_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"Acme", b"Evil")
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(config(), SECRET, {"X-Signature-256": hex_signature(BODY)}, tampered, NOW)


def test_a_body_signed_with_another_secret_is_refused() -> None:
    headers = {"X-Signature-256": hex_signature(BODY, "guessed")}
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(config(), SECRET, headers, BODY, NOW)


@pytest.mark.parametrize(
    "signature",
    ["sha256=", "sha256=zz", "sha1=" + "0" * 40, hmac_sha256(BODY).hex(), "sha256=" + "0" * 64],
)
def test_a_malformed_or_unprefixed_signature_is_refused(signature: str) -> None:
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(config(), SECRET, {"X-Signature-256": signature}, BODY, NOW)


def test_a_hex_signature_is_refused_where_base64_is_configured() -> None:
    hook = config(signature={"encoding": "base64"})
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(hook, SECRET, {"X-Signature-256": hex_signature(BODY)}, BODY, NOW)


def test_a_body_over_the_size_limit_is_refused_before_anything_else() -> None:
    with pytest.raises(BodyTooLargeError, match="over the 64-byte limit"):
        verify_webhook(config(max_body_bytes=64), SECRET, {}, b"x" * 65, NOW)


@given(body=st.binary(max_size=512), flip=st.integers(min_value=0, max_value=511))
def test_any_body_verifies_as_signed_and_fails_with_any_byte_changed(
    body: bytes, flip: int
) -> None:
    headers = {"X-Signature-256": hex_signature(body)}
    verify_webhook(config(), SECRET, headers, body, NOW)
    if body:
        index = flip % len(body)
        changed = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        with pytest.raises(SignatureError):
            verify_webhook(config(), SECRET, headers, changed, NOW)


# --- timestamped signatures --------------------------------------------------------------------


def test_a_timestamped_delivery_inside_the_window_is_accepted() -> None:
    for age in (timedelta(0), timedelta(seconds=299), timedelta(seconds=-120)):
        headers = timestamped_headers(NOW - age)
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_replayed_delivery_outside_the_window_is_refused() -> None:
    headers = timestamped_headers(NOW - timedelta(seconds=301))
    with pytest.raises(SignatureError, match="timestamp outside the 300 s window"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_delivery_dated_too_far_ahead_is_refused() -> None:
    headers = timestamped_headers(NOW + timedelta(minutes=10))
    with pytest.raises(SignatureError, match="timestamp outside the 300 s window"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_the_window_follows_the_configured_tolerance() -> None:
    hook = config(timestamp={"header": "X-Timestamp", "tolerance": "10m"})
    verify_webhook(hook, SECRET, timestamped_headers(NOW - timedelta(minutes=9)), BODY, NOW)
    with pytest.raises(SignatureError, match="timestamp outside the 600 s window"):
        verify_webhook(hook, SECRET, timestamped_headers(NOW - timedelta(minutes=11)), BODY, NOW)


def test_a_missing_timestamp_header_is_refused() -> None:
    headers = timestamped_headers(NOW)
    del headers["X-Timestamp"]
    with pytest.raises(SignatureError, match="missing timestamp header X-Timestamp"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_timestamp_that_is_not_unix_seconds_is_refused() -> None:
    headers = timestamped_headers(NOW)
    headers["X-Timestamp"] = NOW.isoformat()
    with pytest.raises(SignatureError, match="is not Unix seconds"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_moved_timestamp_breaks_the_signature() -> None:
    headers = timestamped_headers(NOW - timedelta(hours=1))
    headers["X-Timestamp"] = str(int(NOW.timestamp()))
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_signature_of_the_body_alone_is_refused_when_timestamps_are_required() -> None:
    headers = {"X-Timestamp": str(int(NOW.timestamp())), "X-Signature-256": hex_signature(BODY)}
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_webhook(config(**TIMESTAMPED), SECRET, headers, BODY, NOW)


def test_a_naive_receiving_time_is_taken_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    verify_webhook(config(**TIMESTAMPED), SECRET, timestamped_headers(NOW), BODY, naive_now)


# --- configuration and records -----------------------------------------------------------------


def test_defaults_match_the_documented_contract() -> None:
    hook = config(timestamp={"header": "X-Timestamp"})
    assert hook.signature.header == "X-Signature-256"
    assert hook.signature.prefix == "sha256="
    assert hook.signature.encoding == "hex"
    assert hook.timestamp is not None and hook.timestamp.tolerance == timedelta(seconds=300)
    assert hook.max_body_bytes == 1_000_000


def test_an_unknown_signature_encoding_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="encoding"):
        config(signature={"encoding": "base32"})


def test_a_delivery_becomes_a_record_with_the_id_from_id_field() -> None:
    record = record_from_webhook(config(id_field="$.id"), PAYLOAD)
    assert record.record_id == "dl-42"
    assert record.data == PAYLOAD


def test_a_numeric_nested_id_becomes_text() -> None:
    record = record_from_webhook(config(id_field="$.meta.seq"), {"meta": {"seq": 7}})
    assert record.record_id == "7"


def test_without_id_field_or_id_a_delivery_has_no_record_id() -> None:
    assert record_from_webhook(config(), PAYLOAD).record_id is None
    assert record_from_webhook(config(id_field="$.missing"), PAYLOAD).record_id is None
