"""A stand-in for Typeform's Responses API on 127.0.0.1, answering as Typeform documents it.

    with TypeformServer(token="tfp_ok") as typeform:
        typeform.add(typeform_response("tok1", "2026-11-02T09:00:00Z", [
            typeform_answer("work_email", "email", "ada@example.com"),
        ]))
        source = TypeformSource(config(base_url=typeform.base_url), {"TYPEFORM_TOKEN": "tfp_ok"})

``GET /forms/{form_id}/responses`` answers ``{"total_items", "page_count", "items"}`` and
honours the documented query parameters:

* ``page_size``: 25 by default, at most 1000;
* ``since`` / ``until``: inclusive, Unix seconds or ISO 8601 UTC to the second, on
  ``submitted_at`` (``landed_at`` for responses not completed);
* ``after`` / ``before``: exclusive, by response token, in the order responses were processed
  (the order they were added here); documented as not combinable with ``sort``, so that is a
  400. A token this server does not know matches nothing;
* ``sort``: ``submitted_at`` or ``landed_at``, ``asc`` or ``desc`` (default ``submitted_at,desc``);
* ``response_type`` (``completed``, ``partial``, ``started``, comma separated) and the older
  ``completed=true|false``; without either, every response.

A request without ``Authorization: Bearer <token>`` gets 401 with Typeform's error body;
another form id gets 404 ``FORM_NOT_FOUND``. Scripted answers and the request log come from
:class:`tests.servers.jsonapi.ScriptedServer`. :func:`sign_typeform` signs webhook bodies the
way Typeform does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tests.servers.jsonapi import LoggedRequest, Reply, ScriptedServer

# Answer type -> the field type Typeform reports for a question answered that way.
_FIELD_TYPES = {
    "text": "short_text",
    "email": "email",
    "phone_number": "phone_number",
    "number": "number",
    "boolean": "yes_no",
    "date": "date",
    "url": "website",
    "file_url": "file_upload",
    "choice": "multiple_choice",
    "choices": "multiple_choice",
    "payment": "payment",
}


def sign_typeform(secret: str, body: bytes) -> str:
    """The ``Typeform-Signature`` header value for ``body``: ``sha256=<base64 HMAC-SHA256>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode("ascii")


def typeform_answer(ref: str, kind: str, value: Any) -> dict[str, Any]:
    """One entry of ``answers``. ``choice`` takes a label, ``choices`` a list of labels; a
    dict value is used as the typed object itself (``{"other": "..."}`` for a choice)."""
    answer: dict[str, Any] = {
        "field": {"id": f"fld_{ref}", "type": _FIELD_TYPES.get(kind, kind), "ref": ref},
        "type": kind,
    }
    if kind == "choice" and not isinstance(value, dict):
        value = {"id": f"opt_{value}", "label": value, "ref": f"ref_{value}"}
    elif kind == "choices" and not isinstance(value, dict):
        value = {
            "ids": [f"opt_{v}" for v in value],
            "labels": list(value),
            "refs": [f"ref_{v}" for v in value],
        }
    answer[kind] = value
    return answer


def typeform_response(
    token: str,
    submitted_at: str,
    answers: Iterable[dict[str, Any]] = (),
    *,
    hidden: Mapping[str, str] | None = None,
    landed_at: str | None = None,
) -> dict[str, Any]:
    """One item of the ``items`` list, in the documented shape."""
    return {
        "landing_id": token,
        "token": token,
        "response_id": token,
        "landed_at": landed_at or submitted_at,
        "submitted_at": submitted_at,
        "metadata": {
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "platform": "other",
            "referer": "https://leadwerk.typeform.com/to/abc123",
            "network_id": "a1b2c3d4e5",
            "browser": "default",
        },
        "hidden": dict(hidden or {}),
        "calculated": {"score": 0},
        "answers": list(answers),
    }


def _error(status: int, code: str, description: str) -> Reply:
    return Reply(status, {"code": code, "description": description})


def _parse_time(value: str) -> datetime | None:
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TypeformServer(ScriptedServer):
    """See the module docstring. Responses are kept in processing order."""

    def __init__(self, *, form_id: str = "abc123", token: str = "tfp_test_token") -> None:
        super().__init__()
        self.form_id = form_id
        self.token = token
        self._responses: list[tuple[dict[str, Any], bool]] = []

    def add(self, *responses: dict[str, Any], completed: bool = True) -> None:
        """Add responses as processed now; ``completed=False`` adds partial ones."""
        with self._lock:
            self._responses.extend((response, completed) for response in responses)

    def answer(self, request: LoggedRequest, step: str) -> Reply:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "forms" or parts[2] != "responses":
            return _error(404, "NOT_FOUND", "Endpoint not found")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(
                401,
                "AUTHENTICATION_FAILED",
                "Authentication credentials not found on the Request Headers",
            )
        if parts[1] != self.form_id:
            return _error(404, "FORM_NOT_FOUND", f"Non existing form with uid {parts[1]}")
        params = request.params
        try:
            page_size = int(params.get("page_size", "25"))
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= 1000:
            return _error(400, "VALIDATION_ERROR", "page_size must be between 1 and 1000")
        if "sort" in params and ("after" in params or "before" in params):
            return _error(400, "VALIDATION_ERROR", "after and before cannot be used with sort")
        with self._lock:
            responses = list(self._responses)
        try:
            items = self._select(responses, params)
        except ValueError as exc:
            return _error(400, "VALIDATION_ERROR", str(exc))
        return Reply(
            200,
            {
                "total_items": len(items),
                "page_count": math.ceil(len(items) / page_size),
                "items": items[:page_size],
            },
        )

    def _select(
        self, responses: list[tuple[dict[str, Any], bool]], params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        tokens = [response["token"] for response, _ in responses]
        if "after" in params:
            if params["after"] not in tokens:
                return []
            chosen = responses[tokens.index(params["after"]) + 1 :]
        elif "before" in params:
            if params["before"] not in tokens:
                return []
            chosen = list(reversed(responses[: tokens.index(params["before"])]))
        else:
            field, _, direction = params.get("sort", "submitted_at,desc").partition(",")
            if field not in ("submitted_at", "landed_at") or direction not in ("asc", "desc"):
                raise ValueError(f"invalid sort {params['sort']!r}")
            chosen = sorted(
                responses,
                key=lambda pair: _parse_time(pair[0][field]) or datetime.min.replace(tzinfo=UTC),
                reverse=direction == "desc",
            )
        wanted = self._wanted_types(params)
        since = self._bound(params, "since")
        until = self._bound(params, "until")
        items = []
        for response, completed in chosen:
            if wanted is not None and ("completed" if completed else "partial") not in wanted:
                continue
            moment = _parse_time(response["submitted_at" if completed else "landed_at"])
            if moment is None:
                continue
            if (since and moment < since) or (until and moment > until):
                continue
            items.append(response)
        return items

    @staticmethod
    def _wanted_types(params: Mapping[str, str]) -> set[str] | None:
        if "response_type" in params:
            kinds = {kind.strip() for kind in params["response_type"].split(",")}
            return {"partial" if kind == "started" else kind for kind in kinds}
        if "completed" in params:
            return {"completed"} if params["completed"] == "true" else {"partial"}
        return None

    @staticmethod
    def _bound(params: Mapping[str, str], name: str) -> datetime | None:
        if name not in params:
            return None
        moment = _parse_time(params[name])
        if moment is None:
            raise ValueError(f"{name} must be Unix seconds or ISO 8601 to the second")
        return moment
