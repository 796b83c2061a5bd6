"""A stand-in for Amazon SNS's certificate host: an https server on 127.0.0.1 (its own
self-made TLS certificate, trusted through ``SSL_CERT_FILE``) serving a self-made signing
certificate, and a signer that signs SNS messages with its key as SNS does
(SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA).

    with SnsCertServer(tmp_path) as sns:
        monkeypatch.setenv("SSL_CERT_FILE", str(sns.ca_file))
        body = sns.notification(topic, {"notificationType": "Bounce", ...})
"""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CERT_PATH = "/SimpleNotificationService-6aad65c2f9911b05cd53efda11f913f9.pem"
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def _self_signed(name: str, ip: str | None = None) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    return key, cert.public_bytes(serialization.Encoding.PEM)


class SnsCertServer:
    def __init__(self, folder: Path) -> None:
        self.signing_key, self.signing_pem = _self_signed("sns.amazonaws.com")
        tls_key, tls_pem = _self_signed("127.0.0.1", ip="127.0.0.1")
        self.ca_file = folder / "sns-tls.pem"
        self.ca_file.write_bytes(tls_pem)
        key_file = folder / "sns-tls.key"
        key_file.write_bytes(
            tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        self.fetched = 0
        self.subscribed: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == CERT_PATH:
                    server.fetched += 1
                    body = server.signing_pem
                elif self.path.startswith("/?Action=ConfirmSubscription"):
                    server.subscribed.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        fields = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if message["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message).encode()
        signature = self.signing_key.sign(text, padding.PKCS1v15(), _HASHES[version]())
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.url + CERT_PATH,
        }

    def notification(
        self, topic: str, ses_message: dict[str, Any], version: str = "1"
    ) -> dict[str, Any]:
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": str(uuid.uuid4()),
                "TopicArn": topic,
                "Message": json.dumps(ses_message),
                "Timestamp": "2026-12-04T12:00:00.000Z",
                "UnsubscribeURL": self.url + "/?Action=Unsubscribe",
            },
            version,
        )

    def subscription(self, topic: str) -> dict[str, Any]:
        token = uuid.uuid4().hex
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": topic,
                "Message": f"You have chosen to subscribe to the topic {topic}.",
                "SubscribeURL": f"{self.url}/?Action=ConfirmSubscription&Token={token}",
                "Timestamp": "2026-12-04T12:00:00.000Z",
            }
        )
