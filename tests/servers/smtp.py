"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a port the OS picks (kept when
the server is stopped and started again, as in an outage).

    with SmtpServer() as server:
        SmtpNotifier(server.url, "Leadwerk <leads@example.com>").send(message)
        [mail] = server.wait_for(1)
        assert mail.message["Subject"] == "New lead"

Options mirror what production servers do: ``starttls=True`` offers STARTTLS and requires it
before MAIL; ``implicit_tls=True`` speaks TLS from the first byte (smtps); ``auth=(user,
password)`` requires AUTH LOGIN/PLAIN over TLS; ``reject_rcpt`` answers 550 for the given
recipients; ``fail_next=n`` answers 451 to the next n DATA commands; ``answer_after``
waits that many seconds before answering DATA, as a busy server does; ``idle_timeout``
closes a connection idle that many seconds, as servers do.

TLS uses a throwaway CA and server certificate (for ``localhost`` and ``127.0.0.1``) made once
per test run with the ``openssl`` command line tool. ``client_ssl_context()`` trusts that CA,
so clients verify the server as they would in production.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.recorded import Recorded

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: the envelope, the parsed message, and how it came in."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None
    peer: tuple[str, int]  # the client's address and port: one per connection
    answered_at: datetime  # when the server answered its DATA with 250


@dataclass(frozen=True)
class TlsFiles:
    """Files of the throwaway CA and the server certificate it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@functools.cache
def tls_files() -> TlsFiles:
    """Make (once per process) a CA and a server certificate for localhost/127.0.0.1.

    A CA plus a leaf, rather than one self-signed certificate, so strict X.509 checks in
    newer Python versions accept the chain.
    """
    directory = Path(tempfile.mkdtemp(prefix="leadwerk-test-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [
            *("openssl", "req", "-x509", *ec_key, "-keyout", ca_key, "-out", ca_cert),
            *("-days", "2", "-subj", "/CN=Leadwerk Test CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        ["openssl", "req", "-new", *ec_key, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [
            *("openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key),
            *("-CAcreateserial", "-days", "2", "-out", cert, "-extfile", extensions),
        ],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return TlsFiles(ca_cert=ca_cert, server_cert=cert, server_key=key)


class _EphemeralPortController(Controller):
    """aiosmtpd's Controller, but bound to port 0: the real port is read back after binding,
    before the controller's own readiness probe connects to it."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    """aiosmtpd hooks: insist on a login, apply the scripted refusals, record accepted mail."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._owner.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self._owner.reject_rcpt:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._owner.answer_after:
            await asyncio.sleep(self._owner.answer_after)
        return self._owner._accept(server, session, envelope)


class SmtpServer:
    """A context manager around a threaded aiosmtpd server; see the module docstring."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        reject_rcpt: Iterable[str] = (),
        fail_next: int = 0,
        answer_after: float = 0.0,
        idle_timeout: float | None = None,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        if auth is not None and not (starttls or implicit_tls):
            raise ValueError("auth needs starttls or implicit_tls: passwords travel over TLS")
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.reject_rcpt = frozenset(address.lower() for address in reject_rcpt)
        self._fail_next = fail_next
        self.answer_after = answer_after
        self.idle_timeout = idle_timeout
        self._messages: Recorded[ReceivedMail] = Recorded("message(s)")
        self._condition = threading.Condition()
        self._controller: _EphemeralPortController | None = None
        self._port = 0  # bound on the first start; a restart takes the same port again

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        smtp_options: dict[str, Any] = {}
        if self.idle_timeout is not None:
            smtp_options["timeout"] = self.idle_timeout
        tls_context = self._server_ssl_context() if self.starttls or self.implicit_tls else None
        if self.starttls:
            smtp_options.update(tls_context=tls_context, require_starttls=True)
        if self.auth is not None:
            # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the whole session is.
            # handle_MAIL, not aiosmtpd's auth_required, insists on a login, because
            # aiosmtpd warns about auth_required without auth_require_tls.
            smtp_options.update(
                authenticator=self._authenticate, auth_require_tls=not self.implicit_tls
            )
        self._controller = _EphemeralPortController(
            _Handler(self),
            hostname=HOST,
            port=self._port,
            server_hostname="smtp.leadwerk.test",
            ssl_context=tls_context if self.implicit_tls else None,
            **smtp_options,
        )
        self._controller.start()
        self._port = self._controller.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # --- what tests use ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("SmtpServer is not running")
        return cast(int, self._controller.port)

    @property
    def url(self) -> str:
        """The smtp_url a client should use: scheme by TLS mode, user when auth is on."""
        scheme = "smtps" if self.implicit_tls else "smtp+starttls" if self.starttls else "smtp"
        user = f"{self.auth[0]}@" if self.auth is not None else ""
        return f"{scheme}://{user}{HOST}:{self.port}"

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of the mail accepted so far, oldest first."""
        return self._messages.snapshot()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; TimeoutError otherwise."""
        return self._messages.wait_for(count, timeout)

    @staticmethod
    def client_ssl_context() -> ssl.SSLContext:
        """A client context that trusts the test CA and verifies the host name."""
        return ssl.create_default_context(cafile=str(tls_files().ca_cert))

    # --- internals ---------------------------------------------------------------------

    @staticmethod
    def _server_ssl_context() -> ssl.SSLContext:
        certificate = tls_files()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate.server_cert, certificate.server_key)
        return context

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.auth is not None
        expected = LoginPassword(self.auth[0].encode(), self.auth[1].encode())
        accepted = mechanism in {"LOGIN", "PLAIN"} and auth_data == expected
        return AuthResult(success=accepted, handled=False, auth_data=auth_data)

    def _accept(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._condition:
            if self._fail_next > 0:
                self._fail_next -= 1
                return "451 4.3.0 Temporary failure, try again later"
            raw = envelope.original_content or b""
            message = cast(EmailMessage, message_from_bytes(raw, policy=policy.default))
            transport = server.transport
            login = session.auth_data.login.decode() if session.authenticated else None
            self._messages.add(
                ReceivedMail(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    raw=raw,
                    tls=transport is not None
                    and transport.get_extra_info("ssl_object") is not None,
                    login=login,
                    peer=tuple(session.peer),
                    answered_at=datetime.now(UTC),
                )
            )
        return "250 2.0.0 OK queued"
