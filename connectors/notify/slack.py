"""Slack out through the Web API (``chat.postMessage``), incoming webhooks, or the
``response_url`` of a button click.

The Web API answers HTTP 200 with ``{"ok": false, "error": "..."}`` for most failures; the
error code decides the class raised: a bad token stops the worker (FatalError), an unknown
user or channel lets the caller fall back to e-mail (UndeliverableError), rate limits and
Slack-side faults are retried (RetriableError). Both notifiers translate Slack's answers the
same way (:meth:`_SlackPoster._raise_for`); httpx errors never leave this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.http import USER_AGENT, ClientOwner, parse_retry_after
from connectors.notify.base import Notifier, OutboundMessage, SendResult

TOKEN_ENV = "LEADWERK_SLACK_TOKEN"

_AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
    }
)
# The user or channel cannot be reached: the Web API's codes, and what incoming webhooks
# answer as plain text about the channel the hook posts to.
_RECIPIENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "user_not_found",
        "not_in_channel",
        "is_archived",
        "cannot_dm_bot",
        "user_disabled",
        "channel_is_archived",
        "posting_to_general_channel_denied",
    }
)
_SLACK_SIDE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

# Block Kit limits, from Slack's reference.
_HEADER_TEXT_MAX = 150
_SECTION_TEXT_MAX = 3000
_FIELD_TEXT_MAX = 2000
_FIELDS_MAX = 10
_BUTTON_VALUE_MAX = 2000
_BUTTON_URL_MAX = 3000
_BLOCKS_MAX = 50

# A Slack user id, as a mention takes it: U… (W… on Enterprise Grid).
_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
# Error codes in Slack's answers ("channel_not_found", "expired_url"); other text is not shown.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")

_DEFAULT_RETRY_AFTER = 1.0

# Slack wants the charset spelled out; without it the API answers with a missing_charset warning.
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def chat_post_message_body(message: OutboundMessage) -> dict[str, Any]:
    """The JSON body ``chat.postMessage`` gets for ``message``; ``blocks`` only when set, as
    Slack rejects a null ``blocks``."""
    body: dict[str, Any] = {"channel": message.to_address, "text": message.text}
    if message.blocks is not None:
        body["blocks"] = message.blocks
    return body


def webhook_body(message: OutboundMessage) -> dict[str, Any]:
    """The JSON body an incoming webhook gets: the hook fixes the channel."""
    body: dict[str, Any] = {"text": message.text}
    if message.blocks is not None:
        body["blocks"] = message.blocks
    return body


def _json_request_content(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _retry_after(response: httpx.Response) -> float:
    """The wait Slack asked for, or one second when it did not say (or said nonsense)."""
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    return _DEFAULT_RETRY_AFTER if seconds is None else seconds


def _describe_transport_error(exc: httpx.TransportError) -> str:
    return "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__


class _SlackPoster(ClientOwner, Notifier):
    """What both ways of posting to Slack share: the HTTP client (their own, or one passed in
    that belongs to the caller), the POST, and the translation of Slack's answers into
    ``connectors.errors`` classes."""

    channel = "slack"
    refused_hint = ""
    """What to check when Slack refuses the address outright (403/404)."""

    def __init__(self, timeout: float, client: httpx.Client | None) -> None:
        ClientOwner.__init__(self, client, timeout=httpx.Timeout(timeout))
        self._timeout = timeout

    def _post(
        self, where: str, url: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> httpx.Response:
        try:
            return self._client.post(
                url,
                content=_json_request_content(body),
                headers={**_JSON_HEADERS, **headers},
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            raise RetriableError(f"{where} unreachable: {_describe_transport_error(exc)}") from exc

    def _raise_for(
        self,
        where: str,
        response: httpx.Response,
        error: str | None,
        token_problem: str | None = None,
    ) -> NoReturn:
        """Raise what Slack's answer means: rate limits and Slack-side faults are retried,
        an unreachable user or channel falls back to e-mail, anything else stops with what
        to fix (``token_problem`` when the answer is about the bot token)."""
        status = response.status_code
        shown = error or f"HTTP {status}"
        if status == 429 or error == "ratelimited":
            raise RetriableError(f"{where}: rate limit hit", retry_after=_retry_after(response))
        if status >= 500 or error in _SLACK_SIDE_ERRORS:
            raise RetriableError(f"{where} failed on Slack's side ({shown})")
        if error in _RECIPIENT_ERRORS or status == 410:
            raise UndeliverableError(f"{where} cannot deliver to this user or channel ({shown})")
        if token_problem:
            raise FatalError(token_problem)
        if status in (403, 404):
            raise FatalError(f"{where} was refused ({shown}); {self.refused_hint}")
        raise FatalError(f"{where} refused the message ({shown})")


class SlackNotifier(_SlackPoster):
    """Posts with a bot token through ``chat.postMessage``; ``to_address`` is a user or
    channel id."""

    refused_hint = "check slack_base_url"

    def __init__(
        self,
        token: str,
        base_url: str = "https://slack.com/api",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(timeout, client)
        self._token = token
        self._url = f"{base_url.rstrip('/')}/chat.postMessage"

    def send(self, message: OutboundMessage) -> SendResult:
        where = "Slack API"
        response = self._post(
            where,
            self._url,
            chat_post_message_body(message),
            {"Authorization": f"Bearer {self._token}"},
        )
        if response.status_code != 200:
            self._raise_for(where, response, _error_code(response))
        try:
            answer = response.json()
        except ValueError:
            raise RetriableError(f"{where} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise RetriableError(f"{where} answered JSON that is not an object")
        if answer.get("ok") is True:
            ts = answer.get("ts")
            return SendResult(remote_id=ts if isinstance(ts, str) else None)
        error = str(answer.get("error", "unknown_error"))
        self._raise_for(where, response, error, _token_problem(error, answer))


def _token_problem(error: str, answer: dict[str, Any]) -> str | None:
    """What is wrong with the bot token, when Slack's ``error`` is about it."""
    if error == "missing_scope":
        needed = answer.get("needed") or "chat:write"
        return (
            f"the Slack bot token in {TOKEN_ENV} lacks the scope {needed} (missing_scope); "
            "add it to the Slack app and reinstall it"
        )
    if error in _AUTH_ERRORS:
        return (
            f"Slack rejected the bot token in {TOKEN_ENV} ({error}); set a valid bot "
            "token with the chat:write scope"
        )
    return None


class SlackWebhookNotifier(_SlackPoster):
    """Posts through incoming webhooks. ``to_address`` names the webhook; ``webhook_urls``
    maps names to URLs. The URLs are secrets, so messages only ever name the webhook."""

    refused_hint = "the webhook URL is revoked or wrong, create a new one in the Slack app"

    def __init__(
        self,
        webhook_urls: Mapping[str, str],
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(timeout, client)
        self._webhook_urls = dict(webhook_urls)

    def send(self, message: OutboundMessage) -> SendResult:
        name = message.to_address
        url = self._webhook_urls.get(name)
        if url is None:
            raise UndeliverableError(f"no Slack webhook named {name!r} is configured")
        where = f"Slack webhook {name!r}"
        response = self._post(where, url, webhook_body(message), {})
        if response.status_code == 200:
            # Webhooks answer a plain "ok" and give no message id.
            return SendResult()
        self._raise_for(where, response, _error_code(response))


def _escape(text: str) -> str:
    """Slack's required escaping for mrkdwn: lead data cannot turn into links or @-mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with an ellipsis, never inside an ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = re.sub(r"&[a-z]{0,3}$", "", text[: limit - 1])
    return f"{cut}…"


def lead_card_blocks(
    *,
    title: str,
    fields: list[tuple[str, str]],
    reasons: list[str],
    due_text: str | None,
    accept_url: str | None,
    accept_value: str,
) -> list[dict[str, Any]]:
    """Block Kit blocks for a lead notification.

    A header with ``title``; a section with up to 10 ``(label, value)`` fields; the
    ``reasons`` as a bulleted list, in the order given (the caller picks the top ones); the
    SLA ``due_text`` as a context line; and an actions block with a primary "Accept" button
    (``action_id`` ``accept_lead``, ``value`` ``accept_value``, opening ``accept_url`` when
    given). Texts are clipped to Slack's limits; lead data is escaped for mrkdwn. The button
    value and URL are not clipped, since a cut one would be wrong: too long is a ValueError.
    """
    if len(accept_value) > _BUTTON_VALUE_MAX:
        raise ValueError(f"accept_value is longer than Slack's {_BUTTON_VALUE_MAX} characters")
    if accept_url is not None and len(accept_url) > _BUTTON_URL_MAX:
        raise ValueError(f"accept_url is longer than Slack's {_BUTTON_URL_MAX} characters")

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, _HEADER_TEXT_MAX), "emoji": True},
        }
    ]
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _clip(f"*{_escape(label)}*\n{_escape(value)}", _FIELD_TEXT_MAX),
                    }
                    for label, value in fields[:_FIELDS_MAX]
                ],
            }
        )
    if reasons:
        listing = "\n".join(f"• {_escape(reason)}" for reason in reasons)
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"*Why*\n{listing}", _SECTION_TEXT_MAX)},
            }
        )
    if due_text:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _clip(f":alarm_clock: {_escape(due_text)}", _SECTION_TEXT_MAX),
                    }
                ],
            }
        )
    button: dict[str, Any] = {
        "type": "button",
        "action_id": "accept_lead",
        "text": {"type": "plain_text", "text": "Accept", "emoji": True},
        "style": "primary",
        "value": accept_value,
    }
    if accept_url is not None:
        button["url"] = accept_url
    blocks.append({"type": "actions", "elements": [button]})
    return blocks


def accepted_line(slack_user: str | None, when: str | None) -> str:
    """``:white_check_mark: Accepted by <@U024BE7LH> on Mon 16 Nov 2026, 09:03 CET``: mrkdwn
    for :func:`card_with_outcome`. The user becomes a mention (Slack shows their name) only
    when it is a Slack user id; ``when`` is escaped. No lead data, so nothing personal."""
    who = f" by <@{slack_user}>" if slack_user and _SLACK_USER_ID.fullmatch(slack_user) else ""
    at = f" on {_escape(when)}" if when else ""
    return f":white_check_mark: Accepted{who}{at}"


def card_with_outcome(
    original: Sequence[Mapping[str, Any]] | None, line: str
) -> list[dict[str, Any]]:
    """The lead card once it is dealt with, to replace the one clicked in.

    ``original`` (the card's blocks as Slack sends them back with the click) loses its actions
    block, so nothing is left to click, and gains ``line`` as a closing context line; without
    ``original`` the card is just that line. ``line`` is mrkdwn already (see
    :func:`accepted_line`), so it is clipped here, not escaped. Slack's ``block_id`` values are
    dropped: Slack gives the blocks of an updated message new ones.
    """
    kept = [
        {key: value for key, value in block.items() if key != "block_id"}
        for block in original or ()
        if block.get("type") != "actions"
    ]
    context = {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(line, _SECTION_TEXT_MAX)}],
    }
    return [*kept[: _BLOCKS_MAX - 1], context]


def replace_original_body(blocks: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """The JSON body a ``response_url`` takes to replace the message clicked in; ``text`` is
    the plain fallback shown in notifications."""
    return {
        "replace_original": True,
        "text": _clip(_escape(text), _SECTION_TEXT_MAX),
        "blocks": blocks,
    }


def ephemeral_body(text: str) -> dict[str, Any]:
    """The JSON body a ``response_url`` takes to show ``text`` to the clicking user only,
    leaving the message clicked in as it is."""
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": _clip(_escape(text), _SECTION_TEXT_MAX),
    }


async def post_to_response_url(url: str, body: dict[str, Any], timeout: float = 5.0) -> str | None:
    """POST ``body`` to a click's ``response_url``: None when Slack took it, else what went
    wrong, for a log line. Only http(s) URLs are posted to. The problem names the host, never
    the URL, which lets anyone post into the conversation while it is valid (30 minutes)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "response_url is not a URL; nothing posted"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "response_url is not an http(s) URL; nothing posted"
    where = f"response_url on {parts.hostname}"
    try:
        async with httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT}) as client:
            response = await client.post(
                url, content=_json_request_content(body), headers=_JSON_HEADERS
            )
    except httpx.InvalidURL:
        return "response_url is not a valid URL; nothing posted"
    except httpx.HTTPError as exc:
        reason = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
        return f"{where} unreachable: {reason}"
    error = _error_code(response)
    if not response.is_success:
        return f"{where} answered HTTP {response.status_code}" + (f" ({error})" if error else "")
    return f"{where} refused the message ({error})" if error else None


def _error_code(response: httpx.Response) -> str | None:
    """The error code in Slack's answer: plain text (incoming webhooks, a response_url) or
    ``{"ok": false, "error"}``. Only code-like text: other text is not shown."""
    try:
        answer = response.json()
    except ValueError:
        text = response.text.strip()
        return text if _ERROR_CODE.fullmatch(text) and text != "ok" else None
    if isinstance(answer, dict) and answer.get("ok") is False:
        error = answer.get("error")
        return error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "error"
    return None
