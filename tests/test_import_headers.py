"""A fair export whose header does not match the mapping is refused whole, with the column
it lacks and a guess; a row cut short is quarantined; a phone cell that holds no number is
left out of the lead, which is kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from openpyxl import Workbook

from config.settings import Settings
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.source_helpers import FAIR, FAIR_SOURCE, counts, leadwerk, write_sources
from worker.pipeline.poll import import_inboxes
from worker.runtime.app import init_app
from worker.store.db import Store
from worker.store.models import Contact

HEADER = "E-Mail;Vorname;Nachname;Firma;Position;Telefon;Land;Mitarbeiter;Bewertung;Notiz"
EVA = "eva@bigcorp.de;Eva;Müller;Bigcorp AG;CTO;0511 123456;DE;5.000;hot;"
TOM = "tom@acme.de;Tom;Berg;ACME GmbH;CEO;040 9876543;DE;250;warm;"


def export(tmp_path: Path, *lines: str, name: str = "messe.csv") -> Path:
    path = tmp_path / name
    path.write_bytes("\r\n".join(lines).encode("cp1252"))
    return path


def run_import(config_dir: Path, path: Path, database_url: str, *options: str) -> Result:
    write_sources(config_dir, FAIR_SOURCE)
    env = {"LEADWERK_DATABASE_URL": database_url}
    return leadwerk(config_dir, "import", str(path), "--source", FAIR, *options, env=env)


def stored(database_url: str) -> dict[str, int]:
    store = Store(database_url, run_migrations=False)
    try:
        return counts(store)
    finally:
        store.close()


def test_a_header_saying_email_instead_of_e_mail_fails_the_file_and_stores_nothing(
    config_dir: Path, tmp_path: Path, database_url: str
) -> None:
    path = export(tmp_path, HEADER.replace("E-Mail", "Email"), EVA, TOM)

    result = run_import(config_dir, path, database_url)

    assert result.exit_code == 1
    assert (
        "messe.csv: header row 1: no column 'E-Mail' (mapped to email) (did you mean 'Email'?)"
        in result.stderr
    )
    assert "nothing from this file was taken in" in result.stderr
    assert stored(database_url) == {"contacts": 0, "events": 0, "quarantined": 0}


def test_a_renamed_company_size_column_fails_the_file_rather_than_losing_the_size(
    config_dir: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'leads.db'}"
    # Two blank lines above the header: the error names the row the header stands in
    path = export(tmp_path, "", ";;;", HEADER.replace("Mitarbeiter", "Anzahl Mitarbeiter"), EVA)

    result = run_import(config_dir, path, database_url, "--json")

    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error.startswith(
        "messe.csv: header row 3: no column 'Mitarbeiter' (mapped to company_size) "
        "(did you mean 'Anzahl Mitarbeiter'?)"
    )
    assert stored(database_url)["events"] == 0


def test_headers_in_other_case_and_with_blanks_still_match(
    config_dir: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'leads.db'}"
    path = export(tmp_path, HEADER.replace("E-Mail", " e-mail ").replace("Land", "LAND"), EVA)

    result = run_import(config_dir, path, database_url)

    assert result.exit_code == 0, result.output
    assert "received 1, accepted 1" in result.stdout


def test_a_workbook_with_a_wrong_header_fails_the_same_way(
    config_dir: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'leads.db'}"
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADER.replace("Telefon", "Tel.").split(";"))
    sheet.append(EVA.split(";"))
    path = tmp_path / "messe.xlsx"
    workbook.save(path)

    result = run_import(config_dir, path, database_url)

    assert result.exit_code == 1
    assert "messe.xlsx: header row 1: no column 'Telefon' (mapped to phone)" in result.stderr
    assert stored(database_url)["events"] == 0


def test_the_inbox_moves_a_file_with_a_wrong_header_to_failed_with_the_reason(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    write_sources(config_dir, FAIR_SOURCE.replace("    path:", "    settle: 0s\n    path:"))
    inbox = config_dir.parent / "inbox" / "tradefair"
    inbox.mkdir(parents=True)
    export(inbox, HEADER.replace("Vorname", "Vornahme"), EVA, name="tag1.csv")
    export(inbox, HEADER, TOM, name="tag2.csv")
    app = init_app(make_settings())

    reports = {report.file: report for report in import_inboxes(app.store, app.config)}

    assert reports["tag1.csv"].error is not None
    assert "no column 'Vorname' (mapped to first_name) (did you mean 'Vornahme'?)" in (
        reports["tag1.csv"].error
    )
    assert reports["tag2.csv"].accepted == 1
    assert [p.name for p in (inbox / "failed").iterdir()] == ["tag1.csv"]
    assert [p.name for p in (inbox / "done").iterdir()] == ["tag2.csv"]
    app.close()


def test_a_vcard_has_no_header_to_check_and_is_taken_in(config_dir: Path, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'leads.db'}"
    path = tmp_path / "karten.vcf"
    path.write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Groß;Käthe;;;\r\nEMAIL:k.gross@praezision.de\r\n"
        "END:VCARD\r\n",
        encoding="utf-8",
    )

    result = run_import(config_dir, path, database_url)

    assert result.exit_code == 0, result.output
    assert "received 1, accepted 1" in result.stdout


def test_a_short_row_is_quarantined_like_a_long_one_and_the_rest_flows_on(
    config_dir: Path, tmp_path: Path, database_url: str
) -> None:
    path = export(
        tmp_path,
        HEADER,
        EVA,
        "kurz@zeile.de;Kurt;Zeile;Zeile GmbH",  # 4 of 10 cells: which is the phone?
        TOM + ";noch was",
    )

    result = run_import(config_dir, path, database_url, "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["quarantined"]) == (1, 2)
    assert [(p["row"], p["reason"]) for p in summary["problems"]] == [
        (3, "row 3 has 4 cells but the header has 10"),
        (4, "row 4 has 11 cells but the header has 10"),
    ]
    assert stored(database_url) == {"contacts": 1, "events": 1, "quarantined": 2}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_phone_cell_that_is_no_number_is_left_out_and_the_lead_kept(
    config_dir: Path, tmp_path: Path, database_url: str
) -> None:
    path = export(tmp_path, HEADER, EVA.replace("0511 123456", "bitte nicht anrufen"), TOM)

    result = run_import(config_dir, path, database_url)

    assert result.exit_code == 0, result.output
    assert "received 2, accepted 2, duplicates 0, quarantined 0" in result.stdout
    assert "row 2: phone: not a phone number (bit***en); left out (lead kept)" in result.stdout
    assert "bitte nicht anrufen" not in result.output
    store = Store(database_url, run_migrations=False)
    with store.session() as session:
        phones = {c.email: c.fields.get("phone") for c in session.query(Contact)}
    store.close()
    assert phones == {"eva@bigcorp.de": None, "tom@acme.de": "+49409876543"}
