"""DSNs from an IMAP folder (stdlib ``imaplib``). A mail is flagged (``\\Flagged``) once it
is recorded, and only unflagged mail is read, so none is read twice; a crash between the two
leaves a mail to be read again, which its content key makes count nothing."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from config.models import ImapBounces
from connectors.errors import RetriableError

TIMEOUT = 30.0


class ImapFolder:
    """One logged-in session on the bounce folder."""

    def __init__(self, client: imaplib.IMAP4) -> None:
        self._client = client

    def unread(self) -> list[bytes]:
        """UIDs of the mails not yet flagged."""
        status, data = self._client.uid("SEARCH", "UNFLAGGED")
        if status != "OK":
            raise RetriableError(f"IMAP search failed: {data!r}")
        return data[0].split() if data and data[0] else []

    def fetch(self, uid: bytes) -> bytes | None:
        status, data = self._client.uid("FETCH", uid, "(BODY.PEEK[])")
        if status != "OK":
            raise RetriableError(f"IMAP fetch failed: {data!r}")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        return None

    def flag(self, uid: bytes) -> None:
        self._client.uid("STORE", uid, "+FLAGS", "(\\Flagged)")


@contextmanager
def imap_folder(source: ImapBounces, user: str, password: str) -> Iterator[ImapFolder]:
    """Log in and select the folder; IMAP errors and refused connections become a
    :class:`RetriableError` naming the host (never the password)."""
    kind = imaplib.IMAP4_SSL if source.ssl else imaplib.IMAP4
    try:
        client = kind(source.host, source.port, timeout=TIMEOUT)
    except OSError as exc:
        raise RetriableError(f"cannot reach IMAP {source.host}:{source.port}: {exc}") from exc
    try:
        try:
            client.login(user, password)
            status, _ = client.select(source.folder)
        except imaplib.IMAP4.error as exc:
            raise RetriableError(f"IMAP {source.host}: {exc}") from exc
        if status != "OK":
            raise RetriableError(f"IMAP {source.host}: cannot open folder {source.folder}")
        yield ImapFolder(client)
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            client.logout()
