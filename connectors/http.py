"""Shared HTTP behaviour of the pull connectors: one client shape, one retry policy.

Every connector that reads a vendor API goes through :func:`request_json_reply` (the decoded
body with its response, for headers such as ``Link``), so timeouts, the
User-Agent, retries and the translation of HTTP failures into ``connectors.errors`` classes are
the same everywhere:

* transport errors, 408, 425, 429 and 5xx are retried with jittered exponential backoff, or
  after the ``Retry-After`` the server sent (seconds or an HTTP date);
* a server that asks for a longer wait than ``max_wait`` is not waited for in line: the call
  raises :class:`RetriableError` carrying ``retry_after`` so the job queue comes back later;
* 401/403/404 and other 4xx raise :class:`FatalError` naming the source, the environment
  variable that holds the credentials and the URL path (never the query, which may hold keys).

Requests are retried as they are, so use these helpers for idempotent calls.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from connectors import json_depth
from connectors.errors import FatalError, RetriableError
from connectors.optional import hidden

if TYPE_CHECKING:  # imported where used: a command that only loads config/ never loads httpx
    import httpx

log = logging.getLogger(__name__)

# Statuses that say "not now" rather than "never": timeouts, rate limits and server faults.
RETRIABLE_STATUSES = frozenset({408, 425, 429})
# Error identifiers vendors put in error bodies ("AUTHENTICATION_FAILED", "invalid_token"): safe
# to show an admin, unlike free-text descriptions that may echo personal data back.
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def _leadwerk_version() -> str:
    try:
        return version("leadwerk")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "dev"


USER_AGENT = f"Leadwerk/{_leadwerk_version()}"


def _load_httpcore() -> None:
    """Load httpcore, httpx's transport, without trio: httpcore imports trio at load time
    whenever it is installed, which took 0.16 s of every ``run --once``; Leadwerk's clients
    are synchronous, or run under asyncio, and never need it."""
    if "httpcore" not in sys.modules:
        with hidden("trio"):
            import httpcore  # noqa: F401


def make_client(
    base_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` with Leadwerk's User-Agent and explicit timeouts (connect 5 s,
    read 15 s unless ``timeout`` says otherwise). Redirects are followed; httpx drops the
    Authorization header when a redirect leaves the origin."""
    import httpx

    _load_httpcore()
    merged = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    merged.update(headers or {})
    return httpx.Client(
        base_url=base_url or "",
        headers=merged,
        timeout=timeout or httpx.Timeout(15.0, connect=5.0),
        follow_redirects=True,
    )


@dataclass(frozen=True)
class JsonReply:
    """A decoded JSON body and the response it came in (for headers such as ``Link``)."""

    body: Any
    response: httpx.Response


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date.

    A date in the past gives 0; a value that is neither gives None.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def describe_url(url: httpx.URL) -> str:
    """Host, port and path of ``url``: what an admin needs, without query-string secrets."""
    port = f":{url.port}" if url.port else ""
    return f"{url.host}{port}{url.path}"


def request_json_reply(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    inspect: Callable[[httpx.Response], None] | None = None,
    source: str = "",
    token_env: str | None = None,
    max_attempts: int = 5,
    max_wait: float = 30.0,
    base_wait: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> JsonReply:
    """Send a request with retries and return the decoded JSON body with its response.

    ``source`` (the source's name) and ``token_env`` (the environment variable that holds its
    credentials) only make error messages actionable. ``base_wait`` is the first backoff step,
    ``max_wait`` caps every wait; ``sleep`` is how waiting is done.

    Raises :class:`RetriableError` when the server stays unavailable for ``max_attempts``
    attempts or asks to wait longer than ``max_wait`` (``retry_after`` then says how long),
    and :class:`FatalError` for answers that retrying cannot fix. ``data``: a form body
    instead of JSON; ``content``: raw bytes (a body that is signed as sent). ``inspect``:
    sees every response first and may raise a connector error of its own (a vendor's error
    code in a body, an expired token), which is retried when retriable.
    """
    import httpx

    request = client.build_request(
        method, url, params=params, json=json, data=data, content=content, headers=headers
    )
    label = source or "HTTP source"
    where = f"{method} {describe_url(request.url)}"

    def attempt() -> JsonReply:
        try:
            response = client.send(request)
        except httpx.TransportError as exc:
            raise RetriableError(f"{label}: {where} failed ({type(exc).__name__})") from exc
        if inspect is not None:
            inspect(response)
        return _interpret(response, label, where, token_env)

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s; retrying in %.2f s (attempt %d of %d)",
            error,
            wait,
            state.attempt_number + 1,
            max_attempts,
        )

    retrying = Retrying(
        stop=stop_after_attempt(max_attempts) | _stop_if_asked_to_wait_over(max_wait),
        wait=_wait_retry_after(
            wait_exponential_jitter(multiplier=base_wait, max=max_wait, jitter=base_wait)
        ),
        retry=retry_if_exception_type(RetriableError),
        before_sleep=log_retry,
        sleep=sleep,
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        assert isinstance(last, RetriableError)  # the only error retried
        if last.retry_after is not None and last.retry_after > max_wait:
            raise RetriableError(
                f"{last}; it asked to wait {last.retry_after:.0f} s, longer than the "
                f"{max_wait:.0f} s a request waits in line, so the job will come back later",
                retry_after=last.retry_after,
            ) from last
        raise RetriableError(
            f"{last}; gave up after {exc.last_attempt.attempt_number} attempts",
            retry_after=last.retry_after,
        ) from last


def _interpret(
    response: httpx.Response, label: str, where: str, token_env: str | None
) -> JsonReply:
    status = response.status_code
    answered = f"{label}: {where} answered {status} {response.reason_phrase}".rstrip()
    if status in RETRIABLE_STATUSES or status >= 500:
        raise RetriableError(
            answered, retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    credentials = f"the credentials in {token_env}" if token_env else "the configured credentials"
    if status == 401:
        raise FatalError(f"{answered}: it refused {credentials}; check that they are current")
    if status == 403:
        raise FatalError(f"{answered}: {credentials} may not read this; check their permissions")
    if status == 404:
        raise FatalError(f"{answered}: nothing is there; check the URL or id in the source config")
    if status >= 300:
        code = _error_code(response)
        detail = f" ({code})" if code else ""
        raise FatalError(f"{answered}{detail}; check the request settings in the source config")
    if status == 204 or not response.content:
        return JsonReply(None, response)
    try:
        return JsonReply(json_depth.loads(response.content, json_depth.MAX_PAGE_DEPTH), response)
    except json_depth.JsonDepthError as exc:
        raise FatalError(f"{answered} with {exc}; no API answers like that") from None
    except ValueError as exc:
        content_type = response.headers.get("Content-Type", "")
        if "json" in content_type:
            # Announced as JSON but unreadable: a body cut short on the way, worth another try.
            raise RetriableError(f"{answered} with a JSON body that does not parse") from exc
        raise FatalError(
            f"{answered} with {content_type or 'an untyped body'} instead of JSON; "
            "check that the URL points at the API"
        ) from exc


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = json_depth.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for key in ("code", "error"):
        value = body.get(key)
        if isinstance(value, str) and _ERROR_CODE.match(value):
            return value
    return None


def _asked_wait(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome else None
    return error.retry_after if isinstance(error, RetriableError) else None


class _stop_if_asked_to_wait_over(stop_base):
    """Stop when the server asks for a longer wait than a request may spend in line."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        asked = _asked_wait(retry_state)
        return asked is not None and asked > self.max_wait


class _wait_retry_after(wait_base):
    """Wait as long as the server asked with ``Retry-After``, else as ``fallback`` says."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = _asked_wait(retry_state)
        return asked if asked is not None else self.fallback(retry_state)


class ClientOwner:
    """Holds the HTTP client of a connector: its own (made on first use, closed by
    :meth:`close`) or one passed in by the caller (left open), plus the retry options for
    :func:`request_json_reply`. ``timeout`` applies to a client of its own."""

    def __init__(
        self,
        client: httpx.Client | None,
        retry: dict[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self._given_client = client
        self._own_client: httpx.Client | None = None
        self._client_timeout = timeout
        self._client_lock = threading.Lock()
        self._retry = dict(retry or {})

    @property
    def _client(self) -> httpx.Client:
        if self._given_client is not None:
            return self._given_client
        with self._client_lock:  # a notifier is shared by the worker's threads
            if self._own_client is None:
                self._own_client = make_client(timeout=self._client_timeout)
            return self._own_client

    def close(self) -> None:
        with self._client_lock:
            client, self._own_client = self._own_client, None
        if client is not None:
            client.close()
