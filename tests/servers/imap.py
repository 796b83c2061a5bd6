"""A small IMAP4rev1 server on 127.0.0.1 for the bounce-folder tests: one mailbox, the
commands a mail reader needs to take new mail once (LOGIN, SELECT, UID SEARCH UNFLAGGED,
UID FETCH BODY.PEEK[], UID STORE +FLAGS, LOGOUT), answered on the wire as RFC 3501 has it.

    with ImapServer("bounces@example.com", "s3cret", [raw1, raw2]) as imap:
        ... imap.port ...; imap.flags[1] == {"\\\\Flagged"}
"""

from __future__ import annotations

import re
import socketserver
import threading
from types import TracebackType
from typing import Self

_COMMAND = re.compile(rb"^(\S+) (?:UID )?(\S+)(?: (.*))?$", re.IGNORECASE)


class ImapServer:
    def __init__(self, user: str, password: str, messages: list[bytes]) -> None:
        self.user, self.password = user, password
        self.messages = {uid: raw for uid, raw in enumerate(messages, start=1)}
        self.flags: dict[int, set[str]] = {uid: set() for uid in self.messages}
        self.logins = 0
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def send(self, line: bytes) -> None:
                self.wfile.write(line + b"\r\n")

            def handle(self) -> None:
                self.send(b"* OK [CAPABILITY IMAP4rev1] Leadwerk test IMAP ready")
                authenticated = False
                while line := self.rfile.readline():
                    match = _COMMAND.match(line.rstrip(b"\r\n"))
                    if match is None:
                        self.send(b"* BAD unreadable command")
                        continue
                    tag, verb, rest = match.group(1), match.group(2).upper(), match.group(3) or b""
                    if verb == b"CAPABILITY":
                        self.send(b"* CAPABILITY IMAP4rev1")
                    elif verb == b"LOGIN":
                        user, _, password = rest.partition(b" ")
                        if (user.strip(b'"'), password.strip(b'"')) != (
                            server.user.encode(),
                            server.password.encode(),
                        ):
                            self.send(tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials")
                            continue
                        authenticated = True
                        server.logins += 1
                    elif verb == b"LOGOUT":
                        self.send(b"* BYE logging out")
                        self.send(tag + b" OK LOGOUT completed")
                        return
                    elif not authenticated:
                        self.send(tag + b" NO log in first")
                        continue
                    elif verb == b"SELECT":
                        self.send(b"* %d EXISTS" % len(server.messages))
                        self.send(b"* FLAGS (\\Flagged \\Seen)")
                        self.send(b"* OK [UIDVALIDITY 1] UIDs valid")
                        self.send(tag + b" OK [READ-WRITE] SELECT completed")
                        continue
                    elif verb == b"SEARCH":
                        unflagged = [
                            str(uid).encode()
                            for uid in server.messages
                            if "\\Flagged" not in server.flags[uid]
                        ]
                        self.send(b" ".join([b"* SEARCH", *unflagged]))
                    elif verb == b"FETCH":
                        uid = int(rest.split(b" ", 1)[0])
                        raw = server.messages[uid]
                        self.wfile.write(
                            b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (uid, uid, len(raw))
                        )
                        self.wfile.write(raw + b")\r\n")
                    elif verb == b"STORE":
                        uid = int(rest.split(b" ", 1)[0])
                        server.flags[uid].add("\\Flagged")
                        self.send(b"* %d FETCH (UID %d FLAGS (\\Flagged))" % (uid, uid))
                    else:
                        self.send(tag + b" BAD unknown command")
                        continue
                    self.send(tag + b" OK " + verb + b" completed")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
