"""The HTTP plumbing of the local CRM servers (``hubspot.py``, ``salesforce.py``): a threaded
server on 127.0.0.1 that reads JSON and form bodies, logs every request, serves scripted
answers first (``script``), and can be stopped and started again on the same port, as a CRM
that goes down for a while and comes back.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Call:
    """One request: method, path, query (last value of each name), body (JSON or form),
    headers with lower-case names, the body's bytes as sent."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    headers: dict[str, str]
    raw: bytes = b""


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class CrmServer:
    """Subclasses implement :meth:`answer`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._script: deque[Answer] = deque()
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def answer(self, call: Call) -> Answer:
        raise NotImplementedError

    def script(self, answers: Iterable[Answer]) -> None:
        """Answer the next requests so, one each, whatever they ask."""
        with self.lock:
            self._script.extend(answers)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def requests_to(self, method: str, prefix: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and c.path.startswith(prefix)]

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                server._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: connections are refused until :meth:`start`."""
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        kind = handler.headers.get("Content-Type", "")
        body: Any = None
        if raw and "json" in kind:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        elif raw:
            body = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        split = urlsplit(handler.path)
        call = Call(
            method=handler.command,
            path=split.path,
            params={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            body=body,
            headers={k.lower(): v for k, v in handler.headers.items()},
            raw=raw,
        )
        with self.lock:
            self.calls.append(call)
            answer = self._script.popleft() if self._script else None
        if answer is None:
            with self.lock:
                answer = self.answer(call)
        self._write(handler, answer)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        payload = b"" if answer.body is None else json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        for name, value in {"Content-Type": "application/json", **answer.headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        # One request per connection, so that a stopped server is down for every client.
        handler.send_header("Connection", "close")
        handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(payload)


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None
