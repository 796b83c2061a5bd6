"""E-mail out through SMTP, and the message builder the file outbox shares.

``smtp_url`` says how to reach the server:

* ``smtp://host:25``: plain SMTP, no login.
* ``smtp+starttls://user@host:587``: upgrade with STARTTLS, then log in when a user is given.
* ``smtps://user@host:465``: TLS from the first byte (implicit TLS), then log in.

The password never sits in the URL; the caller passes it (it comes from
``LEADWERK_SMTP_PASSWORD``). smtplib and ssl errors are translated into ``connectors.errors``
here and carry no full e-mail address.
"""

from __future__ import annotations

import re
import select
import smtplib
import ssl
import threading
import time
from datetime import UTC, datetime
from email import errors as email_errors
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import NoReturn
from urllib.parse import unquote, urlsplit

from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.notify.base import Notifier, OutboundMessage, SendResult

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}

# Headers build_email derives from the message itself; extra headers may not replace them.
_MANAGED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)

_ADDRESS_IN_TEXT = re.compile(r"[^\s<>@\"',;:()\[\]]+@[^\s<>@\"',;:()\[\]]+")


def mask_address(address: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: enough to tell mailboxes apart in logs."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _redact(text: str) -> str:
    """Mask every e-mail address in a server reply before it goes into an exception."""
    return _ADDRESS_IN_TEXT.sub(lambda match: mask_address(match.group(0)), text)


def _reply_text(reply: bytes | str) -> str:
    """A server reply for an exception message, addresses masked."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    return _redact(text)


def _one_line(value: str) -> str:
    """Header values come from lead data; a line break in one would break the header block."""
    return " ".join(value.split())


def _address(display_name: str, addr_spec: str) -> Address:
    """An ``Address``, or ValueError for anything the header parser will not accept."""
    try:
        return Address(display_name=_one_line(display_name), addr_spec=addr_spec.strip())
    except (ValueError, IndexError, email_errors.MessageError) as exc:
        raise ValueError(f"not an e-mail address: {mask_address(addr_spec)}") from exc


def _sender(mail_from: str) -> Address:
    """``Leadwerk <leads@example.com>`` or a bare address, as an ``Address``."""
    name, addr_spec = parseaddr(mail_from)
    try:
        return _address(name, addr_spec)
    except ValueError:
        raise FatalError(
            f"mail_from {mask_address(addr_spec)} is not an e-mail address; give a display "
            "name and an address in angle brackets (LEADWERK_MAIL_FROM)"
        ) from None


def build_email(message: OutboundMessage, mail_from: str) -> EmailMessage:
    """The RFC 5322 message for ``message``, as sent by SMTP and written by the file outbox.

    A text part, plus an HTML alternative when ``message.html`` is set. Non-ASCII display
    names and subjects are encoded by the header registry (RFC 2047); bodies use
    quoted-printable so they pass servers that do not offer 8BITMIME. Without a
    ``message.message_id`` a fresh Message-ID is made on the sender's domain.

    Raises FatalError for an unusable ``mail_from``, UndeliverableError for an unusable
    recipient address, ValueError when ``message.headers`` tries to replace a header derived
    here (From, To, Subject, ...).
    """
    sender = _sender(mail_from)
    try:
        recipient = _address(message.to_name, message.to_address)
    except ValueError as exc:
        raise UndeliverableError(str(exc)) from None
    clashing = sorted(name for name in message.headers if name.lower() in _MANAGED_HEADERS)
    if clashing:
        raise ValueError(f"extra headers may not replace {', '.join(clashing)}")

    email_message = EmailMessage(policy=policy.SMTP)
    email_message["Message-ID"] = _message_id(message.message_id, sender.domain)
    email_message["Date"] = format_datetime(datetime.now(UTC))
    email_message["From"] = sender
    email_message["To"] = recipient
    email_message["Subject"] = _one_line(message.subject)
    for name, value in message.headers.items():
        email_message[name] = _one_line(value)
    email_message.set_content(message.text, cte="quoted-printable")
    if message.html is not None:
        email_message.add_alternative(message.html, subtype="html", cte="quoted-printable")
    return email_message


def _message_id(given: str | None, domain: str) -> str:
    if given is None:
        return make_msgid(domain=domain)
    given = given.strip()
    return given if given.startswith("<") else f"<{given}>"


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """Say QUIT and close. Unlike leaving ``with smtplib.SMTP()``, a failing QUIT (after a
    broken TLS handshake, say) never hides the error that ended the session."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class _Kept:
    """An open SMTP connection with what decides whether it may be used again."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.sent = 0
        self.last_used = time.monotonic()

    def used(self) -> None:
        self.sent += 1
        self.last_used = time.monotonic()

    def reusable(self, idle_limit: float, max_messages: int) -> bool:
        if self.sent >= max_messages or time.monotonic() - self.last_used > idle_limit:
            return False
        sock = self.smtp.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        # Between messages the server has nothing to say; if it does, it is a goodbye
        # (``421`` or the connection closed).
        return not readable


class SmtpNotifier(Notifier):
    """Sends messages over SMTP, keeping one open connection per thread.

    A new connection costs a TCP (and TLS) handshake, EHLO, login and QUIT: more than the
    message itself on a busy worker (speed to lead). A kept connection is used again only
    while it is fresh (at most ``IDLE_LIMIT`` seconds idle, ``MESSAGES_PER_CONNECTION``
    messages) and silent: a server that has hung up or said goodbye (``421``) leaves the
    socket readable, and such a connection is replaced before anything is sent on it.
    """

    IDLE_LIMIT = 20.0
    MESSAGES_PER_CONNECTION = 100

    channel = "email"

    def __init__(
        self,
        smtp_url: str,
        mail_from: str,
        password: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(smtp_url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise FatalError(
                f"smtp_url scheme {scheme or '(none)'!r} is not supported; "
                "use smtp://, smtp+starttls:// or smtps:// (LEADWERK_SMTP_URL)"
            )
        if parts.password is not None:
            raise FatalError(
                "smtp_url carries a password; remove it and set LEADWERK_SMTP_PASSWORD instead"
            )
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise FatalError("smtp_url has an invalid port (LEADWERK_SMTP_URL)") from None
        if not parts.hostname:
            raise FatalError("smtp_url names no host (LEADWERK_SMTP_URL)")
        user = unquote(parts.username) if parts.username else None
        if user is not None and scheme == "smtp":
            raise FatalError(
                "smtp_url names a user on plain smtp://, which would send the password "
                "unencrypted; use smtp+starttls:// or smtps://"
            )
        if user is not None and password is None:
            raise FatalError(
                "smtp_url names a user but LEADWERK_SMTP_PASSWORD is not set; set it or "
                "remove the user from smtp_url"
            )
        self._scheme = scheme
        self._host = parts.hostname
        self._port = port
        self._user = user
        self._password = password
        self._timeout = timeout
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._mail_from = mail_from
        self._envelope_from = _sender(mail_from).addr_spec
        self._local = threading.local()
        self._open: set[_Kept] = set()
        self._open_lock = threading.Lock()

    def send(self, message: OutboundMessage) -> SendResult:
        email_message = build_email(message, self._mail_from)
        try:
            kept = self._session()
            try:
                kept.smtp.send_message(
                    email_message,
                    from_addr=self._envelope_from,
                    to_addrs=[message.to_address],
                )
            except BaseException:
                self._drop(kept)  # its state is unknown after a failure: never used again
                raise
            kept.used()
        except smtplib.SMTPException as exc:
            self._raise_for_smtp(exc, message.to_address)
        except ssl.SSLCertVerificationError as exc:
            raise FatalError(
                f"the TLS certificate of SMTP server {self._host} is not trusted "
                f"({exc.verify_message}); check the host in smtp_url"
            ) from exc
        except ssl.SSLError as exc:
            raise FatalError(
                f"TLS with SMTP server {self._host}:{self._port} failed ({exc.reason}); "
                "check that the smtp_url scheme matches the port (smtps:// for 465, "
                "smtp+starttls:// for 587)"
            ) from exc
        except OSError as exc:
            raise RetriableError(
                f"SMTP server {self._host}:{self._port} unreachable: {type(exc).__name__}"
            ) from exc
        return SendResult(remote_id=email_message["Message-ID"])

    def close(self) -> None:
        with self._open_lock:
            kept, self._open = self._open, set()
        for each in kept:
            _quit_quietly(each.smtp)

    def _session(self) -> _Kept:
        """This thread's connection if it is still good, else a new one (logged in)."""
        kept: _Kept | None = getattr(self._local, "kept", None)
        if kept is not None:
            if kept.reusable(self.IDLE_LIMIT, self.MESSAGES_PER_CONNECTION):
                return kept
            self._drop(kept)
        smtp = self._connect()
        try:
            if self._scheme == "smtp+starttls":
                smtp.starttls(context=self._ssl_context)
            if self._user is not None and self._password is not None:
                smtp.login(self._user, self._password)
        except BaseException:
            _quit_quietly(smtp)
            raise
        kept = self._local.kept = _Kept(smtp)
        with self._open_lock:
            self._open.add(kept)
        return kept

    def _drop(self, kept: _Kept) -> None:
        self._local.kept = None
        with self._open_lock:
            self._open.discard(kept)
        _quit_quietly(kept.smtp)

    def _connect(self) -> smtplib.SMTP:
        if self._scheme == "smtps":
            return smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout, context=self._ssl_context
            )
        return smtplib.SMTP(self._host, self._port, timeout=self._timeout)

    def _raise_for_smtp(self, exc: smtplib.SMTPException, to_address: str) -> NoReturn:
        """Translate an smtplib error. Raised ``from None``: smtplib's own messages quote the
        recipient address in full."""
        server = f"SMTP server {self._host}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = next(iter(exc.recipients.values()))
            detail = f"{code} {_reply_text(reply)}"
            if 400 <= code < 500:
                raise RetriableError(
                    f"{server} deferred recipient {mask_address(to_address)}: {detail}"
                ) from None
            raise UndeliverableError(
                f"{server} refused recipient {mask_address(to_address)}: {detail}"
            ) from None
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            raise FatalError(
                f"{server} does not support what smtp_url asks for ({exc}); "
                "check the smtp_url scheme and user"
            ) from None
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            raise RetriableError(f"{server} closed the connection: {_redact(str(exc))}") from None
        if not isinstance(exc, smtplib.SMTPResponseException):
            raise FatalError(
                f"{server} cannot be used as configured: {_redact(str(exc))}"
            ) from None
        detail = f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            raise RetriableError(f"{server} answered a temporary failure: {detail}") from None
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            raise FatalError(
                f"{server} rejected the login ({detail}); check the user in smtp_url and "
                "LEADWERK_SMTP_PASSWORD"
            ) from None
        if isinstance(exc, smtplib.SMTPSenderRefused):
            raise FatalError(
                f"{server} refused the sender address ({detail}); check mail_from"
            ) from None
        if isinstance(exc, smtplib.SMTPDataError):
            raise UndeliverableError(
                f"{server} refused the message to {mask_address(to_address)}: {detail}"
            ) from None
        raise FatalError(f"{server} refused the session: {detail}") from None
