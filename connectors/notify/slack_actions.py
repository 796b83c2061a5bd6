"""Slack calling back: a rep clicks a button of one of our messages (interactivity).

Slack POSTs ``application/x-www-form-urlencoded`` with one field, ``payload``, a JSON document
(``type: block_actions``, ``user``, ``actions``, the ``message`` clicked in and a
``response_url`` to answer through), and signs each request: the header
``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw
body}`` under the app's signing secret. A request older (or newer) than five minutes is
refused, so a captured one cannot be replayed. What Slack sends is read here and nowhere else.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from connectors import json_depth

REPLAY_WINDOW = timedelta(minutes=5)


class SlackRequestError(ValueError):
    """The request is not a valid, fresh, signed Slack interaction."""


@dataclass(frozen=True)
class BlockAction:
    """One button click: its ``action_id``, the button's ``value`` and the Slack user id."""

    action_id: str
    value: str | None
    user_id: str | None


@dataclass(frozen=True)
class BlockActions:
    """One interaction: its clicks; the ``response_url`` through which to change what the rep
    sees (Slack ignores the body of our answer); the ``blocks`` of the message clicked in."""

    actions: tuple[BlockAction, ...] = ()
    response_url: str | None = None
    message_blocks: list[dict[str, Any]] | None = None


def verify_slack_request(
    secret: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> None:
    """Raise :class:`SlackRequestError` unless ``body`` is signed with ``secret`` and fresh.

    ``headers`` is looked up by lower-case name (Starlette's and httpx's headers are).
    """
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise SlackRequestError("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SlackRequestError("X-Slack-Request-Timestamp is not a Unix time") from None
    if abs(now.timestamp() - sent) > REPLAY_WINDOW.total_seconds():
        raise SlackRequestError(
            "request timestamp is more than 5 minutes off (a replay, or a clock out of sync)"
        )
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SlackRequestError("signature does not match")


def parse_block_actions(body: bytes) -> BlockActions:
    """The clicks in an interaction payload; other interaction types carry none. A field of
    the wrong type reads as absent."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json_depth.loads(fields["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise SlackRequestError(f"not a Slack interaction payload: {exc}") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return BlockActions()
    user = payload.get("user") or {}
    user_id = user.get("id") if isinstance(user, dict) else None
    user_id = user_id if isinstance(user_id, str) else None
    actions = []
    for action in payload.get("actions") or []:
        if isinstance(action, dict) and isinstance(action.get("action_id"), str):
            value = action.get("value")
            actions.append(
                BlockAction(action["action_id"], value if isinstance(value, str) else None, user_id)
            )
    response_url = payload.get("response_url")
    message = payload.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    return BlockActions(
        actions=tuple(actions),
        response_url=response_url if isinstance(response_url, str) and response_url else None,
        message_blocks=(
            [block for block in blocks if isinstance(block, dict)]
            if isinstance(blocks, list)
            else None
        ),
    )
