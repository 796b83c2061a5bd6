"""``typeform``: completed responses of one form, from the Responses API and signed webhooks.

Polling follows Typeform's documented traversal: the first request of a new source asks for
``sort=submitted_at,asc`` (from ``start_at`` when set); every later request asks for
``after=<token of the last response stored>``, which returns the responses processed after it
in processing order. Typeform documents that ``after`` cannot be combined with ``sort``, so the
two never share a request. The cursor is ``{"after": <last token>, "submitted_at": <its time>}``.

Each record's ``data`` is the response object as Typeform sent it plus ``answers_by_ref``
(``{field ref: value}``, the value flattened by answer type) so the mapper resolves
``ref:work_email``, and ``hidden`` (the hidden fields, ``{}`` when there are none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import Field

from connectors.errors import FatalError, IgnoredDelivery, SignatureError, SkippableError
from connectors.http import ClientOwner, request_json_reply
from connectors.sources.base import Page, PulledSource, PushedSource, RawRecord, SourceConfig
from connectors.sources.http_json import parse_time, require_env

if TYPE_CHECKING:
    import httpx

SIGNATURE_HEADER = "Typeform-Signature"
PAGE_SIZE_MAX = 1000


class TypeformConfig(SourceConfig):
    kind: Literal["typeform"]
    form_id: str
    token_env: str
    base_url: str = "https://api.typeform.com"
    start_at: date | datetime | None = None
    secret_env: str | None = None  # the secret Typeform signs webhook deliveries with
    page_size: int = Field(default=PAGE_SIZE_MAX, ge=1, le=PAGE_SIZE_MAX)


def typeform_time(moment: date | datetime) -> str:
    """``moment`` as Typeform's ``since``/``until`` want it: UTC to the second, no offset.
    A date means its midnight in UTC; a naive datetime is taken as UTC."""
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(), tzinfo=UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _answer_value(answer: Mapping[str, Any]) -> Any:
    kind = answer.get("type")
    if kind == "choice":
        choice = answer.get("choice") or {}
        return choice.get("label") or choice.get("other")
    if kind == "choices":
        choices = answer.get("choices") or {}
        labels = [str(label) for label in choices.get("labels") or []]
        if choices.get("other"):
            labels.append(str(choices["other"]))
        return ", ".join(labels)
    # text, email, phone_number, number, boolean, date, url, file_url, payment, ...:
    # the value sits under the key named by the type.
    return answer.get(kind) if isinstance(kind, str) else None


def answers_by_ref(answers: Any) -> dict[str, Any]:
    """``{field ref: value}`` for a response's ``answers``; a field without a ref is keyed by
    its id. Choices are their labels joined by ", ", a choice its label (or "other" text)."""
    flat: dict[str, Any] = {}
    for answer in answers if isinstance(answers, list) else []:
        if not isinstance(answer, dict):
            continue
        field = answer.get("field") or {}
        key = field.get("ref") or field.get("id")
        if key:
            flat[str(key)] = _answer_value(answer)
    return flat


def response_record(response: Any) -> RawRecord:
    """A Typeform response (from the API or a webhook's ``form_response``) as a RawRecord."""
    if not isinstance(response, dict):
        return RawRecord(data={"value": response}, error="the Typeform response is not an object")
    data = dict(response)
    data["answers_by_ref"] = answers_by_ref(response.get("answers"))
    data["hidden"] = response.get("hidden") or {}
    record_id = response.get("token") or response.get("response_id")
    return RawRecord(
        data=data,
        record_id=str(record_id) if record_id else None,
        occurred_at=parse_time(response.get("submitted_at")),
    )


def verify_typeform_signature(secret: str, body: bytes, header_value: str | None) -> bool:
    """Whether ``Typeform-Signature`` is ``sha256=<base64 HMAC-SHA256 of the raw body>``."""
    if not header_value:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    expected = "sha256=" + base64.b64encode(digest).decode("ascii")
    return hmac.compare_digest(expected.encode(), header_value.strip().encode())


def parse_typeform_webhook(body: dict[str, Any]) -> RawRecord:
    """The record of a webhook delivery ``{"event_id", "event_type", "form_response"}``.

    Only completed responses become records: other event types (partial responses) raise
    SkippableError, as does a delivery without a ``form_response`` object.
    """
    event_type = body.get("event_type")
    if event_type != "form_response":
        raise SkippableError(
            f"Typeform event type {event_type!r} is not a completed response; ignored"
        )
    form_response = body.get("form_response")
    if not isinstance(form_response, dict):
        raise SkippableError(
            "the Typeform delivery has no form_response object", field="form_response"
        )
    return response_record(form_response)


class TypeformSource(ClientOwner, PulledSource, PushedSource):
    """Polls ``GET {base_url}/forms/{form_id}/responses`` for completed responses, and takes
    the form's signed webhook deliveries.

    ``retry`` passes keyword arguments on to :func:`connectors.http.request_json_reply`.
    A ``client`` given is used as is and left open. The token is read when a poll starts:
    receiving a webhook delivery does not need it.
    """

    kind = "typeform"
    config_model = TypeformConfig
    config: TypeformConfig

    def __init__(
        self,
        config: TypeformConfig,
        env: Mapping[str, str],
        client: httpx.Client | None = None,
        retry: dict[str, Any] | None = None,
    ) -> None:
        PulledSource.__init__(self, config, env)
        self._url = (
            f"{config.base_url.rstrip('/')}/forms/{quote(config.form_id, safe='')}/responses"
        )
        ClientOwner.__init__(self, client, retry)

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        sent = headers.get(SIGNATURE_HEADER)
        if not sent:
            raise SignatureError(f"missing {SIGNATURE_HEADER} header")
        if not verify_typeform_signature(secret, body, sent):
            raise SignatureError("signature does not match")

    def receive(self, payload: dict[str, Any]) -> RawRecord:
        """A completed response's record; any other event (a partial response) is
        acknowledged and ignored, so Typeform does not deliver it again and again."""
        try:
            return parse_typeform_webhook(payload)
        except SkippableError as exc:
            if payload.get("event_type") != "form_response":
                raise IgnoredDelivery(str(exc)) from None
            raise

    def fetch(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        token = require_env(
            self.env, self.config.token_env, self.config.name, "a Typeform personal access token"
        )
        headers = {"Authorization": f"Bearer {token}"}
        stored = cursor or {}
        after = stored.get("after")
        submitted_at = stored.get("submitted_at")
        page_size = self.config.page_size
        while True:
            params: dict[str, Any] = {"page_size": page_size, "response_type": "completed"}
            if after:
                params["after"] = after
            else:
                params["sort"] = "submitted_at,asc"
                if self.config.start_at is not None:
                    params["since"] = typeform_time(self.config.start_at)
            reply = request_json_reply(
                self._client,
                "GET",
                self._url,
                params=params,
                headers=headers,
                source=self.config.name,
                token_env=self.config.token_env,
                **self._retry,
            )
            items = reply.body.get("items") if isinstance(reply.body, dict) else None
            if not isinstance(items, list):
                raise FatalError(
                    f"{self.config.name}: the Responses API answered without an items list; "
                    "check base_url"
                )
            if not items:
                return
            last = items[-1] if isinstance(items[-1], dict) else {}
            token = last.get("token") or last.get("response_id")
            if not token:
                raise FatalError(
                    f"{self.config.name}: the last response of a page has no token to page on"
                )
            if token == after:
                raise FatalError(
                    f"{self.config.name}: pagination token {token!r} is identical to the prior "
                    "token; the Responses API is stuck in a loop, stopping this pass"
                )
            after = token
            submitted_at = last.get("submitted_at") or submitted_at
            yield Page(
                [response_record(item) for item in items],
                cursor={"after": after, "submitted_at": submitted_at},
            )
            if len(items) < page_size:  # a short page is the last one
                return
