"""A real HTTP server for tests that answers like Slack: the Web API, incoming webhooks and
the response_url of button clicks.

    with SlackApiServer(token="xoxb-test") as slack:
        SlackNotifier("xoxb-test", base_url=slack.base_url).send(message)
        [call] = slack.wait_for(1)
        assert call.body["channel"] == "U024BE7LH"

``POST /api/chat.postMessage`` checks ``Authorization: Bearer <token>`` (missing:
``not_authed``, wrong: ``invalid_auth``), reads a JSON body and answers like Slack, with a
fresh ``ts`` per message. ``POST /webhook/<name>`` answers like an incoming webhook: plain
text ``ok``. ``POST /actions/<name>`` answers like the ``response_url`` of a button click
(``response_url(name)``), which takes the same JSON bodies as a webhook. Errors come back the
way Slack sends them: HTTP 200 with ``{"ok": false}`` from the Web API, an HTTP status and a
plain-text code from webhooks.

Scripted answers (``queue_response``, ``queue_error``) are served first-in, first-out to the
next requests, whatever their path. Only accepted calls are recorded in ``calls``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.servers.recorded import Recorded

HOST = "127.0.0.1"
_FIRST_TS = 1_700_000_000


@dataclass(frozen=True)
class SlackCall:
    """One accepted request: its path, parsed JSON body and headers (names lower-cased)."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def webhook(self) -> str | None:
        """The webhook name for ``/webhook/<name>`` calls, else None."""
        prefix = "/webhook/"
        return self.path[len(prefix) :] if self.path.startswith(prefix) else None

    @property
    def response_url(self) -> str | None:
        """The name of the click answered, for ``/actions/<name>`` calls, else None."""
        prefix = "/actions/"
        return self.path[len(prefix) :] if self.path.startswith(prefix) else None


@dataclass(frozen=True)
class _Scripted:
    status: int
    body: dict[str, Any] | str | None
    headers: dict[str, str] = field(default_factory=dict)


class SlackApiServer:
    """A context manager around a threaded HTTP server; see the module docstring.

    ``unknown_users`` are channel/user ids that ``chat.postMessage`` answers with
    ``channel_not_found``, as Slack does for an id it does not know.
    """

    def __init__(
        self, token: str = "xoxb-leadwerk-test", unknown_users: set[str] | None = None
    ) -> None:
        self.token = token
        self.unknown_users = frozenset(unknown_users or ())
        self._calls: Recorded[SlackCall] = Recorded("call(s)")
        self._scripted: deque[_Scripted] = deque()
        self._next_ts = 100
        self._condition = threading.Condition()
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        owner = self

        class Handler(_SlackHandler):
            server_state = owner

        self._http = ThreadingHTTPServer((HOST, 0), Handler)
        self._http.daemon_threads = True
        # A short poll interval keeps stop() (which waits for one poll) fast.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- what tests use ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:PORT``."""
        if self._http is None:
            raise RuntimeError("SlackApiServer is not running")
        return f"http://{HOST}:{self._http.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What ``SlackNotifier(base_url=...)`` takes, like ``https://slack.com/api``."""
        return f"{self.url}/api"

    def webhook_url(self, name: str) -> str:
        """The URL of the incoming webhook ``name``; every name exists."""
        return f"{self.url}/webhook/{name}"

    def response_url(self, name: str = "click") -> str:
        """The ``response_url`` Slack would put in the payload of the click ``name``."""
        return f"{self.url}/actions/{name}"

    @property
    def calls(self) -> list[SlackCall]:
        """A snapshot of the accepted calls, oldest first."""
        return self._calls.snapshot()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SlackCall]:
        """Block until at least ``count`` calls were accepted; TimeoutError otherwise."""
        return self._calls.wait_for(count, timeout)

    def queue_response(
        self,
        status: int = 200,
        body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next request with this instead of handling it: a dict as JSON, a str as
        plain text, None as an empty body."""
        with self._condition:
            self._scripted.append(_Scripted(status, body, dict(headers or {})))

    def queue_error(self, error: str) -> None:
        """Answer the next request like the Web API refusing it: 200 ``{"ok": false}``."""
        self.queue_response(200, {"ok": False, "error": error})

    # --- used by the handler -----------------------------------------------------------

    def _pop_scripted(self) -> _Scripted | None:
        with self._condition:
            return self._scripted.popleft() if self._scripted else None

    def _record(self, call: SlackCall) -> str:
        """Store an accepted call and hand out its ts."""
        with self._condition:
            ts = f"{_FIRST_TS}.{self._next_ts:06d}"
            self._next_ts += 1
        self._calls.add(call)
        return ts


class _SlackHandler(BaseHTTPRequestHandler):
    server_state: SlackApiServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        scripted = self.server_state._pop_scripted()
        if scripted is not None:
            self._answer(scripted.status, scripted.body, scripted.headers)
        elif self.path == "/api/chat.postMessage":
            self._chat_post_message(raw)
        elif any(
            self.path.startswith(prefix) and len(self.path) > len(prefix)
            for prefix in ("/webhook/", "/actions/")
        ):
            self._webhook(raw)
        elif self.path.startswith("/api/"):
            self._answer(200, {"ok": False, "error": "unknown_method"})
        else:
            self._answer(404, "not found")

    def _chat_post_message(self, raw: bytes) -> None:
        authorization = self.headers.get("Authorization")
        if not authorization:
            self._answer(200, {"ok": False, "error": "not_authed"})
            return
        if authorization != f"Bearer {self.server_state.token}":
            self._answer(200, {"ok": False, "error": "invalid_auth"})
            return
        body = self._json_body(raw)
        if body is None:
            self._answer(200, {"ok": False, "error": "invalid_json"})
            return
        channel = body.get("channel")
        if not channel or channel in self.server_state.unknown_users:
            self._answer(200, {"ok": False, "error": "channel_not_found"})
            return
        if not body.get("text") and not body.get("blocks"):
            self._answer(200, {"ok": False, "error": "no_text"})
            return
        ts = self.server_state._record(SlackCall(self.path, body, self._header_dict()))
        answer: dict[str, Any] = {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "message": {
                "type": "message",
                "subtype": "bot_message",
                "text": body.get("text", ""),
                "bot_id": "B0LEADWERK",
                "ts": ts,
                **({"blocks": body["blocks"]} if "blocks" in body else {}),
            },
        }
        if "charset=utf-8" not in (self.headers.get("Content-Type") or "").lower():
            answer["warning"] = "missing_charset"
            answer["response_metadata"] = {"warnings": ["missing_charset"]}
        self._answer(200, answer)

    def _webhook(self, raw: bytes) -> None:
        body = self._json_body(raw)
        if body is None or not (body.get("text") or body.get("blocks")):
            self._answer(400, "invalid_payload")
            return
        self.server_state._record(SlackCall(self.path, body, self._header_dict()))
        self._answer(200, "ok")

    def _json_body(self, raw: bytes) -> dict[str, Any] | None:
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return None
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _header_dict(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _answer(
        self,
        status: int,
        body: dict[str, Any] | str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, dict):
            content, content_type = json.dumps(body).encode(), "application/json; charset=utf-8"
        else:
            content, content_type = (body or "").encode(), "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; failures show up as assertion errors instead."""
