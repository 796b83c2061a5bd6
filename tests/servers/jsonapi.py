"""A real JSON API for connector tests: an HTTP server on 127.0.0.1, on a port the OS picks.

    records = [{"id": "r1", "submitted_at": "2026-11-01T10:00:00Z", ...}, ...]
    with JsonApiServer(records, pagination="cursor", page_size=2, bearer="t0ken") as api:
        api.script([(503, None), (429, {"Retry-After": "0"})])
        source = HttpJsonSource(config_for(api.url), {"FORMS_TOKEN": "t0ken"})
        pages = list(source.fetch(None))
        assert [r.params.get("cursor") for r in api.requests] == [None, None, None, "c2", ...]

It serves ``records`` at ``path`` (default ``/api/submissions``), oldest first as given, in
one of these pagination styles:

* ``none``: every record at once;
* ``next_link``: ``{"data": [...], "links": {"next": <absolute URL or null>}}``;
* ``link_header``: ``{"data": [...]}`` and ``Link: <URL>; rel="next"``;
* ``cursor``: ``{"data": [...], "meta": {"next_cursor": <token or null>}}``, token sent back
  as ``?cursor=``;
* ``offset``: ``?offset=&limit=`` (the limit capped at ``page_size``);
* ``page``: ``?page=`` counting from 1.

``records_key=""`` sends the bare list. ``?since=`` keeps the records whose ``since_field`` is
at or after it (compared as text, which orders ISO 8601 times). Credentials are checked when
``bearer``, ``basic`` (user, password) or ``header`` (name, value) is set: anything else gets
401 ``{"error": "invalid_token"}``.

:meth:`ScriptedServer.script` queues answers for the next requests, one per request, before
normal serving resumes: ``(status, headers)`` or ``(status, headers, body)`` tuples, or
:data:`NORMAL_PAGE`, :data:`EMPTY_PAGE` (a page with no records) and :data:`REPEAT_PAGE` (the
page asked for, but pointing back at itself: the same next link or token; for ``offset`` and
``page``, the previous page's records again). Every request lands in ``.requests``.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlencode, urlsplit

HOST = "127.0.0.1"

NORMAL_PAGE = "normal page"
EMPTY_PAGE = "empty page"
REPEAT_PAGE = "repeat page"

Step = tuple[int, Mapping[str, str] | None] | tuple[int, Mapping[str, str] | None, Any] | str
Style = Literal["none", "next_link", "link_header", "cursor", "offset", "page"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it; ``params`` keep the last value of each name and
    ``headers`` have lower-case names."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    """What the server answers: JSON for anything but bytes, which go out as they are."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """A ThreadingHTTPServer in a background thread with a request log and scripted answers.

    Subclasses implement :meth:`answer`; scripted tuples short-cut it.
    """

    def __init__(self) -> None:
        self.requests: list[LoggedRequest] = []
        self._script: deque[Step] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval lets __exit__ stop the server at once rather than in 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "use the server as a context manager"
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    def script(self, steps: Iterable[Step]) -> None:
        """Queue answers for the next requests, one step per request."""
        with self._lock:
            self._script.extend(steps)

    def answer(self, request: LoggedRequest, step: str) -> Reply:
        """The reply to ``request``; ``step`` is NORMAL_PAGE unless a string step was scripted."""
        raise NotImplementedError

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        split = urlsplit(handler.path)
        request = LoggedRequest(
            method=handler.command,
            path=split.path,
            params={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(request)
            step = self._script.popleft() if self._script else NORMAL_PAGE
        if isinstance(step, tuple):
            status, headers, *rest = step
            body = rest[0] if rest else {"error": HTTPStatus(status).phrase}
            reply = Reply(status, body, dict(headers or {}))
        else:
            reply = self.answer(request, step)
        self._write(handler, reply)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        headers = dict(reply.headers)
        if isinstance(reply.body, bytes):
            payload = reply.body
            headers.setdefault("Content-Type", "text/html; charset=utf-8")
        else:
            payload = json.dumps(reply.body).encode()
            headers.setdefault("Content-Type", "application/json")
        handler.send_response(reply.status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


class JsonApiServer(ScriptedServer):
    """A paginated JSON API over ``records``; see the module docstring."""

    def __init__(
        self,
        records: Iterable[Any],
        *,
        pagination: Style = "none",
        page_size: int = 2,
        path: str = "/api/submissions",
        records_key: str = "data",
        since_param: str = "since",
        since_field: str = "submitted_at",
        bearer: str | None = None,
        basic: tuple[str, str] | None = None,
        header: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.records = list(records)
        self.pagination = pagination
        self.page_size = page_size
        self.path = path
        self.records_key = records_key
        self.since_param = since_param
        self.since_field = since_field
        self.bearer = bearer
        self.basic = basic
        self.header = header
        self._previous_window = (0, 0)

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        if self.bearer is not None and headers.get("authorization") != f"Bearer {self.bearer}":
            return False
        if self.basic is not None:
            pair = base64.b64encode(":".join(self.basic).encode()).decode()
            if headers.get("authorization") != f"Basic {pair}":
                return False
        return self.header is None or headers.get(self.header[0].lower()) == self.header[1]

    def answer(self, request: LoggedRequest, step: str) -> Reply:
        if request.path != self.path:
            return Reply(404, {"error": "not_found"})
        if not self._authorised(request.headers):
            return Reply(401, {"error": "invalid_token"}, {"WWW-Authenticate": "Bearer"})
        selected = self._since(request.params.get(self.since_param))
        start, end = self._window(request.params, len(selected))
        if step == REPEAT_PAGE and self.pagination in ("offset", "page"):
            start, end = self._previous_window
        self._previous_window = (start, end)
        page = [] if step == EMPTY_PAGE else selected[start:end]
        more = end < len(selected) and step != EMPTY_PAGE
        if step == REPEAT_PAGE:
            next_start: int | None = start
        else:
            next_start = end if more else None
        return self._page(request, page, next_start)

    def _since(self, since: str | None) -> list[Any]:
        if since is None:
            return list(self.records)
        return [
            r
            for r in self.records
            if not isinstance(r, dict) or str(r.get(self.since_field, "")) >= since
        ]

    def _window(self, params: Mapping[str, str], total: int) -> tuple[int, int]:
        size = self.page_size
        if self.pagination == "none":
            return 0, total
        if self.pagination in ("next_link", "link_header"):
            start = int(params.get("offset", 0))
        elif self.pagination == "cursor":
            start = int(params.get("cursor", "c0")[1:])
        elif self.pagination == "offset":
            start = int(params.get("offset", 0))
            size = min(int(params.get("limit", size)), size)
        else:
            start = (int(params.get("page", 1)) - 1) * size
        return start, start + size

    def _page(self, request: LoggedRequest, page: list[Any], next_start: int | None) -> Reply:
        body: Any = {self.records_key: page} if self.records_key else page
        headers: dict[str, str] = {}
        if self.pagination in ("next_link", "link_header"):
            link = None
            if next_start is not None:
                query = {k: v for k, v in request.params.items() if k != "offset"}
                link = f"{self.url}?{urlencode({**query, 'offset': next_start})}"
            if self.pagination == "next_link":
                body["links"] = {"next": link}
            elif link:
                headers["Link"] = f'<{link}>; rel="next"'
        elif self.pagination == "cursor":
            token = None if next_start is None else f"c{next_start}"
            body["meta"] = {"next_cursor": token}
        return Reply(200, body, headers)
