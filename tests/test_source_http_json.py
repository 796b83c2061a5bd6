"""The http_json source and the shared HTTP behaviour, against a real JSON API on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.errors import FatalError, RetriableError
from connectors.http import USER_AGENT, make_client, parse_retry_after, request_json_reply
from connectors.sources.base import Page
from connectors.sources.http_json import HttpJsonConfig, HttpJsonSource, json_path, parse_time
from tests.servers.jsonapi import EMPTY_PAGE, NORMAL_PAGE, REPEAT_PAGE, JsonApiServer

TOKEN = "forms-t0ken-value"
ENV = {"FORMS_TOKEN": TOKEN}

SUBMISSIONS = [
    {"id": f"s{n}", "submitted_at": f"2026-11-0{n}T10:00:00Z", "fields": {"company": f"Co {n}"}}
    for n in range(1, 6)
]

PAGINATION = {
    "none": None,
    "next_link": {"kind": "next_link", "path": "$.links.next"},
    "link_header": {"kind": "next_link"},
    "cursor": {"kind": "cursor", "token_field": "$.meta.next_cursor", "param": "cursor"},
    "offset": {"kind": "offset", "param": "offset", "limit_param": "limit", "limit": 2},
    "page": {"kind": "page", "param": "page"},
}


def config(url: str, **overrides: Any) -> HttpJsonConfig:
    settings: dict[str, Any] = {
        "name": "website-forms",
        "kind": "http_json",
        "url": url,
        "auth": {"bearer_env": "FORMS_TOKEN"},
        "cursor": {"param": "since", "field": "submitted_at"},
        "records": "data",
        "id_field": "$.id",
    }
    settings.update(overrides)
    return HttpJsonConfig.model_validate(settings)


def source(
    api: JsonApiServer,
    env: dict[str, str] = ENV,
    waits: list[float] | None = None,
    **overrides: Any,
) -> HttpJsonSource:
    """A source on ``api`` that retries 3 times, waits at most 5 s and, instead of sleeping,
    notes each wait in ``waits``."""
    sleep = (waits if waits is not None else []).append
    retry = {"max_attempts": 3, "max_wait": 5.0, "base_wait": 0.001, "sleep": sleep}
    return HttpJsonSource(config(api.url, **overrides), env, retry=retry)


def poll(
    api: JsonApiServer,
    stored: dict[str, Any] | None = None,
    env: dict[str, str] = ENV,
    waits: list[float] | None = None,
    **overrides: Any,
) -> list[Page]:
    """Every page one pass of a fresh source yields from the ``stored`` cursor."""
    polling = source(api, env, waits, **overrides)
    try:
        return list(polling.fetch(stored))
    finally:
        polling.close()


def ids(pages: list[Page]) -> list[str | None]:
    return [record.record_id for page in pages for record in page.records]


# --- json_path --------------------------------------------------------------------------------

DOC = {"a": {"b": 1, "list": [{"b": "first"}, {"b": "second"}]}, "x.y": 2, "n": None}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.a.b", 1),
        ("a.b", 1),
        ("$.a.list[0].b", "first"),
        ("$.a.list[-1].b", "second"),
        ("a.list.1.b", "second"),
        ("$.a.missing", None),
        ("$.a.list[5].b", None),
        ("$.a.b.c", None),
        ("$.n", None),
        ("$", DOC),
        ("", DOC),
    ],
)
def test_json_path_finds_values_by_dotted_and_indexed_paths(path: str, expected: Any) -> None:
    assert json_path(DOC, path) == expected


@pytest.mark.parametrize("path", ["$.a..b", "a.", "$.a[x]", "a[0"])
def test_json_path_rejects_malformed_paths(path: str) -> None:
    with pytest.raises(ValueError, match="not a path"):
        json_path(DOC, path)


@given(
    keys=st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5),
    value=st.integers() | st.text(),
)
def test_json_path_reaches_any_nested_key(keys: list[str], value: Any) -> None:
    doc: Any = value
    for key in reversed(keys):
        doc = {key: doc}
    assert json_path(doc, "$." + ".".join(keys)) == value
    assert json_path(doc, ".".join(keys)) == value


def test_parse_time_reads_iso_text_and_unix_seconds() -> None:
    assert parse_time("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time("2026-11-01T10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time(1_793_527_200) == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time(1_793_527_200_000) == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time("not a time") is None
    assert parse_time(True) is None


# --- polling, watermark and pagination ----------------------------------------------------------


def test_a_first_poll_reads_everything_and_remembers_the_newest_time() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        pages = poll(api)
    assert ids(pages) == ["s1", "s2", "s3", "s4", "s5"]
    assert pages[-1].cursor == {"watermark": "2026-11-05T10:00:00Z"}
    assert "since" not in api.requests[0].params
    first = pages[0].records[0]
    assert first.data == SUBMISSIONS[0]
    assert first.occurred_at == datetime(2026, 11, 1, 10, tzinfo=UTC)


def test_the_next_poll_asks_only_for_records_since_the_watermark() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        pages = poll(api, {"watermark": "2026-11-04T10:00:00Z"})
    assert api.requests[0].params["since"] == "2026-11-04T10:00:00Z"
    assert ids(pages) == ["s4", "s5"]
    assert pages[-1].cursor == {"watermark": "2026-11-05T10:00:00Z"}


def test_a_source_without_a_cursor_reads_everything_every_time() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        pages = poll(api, {}, cursor=None)
    assert ids(pages) == ["s1", "s2", "s3", "s4", "s5"]
    assert pages[-1].cursor == {}
    assert "since" not in api.requests[0].params


@pytest.mark.parametrize("style", ["next_link", "link_header", "cursor", "offset", "page"])
def test_every_pagination_style_reads_all_pages_in_order(style: str) -> None:
    with JsonApiServer(SUBMISSIONS, pagination=style, page_size=2, bearer=TOKEN) as api:
        pages = poll(api, pagination=PAGINATION[style])
    assert ids(pages) == ["s1", "s2", "s3", "s4", "s5"]
    assert [len(page.records) for page in pages if page.records] == [2, 2, 1]
    assert pages[-1].cursor == {"watermark": "2026-11-05T10:00:00Z"}
    assert all("resume" in page.cursor for page in pages[:-1] if page.cursor)


@pytest.mark.parametrize("style", ["next_link", "cursor", "offset", "page"])
def test_paging_keeps_the_since_value_the_pass_started_with(style: str) -> None:
    with JsonApiServer(SUBMISSIONS, pagination=style, page_size=2, bearer=TOKEN) as api:
        pages = poll(api, {"watermark": "2026-11-02T10:00:00Z"}, pagination=PAGINATION[style])
    assert ids(pages) == ["s2", "s3", "s4", "s5"]
    assert {r.params["since"] for r in api.requests} == {"2026-11-02T10:00:00Z"}


def test_offset_paging_sends_the_offset_and_limit() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="offset", page_size=2, bearer=TOKEN) as api:
        poll(api, pagination=PAGINATION["offset"])
    asked = [(r.params["offset"], r.params["limit"]) for r in api.requests]
    assert asked == [("0", "2"), ("2", "2"), ("4", "2"), ("5", "2")]


def test_page_numbers_count_from_one() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="page", page_size=2, bearer=TOKEN) as api:
        poll(api, pagination=PAGINATION["page"])
    assert [r.params["page"] for r in api.requests] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("style", ["cursor", "offset", "next_link"])
def test_an_interrupted_pass_resumes_from_the_cursor_of_its_last_stored_page(style: str) -> None:
    with JsonApiServer(SUBMISSIONS, pagination=style, page_size=2, bearer=TOKEN) as api:
        interrupted = source(api, pagination=PAGINATION[style])
        first_page = next(iter(interrupted.fetch(None)))
        interrupted.close()
        rest = poll(api, first_page.cursor, pagination=PAGINATION[style])
    assert [r.record_id for r in first_page.records] == ["s1", "s2"]
    assert ids(rest) == ["s3", "s4", "s5"]
    assert rest[-1].cursor == {"watermark": "2026-11-05T10:00:00Z"}


def test_an_empty_page_ends_the_pass_and_closes_the_cursor() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="cursor", page_size=2, bearer=TOKEN) as api:
        api.script([NORMAL_PAGE, EMPTY_PAGE])
        pages = poll(api, pagination=PAGINATION["cursor"])
    assert ids(pages) == ["s1", "s2"]
    assert len(api.requests) == 2
    assert pages[-1].records == []
    assert pages[-1].cursor == {"watermark": "2026-11-02T10:00:00Z"}


def test_an_empty_first_page_yields_nothing() -> None:
    with JsonApiServer([], pagination="cursor", bearer=TOKEN) as api:
        pages = poll(api, pagination=PAGINATION["cursor"])
    assert pages == []


def test_a_repeated_pagination_token_stops_with_a_loop_error() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="cursor", page_size=2, bearer=TOKEN) as api:
        api.script([NORMAL_PAGE, REPEAT_PAGE])
        with pytest.raises(FatalError, match=r"'c2' is identical to the prior token.*loop"):
            poll(api, pagination=PAGINATION["cursor"])
    assert len(api.requests) == 2


def test_a_repeated_next_link_stops_with_a_loop_error() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="next_link", page_size=2, bearer=TOKEN) as api:
        api.script([NORMAL_PAGE, REPEAT_PAGE])
        with pytest.raises(FatalError, match=r"repeats a page already fetched.*loop"):
            poll(api, pagination=PAGINATION["next_link"])


def test_a_server_that_ignores_the_offset_stops_with_a_loop_error() -> None:
    with JsonApiServer(SUBMISSIONS, pagination="offset", page_size=2, bearer=TOKEN) as api:
        api.script([NORMAL_PAGE, REPEAT_PAGE])
        with pytest.raises(FatalError, match=r"same records as for the previous page.*loop"):
            poll(api, pagination=PAGINATION["offset"])


def test_a_next_link_to_another_host_is_refused_before_credentials_go_there() -> None:
    body = {"data": SUBMISSIONS[:2], "links": {"next": "http://127.0.0.2:9/api/submissions"}}
    with JsonApiServer(SUBMISSIONS, pagination="next_link", bearer=TOKEN) as api:
        api.script([(200, None, body)])
        with pytest.raises(FatalError, match="refusing to send this source's credentials"):
            poll(api, pagination=PAGINATION["next_link"])
    assert len(api.requests) == 1


def test_records_without_the_id_field_have_no_record_id() -> None:
    records = [{"id": "s1", "submitted_at": "2026-11-01T10:00:00Z"}, {"email_hash": "x"}]
    with JsonApiServer(records, bearer=TOKEN) as api:
        [page] = poll(api)
    assert [r.record_id for r in page.records] == ["s1", None]
    assert page.records[1].occurred_at is None
    assert page.cursor == {"watermark": "2026-11-01T10:00:00Z"}


def test_numeric_ids_and_watermarks_are_kept_as_the_api_sends_them() -> None:
    records = [{"id": 7, "updated": 1_793_527_200}, {"id": 8, "updated": 1_793_527_300}]
    with JsonApiServer(records, bearer=TOKEN) as api:
        [page] = poll(api, cursor={"param": "updated_since", "field": "updated"})
    assert [r.record_id for r in page.records] == ["7", "8"]
    assert page.cursor == {"watermark": 1_793_527_300}


def test_a_record_that_is_not_an_object_is_marked_for_quarantine() -> None:
    with JsonApiServer([SUBMISSIONS[0], "stray text"], bearer=TOKEN) as api:
        [page] = poll(api)
    assert page.records[0].error is None
    assert page.records[1].error == "the record is not a JSON object"


def test_a_bare_list_body_is_read_with_an_empty_records_path() -> None:
    with JsonApiServer(SUBMISSIONS[:2], records_key="", bearer=TOKEN) as api:
        [page] = poll(api, records="")
    assert [r.record_id for r in page.records] == ["s1", "s2"]


def test_a_records_path_that_finds_no_list_names_the_setting() -> None:
    with (
        JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api,
        pytest.raises(FatalError, match="`records: items` found nothing"),
    ):
        poll(api, records="items")


# --- credentials -------------------------------------------------------------------------------


def test_a_missing_environment_variable_is_named() -> None:
    with pytest.raises(FatalError, match="environment variable FORMS_TOKEN is not set"):
        HttpJsonSource(config("http://127.0.0.1:9/api"), {})


def test_a_refused_token_names_the_variable_that_holds_it_and_not_the_token() -> None:
    with (
        JsonApiServer(SUBMISSIONS, bearer="the-right-token") as api,
        pytest.raises(FatalError) as caught,
    ):
        poll(api, params={"api_key": "query-secret"})
    message = str(caught.value)
    assert "401" in message and "FORMS_TOKEN" in message and "website-forms" in message
    assert "/api/submissions" in message
    assert TOKEN not in message and "query-secret" not in message
    assert len(api.requests) == 1


def test_basic_auth_sends_user_and_password_from_the_environment() -> None:
    env = {"FORMS_USER": "leadwerk", "FORMS_PASSWORD": "pa55"}
    auth = {"basic": {"user_env": "FORMS_USER", "password_env": "FORMS_PASSWORD"}}
    with JsonApiServer(SUBMISSIONS, basic=("leadwerk", "pa55")) as api:
        pages = poll(api, env=env, auth=auth)
    assert len(ids(pages)) == 5


def test_a_key_header_is_sent_with_its_value_from_the_environment() -> None:
    auth = {"header": {"name": "X-Api-Key", "value_env": "FORMS_KEY"}}
    with JsonApiServer(SUBMISSIONS, header=("X-Api-Key", "k3y")) as api:
        pages = poll(api, env={"FORMS_KEY": "k3y"}, auth=auth)
    assert len(ids(pages)) == 5


def test_requests_carry_the_leadwerk_user_agent_and_configured_headers_and_params() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        poll(api, headers={"X-Tenant": "acme"}, params={"form": "demo"})
    [request] = api.requests
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("Leadwerk/")
    assert request.headers["x-tenant"] == "acme"
    assert request.params["form"] == "demo"


def test_clients_have_explicit_timeouts() -> None:
    with make_client() as client:
        assert client.timeout.connect == 5.0
        assert client.timeout.read == 15.0


def test_a_client_loads_without_trio_which_stays_importable() -> None:
    """httpcore would import trio (0.16 s of each start) wherever it is installed."""
    pytest.importorskip("trio", reason="trio is not installed here: nothing to keep out")
    script = (
        "import sys\n"
        "from connectors.http import make_client\n"
        "with make_client() as client:\n"
        "    reply = client.get(sys.argv[1])\n"
        "loaded = 'trio' in sys.modules\n"
        "import trio\n"
        "print(reply.status_code, loaded, trio.__name__)\n"
    )
    with JsonApiServer(SUBMISSIONS) as api:
        done = subprocess.run(
            [sys.executable, "-c", script, api.url],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert done.stdout.split() == ["200", "False", "trio"]


# --- retries -----------------------------------------------------------------------------------


def test_a_server_error_is_retried_then_the_page_arrives() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(500, None)])
        waits: list[float] = []
        pages = poll(api, waits=waits)
    assert len(ids(pages)) == 5
    assert len(api.requests) == 2
    assert len(waits) == 1


def test_a_rate_limit_waits_as_long_as_retry_after_says() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(429, {"Retry-After": "2"}), (503, {"Retry-After": "0"})])
        waits: list[float] = []
        pages = poll(api, waits=waits)
    assert len(ids(pages)) == 5
    assert waits == [2.0, 0.0]


def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(429, {"Retry-After": when})])
        waits: list[float] = []
        poll(api, waits=waits)
    [waited] = waits
    assert 2.0 <= waited <= 4.0


def test_a_retry_after_beyond_max_wait_hands_the_job_back_with_the_delay() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(429, {"Retry-After": "120"})])
        waits: list[float] = []
        with pytest.raises(RetriableError, match="asked to wait 120 s") as caught:
            poll(api, waits=waits)
    assert caught.value.retry_after == 120.0
    assert len(api.requests) == 1
    assert waits == []


def test_a_server_that_stays_down_gives_up_after_the_last_attempt() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(503, None)] * 3)
        waits: list[float] = []
        with pytest.raises(RetriableError, match=r"503.*gave up after 3 attempts"):
            poll(api, waits=waits)
    assert len(api.requests) == 3
    assert len(waits) == 2 and all(0 < wait <= 5.0 for wait in waits)


def test_an_unreachable_server_is_a_passing_fault() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    with make_client() as client, pytest.raises(RetriableError, match="ConnectError"):
        request_json_reply(
            client, "GET", f"http://127.0.0.1:{port}/api", base_wait=0.001, sleep=waits.append
        )
    assert len(waits) == 4


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (403, "may not read this"),
        (404, "check the URL"),
        (400, "check the request settings"),
        (422, "check the request settings"),
    ],
)
def test_client_errors_stop_with_advice_for_the_admin(status: int, advice: str) -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(status, None)])
        with pytest.raises(FatalError, match=advice):
            poll(api)
    assert len(api.requests) == 1


def test_an_error_code_in_the_body_is_shown_but_not_its_free_text() -> None:
    body = {"error": "invalid_since", "message": "ada@example.com sent a bad since"}
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(400, None, body)])
        with pytest.raises(FatalError) as caught:
            poll(api)
    assert "invalid_since" in str(caught.value)
    assert "ada@example.com" not in str(caught.value)


def test_a_web_page_instead_of_json_points_at_the_url() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(200, None, b"<html>Sign in</html>")])
        with pytest.raises(FatalError, match="instead of JSON; check that the URL"):
            poll(api)


def test_json_cut_short_on_the_way_is_retried() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api:
        api.script([(200, {"Content-Type": "application/json"}, b'{"data": [')])
        pages = poll(api)
    assert len(ids(pages)) == 5
    assert len(api.requests) == 2


def test_request_json_returns_the_decoded_body() -> None:
    with JsonApiServer(SUBMISSIONS[:1], bearer=TOKEN) as api, make_client() as client:
        body = request_json_reply(
            client, "GET", api.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ).body
    assert body == {"data": SUBMISSIONS[:1]}


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0", 0.0), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_is_read_as_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_dates_count_from_now() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sun, 01 Nov 2026 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Sun, 01 Nov 2026 11:00:00 GMT", now=now) == 0.0


def test_a_given_client_is_used_and_left_open() -> None:
    with JsonApiServer(SUBMISSIONS, bearer=TOKEN) as api, httpx.Client() as client:
        polling = HttpJsonSource(config(api.url), ENV, client=client)
        pages = list(polling.fetch(None))
        polling.close()
        assert not client.is_closed
    assert len(ids(pages)) == 5
