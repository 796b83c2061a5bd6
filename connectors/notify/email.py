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

import functools
import re
import secrets
import select
import smtplib
import socket
import ssl
import threading
import time
from binascii import b2a_base64, b2a_qp
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors as email_errors
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import NoReturn, cast
from urllib.parse import unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.notify.base import Notifier, OutboundMessage, SendResult

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}

# Headers render_email derives from the message itself; extra headers may not replace them.
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

# Addresses the header parser accepts and writes back unchanged: a dot-atom of letters, digits
# and ``_%+-`` on an ASCII domain. Most addresses are like this and skip the parser.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)

# A header field name (RFC 5322): printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")

# A word a display name may hold as it is (RFC 5322 atext); other names are quoted or encoded.
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")

# Header lines are folded to this length, as RFC 5322 recommends and mail clients expect.
_LINE_LENGTH = 78

# An RFC 2047 encoded-word is at most 75 characters, 12 of them ``=?utf-8?b?`` and ``?=``;
# base64 turns each 3 bytes into 4 characters.
_ENCODED_WORD_LENGTH = 75
_ENCODED_WORD_OVERHEAD = len("=?utf-8?b??=")

_TEXT_PART = (
    'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
)


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


# A subject past this is cut with "…": it comes from lead data, and mail clients show less.
SUBJECT_MAX = 300


def _subject(value: str) -> str:
    line = _one_line(value[: SUBJECT_MAX * 4])  # no need to split a huge value whole
    return line if len(line) <= SUBJECT_MAX else line[: SUBJECT_MAX - 1].rstrip() + "…"


def _addr_spec(addr_spec: str) -> str:
    """``addr_spec`` as it goes into the headers and the SMTP envelope, or ValueError for
    anything the header parser will not accept.

    An internationalised domain is written in its ASCII (IDNA) form, so the message stays
    ASCII and any server can take it; a non-ASCII local part is refused.
    """
    addr_spec = addr_spec.strip()
    if _PLAIN_ADDRESS.fullmatch(addr_spec) is not None:
        return addr_spec
    try:
        # The parser raises AttributeError on some broken domain literals (``a@[1.2.3``).
        address = Address(addr_spec=addr_spec)
    except (ValueError, IndexError, AttributeError, email_errors.MessageError) as exc:
        raise ValueError(f"not an e-mail address: {mask_address(addr_spec)}") from exc
    if address.domain.isascii():
        return address.addr_spec
    try:
        domain = validate_email(f"x@{address.domain}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        raise ValueError(f"not an e-mail address: {mask_address(addr_spec)}") from None
    return Address(username=address.username, domain=domain).addr_spec


def _plain(text: str) -> bool:
    """Whether ``text`` can stand in a header as it is: printable ASCII that a mail client
    will not take for an encoded-word."""
    return text.isascii() and text.isprintable() and "=?" not in text


def _encoded_words(text: str, room: int) -> list[str]:
    """``text`` as RFC 2047 encoded-words (UTF-8, base64), the first at most ``room``
    characters long. Each holds whole characters, as RFC 2047 requires."""
    data = text.encode()
    words = []
    size = (min(room, _ENCODED_WORD_LENGTH) - _ENCODED_WORD_OVERHEAD) // 4 * 3
    start = 0
    while start < len(data):
        end = start + size
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a UTF-8 sequence
            end -= 1
        words.append(f"=?utf-8?b?{b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
        size = (_ENCODED_WORD_LENGTH - _ENCODED_WORD_OVERHEAD) // 4 * 3
    return words


def _words(text: str, room: int, *, phrase: bool) -> list[str]:
    """``text`` as words to fold between. Words that may stand as they are (printable ASCII;
    in a display name only atoms) stay readable; each run of other words becomes
    encoded-words, the spaces inside the run encoded with it. ``room`` is what the first
    line has left; no plain word is longer, so every word fits on a line."""
    words: list[str] = []
    run: list[str] = []
    for word in text.split(" "):
        if len(word) > room or not _plain(word) or (phrase and _ATOM.fullmatch(word) is None):
            run.append(word)
            continue
        if run:
            words += _encoded_words(" ".join(run), room if not words else _ENCODED_WORD_LENGTH)
            run = []
        words.append(word)
    if run:
        words += _encoded_words(" ".join(run), room if not words else _ENCODED_WORD_LENGTH)
    return words


def _mailbox_words(display_name: str, addr_spec: str, room: int) -> list[str]:
    """``Name <addr>`` as words to fold between. A printable ASCII name with characters an
    atom may not hold (``Smith, John``) goes in quotes when it fits on the first line."""
    if not display_name:
        return [addr_spec]
    if _plain(display_name) and not all(map(_ATOM.fullmatch, display_name.split(" "))):
        quoted = '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= room:
            return [quoted, f"<{addr_spec}>"]
    return [*_words(display_name, room, phrase=True), f"<{addr_spec}>"]


def _header(name: str, words: list[str]) -> str:
    """``Name: words``, folded before a word wherever the line would pass 78 characters."""
    lines = []
    line = f"{name}:"
    for number, word in enumerate(words):
        if number and len(line) + 1 + len(word) > _LINE_LENGTH:
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _room(name: str) -> int:
    """What is left of the first line after ``Name: ``."""
    return _LINE_LENGTH - len(name) - 2


@dataclass(frozen=True)
class _Sender:
    """What every message from one ``mail_from`` shares."""

    from_header: str
    addr_spec: str
    domain: str


@functools.lru_cache(maxsize=16)
def _sender(mail_from: str) -> _Sender:
    """``Leadwerk <leads@example.com>`` or a bare address: the From header and the envelope
    sender. Cached: every message of a worker has the same sender."""
    name, addr_spec = parseaddr(mail_from)
    try:
        addr_spec = _addr_spec(addr_spec)
    except ValueError:
        raise FatalError(
            f"mail_from {mask_address(addr_spec)} is not an e-mail address; give a display "
            "name and an address in angle brackets (LEADWERK_MAIL_FROM)"
        ) from None
    words = _mailbox_words(_one_line(name), addr_spec, _room("From"))
    return _Sender(_header("From", words), addr_spec, addr_spec.rpartition("@")[2])


@dataclass(frozen=True)
class RenderedEmail:
    """An e-mail as it goes on the wire: ``raw`` is the RFC 5322 message, ASCII only with
    CRLF line ends; ``recipient`` the address for the SMTP envelope."""

    message_id: str
    recipient: str
    raw: bytes


def render_email(message: OutboundMessage, mail_from: str) -> RenderedEmail:
    """The RFC 5322 message for ``message``, as sent by SMTP and written by the file outbox.

    A text part, plus an HTML alternative (multipart/alternative) when ``message.html`` is
    set. Non-ASCII display names and subjects are RFC 2047 encoded-words; bodies are UTF-8
    quoted-printable, so they pass servers that do not offer 8BITMIME. Header values from
    lead data are kept on one line. Without a ``message.message_id`` a fresh Message-ID is
    made on the sender's domain.

    Raises FatalError for an unusable ``mail_from``, UndeliverableError for an unusable
    recipient address, ValueError when ``message.headers`` tries to replace a header derived
    here (From, To, Subject, ...) or names a header that is not one.
    """
    sender = _sender(mail_from)
    try:
        recipient = _addr_spec(message.to_address)
    except ValueError as exc:
        raise UndeliverableError(str(exc)) from None
    clashing = sorted(name for name in message.headers if name.lower() in _MANAGED_HEADERS)
    if clashing:
        raise ValueError(f"extra headers may not replace {', '.join(clashing)}")

    message_id = _message_id(message.message_id, sender.domain)
    to_words = _mailbox_words(_one_line(message.to_name), recipient, _room("To"))
    head = [
        f"Message-ID: {message_id}\r\n",
        f"Date: {format_datetime(datetime.now(UTC))}\r\n",
        sender.from_header,
        _header("To", to_words),
        _header("Subject", _words(_subject(message.subject), _room("Subject"), phrase=False)),
    ]
    head.extend(_extra_header(name, value) for name, value in message.headers.items())
    head.append("MIME-Version: 1.0\r\n")
    text = _quoted_printable(message.text)
    if message.html is None:
        head.append(_TEXT_PART.format("plain"))
        raw = "".join(head).encode("ascii") + b"\r\n" + text
    else:
        # "=_" never occurs in quoted-printable, so the boundary cannot turn up in a part.
        boundary = f"=_{secrets.token_hex(12)}"
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n')
        delimiter = f"--{boundary}\r\n".encode("ascii")
        raw = b"".join(
            [
                "".join(head).encode("ascii"),
                b"\r\n",
                delimiter,
                _TEXT_PART.format("plain").encode("ascii"),
                b"\r\n",
                text,
                b"\r\n",
                delimiter,
                _TEXT_PART.format("html").encode("ascii"),
                b"\r\n",
                _quoted_printable(message.html),
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            ]
        )
    return RenderedEmail(message_id=message_id, recipient=recipient, raw=raw)


def build_email(message: OutboundMessage, mail_from: str) -> EmailMessage:
    """The message :func:`render_email` makes, read back as a mail client reads it (headers
    decoded), for previews and checks. Sending uses the rendered bytes directly."""
    raw = render_email(message, mail_from).raw
    return cast(EmailMessage, message_from_bytes(raw, policy=policy.SMTP))


def _extra_header(name: str, value: str) -> str:
    """An extra header (List-Unsubscribe, ...). ASCII values go out as they are, only folded
    at spaces: an encoded-word would hide the URL in a long List-Unsubscribe. Other values
    are encoded by the header registry, which knows address headers (Reply-To)."""
    if _FIELD_NAME.fullmatch(name) is None:
        raise ValueError(f"extra header name {name!r} is not a header name")
    value = _one_line(value)
    if value.isascii() and value.isprintable():
        return _header(name, value.split(" "))
    return policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP)


def _quoted_printable(text: str) -> bytes:
    """``text`` in UTF-8 quoted-printable: 7-bit lines of at most 76 characters, each ending
    in CRLF."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode()
    if not data.endswith(b"\n"):
        data += b"\n"
    return b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _message_id(given: str | None, domain: str) -> str:
    if given is None:
        return make_msgid(domain=domain)
    given = given.strip()
    if not (given.isascii() and given.isprintable()):
        raise ValueError("message_id must be printable ASCII on one line")
    return given if given.startswith("<") else f"<{given}>"


def _why_unreachable(exc: OSError) -> str:
    """A socket error as an admin reads it: ``connection refused``, ``timed out``, ..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    return (exc.strerror or type(exc).__name__).lower()


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


def smtp_target(smtp_url: str) -> tuple[str, str, int, str | None]:
    """Scheme, host, port and user of ``smtp_url``; a ValueError saying what is wrong with it
    (the settings check it at load, so every command agrees on it)."""
    parts = urlsplit(smtp_url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"smtp_url scheme {scheme or '(none)'!r} is not supported; "
            "use smtp://, smtp+starttls:// or smtps:// (LEADWERK_SMTP_URL)"
        )
    if parts.password is not None:
        raise ValueError(
            "smtp_url carries a password; remove it and set LEADWERK_SMTP_PASSWORD instead"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(
            "smtp_url has an invalid port, expected a number from 1 to 65535 (LEADWERK_SMTP_URL)"
        ) from None
    if not parts.hostname:
        raise ValueError("smtp_url names no host, expected smtp://HOST:25 (LEADWERK_SMTP_URL)")
    user = unquote(parts.username) if parts.username else None
    if user is not None and scheme == "smtp":
        raise ValueError(
            "smtp_url names a user on plain smtp://, which would send the password "
            "unencrypted; use smtp+starttls:// or smtps://"
        )
    return scheme, parts.hostname, port, user


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
        try:
            scheme, host, port, user = smtp_target(smtp_url)
        except ValueError as exc:
            raise FatalError(str(exc)) from None
        if user is not None and password is None:
            raise FatalError(
                "smtp_url names a user but LEADWERK_SMTP_PASSWORD is not set; set it or "
                "remove the user from smtp_url"
            )
        self._scheme = scheme
        self._host = host
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
        email = render_email(message, self._mail_from)
        try:
            kept = self._session()
            try:
                kept.smtp.sendmail(self._envelope_from, [email.recipient], email.raw)
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
                f"SMTP server {self._host}:{self._port} unreachable ({_why_unreachable(exc)})"
            ) from exc
        return SendResult(remote_id=email.message_id)

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
