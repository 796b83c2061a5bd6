"""An import reads its file once: whole-file problems surface when the file is opened, so the
records can be taken in as they are read and a broken file still leaves nothing behind."""

from __future__ import annotations

import pytest

from connectors.sources.base import RawRecord
from connectors.sources.files import ExportError, read_export_bytes
from connectors.sources.mapping import RecordMapper
from rules.contact import normalise_phone

HEADER = "E-Mail;Vorname;Notiz\r\n"


def test_a_quote_never_closed_at_the_end_fails_on_opening_naming_its_row() -> None:
    rows = "".join(f"eva{n}@firma.de;Eva;ok\r\n" for n in range(2000))
    text = HEADER + rows + 'last@firma.de;Lisa;"Rückruf\r\n'

    with pytest.raises(ExportError, match=r"^scans\.csv: row 2002 cannot be read"):
        read_export_bytes(text.encode("cp1252"), "scans.csv")


def test_cells_are_trimmed_and_a_multi_line_cell_keeps_its_row_one_row() -> None:
    text = HEADER + ' eva@firma.de ; Eva ;"Zeile 1\r\nZeile 2\rZeile 3 "\r\nanna@firma.de;Anna;\r\n'

    records = list(read_export_bytes(text.encode("cp1252"), "scans.csv"))

    assert [(r.row, r.data) for r in records] == [
        (2, {"E-Mail": "eva@firma.de", "Vorname": "Eva", "Notiz": "Zeile 1\nZeile 2\nZeile 3"}),
        (3, {"E-Mail": "anna@firma.de", "Vorname": "Anna", "Notiz": ""}),
    ]


def test_a_badge_payload_in_a_lower_case_cell_still_fills_the_contact_fields() -> None:
    text = HEADER + ';;"mecard:N:Weiß,Anna;EMAIL:anna@firma.de;;"\r\n'

    (record,) = read_export_bytes(text.encode("utf-8"), "scans.csv")

    assert record.data["email"] == "anna@firma.de"
    assert record.data["first_name"] == "Anna"


def test_the_mapper_reads_headers_in_any_case_and_leaves_blank_cells_out() -> None:
    mapper = RecordMapper(
        kind="tradefair_files",
        field_map={"email": "E-Mail", "first_name": " vorname ", "rating": "Bewertung"},
        event_spec={"fair": "Messe 2026", "booth": "$.Stand"},
        contact_fields={"email", "first_name", "company"},
    )
    record = RawRecord(
        data={"E-Mail": "eva@firma.de", "Vorname": "Eva", "Bewertung": " ", "company": "ACME"}
    )

    contact, event = mapper(record)

    assert contact == {"email": "eva@firma.de", "first_name": "Eva", "company": "ACME"}
    assert event == {"fair": "Messe 2026", "type": "tradefair"}


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("0511 1234567", "DE", "+495111234567"),
        ("0511 1234567", "AT", "+435111234567"),
        ("1", "DE", None),
        ("0511 1234567", None, "0511 1234567"),
        ("+43 1 2345678", None, "+4312345678"),
        ("bitte anrufen", "DE", None),
        (" ", "DE", None),
    ],
)
def test_a_repeated_number_reads_the_same_each_time(
    value: str, country: str | None, expected: str | None
) -> None:
    assert normalise_phone(value, country) == expected
    assert normalise_phone(value, country) == expected
