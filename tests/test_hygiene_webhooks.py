"""ESP bounce webhooks over real HTTP: each provider's signed delivery is recorded, a forged
one is refused with 401 and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from config.settings import Settings
from tests.hygiene_helpers import HYGIENE_YAML, add_contact, address_state
from tests.servers.sns import SnsCertServer
from tests.source_helpers import web_server
from worker.runtime.app import App, init_app
from worker.store.models import BounceEvent

TOPIC = "arn:aws:sns:eu-central-1:123456789012:leadwerk-bounces"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK_SECRET = "pm-hook-6f1c2e"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@dataclass
class Bounces:
    app: App
    url: str
    sns: SnsCertServer

    def post(self, provider: str, body: bytes, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.url}/bounces/{provider}", content=body, headers=headers)

    def stored(self) -> int:
        with self.app.store.session() as session:
            return session.scalar(select(func.count()).select_from(BounceEvent)) or 0


@pytest.fixture
def bounces(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bounces]:
    with SnsCertServer(tmp_path) as sns:
        monkeypatch.setenv("SSL_CERT_FILE", str(sns.ca_file))
        (config_dir / "hygiene.yaml").write_text(
            HYGIENE_YAML
            + "bounce_sources:\n"
            + "  - {kind: webhook, provider: sendgrid, secret_env: SENDGRID_VERIFICATION_KEY}\n"
            + "  - {kind: webhook, provider: mailgun, secret_env: MAILGUN_SIGNING_KEY}\n"
            + "  - {kind: webhook, provider: postmark, secret_env: POSTMARK_WEBHOOK_SECRET}\n"
            + f"  - {{kind: webhook, provider: ses, topic_arn: '{TOPIC}',"
            + " signing_cert_host: '127\\.0\\.0\\.1'}\n"
        )
        settings = make_settings(
            database_url=database_url,
            env={
                "SENDGRID_VERIFICATION_KEY": SENDGRID_PUBLIC,
                "MAILGUN_SIGNING_KEY": MAILGUN_KEY,
                "POSTMARK_WEBHOOK_SECRET": POSTMARK_SECRET,
            },
        )
        app = init_app(settings)
        add_contact(
            app, "eva.mueller@bigcorp.de", "ebook-downloads", datetime(2026, 6, 1, tzinfo=UTC)
        )
        try:
            with web_server(app) as url:
                yield Bounces(app, url, sns)
        finally:
            app.close()


def sendgrid_body() -> bytes:
    return json.dumps(
        [
            {
                "email": "eva.mueller@bigcorp.de",
                "timestamp": 1796378400,
                "smtp-id": "<nurture-101.s2@leadwerk.example.com>",
                "event": "bounce",
                "type": "bounce",
                "bounce_classification": "Invalid Address",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                "status": "5.1.1",
                "sg_event_id": "ZGVsaXZlcmVkLTAtMTQ5NzYyMy1ZbGM",
                "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            },
            {"email": "eva.mueller@bigcorp.de", "event": "open", "sg_event_id": "b3Blbi0x"},
        ]
    ).encode()


def sendgrid_signature(body: bytes, timestamp: str = "1796378400") -> dict[str, str]:
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def mailgun_body(key: str = MAILGUN_KEY) -> bytes:
    timestamp, token = "1796378400", "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    return json.dumps(
        {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": hmac.new(
                    key.encode(), (timestamp + token).encode(), hashlib.sha256
                ).hexdigest(),
            },
            "event-data": {
                "event": "failed",
                "id": "G9Bn5sl1TC6nu79C8C0bwg",
                "timestamp": 1796378400.0,
                "severity": "permanent",
                "reason": "bounce",
                "recipient": "eva.mueller@bigcorp.de",
                "delivery-status": {
                    "code": 550,
                    "message": "5.1.1 The email account that you tried to reach does not exist",
                    "description": "",
                },
                "message": {"headers": {"message-id": "nurture-101.s2@leadwerk.example.com"}},
            },
        }
    ).encode()


def postmark_body() -> bytes:
    return json.dumps(
        {
            "RecordType": "Bounce",
            "ID": 4323372036854775807,
            "Type": "HardBounce",
            "TypeCode": 1,
            "Name": "Hard bounce",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
            "Email": "eva.mueller@bigcorp.de",
            "BouncedAt": "2026-12-04T12:00:00Z",
            "Inactive": True,
        }
    ).encode()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"postmark:{password}".encode()).decode()


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "eva.mueller@bigcorp.de",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2026-12-04T11:59:58.000Z",
        "feedbackId": "0102017f-5c4e-4f2d-9a1b-000000000000-000000",
    },
    "mail": {
        "messageId": "0102017f-5c4e-4f2d-9a1b-3c1d2e3f4a5b-000000",
        "commonHeaders": {"messageId": "<nurture-101.s2@leadwerk.example.com>"},
    },
}


def test_a_signed_sendgrid_bounce_is_recorded_and_a_forged_one_refused(
    bounces: Bounces,
) -> None:
    body = sendgrid_body()
    forged = bounces.post("sendgrid", body.replace(b"5.1.1", b"4.2.2"), **sendgrid_signature(body))
    assert forged.status_code == 401 and bounces.stored() == 0
    assert bounces.post("sendgrid", body).status_code == 401
    answer = bounces.post("sendgrid", body, **sendgrid_signature(body))
    assert answer.status_code == 202, answer.text
    assert address_state(bounces.app, "eva.mueller@bigcorp.de") == "hard"
    again = bounces.post("sendgrid", body, **sendgrid_signature(body))
    assert again.status_code == 202 and bounces.stored() == 1


def test_a_signed_mailgun_failure_is_recorded_and_a_forged_one_refused(bounces: Bounces) -> None:
    forged = bounces.post("mailgun", mailgun_body(key="key-guessed"))
    assert forged.status_code == 401 and bounces.stored() == 0
    assert bounces.post("mailgun", mailgun_body()).status_code == 202
    assert address_state(bounces.app, "eva.mueller@bigcorp.de") == "hard"


def test_postmark_needs_its_basic_auth_secret(bounces: Bounces) -> None:
    body = postmark_body()
    assert bounces.post("postmark", body, Authorization=basic("wrong")).status_code == 401
    assert bounces.post("postmark", body).status_code == 401
    assert bounces.stored() == 0
    assert bounces.post("postmark", body, Authorization=basic(POSTMARK_SECRET)).status_code == 202
    assert address_state(bounces.app, "eva.mueller@bigcorp.de") == "hard"


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_bounce_signed_by_sns_is_recorded(bounces: Bounces, version: str) -> None:
    body = json.dumps(bounces.sns.notification(TOPIC, SES_BOUNCE, version)).encode()
    answer = bounces.post("ses", body)
    assert answer.status_code == 202, answer.text
    assert address_state(bounces.app, "eva.mueller@bigcorp.de") == "hard"


def test_a_forged_ses_notification_is_refused(bounces: Bounces) -> None:
    signed = bounces.sns.notification(TOPIC, SES_BOUNCE)
    tampered = dict(signed, Message=signed["Message"].replace("Permanent", "Transient"))
    assert bounces.post("ses", json.dumps(tampered).encode()).status_code == 401
    elsewhere = dict(signed, SigningCertURL="https://attacker.example/cert.pem")
    assert bounces.post("ses", json.dumps(elsewhere).encode()).status_code == 401
    other_topic = bounces.sns.notification("arn:aws:sns:eu-central-1:999:other", SES_BOUNCE)
    assert bounces.post("ses", json.dumps(other_topic).encode()).status_code == 401
    assert bounces.post("ses", b"not json").status_code == 401
    assert bounces.stored() == 0


def test_an_sns_subscription_is_confirmed(bounces: Bounces) -> None:
    answer = bounces.post("ses", json.dumps(bounces.sns.subscription(TOPIC)).encode())
    assert answer.status_code == 200, answer.text
    assert len(bounces.sns.subscribed) == 1


def test_a_provider_not_configured_is_not_found(bounces: Bounces) -> None:
    assert bounces.post("sparkpost", b"[]").status_code == 404


@pytest.mark.parametrize(
    "events",
    [
        [{"event": "bounce", "status": 5, "email": 7, "timestamp": 1e300, "reason": {"x": 1}}],
        [{"event": "bounce"}, "text", None, {"event": "delivered", "email": "x@y.example"}],
        [{"event": "bounce", "email": "eva.mueller@bigcorp.de", "status": "5.1.1"}] * 2,
    ],
)
def test_signed_sendgrid_events_of_odd_shapes_are_taken_without_an_error(
    bounces: Bounces, events: list[object]
) -> None:
    body = json.dumps(events).encode()
    answer = bounces.post("sendgrid", body, **sendgrid_signature(body))
    assert answer.status_code == 202, answer.text


def test_a_signed_body_that_is_no_json_is_a_bad_request(bounces: Bounces) -> None:
    body = b"\xff\xfe not json"
    answer = bounces.post("postmark", body, Authorization=basic(POSTMARK_SECRET))
    assert answer.status_code == 400 and bounces.stored() == 0
    weird = json.dumps({"RecordType": "Bounce", "Type": "HardBounce", "Details": [1], "ID": {}})
    answer = bounces.post("postmark", weird.encode(), Authorization=basic(POSTMARK_SECRET))
    assert answer.status_code == 202, answer.text
