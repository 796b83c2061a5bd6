"""The Typeform source against a stand-in Responses API, and Typeform's webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from connectors.errors import FatalError, SkippableError
from connectors.sources.base import Page
from connectors.sources.typeform import (
    TypeformConfig,
    TypeformSource,
    parse_typeform_webhook,
    verify_typeform_signature,
)
from tests.servers.typeform import (
    TypeformServer,
    sign_typeform,
    typeform_answer,
    typeform_response,
)

TOKEN = "tfp_personal_access_token"
ENV = {"TYPEFORM_TOKEN": TOKEN}


def demo_request(n: int, day: int) -> dict[str, Any]:
    return typeform_response(
        f"tok{n}",
        f"2026-11-{day:02d}T09:00:00Z",
        [
            typeform_answer("work_email", "email", f"lead{n}@example.com"),
            typeform_answer("company", "text", f"Company {n}"),
        ],
        hidden={"utm_source": "newsletter"},
    )


def config(typeform: TypeformServer, **overrides: Any) -> TypeformConfig:
    settings: dict[str, Any] = {
        "name": "typeform-demo",
        "kind": "typeform",
        "form_id": "abc123",
        "token_env": "TYPEFORM_TOKEN",
        "base_url": typeform.base_url,
        "page_size": 2,
        "map": {"email": "ref:work_email", "company": "ref:company"},
        "event": {"type": "form", "form": "demo-request"},
    }
    settings.update(overrides)
    return TypeformConfig.model_validate(settings)


def poll(
    typeform: TypeformServer,
    cursor: dict[str, Any] | None = None,
    env: dict[str, str] = ENV,
    **overrides: Any,
) -> list[Page]:
    source = TypeformSource(
        config(typeform, **overrides), env, retry={"base_wait": 0.001, "sleep": lambda _: None}
    )
    try:
        return list(source.fetch(cursor))
    finally:
        source.close()


def tokens(pages: list[Page]) -> list[str | None]:
    return [record.record_id for page in pages for record in page.records]


# --- polling -----------------------------------------------------------------------------------


def test_responses_are_read_oldest_first_across_pages() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(*(demo_request(n, n) for n in range(1, 6)))
        pages = poll(typeform)
    assert tokens(pages) == ["tok1", "tok2", "tok3", "tok4", "tok5"]
    assert [len(page.records) for page in pages] == [2, 2, 1]
    assert pages[-1].cursor == {"after": "tok5", "submitted_at": "2026-11-05T09:00:00Z"}


def test_the_first_request_sorts_by_submission_and_later_ones_page_after_the_last_token() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(*(demo_request(n, n) for n in range(1, 6)))
        poll(typeform)
    first, second, third = typeform.requests
    assert first.path == "/forms/abc123/responses"
    assert first.params == {
        "page_size": "2",
        "response_type": "completed",
        "sort": "submitted_at,asc",
    }
    assert second.params == {"page_size": "2", "response_type": "completed", "after": "tok2"}
    assert third.params["after"] == "tok4"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in typeform.requests)


def test_the_next_poll_reads_only_responses_after_the_stored_token() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(*(demo_request(n, n) for n in range(1, 4)))
        first_poll = poll(typeform)
        typeform.add(demo_request(4, 6))
        second_poll = poll(typeform, first_poll[-1].cursor)
    assert tokens(second_poll) == ["tok4"]
    assert second_poll[-1].cursor == {"after": "tok4", "submitted_at": "2026-11-06T09:00:00Z"}


def test_a_poll_with_nothing_new_yields_nothing() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(demo_request(1, 1))
        pages = poll(typeform, {"after": "tok1", "submitted_at": "2026-11-01T09:00:00Z"})
    assert pages == []


def test_a_full_last_page_is_followed_by_one_empty_request() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(*(demo_request(n, n) for n in range(1, 5)))
        pages = poll(typeform)
    assert tokens(pages) == ["tok1", "tok2", "tok3", "tok4"]
    assert len(typeform.requests) == 3


def test_partial_responses_are_left_out() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(demo_request(1, 1))
        typeform.add(demo_request(2, 2), completed=False)
        typeform.add(demo_request(3, 3))
        pages = poll(typeform)
    assert tokens(pages) == ["tok1", "tok3"]


@pytest.mark.parametrize(
    ("start_at", "since"),
    [
        (date(2026, 11, 3), "2026-11-03T00:00:00"),
        (datetime(2026, 11, 3, 10, 0, tzinfo=timezone(timedelta(hours=1))), "2026-11-03T09:00:00"),
    ],
)
def test_start_at_limits_a_new_source_to_responses_since_then(
    start_at: date | datetime, since: str
) -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(*(demo_request(n, n) for n in range(1, 6)))
        pages = poll(typeform, start_at=start_at)
    assert typeform.requests[0].params["since"] == since
    assert tokens(pages) == ["tok3", "tok4", "tok5"]
    assert "since" not in typeform.requests[1].params


def test_start_at_reads_from_yaml_text() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        assert config(typeform, start_at="2026-11-01").start_at == date(2026, 11, 1)


def test_each_record_is_the_response_as_sent_with_its_token_and_time() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(demo_request(1, 1))
        [page] = poll(typeform)
    [record] = page.records
    assert record.record_id == "tok1"
    assert record.occurred_at == datetime(2026, 11, 1, 9, tzinfo=UTC)
    assert record.data["landing_id"] == "tok1"
    assert record.data["calculated"] == {"score": 0}
    assert record.data["hidden"] == {"utm_source": "newsletter"}
    assert record.data["answers_by_ref"] == {
        "work_email": "lead1@example.com",
        "company": "Company 1",
    }


def test_answers_by_ref_flattens_every_answer_type() -> None:
    answers = [
        typeform_answer("first_name", "text", "Ada"),
        typeform_answer("work_email", "email", "ada@example.com"),
        typeform_answer("phone", "phone_number", "+441234567890"),
        typeform_answer("seats", "number", 25),
        typeform_answer("consent", "boolean", True),
        typeform_answer("demo_day", "date", "2026-11-20"),
        typeform_answer("website", "url", "https://example.com"),
        typeform_answer("brief", "file_url", "https://files.example.com/brief.pdf"),
        typeform_answer("size", "choice", "51-200"),
        typeform_answer("source", "choice", {"other": "A podcast"}),
        typeform_answer("interests", "choices", ["Scoring", "Routing"]),
        typeform_answer("tools", "choices", {"labels": ["HubSpot"], "other": "Pipedrive"}),
    ]
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(typeform_response("tok1", "2026-11-01T09:00:00Z", answers))
        [page] = poll(typeform)
    assert page.records[0].data["answers_by_ref"] == {
        "first_name": "Ada",
        "work_email": "ada@example.com",
        "phone": "+441234567890",
        "seats": 25,
        "consent": True,
        "demo_day": "2026-11-20",
        "website": "https://example.com",
        "brief": "https://files.example.com/brief.pdf",
        "size": "51-200",
        "source": "A podcast",
        "interests": "Scoring, Routing",
        "tools": "HubSpot, Pipedrive",
    }


def test_a_response_without_hidden_fields_has_an_empty_hidden_object() -> None:
    response = demo_request(1, 1)
    del response["hidden"]
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(response)
        [page] = poll(typeform)
    assert page.records[0].data["hidden"] == {}


def test_the_base_url_of_another_region_is_used_as_configured() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(demo_request(1, 1))
        pages = poll(typeform, base_url=typeform.base_url + "/")
    assert tokens(pages) == ["tok1"]


def test_a_rate_limit_is_waited_out() -> None:
    with TypeformServer(token=TOKEN) as typeform:
        typeform.add(demo_request(1, 1))
        typeform.script([(429, {"Retry-After": "0"}), (502, None)])
        pages = poll(typeform)
    assert tokens(pages) == ["tok1"]
    assert len(typeform.requests) == 3


# --- configuration errors ----------------------------------------------------------------------


def test_a_refused_token_names_the_variable_that_holds_it() -> None:
    with TypeformServer(token="tfp_the_right_one") as typeform, pytest.raises(FatalError) as caught:
        poll(typeform)
    message = str(caught.value)
    assert "401" in message and "TYPEFORM_TOKEN" in message and "typeform-demo" in message
    assert TOKEN not in message


def test_a_missing_token_variable_is_named() -> None:
    with (
        TypeformServer(token=TOKEN) as typeform,
        pytest.raises(FatalError, match="environment variable TYPEFORM_TOKEN is not set"),
    ):
        poll(typeform, env={})


def test_an_unknown_form_says_what_to_check() -> None:
    with (
        TypeformServer(token=TOKEN, form_id="abc123") as typeform,
        pytest.raises(
            FatalError, match=r"/forms/zzz999/responses answered 404.*check the URL or id"
        ),
    ):
        poll(typeform, form_id="zzz999")


def test_a_page_size_over_typeforms_maximum_is_refused_in_config() -> None:
    with TypeformServer(token=TOKEN) as typeform, pytest.raises(ValueError, match="1000"):
        config(typeform, page_size=5000)


# --- webhooks ----------------------------------------------------------------------------------

SECRET = "typeform-webhook-secret"
DELIVERY = {
    "event_id": "01HX",
    "event_type": "form_response",
    "form_response": {
        "form_id": "abc123",
        "token": "tok9",
        "landed_at": "2026-11-05T08:59:00Z",
        "submitted_at": "2026-11-05T09:00:00Z",
        "hidden": {"utm_source": "ads"},
        "definition": {"id": "abc123", "title": "Demo request", "fields": []},
        "answers": [typeform_answer("work_email", "email", "grace@example.com")],
    },
}
BODY = json.dumps(DELIVERY).encode()


def test_a_correctly_signed_delivery_is_accepted() -> None:
    assert verify_typeform_signature(SECRET, BODY, sign_typeform(SECRET, BODY))


def test_a_delivery_signed_with_another_secret_is_refused() -> None:
    assert not verify_typeform_signature(SECRET, BODY, sign_typeform("other", BODY))


def test_a_tampered_delivery_is_refused() -> None:
    signature = sign_typeform(SECRET, BODY)
    assert not verify_typeform_signature(SECRET, BODY.replace(b"grace", b"mallory"), signature)


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abc", "not a signature"])
def test_a_missing_or_malformed_signature_is_refused(header: str | None) -> None:
    assert not verify_typeform_signature(SECRET, BODY, header)


def test_a_hex_signature_is_not_mistaken_for_typeforms_base64() -> None:
    hex_digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert not verify_typeform_signature(SECRET, BODY, f"sha256={hex_digest}")


def test_a_webhook_delivery_becomes_a_record_keyed_by_its_token() -> None:
    record = parse_typeform_webhook(DELIVERY)
    assert record.record_id == "tok9"
    assert record.occurred_at == datetime(2026, 11, 5, 9, tzinfo=UTC)
    assert record.data["answers_by_ref"] == {"work_email": "grace@example.com"}
    assert record.data["hidden"] == {"utm_source": "ads"}
    assert record.data["definition"]["title"] == "Demo request"


def test_a_partial_response_delivery_is_skipped() -> None:
    partial = {**DELIVERY, "event_type": "form_response_partial"}
    with pytest.raises(SkippableError, match="not a completed response"):
        parse_typeform_webhook(partial)


def test_a_delivery_without_a_response_is_skipped() -> None:
    with pytest.raises(SkippableError, match="no form_response"):
        parse_typeform_webhook({"event_id": "01HX", "event_type": "form_response"})
