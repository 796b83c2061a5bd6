"""Trade-fair exports end to end, through the commands a marketing-ops person runs:
``leadwerk import``, the inbox folder under ``leadwerk run --once``, and
``leadwerk quarantine retry`` once the mapping is fixed."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from openpyxl import Workbook

from config.settings import Settings
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.source_helpers import FAIR, FAIR_SOURCE, leadwerk, write_sources
from worker.pipeline.poll import import_inboxes
from worker.runtime.app import App, init_app
from worker.store.db import Store
from worker.store.models import Contact

HEADER = "E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"
# Row numbers as a spreadsheet shows them: the header is row 1, the quoted cell with a line
# break stays one row (3), the empty line is a row too (4).
EXPORT = "\r\n".join(
    [
        HEADER,
        "Eva.Mueller@BigCorp.DE;Eva;Müller;Bigcorp AG;Head of IT;0511 123456;Deutschland;5.000;"
        "hot;Will Angebot",
        "j.schmidt@maschinenbau-nord.de;Jörg;Schmidt;Maschinenbau Nord GmbH;Geschäftsführer;"
        '040 9876543;DE;250;hot;"Rückruf\r\nerbeten"',
        "",
        "l.gruber@alpenwerk.at;Lukas;Gruber;Alpenwerk GmbH;Einkaufsleiter;01 234567;Österreich;"
        "1200;warm;",
        "kai.kaputt.example.de;Kai;Kaputt;Kaputt KG;Einkauf;;DE;10;kalt;",
        ";Nina;Ohnemail;Ohne GmbH;Einkauf;;DE;10;warm;",
        "m.weiss@kleinteil.de;Marie;Weiß;Kleinteil KG;Engineer;;DE;viele;warm;",
        "s.koehler@kaelte.de;Sören;Köhler;Kälte GmbH;CTO;;DE;40;kalt;Notiz;noch was;und mehr",
    ]
)


def project_env(config_dir: Path, database_url: str) -> dict[str, str]:
    write_sources(config_dir, FAIR_SOURCE)
    return {"LEADWERK_DATABASE_URL": database_url}


def import_json(config_dir: Path, export: Path, env: dict[str, str]) -> dict[str, object]:
    result = leadwerk(config_dir, "import", str(export), "--source", FAIR, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def stored_contacts(database_url: str) -> dict[str, Contact]:
    """The stored contacts by their address in lower case."""
    store = Store(database_url, run_migrations=False)
    try:
        with store.session() as session:
            return {c.email.lower(): c for c in session.query(Contact)}
    finally:
        store.close()


def test_import_reports_problems_by_spreadsheet_row_and_a_second_import_adds_nothing(
    config_dir: Path, tmp_path: Path, database_url: str
) -> None:
    env = project_env(config_dir, database_url)
    export = tmp_path / "messe-export.csv"
    export.write_bytes(EXPORT.encode("cp1252"))  # German Excel's encoding

    first = import_json(config_dir, export, env)
    second = import_json(config_dir, export, env)
    listed = leadwerk(config_dir, "quarantine", "list", "--json", env=env)

    assert {k: first[k] for k in ("received", "accepted", "duplicates", "quarantined")} == {
        "received": 7,
        "accepted": 3,
        "duplicates": 0,
        "quarantined": 4,
    }
    problems = [(p["row"], p["field"]) for p in first["problems"]]  # type: ignore[attr-defined]
    assert problems == [(6, "email"), (7, "email"), (8, "company_size"), (9, "record")]
    reasons = [p["reason"] for p in first["problems"]]  # type: ignore[attr-defined]
    assert "not a valid e-mail address" in reasons[0]
    assert reasons[1] == "no e-mail address"
    assert "expected a number" in reasons[2] and "viele" in reasons[2]
    assert reasons[3] == "row 9 has 12 cells but the header has 10"
    # Importing the same file again: every good row is a duplicate, no bad row is listed twice
    assert (second["accepted"], second["duplicates"], second["quarantined"]) == (0, 3, 4)
    assert len(json.loads(listed.stdout)) == 4
    # E-mail domains lower-cased, phones in E.164 by the contact's country, umlauts kept
    contacts = stored_contacts(database_url)
    assert sorted(contacts) == [
        "eva.mueller@bigcorp.de",
        "j.schmidt@maschinenbau-nord.de",
        "l.gruber@alpenwerk.at",
    ]
    assert contacts["eva.mueller@bigcorp.de"].email.endswith("@bigcorp.de")
    eva = contacts["eva.mueller@bigcorp.de"].fields
    assert (eva["last_name"], eva["phone"], eva["country"]) == ("Müller", "+49511123456", "DE")
    assert eva["company_size"] == 5000
    lukas = contacts["l.gruber@alpenwerk.at"].fields
    assert (lukas["phone"], lukas["country"]) == ("+431234567", "AT")
    assert contacts["j.schmidt@maschinenbau-nord.de"].fields["first_name"] == "Jörg"


def write_xlsx(path: Path, rows: list[list[object]]) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(path)


CARDS = """BEGIN:VCARD
VERSION:3.0
N:Groß;Käthe;;;
FN:Käthe Groß
ORG:Präzision GmbH
TITLE:Leiterin Einkauf
EMAIL;TYPE=WORK:k.gross@praezision.de
TEL;TYPE=WORK:0711 5551234
ADR;TYPE=WORK:;;Königstraße 1;Stuttgart;;70173;Deutschland
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN:Björn Bäcker
EMAIL:b.baecker@antriebe.ch
ADR;TYPE=WORK:;;Bahnhofstrasse 5;Zürich;;8001;Schweiz
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN:Ohne Adresse
ORG:Niemand AG
END:VCARD
"""


def test_the_inbox_takes_csv_xlsx_and_vcards_and_fails_unreadable_or_broken_files_whole(
    config_dir: Path, tmp_path: Path
) -> None:
    env = project_env(config_dir, f"sqlite:///{tmp_path / 'inbox.db'}")
    inbox = config_dir.parent / "inbox" / "tradefair"
    inbox.mkdir(parents=True)
    (inbox / "tag1.csv").write_bytes(
        f"{HEADER}\r\na.wolf@stahlwerk.de;Anna;Wolf;Stahlwerk AG;CTO;;DE;900;hot;\r\n".encode(
            "cp1252"
        )
    )
    oezlem = ["o.oeztuerk@foerdertechnik.de", "Özlem", "Öztürk", "Fördertechnik GmbH", "CEO"]
    write_xlsx(inbox / "tag2.xlsx", [HEADER.split(";"), [*oezlem, "0421 123456", "DE", 300]])
    (inbox / "visitenkarten.vcf").write_text(CARDS, encoding="utf-8")
    (inbox / "foto.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    # 600 good rows (more than one batch), then a quote that is never closed: it swallows
    # the rest of the file, and the csv module gives up at row 602
    broken = [HEADER, "frueh@vorher.de;Frida;Früh;Vorher GmbH;CTO;;DE;10;hot;"]
    broken += [f"a{n}@vorher.de;A;Vorher;Vorher AG;CTO;;DE;10;hot;" for n in range(599)]
    broken += ['spaet@nachher.de;Paul;"Spät;Nachher GmbH;CTO;;DE;10;hot;']
    broken += [f"x{n}@rest.de;X;Rest;Rest AG;CTO;;DE;10;hot;" for n in range(4000)]
    (inbox / "kaputt.csv").write_bytes("\r\n".join(broken).encode("cp1252"))

    result = leadwerk(config_dir, "run", "--once", env=env)

    assert result.exit_code == 1  # a file failed: the run says so
    assert "imported messe-hannover-2026: 1 rows, 1 new" in result.stdout
    assert "imported messe-hannover-2026: 3 rows, 2 new, 0 known, 1 quarantined" in result.stdout
    assert "kaputt.csv: row 602 cannot be read" in result.stderr
    assert "nothing from this file was taken in" in result.stderr
    assert "foto.csv" in result.stderr
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "tag1.csv",
        "tag2.xlsx",
        "visitenkarten.vcf",
    ]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["foto.csv", "kaputt.csv"]
    contacts = stored_contacts(env["LEADWERK_DATABASE_URL"])
    assert "frueh@vorher.de" not in contacts  # not half-kept
    assert sorted(contacts) == [
        "a.wolf@stahlwerk.de",
        "b.baecker@antriebe.ch",
        "k.gross@praezision.de",
        "o.oeztuerk@foerdertechnik.de",
    ]
    kaethe = contacts["k.gross@praezision.de"].fields
    assert (kaethe["first_name"], kaethe["last_name"]) == ("Käthe", "Groß")
    assert (kaethe["phone"], kaethe["country"]) == ("+497115551234", "DE")
    assert contacts["b.baecker@antriebe.ch"].fields["country"] == "CH"
    assert contacts["o.oeztuerk@foerdertechnik.de"].fields["company_size"] == 300


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_quarantined_rows_are_taken_in_by_retry_once_the_mapping_is_fixed(
    config_dir: Path, tmp_path: Path, database_url: str
) -> None:
    env = project_env(config_dir, database_url)
    export = tmp_path / "messe-export.csv"
    export.write_bytes(EXPORT.encode("cp1252"))
    before = import_json(config_dir, export, env)

    # "Mitarbeiter" holds words as well as numbers: the company size is no longer mapped
    sources = config_dir / "sources.yaml"
    sources.write_text(sources.read_text().replace('company_size: "Mitarbeiter",', ""))
    retried = leadwerk(config_dir, "quarantine", "retry", env=env)
    listed = leadwerk(config_dir, "quarantine", "list", "--json", env=env)

    assert (before["accepted"], before["quarantined"]) == (3, 4)
    assert retried.exit_code == 0, retried.output
    assert "1 record(s) taken in, 3 still quarantined" in retried.stdout
    # Each record still refused is named with today's reason
    assert "still refused: messe-export.csv row 6 (" in retried.stdout
    assert "row 7 (messe-hannover-2026, " in retried.stdout
    assert "email: no e-mail address" in retried.stdout
    assert "record: row 9 has 12 cells but the header has 10" in retried.stdout
    assert [row["row"] for row in json.loads(listed.stdout)] == [6, 7, 9]
    assert "m.weiss@kleinteil.de" in stored_contacts(database_url)


def inbox_app(
    config_dir: Path, make_settings: Callable[..., Settings], settle: str
) -> tuple[Path, App]:
    write_sources(config_dir, FAIR_SOURCE.replace("    path:", f"    settle: {settle}\n    path:"))
    inbox = config_dir.parent / "inbox" / "tradefair"
    inbox.mkdir(parents=True)
    return inbox, init_app(make_settings())


ONE_ROW = f"{HEADER}\r\na.wolf@stahlwerk.de;Anna;Wolf;Stahlwerk AG;CTO;;DE;900;hot;\r\n"


def test_a_file_still_being_written_stays_in_the_inbox_until_it_stops_changing(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    inbox, app = inbox_app(config_dir, make_settings, "30s")
    export = inbox / "tag1.csv"
    export.write_bytes(ONE_ROW.encode("cp1252"))  # a sync client is still writing it

    reports = import_inboxes(app.store, app.config)

    assert reports == []
    assert export.exists() and not (inbox / "done").exists()
    assert stored_contacts(app.settings.database_url) == {}
    # When: it has not changed for longer than settle
    quiet_since = time.time() - 31
    os.utime(export, (quiet_since, quiet_since))

    [report] = import_inboxes(app.store, app.config)

    assert (report.file, report.accepted) == ("tag1.csv", 1)
    assert [p.name for p in (inbox / "done").iterdir()] == ["tag1.csv"]
    app.close()


def test_a_look_that_waits_takes_a_file_copied_in_just_before(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    inbox, app = inbox_app(config_dir, make_settings, "1s")
    (inbox / "tag1.csv").write_bytes(ONE_ROW.encode("cp1252"))

    [report] = import_inboxes(app.store, app.config, wait=True)

    assert report.accepted == 1
    assert [p.name for p in (inbox / "done").iterdir()] == ["tag1.csv"]
    app.close()


def test_a_file_that_goes_on_changing_while_waited_for_is_left_for_a_later_look(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    inbox, app = inbox_app(config_dir, make_settings, "1s")
    export = inbox / "tag1.csv"
    export.write_bytes(ONE_ROW.encode("cp1252"))
    # Changed "later" than now: as if the copy wrote again during the wait.
    os.utime(export, (time.time() + 5, time.time() + 5))

    assert import_inboxes(app.store, app.config, wait=True) == []
    assert export.exists()
    app.close()
