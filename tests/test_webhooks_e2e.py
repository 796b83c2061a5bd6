"""Webhooks end to end: signed deliveries over HTTP to a real uvicorn server, on SQLite and on
PostgreSQL. What the sender is told (202, 200, 400, 401, 413) and what the store then holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.servers.typeform import (
    TypeformServer,
    sign_typeform,
    typeform_answer,
    typeform_response,
)
from tests.source_helpers import (
    EBOOK_SECRET,
    FAIR_SOURCE,
    HOOK_SOURCES,
    TYPEFORM_SECRET,
    TYPEFORM_TOKEN,
    as_body,
    contact,
    counts,
    leadwerk,
    pull_sources,
    sign_hex,
    web_server,
    write_sources,
)
from worker.pipeline.poll import import_file, poll_source
from worker.runtime.app import App

ENV = {
    "EBOOK_HOOK_SECRET": EBOOK_SECRET,
    "TYPEFORM_WEBHOOK_SECRET": TYPEFORM_SECRET,
    "TYPEFORM_TOKEN": TYPEFORM_TOKEN,
}
DOWNLOAD = {"email": "Eva.Mueller@BigCorp.DE", "first_name": "Eva", "asset": "crm-guide"}


@dataclass
class Hooks:
    app: App
    url: str
    config_dir: Path
    database_url: str
    typeform: TypeformServer

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/hooks/{source}", content=body, headers=headers, timeout=30)

    def ebook(self, payload: dict[str, object]) -> httpx.Response:
        body = as_body(payload)
        return self.post("ebooks", body, {"X-Signature-256": sign_hex(body)})

    def typeform_delivery(self, delivery: dict[str, object]) -> httpx.Response:
        body = as_body(delivery)
        return self.post(
            "typeform-demo", body, {"Typeform-Signature": sign_typeform(TYPEFORM_SECRET, body)}
        )

    def counts(self) -> dict[str, int]:
        return counts(self.app.store)


@pytest.fixture
def hooks(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Hooks]:
    """Leadwerk with the e-book and Typeform webhooks, served on a free port."""
    with TypeformServer(token=TYPEFORM_TOKEN) as typeform:
        write_sources(
            config_dir, FAIR_SOURCE, HOOK_SOURCES, pull_sources(typeform_url=typeform.base_url)
        )
        settings = make_settings(database_url=database_url, env=ENV)
        with running(settings) as leadwerk_, web_server(leadwerk_.app) as url:
            yield Hooks(leadwerk_.app, url, config_dir, database_url, typeform)


def form_response(token: str, email: str) -> dict[str, object]:
    return typeform_response(
        token,
        "2026-11-02T09:00:00Z",
        [
            typeform_answer("work_email", "email", email),
            typeform_answer("first_name", "text", "Jörg"),
            typeform_answer("company", "text", "Maschinenbau Nord GmbH"),
        ],
    )


def delivery(event_type: str, response: dict[str, object]) -> dict[str, object]:
    return {
        "event_id": f"ev-{response['token']}",
        "event_type": event_type,
        "form_response": response,
    }


def test_a_signed_download_is_stored_before_202_and_a_redelivery_adds_nothing(
    hooks: Hooks,
) -> None:
    first = hooks.ebook(DOWNLOAD)
    again = hooks.ebook(DOWNLOAD)

    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    assert hooks.counts() == {"contacts": 1, "events": 1, "quarantined": 0}
    stored = contact(hooks.app.store, "eva.mueller@bigcorp.de")
    assert stored is not None and stored.fields["first_name"] == "Eva"
    assert stored.email.endswith("@bigcorp.de")  # the domain lower-cased


def test_a_delivery_without_the_right_signature_gets_401_and_nothing_is_stored(
    hooks: Hooks,
) -> None:
    body = as_body(DOWNLOAD)
    refused = {
        "unsigned": {},
        "wrong digest": {"X-Signature-256": "sha256=" + "0" * 64},
        "other secret": {"X-Signature-256": sign_hex(body, secret="someone else's secret")},
        "no prefix": {"X-Signature-256": sign_hex(body).removeprefix("sha256=")},
    }

    answers = {case: hooks.post("ebooks", body, h).status_code for case, h in refused.items()}

    assert answers == dict.fromkeys(refused, 401)
    assert hooks.counts() == {"contacts": 0, "events": 0, "quarantined": 0}


def test_a_body_that_is_not_json_or_lacks_the_email_gets_400_and_is_quarantined(
    hooks: Hooks,
) -> None:
    not_json = b"email=eva@bigcorp.de&asset=crm-guide"
    no_email = as_body({"first_name": "Eva", "asset": "crm-guide"})
    bad_email = as_body({"email": "eva at bigcorp.de", "asset": "crm-guide"})

    answers = [
        hooks.post("ebooks", body, {"X-Signature-256": sign_hex(body)}).status_code
        for body in (not_json, no_email, bad_email, no_email)  # the last one re-delivered
    ]

    assert answers == [400, 400, 400, 400]
    assert hooks.counts() == {"contacts": 0, "events": 0, "quarantined": 3}
    listed = leadwerk(
        hooks.config_dir,
        "quarantine",
        "list",
        "--json",
        env={**ENV, "LEADWERK_DATABASE_URL": hooks.database_url},
    )
    assert listed.exit_code == 0, listed.output
    entries = [(e["source"], e["field"], e["reason"]) for e in json.loads(listed.stdout)]
    assert [(source, field) for source, field, _ in entries] == [
        ("ebooks", "body"),
        ("ebooks", "email"),
        ("ebooks", "email"),
    ]
    assert "not a JSON object" in entries[0][2]
    assert entries[1][2] == "no e-mail address"
    assert "not a valid e-mail address" in entries[2][2]


def test_stale_signatures_get_401_and_bodies_past_the_size_limit_413(hooks: Hooks) -> None:
    def signed_at(seconds: int, body: bytes) -> dict[str, str]:
        stamp = str(seconds)
        return {"X-Timestamp": stamp, "X-Signature-256": sign_hex(stamp.encode() + b"." + body)}

    now = int(time.time())
    body = as_body({"email": "lukas.gruber@alpenwerk.at", "asset": "crm-guide"})
    big = as_body({"email": "eva@bigcorp.de", "padding": "x" * 4096})  # the limit is 2048

    fresh = hooks.post("ebooks-stamped", body, signed_at(now, body))
    stale = hooks.post("ebooks-stamped", body, signed_at(now - 600, body))
    early = hooks.post("ebooks-stamped", body, signed_at(now + 600, body))
    declared = hooks.post("ebooks-stamped", big, signed_at(now, big))
    streamed = httpx.post(
        f"{hooks.url}/hooks/ebooks-stamped",
        content=iter([big[:1000], big[1000:]]),  # chunked: no Content-Length
        headers=signed_at(now, big),
        timeout=30,
    )

    assert (fresh.status_code, stale.status_code, early.status_code) == (202, 401, 401)
    assert "window" in stale.json()["detail"]
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert hooks.counts()["events"] == 1  # only the fresh one


def test_typeform_deliveries_are_verified_partial_ones_ignored_and_a_poll_adds_no_twin(
    hooks: Hooks,
) -> None:
    response = form_response("tok-1", "j.schmidt@maschinenbau-nord.de")
    partial = form_response("tok-2", "l.gruber@alpenwerk.at")
    body = as_body(delivery("form_response", response))

    forged = hooks.post("typeform-demo", body, {"Typeform-Signature": "sha256=AAAA"})
    completed = hooks.typeform_delivery(delivery("form_response", response))
    ignored = hooks.typeform_delivery(delivery("form_response_partial", partial))
    # Typeform's API returns the same response to the next poll: it is the same lead.
    hooks.typeform.add(response)
    polled = poll_source(hooks.app.store, hooks.app.config, "typeform-demo")

    assert forged.status_code == 401
    assert (completed.status_code, completed.json()["status"]) == (202, "accepted")
    assert (ignored.status_code, ignored.json()["status"]) == (200, "ignored")
    assert (polled.accepted, polled.duplicates) == (0, 1)
    assert hooks.counts() == {"contacts": 1, "events": 1, "quarantined": 0}
    stored = contact(hooks.app.store, "j.schmidt@maschinenbau-nord.de")
    assert stored is not None and stored.fields["first_name"] == "Jörg"


def test_concurrent_deliveries_store_each_record_once(hooks: Hooks) -> None:
    same = [dict(DOWNLOAD) for _ in range(12)]  # one download, delivered 12 times at once
    different = [{**DOWNLOAD, "asset": f"guide-{n}"} for n in range(12)]  # 12 downloads

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda p: hooks.ebook(p).status_code, same + different))

    assert answers == [202] * 24
    assert hooks.counts() == {"contacts": 1, "events": 13, "quarantined": 0}


def test_downloads_arriving_during_a_fair_import_of_the_same_people_lose_nothing(
    hooks: Hooks, tmp_path: Path
) -> None:
    people = [f"besucher{n}@firma{n % 7}.de" for n in range(1000)]
    export = tmp_path / "messe.csv"
    lines = ["E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"]
    lines += [f"{email};Jürgen;Köhler {n};Firma {n % 7};;;DE;;;" for n, email in enumerate(people)]
    export.write_bytes("\r\n".join(lines).encode("cp1252"))
    downloads = [{"email": email, "first_name": "Jürgen", "asset": "crm-guide"} for email in people]

    with ThreadPoolExecutor(max_workers=8) as pool:
        fair = hooks.app.config.sources["messe-hannover-2026"]
        imported = pool.submit(import_file, hooks.app.store, hooks.app.config, fair, export)
        answers = list(pool.map(lambda p: hooks.ebook(p).status_code, downloads[::50]))
        report = imported.result()

    assert answers == [202] * 20
    assert (report.accepted, report.quarantined) == (1000, 0)
    assert hooks.counts() == {"contacts": 1000, "events": 1020, "quarantined": 0}
    both = contact(hooks.app.store, people[50])
    assert both is not None and both.fields["last_name"] == "Köhler 50"  # the file's fields kept


def test_a_nul_character_in_a_delivery_is_dropped_not_answered_with_500(hooks: Hooks) -> None:
    # PostgreSQL refuses NUL in text and JSONB; a 500 would make the sender retry for ever
    response = hooks.ebook({**DOWNLOAD, "first_name": "Eva\u0000", "junk": ["a\u0000b"]})

    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    stored = contact(hooks.app.store, "eva.mueller@bigcorp.de")
    assert stored is not None and stored.fields["first_name"] == "Eva"
