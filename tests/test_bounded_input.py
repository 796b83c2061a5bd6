"""Bounded input: nothing a rule author or a sender controls hangs a worker, blocks the store
or causes a 500. Patterns with nested quantifiers finish on long text (RE2), over-long field
values are quarantined or cut, JSON nested too deeply is refused with where it went too deep,
errors in the logs carry no full e-mail address, and a webhook whose store connection was cut
runs its statement again, else answers 503 with Retry-After."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from config.settings import Settings
from connectors.json_depth import loads
from connectors.notify.base import OutboundMessage
from connectors.notify.email import SmtpNotifier
from rules.contact import mask_emails_in
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import Running, running
from tests.servers.jsonapi import JsonApiServer
from tests.servers.smtp import SmtpServer
from tests.source_helpers import (
    FAIR,
    FAIR_SOURCE,
    FORMS_TOKEN,
    as_body,
    counts,
    leadwerk,
    pull_sources,
    sign_hex,
    web_server,
    write_sources,
)
from worker.pipeline.poll import import_file, poll_source
from worker.runtime.logging import setup_logging
from worker.store.db import Store
from worker.store.models import Contact, Event, Quarantine, Score

SECRET = "leads-hook-secret"
ENV = {"LEADS_HOOK_SECRET": SECRET}
NOW = "2026-11-24T12:00:00+00:00"
SCORE = [sys.executable, "-m", "worker"]  # leadwerk, as a process of its own

LEADS_SOURCE = """\
  - name: leads
    kind: webhook
    secret_env: LEADS_HOOK_SECRET
    signature: {header: X-Signature-256, prefix: "sha256=", encoding: hex}
    id_field: id
    event: {type: webinar, notes: "$.notes"}
    map: {email: "$.email", first_name: "$.first_name", title: "$.title"}
"""

# Two rules a backtracking engine would take longer than the age of the universe over.
NESTED_QUANTIFIERS = """\
  - name: all a
    when: title matches "(a+)+$"
    points: 7
"""
NESTED_IN_NOTES = """\
engagement:
  - name: x then y
    when: event.notes matches "(x+x+)+y"
    points: 5
"""

NO_MATCH_TITLE = "a" * 250 + "!"  # 251 characters, inside the 256 a title may have
MATCH_TITLE = "a" * 250
NO_MATCH_NOTES = "x" * 9_000  # free text, inside the 10,000 characters kept
MATCH_NOTES = "x" * 9_000 + "y"


def with_pathological_rules(config_dir: Path) -> None:
    rules = config_dir / "scoring.yaml"
    text = rules.read_text(encoding="utf-8")
    text = re.sub(r"^fit:.*\n", lambda m: m.group(0) + NESTED_QUANTIFIERS, text, flags=re.M)
    text = re.sub(r"^engagement:.*\n", NESTED_IN_NOTES, text, flags=re.M)
    rules.write_text(text, encoding="utf-8")


def hit_names(hits: list[dict[str, Any]]) -> set[str]:
    return {hit["rule"] for hit in hits}


@dataclass
class Hooks:
    leadwerk: Running
    url: str
    config_dir: Path
    database_url: str

    @property
    def store(self) -> Store:
        return self.leadwerk.app.store

    def post(self, body: bytes) -> httpx.Response:
        headers = {"X-Signature-256": sign_hex(body, secret=SECRET)}
        return httpx.post(f"{self.url}/hooks/leads", content=body, headers=headers, timeout=60)

    def deliver(self, payload: dict[str, Any]) -> httpx.Response:
        return self.post(as_body(payload))

    def quarantined(self) -> list[dict[str, Any]]:
        env = {**ENV, "LEADWERK_DATABASE_URL": self.database_url}
        listed = leadwerk(self.config_dir, "quarantine", "list", "--json", env=env)
        assert listed.exit_code == 0, listed.output
        return json.loads(listed.stdout)

    def scores(self) -> dict[str, set[str]]:
        """The rules each contact's latest score hit, by e-mail address."""
        with self.store.session() as session:
            rows = session.execute(
                select(Contact.email, Score.hits).join(Score).order_by(Score.id)
            ).all()
        return {email: hit_names(hits) for email, hits in rows}


@pytest.fixture
def hooks(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[Hooks]:
    """Leadwerk with the pathological rules and a webhook source, served on a free port."""
    with_pathological_rules(config_dir)
    write_sources(config_dir, FAIR_SOURCE, LEADS_SOURCE)
    settings = make_settings(database_url=database_url, env=ENV)
    with running(settings) as leadwerk_, web_server(leadwerk_.app) as url:
        yield Hooks(leadwerk_, url, config_dir, database_url)


# --- patterns with nested quantifiers finish ---------------------------------------------------


def test_rules_check_refuses_a_lookahead_where_it_stands_and_says_what_to_write(
    config_dir: Path,
) -> None:
    rules = config_dir / "scoring.yaml"
    text = rules.read_text(encoding="utf-8")
    rules.write_text(text.replace('"(?i)student|', '"(?i)student(?!in)|', 1), encoding="utf-8")

    done = subprocess.run(
        [*SCORE, "--config", str(config_dir), "rules", "check"],
        capture_output=True,
        text=True,
        cwd=config_dir.parent,
    )

    assert done.returncode == 1
    message, source_line, caret = done.stdout.splitlines()[:3]
    number = next(n for n, line in enumerate(text.splitlines(), 1) if "(?i)student|" in line)
    column = source_line.index("(?!in)") - 3  # the block is indented by four spaces
    assert message.startswith(f"config/scoring.yaml:{number}:{column}: lookahead and lookbehind")
    assert "write two conditions instead" in message
    assert caret.index("^") == source_line.index("(?!in)")


def test_leadwerk_score_finishes_nested_quantifiers_on_long_text(config_dir: Path) -> None:
    with_pathological_rules(config_dir)
    lines = [
        {"contact": {"email": "a1@bigcorp.de", "title": NO_MATCH_TITLE}, "events": []},
        {"contact": {"email": "a2@bigcorp.de", "title": MATCH_TITLE}, "events": []},
        {
            "contact": {"email": "x1@bigcorp.de"},
            "events": [{"type": "webinar", "notes": NO_MATCH_NOTES, "at": NOW}],
        },
        {
            "contact": {"email": "x2@bigcorp.de"},
            "events": [{"type": "webinar", "notes": MATCH_NOTES, "at": NOW}],
        },
    ]
    done = subprocess.run(
        [*SCORE, "--config", str(config_dir), "score", "--json", "--now", NOW],
        input="\n".join(json.dumps(line) for line in lines),
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stderr
    hits = [hit_names(json.loads(out)["hits"]) for out in done.stdout.splitlines()]
    assert ["all a" in h for h in hits] == [False, True, False, False]
    assert ["x then y" in h for h in hits] == [False, False, False, True]


def test_a_webhook_with_long_text_for_nested_quantifiers_is_scored(hooks: Hooks) -> None:
    answers = [
        hooks.deliver({"id": "1", "email": "a1@bigcorp.de", "title": NO_MATCH_TITLE}),
        hooks.deliver({"id": "2", "email": "a2@bigcorp.de", "title": MATCH_TITLE}),
        hooks.deliver({"id": "3", "email": "x1@bigcorp.de", "notes": NO_MATCH_NOTES}),
        hooks.deliver({"id": "4", "email": "x2@bigcorp.de", "notes": MATCH_NOTES}),
    ]
    hooks.leadwerk.drain()

    assert [answer.status_code for answer in answers] == [202, 202, 202, 202]
    scores = hooks.scores()
    assert "all a" not in scores["a1@bigcorp.de"] and "all a" in scores["a2@bigcorp.de"]
    assert "x then y" not in scores["x1@bigcorp.de"] and "x then y" in scores["x2@bigcorp.de"]


def test_an_import_with_long_text_for_nested_quantifiers_is_scored(
    hooks: Hooks, tmp_path: Path
) -> None:
    export = tmp_path / "messe.csv"
    header = "E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"
    rows = [
        f"a1@bigcorp.de;Eva;;;{NO_MATCH_TITLE};;;;hot;",
        f"a2@bigcorp.de;Tom;;;{MATCH_TITLE};;;;hot;",
    ]
    export.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    app = hooks.leadwerk.app

    report = import_file(app.store, app.config, app.config.sources[FAIR], export)
    hooks.leadwerk.drain()

    assert (report.accepted, report.quarantined) == (2, 0)
    scores = hooks.scores()
    assert "all a" not in scores["a1@bigcorp.de"] and "all a" in scores["a2@bigcorp.de"]


# --- field lengths -------------------------------------------------------------------------


def test_a_900_kb_first_name_is_quarantined_naming_source_record_and_field(hooks: Hooks) -> None:
    answer = hooks.deliver({"id": "big-1", "email": "eva@bigcorp.de", "first_name": "E" * 900_000})
    again = hooks.deliver({"id": "big-1", "email": "eva@bigcorp.de", "first_name": "E" * 900_000})
    hooks.leadwerk.drain()

    assert (answer.status_code, again.status_code) == (400, 400)
    assert answer.json()["detail"] == (
        "first_name: 900,000 characters long; at most 256 are taken (quarantined)"
    )
    [entry] = hooks.quarantined()
    assert (entry["source"], entry["record_id"], entry["field"]) == ("leads", "big-1", "first_name")
    assert entry["reason"] == "900,000 characters long; at most 256 are taken"
    assert counts(hooks.store)["contacts"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "e" * 250 + "@bigcorp.de"),
        ("title", "Head of " + "Sales, " * 50 + "EMEA"),
    ],
)
def test_an_identity_field_past_its_cap_is_quarantined_not_cut(
    hooks: Hooks, field: str, value: str
) -> None:
    payload = {"id": "long-1", "email": "eva@bigcorp.de", field: value}

    answer = hooks.deliver(payload)

    assert answer.status_code == 400
    [entry] = hooks.quarantined()
    assert (entry["record_id"], entry["field"]) == ("long-1", field)
    assert entry["reason"].startswith(f"{len(value):,} characters long; at most")
    assert counts(hooks.store)["events"] == 0


def test_notes_past_10000_characters_are_cut_with_a_mark_and_kept_whole_in_the_raw_record(
    hooks: Hooks,
) -> None:
    notes = "Rückruf erbeten. " * 1_000  # 17,000 characters

    answer = hooks.deliver({"id": "n-1", "email": "eva@bigcorp.de", "notes": notes})

    assert answer.status_code == 202
    with hooks.store.session() as session:
        event = session.scalars(select(Event)).one()
    assert event.attrs["notes"] == notes[:10_000] + " [… 7,000 more characters]"
    assert event.raw["notes"] == notes


def test_an_e_mail_subject_is_one_line_and_at_most_300_characters() -> None:
    subject = "Neuer Lead: " + "Eva\r\nBcc: spy@rival.de " * 20_000
    with SmtpServer() as smtp:
        SmtpNotifier(smtp.url, "Leadwerk <leadwerk@example.com>").send(
            OutboundMessage(
                key="lead-1:assign:1",
                channel="email",
                to_address="rep@example.com",
                to_name="Rep",
                subject=subject,
                text="A new lead.",
            )
        )
        [mail] = smtp.wait_for(1)

    sent = mail.message["Subject"]
    assert sent.startswith("Neuer Lead: Eva Bcc: spy@rival.de Eva")
    assert len(sent) == 300 and sent.endswith("…")
    assert mail.message["Bcc"] is None


# --- JSON nested too deeply ------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 900, 50_000])
def test_a_body_nested_too_deeply_gets_400_and_is_quarantined_once(
    hooks: Hooks, depth: int
) -> None:
    opening = '{"email": "eva@bigcorp.de", "x": '  # the object is level 1
    body = (opening + "[" * depth + "]" * depth + "}").encode()

    first = hooks.post(body)
    again = hooks.post(body)

    assert (first.status_code, again.status_code) == (400, 400)
    column = len(opening) + 64  # the bracket that opens level 65
    detail = (
        f"body: the body is JSON nested deeper than 64 levels (line 1, column {column}) "
        "(quarantined)"
    )
    assert first.json()["detail"] == again.json()["detail"] == detail
    [entry] = hooks.quarantined()
    assert (entry["source"], entry["field"]) == ("leads", "body")
    assert counts(hooks.store) == {"contacts": 0, "events": 0, "quarantined": 1}


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def test_a_pulled_record_nested_too_deeply_is_quarantined_alone(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    def submission(n: int, **fields: Any) -> dict[str, Any]:
        return {
            "id": f"sub-{n}",
            "submitted_at": f"2026-11-0{n}T10:00:00Z",
            "fields": {"email": f"lead{n}@bigcorp.de", **fields},
        }

    records = [submission(1), submission(2, extra=nested(100)), submission(3)]
    with JsonApiServer(records, pagination="cursor", page_size=2, bearer=FORMS_TOKEN) as api:
        write_sources(config_dir, FAIR_SOURCE, pull_sources(forms_url=api.url))
        settings = make_settings(env={"FORMS_TOKEN": FORMS_TOKEN})
        with running(settings) as leadwerk_:
            app = leadwerk_.app
            report = poll_source(app.store, app.config, "website-forms")
            with app.store.session() as session:
                [entry] = session.scalars(select(Quarantine)).all()

    assert (report.accepted, report.quarantined) == (2, 1)
    assert (entry.source, entry.record_id, entry.field) == ("website-forms", "sub-2", "record")
    assert entry.reason == "the record is JSON nested deeper than 64 levels"


def test_json_nested_64_levels_deep_is_read() -> None:
    value = loads("[" * 64 + "]" * 64)
    for _ in range(63):
        [value] = value
    assert value == []


def test_a_line_nested_too_deeply_for_leadwerk_score_is_an_error_and_the_rest_go_on(
    config_dir: Path,
) -> None:
    deep = '{"contact": ' + "[" * 100_000 + "]" * 100_000 + "}"
    good = json.dumps({"contact": {"email": "eva@bigcorp.de"}, "events": []})
    done = subprocess.run(
        [*SCORE, "--config", str(config_dir), "score", "--json"],
        input="\n".join([deep, good]),
        capture_output=True,
        text=True,
    )

    # The refused line makes the exit code 1, after the rest were scored
    assert (done.returncode, done.stderr) == (1, "1 line(s) refused\n")
    first, second = (json.loads(out) for out in done.stdout.splitlines())
    assert first["error"] == "JSON nested deeper than 64 levels (line 1, column 76)"
    assert "score" in second


# --- logs carry no full e-mail address ------------------------------------------------------

# An address whose local part is longer than one character and not followed by ***.
UNMASKED = re.compile(r"[A-Za-z0-9._%+-]{2,}@[A-Za-z0-9.-]+\.[a-z]{2,}")


@pytest.fixture
def logged(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Leadwerk's own log set-up, writing to a captured stderr; returns what was written."""
    request.getfixturevalue("restore_logging")
    setup_logging("INFO", "console")
    return lambda: capsys.readouterr().err


def test_a_unique_violation_is_logged_without_the_address(
    database_url: str, logged: Callable[[], str]
) -> None:
    store = Store(database_url)
    row = {
        "email": "eva.mueller@bigcorp.de",
        "email_domain": "bigcorp.de",
        "fields": {},
        "source": "test",
    }
    failures: list[IntegrityError] = []
    try:
        for _ in range(2):
            try:
                with store.transaction() as connection:
                    connection.execute(insert(Contact), row)
            except IntegrityError as exc:  # the second time: the address is taken
                failures.append(exc)
                logging.getLogger("leadwerk.test").exception("storing a contact failed")
    finally:
        store.close()

    [failure] = failures
    assert "SQL parameters hidden" in str(failure)
    output = logged()
    assert "storing a contact failed" in output and "IntegrityError" in output
    assert UNMASKED.findall(output) == []


# --- a cut store connection ------------------------------------------------------------------


def _cut_connections(admin_url: str, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _allow_connections(admin_url: str, database_url: str, allow: bool) -> None:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')


@pytest.fixture
def pg_hooks(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    logged: Callable[[], str],
) -> Iterator[Hooks]:
    with_pathological_rules(config_dir)
    write_sources(config_dir, FAIR_SOURCE, LEADS_SOURCE)
    settings = make_settings(database_url=postgres_url, env=ENV)
    with running(settings) as leadwerk_, web_server(leadwerk_.app) as url:
        yield Hooks(leadwerk_, url, config_dir, postgres_url)


def test_a_webhook_whose_connection_was_cut_runs_its_statement_again(
    pg_hooks: Hooks, postgres_admin: str, logged: Callable[[], str]
) -> None:
    before = pg_hooks.deliver({"id": "c-1", "email": "eva.mueller@bigcorp.de"})
    pg_hooks.leadwerk.drain()  # nothing else uses the store until the next delivery
    _cut_connections(postgres_admin, pg_hooks.database_url)

    after = pg_hooks.deliver({"id": "c-2", "email": "lukas.gruber@alpenwerk.at"})

    assert (before.status_code, after.status_code) == (202, 202)
    assert counts(pg_hooks.store)["events"] == 2
    output = logged()
    assert "the store cannot be reached" in output and "running it again" in output
    assert UNMASKED.findall(output) == []


def test_a_webhook_answers_503_with_retry_after_while_the_store_is_away(
    pg_hooks: Hooks, postgres_admin: str, logged: Callable[[], str]
) -> None:
    pg_hooks.deliver({"id": "c-1", "email": "eva.mueller@bigcorp.de"})
    _allow_connections(postgres_admin, pg_hooks.database_url, False)
    try:
        _cut_connections(postgres_admin, pg_hooks.database_url)
        away = pg_hooks.deliver({"id": "c-2", "email": "lukas.gruber@alpenwerk.at"})
    finally:
        _allow_connections(postgres_admin, pg_hooks.database_url, True)
    back = pg_hooks.deliver({"id": "c-2", "email": "lukas.gruber@alpenwerk.at"})

    assert (away.status_code, away.headers["Retry-After"]) == (503, "30")
    assert away.json()["status"] == "unavailable"
    assert back.status_code == 202
    assert counts(pg_hooks.store)["events"] == 2
    assert UNMASKED.findall(logged()) == []


def test_a_url_whose_password_is_hidden_already_is_not_masked_again() -> None:
    line = "the store at postgresql://leadwerk:***@127.0.0.1:5432/leads: eva.m@bigcorp.de"
    assert mask_emails_in(line) == (
        "the store at postgresql://leadwerk:***@127.0.0.1:5432/leads: e***@bigcorp.de"
    )
