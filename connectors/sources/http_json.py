"""``http_json``: any paginated JSON API, polled.

One :class:`~connectors.sources.base.Page` per HTTP page. The cursor a page carries is what to
store once that page is safely stored:

* ``watermark``: the largest value of ``cursor.field`` seen so far. The next pass sends it as
  ``?<cursor.param>=<watermark>``; APIs usually include the boundary record again, and ingest
  drops it as a duplicate of its record id or content.
* ``resume``: while a pass is under way, where the next page is (next URL, token, offset or
  page number) and the ``since`` value the pass started with, so an interrupted pass picks up
  where it stopped. The last page of a pass carries no ``resume``; when the end only shows as
  an empty page (offset and page numbering), a closing page without records carries it.

A pass stops at an empty page, at a missing next link or token, and with a
:class:`FatalError` when the API loops (a token or next URL repeats, or a page repeats the
previous one's records).
"""

from __future__ import annotations

import base64
import functools
import json
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

from connectors.errors import FatalError
from connectors.http import ClientOwner, JsonReply, describe_url, request_json_reply
from connectors.json_depth import MAX_JSON_DEPTH, nests_deeper
from connectors.sources.base import Page, PulledSource, RawRecord, SourceConfig

if TYPE_CHECKING:
    import httpx

# --- paths into JSON -----------------------------------------------------------------------

_SEGMENT = re.compile(r"\[(-?\d+)\]|\.?([^.\[\]]+)")
_MISSING = object()


@functools.lru_cache(maxsize=512)
def _parse_path(path: str) -> tuple[str | int, ...]:
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[str | int] = []
    position = 0
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if not match:
            raise ValueError(f"{path!r} is not a path like $.a.b, $.a[0].b or a.b")
        steps.append(int(match[1]) if match[1] is not None else match[2])
        position = match.end()
    return tuple(steps)


def _resolve(obj: Any, path: str) -> Any:
    """The value at ``path``, or ``_MISSING`` when a step does not exist."""
    value = obj
    for step in _parse_path(path):
        if isinstance(value, Mapping) and isinstance(step, str):
            if step not in value:
                return _MISSING
            value = value[step]
        elif isinstance(value, list) and (isinstance(step, int) or step.lstrip("-").isdigit()):
            index = int(step)
            if not -len(value) <= index < len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def json_path(obj: Any, path: str) -> Any:
    """The value at ``path`` in ``obj``, or None when it is not there.

    Paths look like ``$.a.b``, ``$.a[0].b`` or plain ``a.b`` (``a.0.b`` indexes a list too;
    negative indexes count from the end); ``""`` and ``"$"`` are ``obj`` itself. A malformed
    path raises ValueError.
    """
    value = _resolve(obj, path)
    return None if value is _MISSING else value


def parse_time(value: Any) -> datetime | None:
    """A timezone-aware datetime from ISO 8601 text or Unix seconds (milliseconds when the
    number is too large for seconds); naive times are taken as UTC. None when unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        value = float(value)
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- configuration -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BearerAuth(_Strict):
    """``Authorization: Bearer <token>`` with the token from ``bearer_env``."""

    bearer_env: str


class BasicCredentials(_Strict):
    user_env: str
    password_env: str


class BasicAuth(_Strict):
    """HTTP Basic authentication with user and password from the environment."""

    basic: BasicCredentials


class HeaderCredential(_Strict):
    name: str
    value_env: str


class HeaderAuth(_Strict):
    """A header of the API's choosing (``X-Api-Key``) with its value from the environment."""

    header: HeaderCredential


class WatermarkCursor(_Strict):
    """Send ``?<param>=<largest value of field seen>`` to ask only for newer records."""

    param: str
    field: str


class NextLinkPagination(_Strict):
    """The next page's URL is at ``path`` in the body, or (no path) in ``Link: rel=next``."""

    kind: Literal["next_link"]
    path: str | None = None


class TokenPagination(_Strict):
    """The body holds a token at ``token_field``; the next request sends it as ``param``."""

    kind: Literal["cursor"]
    token_field: str
    param: str


class OffsetPagination(_Strict):
    """``?<param>=<records so far>&<limit_param>=<limit>``."""

    kind: Literal["offset"]
    param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, ge=1)


class PagePagination(_Strict):
    """``?<param>=<page number>``, counting from ``start``."""

    kind: Literal["page"]
    param: str = "page"
    start: int = 1


def _short(token: Any) -> str:
    text = str(token)
    return text if len(text) <= 24 else text[:24] + "…"


# --- pagination styles ---------------------------------------------------------------------
#
# A position says where a page is: {} (unpaginated), {"url"}, {"token"}, {"offset"} or
# {"page"}; None for the first URL or token. It is what ``resume`` stores, so its keys also tell
# whether a stored pass was begun under the same style.


class Paginator(ABC):
    """One pagination style, for one pass: where the first page is, how to ask for a page,
    and where the next one is. A paginator remembers the pass's pages to detect loops.

    ``config_model`` is the style's entry under ``pagination:``, its ``kind`` the ``style``.
    """

    style: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, spec: Any, source: str, origin: str) -> None:
        self.spec = spec
        self.source = source
        self.origin = origin

    @abstractmethod
    def first(self) -> dict[str, Any]:
        """The position of the first page."""

    def request(
        self, position: dict[str, Any], url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """The URL and query of the page at ``position``; ``params`` is the source's own
        query. Without a position of its own the style asks for ``url`` with ``params``."""
        return url, params

    @abstractmethod
    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        """The position after the page ``reply`` answered with ``count`` records; None when
        that was the last page. Raises FatalError when the API loops."""


class NoPagination(Paginator):
    """A single page."""

    style = ""

    def first(self) -> dict[str, Any]:
        return {}

    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        return None


class NextLinkPaginator(Paginator):
    """The next page's URL is in the body or in ``Link: rel=next``; it must stay on the
    source's origin, as it is sent the source's credentials."""

    style = "next_link"
    config_model = NextLinkPagination
    spec: NextLinkPagination

    def __init__(self, spec: NextLinkPagination, source: str, origin: str) -> None:
        super().__init__(spec, source, origin)
        self._seen: set[str] = set()

    def first(self) -> dict[str, Any]:
        return {"url": None}

    def request(
        self, position: dict[str, Any], url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        if position.get("url"):
            return position["url"], None  # a next link carries its own query
        return url, params

    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        if self.spec.path:
            link = json_path(reply.body, self.spec.path)
        else:
            link = reply.response.links.get("next", {}).get("url")
        if not link:
            return None
        import httpx

        current = reply.response.url
        target = httpx.URL(urljoin(str(current), str(link)))
        origin = httpx.URL(self.origin)
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
            raise FatalError(
                f"{self.source}: the next-page link points to {target.host}, not "
                f"{origin.host}; refusing to send this source's credentials there"
            )
        self._seen.add(str(current))
        if str(target) in self._seen:
            raise FatalError(
                f"{self.source}: the next-page link {describe_url(target)} repeats a page "
                "already fetched; the API is stuck in a loop, stopping this pass"
            )
        return {"url": str(target)}


class TokenPaginator(Paginator):
    """The body holds the next page's token; the next request sends it as a parameter."""

    style = "cursor"
    config_model = TokenPagination
    spec: TokenPagination

    def __init__(self, spec: TokenPagination, source: str, origin: str) -> None:
        super().__init__(spec, source, origin)
        self._seen: set[str] = set()

    def first(self) -> dict[str, Any]:
        return {"token": None}

    def request(
        self, position: dict[str, Any], url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        if position["token"] is not None:
            params[self.spec.param] = position["token"]
        return url, params

    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        token = json_path(reply.body, self.spec.token_field)
        if token is None or token == "":
            return None
        key = str(token)
        if token == position["token"] or key in self._seen:
            raise FatalError(
                f"{self.source}: pagination token {_short(token)!r} is identical to "
                "the prior token; the API is stuck in a loop, stopping this pass"
            )
        self._seen.add(key)
        return {"token": token}


class OffsetPaginator(Paginator):
    """``?<param>=<records so far>&<limit_param>=<limit>``."""

    style = "offset"
    config_model = OffsetPagination
    spec: OffsetPagination

    def first(self) -> dict[str, Any]:
        return {"offset": 0}

    def request(
        self, position: dict[str, Any], url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        params[self.spec.param] = position["offset"]
        params[self.spec.limit_param] = self.spec.limit
        return url, params

    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        # Advance by what came, not by the limit asked: servers may cap page sizes.
        return {"offset": position["offset"] + count}


class PagePaginator(Paginator):
    """``?<param>=<page number>``, counting from ``start``."""

    style = "page"
    config_model = PagePagination
    spec: PagePagination

    def first(self) -> dict[str, Any]:
        return {"page": self.spec.start}

    def request(
        self, position: dict[str, Any], url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        params[self.spec.param] = position["page"]
        return url, params

    def next(self, position: dict[str, Any], reply: JsonReply, count: int) -> dict[str, Any] | None:
        return {"page": position["page"] + 1}


PAGINATORS: dict[str, type[Paginator]] = {
    paginator.style: paginator
    for paginator in (NextLinkPaginator, TokenPaginator, OffsetPaginator, PagePaginator)
}
"""Pagination styles by the ``kind:`` under ``pagination:`` in the source config; a style is
its config model plus its paginator, added here."""

Pagination = Annotated[
    functools.reduce(operator.or_, (style.config_model for style in PAGINATORS.values())),
    Field(discriminator="kind"),
]


class HttpJsonConfig(SourceConfig):
    kind: Literal["http_json"]
    url: str
    auth: BearerAuth | BasicAuth | HeaderAuth | None = None
    cursor: WatermarkCursor | None = None
    pagination: Pagination | None = None
    records: str = ""
    id_field: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)


# --- the source ----------------------------------------------------------------------------


def require_env(env: Mapping[str, str], name: str, source: str, holds: str) -> str:
    """The value of environment variable ``name``, or a FatalError telling the admin to set it."""
    value = env.get(name)
    if not value:
        raise FatalError(
            f"{source}: environment variable {name} is not set; it should hold {holds}"
        )
    return value


def _auth_headers(config: HttpJsonConfig, env: Mapping[str, str]) -> dict[str, str]:
    auth = config.auth
    if isinstance(auth, BearerAuth):
        token = require_env(env, auth.bearer_env, config.name, "the API token")
        return {"Authorization": f"Bearer {token}"}
    if isinstance(auth, BasicAuth):
        user = require_env(env, auth.basic.user_env, config.name, "the API user name")
        password = require_env(env, auth.basic.password_env, config.name, "the API password")
        pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}
    if isinstance(auth, HeaderAuth):
        value = require_env(env, auth.header.value_env, config.name, "the API key")
        return {auth.header.name: value}
    return {}


def _credential_env(config: HttpJsonConfig) -> str | None:
    auth = config.auth
    if isinstance(auth, BearerAuth):
        return auth.bearer_env
    if isinstance(auth, BasicAuth):
        return f"{auth.basic.user_env} and {auth.basic.password_env}"
    if isinstance(auth, HeaderAuth):
        return auth.header.value_env
    return None


def _later(a: Any, b: Any) -> Any:
    """The later of two watermark values: numbers by value, anything else as text."""
    if a is None or b is None:
        return b if a is None else a
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return max(a, b)
    return b if str(b) > str(a) else a


def _watermark_value(item: Any, field: str) -> Any:
    value = json_path(item, field) if isinstance(item, dict) else None
    return None if isinstance(value, bool | dict | list) else value


def paginator_for(config: HttpJsonConfig) -> Paginator:
    """A fresh paginator for one pass of ``config``'s source."""
    spec = config.pagination
    style = PAGINATORS[spec.kind] if spec is not None else NoPagination
    return style(spec, config.name, config.url)


class HttpJsonSource(ClientOwner, PulledSource):
    """Polls one JSON API as ``HttpJsonConfig`` describes it.

    ``retry`` passes keyword arguments on to :func:`connectors.http.request_json_reply`
    (``max_attempts``, ``max_wait``, ``base_wait``, ``sleep``). A ``client`` given is used
    as is and left open; without one the source makes its own and closes it in :meth:`close`.
    """

    kind = "http_json"
    config_model = HttpJsonConfig
    config: HttpJsonConfig

    def __init__(
        self,
        config: HttpJsonConfig,
        env: Mapping[str, str],
        client: httpx.Client | None = None,
        retry: dict[str, Any] | None = None,
    ) -> None:
        PulledSource.__init__(self, config, env)
        self._headers = {**config.headers, **_auth_headers(config, env)}
        self._credential_env = _credential_env(config)
        ClientOwner.__init__(self, client, retry)

    def fetch(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        stored = cursor or {}
        watermark = stored.get("watermark")
        resume = stored.get("resume")
        paginator = paginator_for(self.config)
        position = paginator.first()
        if isinstance(resume, dict) and set(resume) - {"since"} == set(position):
            since = resume.get("since")
            position = {key: resume[key] for key in position}
        else:  # no pass under way, or one begun under another pagination style
            resume, since = None, watermark
        pass_open = resume is not None
        previous_items: list[Any] | None = None
        while True:
            params: dict[str, Any] = dict(self.config.params)
            if self.config.cursor and since is not None:
                params[self.config.cursor.param] = since
            url, query = paginator.request(position, self.config.url, params)
            reply = request_json_reply(
                self._client,
                "GET",
                url,
                params=query,
                headers=self._headers,
                source=self.config.name,
                token_env=self._credential_env,
                **self._retry,
            )
            items = self._items(reply)
            if not items:
                if pass_open:
                    yield Page([], cursor=self._cursor(watermark, None, since))
                return
            if items == previous_items:
                raise FatalError(
                    f"{self.config.name}: {describe_url(reply.response.url)} answered the same "
                    "records as for the previous page; pagination is stuck in a loop, check "
                    "`pagination:` in the source config"
                )
            previous_items = items
            records = [self._record(item) for item in items]
            if self.config.cursor:
                for item in items:
                    watermark = _later(watermark, _watermark_value(item, self.config.cursor.field))
            next_position = paginator.next(position, reply, len(items))
            pass_open = next_position is not None
            yield Page(records, cursor=self._cursor(watermark, next_position, since))
            if next_position is None:
                return
            position = next_position

    def _cursor(
        self, watermark: Any, next_position: dict[str, Any] | None, since: Any
    ) -> dict[str, Any]:
        cursor: dict[str, Any] = {}
        if watermark is not None:
            cursor["watermark"] = watermark
        if next_position is not None:
            cursor["resume"] = {**next_position, "since": since}
        return cursor

    def _items(self, reply: JsonReply) -> list[Any]:
        found = _resolve(reply.body, self.config.records)
        if found is None:
            return []
        if not isinstance(found, list):
            where = describe_url(reply.response.url)
            what = "nothing" if found is _MISSING else f"a {type(found).__name__}"
            raise FatalError(
                f"{self.config.name}: `records: {self.config.records}` found {what} in the "
                f"answer of {where}, not a list; point it at the list of records"
            )
        return found

    def _record(self, item: Any) -> RawRecord:
        if not isinstance(item, dict):
            return RawRecord(data={"value": item}, error="the record is not a JSON object")
        record_id = json_path(item, self.config.id_field) if self.config.id_field else None
        if nests_deeper(item):
            # Kept as its text: whatever reads the quarantine later need not walk it.
            return RawRecord(
                data={"value": json.dumps(item)},
                record_id=None if record_id is None or record_id == "" else str(record_id),
                error=f"the record is JSON nested deeper than {MAX_JSON_DEPTH} levels",
            )
        occurred_at = (
            parse_time(json_path(item, self.config.cursor.field)) if self.config.cursor else None
        )
        return RawRecord(
            data=item,
            record_id=None if record_id is None or record_id == "" else str(record_id),
            occurred_at=occurred_at,
        )
