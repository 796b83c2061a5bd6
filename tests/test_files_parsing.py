"""Badge-scanner exports (CSV, XLSX, vCard) read into raw records, row by row."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.styles import PatternFill

from connectors.errors import FatalError
from connectors.sources.base import RawRecord
from connectors.sources.files import (
    CONTACT_FIELDS,
    ExportError,
    file_sha256,
    read_export,
    read_export_bytes,
)

GERMAN_EXPORT = (
    "Vorname;Nachname;Firma;Position;E-Mail\r\n"
    "Jörg;Müller;Straße & Söhne GmbH;Geschäftsführer;j.mueller@example.de\r\n"
    "Anna;Weiß;ACME AG;Einkauf;anna.weiss@example.de\r\n"
)


def rows(records: list[RawRecord]) -> dict[int, dict[str, object]]:
    """Row number -> data, the way a user compares the import with the spreadsheet."""
    return {record.row: record.data for record in records if record.row is not None}


def read(text: str, filename: str = "scans.csv", encoding: str = "utf-8") -> list[RawRecord]:
    return list(read_export_bytes(text.encode(encoding), filename))


def xlsx_bytes(workbook: Workbook) -> bytes:
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- CSV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_umlauts_read_the_same_from_utf8_utf8_with_bom_and_windows_1252(encoding: str) -> None:
    records = read(GERMAN_EXPORT, encoding=encoding)

    assert rows(records) == {
        2: {
            "Vorname": "Jörg",
            "Nachname": "Müller",
            "Firma": "Straße & Söhne GmbH",
            "Position": "Geschäftsführer",
            "E-Mail": "j.mueller@example.de",
        },
        3: {
            "Vorname": "Anna",
            "Nachname": "Weiß",
            "Firma": "ACME AG",
            "Position": "Einkauf",
            "E-Mail": "anna.weiss@example.de",
        },
    }
    assert all(r.record_id is None and r.error is None for r in records)


@pytest.mark.parametrize("delimiter", [";", ",", "\t"])
def test_semicolon_comma_and_tab_delimiters_are_recognised(delimiter: str) -> None:
    text = GERMAN_EXPORT.replace(";", delimiter)

    records = read(text)

    assert [r.data["Nachname"] for r in records] == ["Müller", "Weiß"]
    assert [r.data["E-Mail"] for r in records] == ["j.mueller@example.de", "anna.weiss@example.de"]


def test_a_comma_inside_a_header_name_does_not_fool_the_delimiter_detection() -> None:
    text = 'Name, Vorname;Firma;Notiz\n"Müller, Jörg";ACME;Stand 4, Halle 2\nWeiß, Anna;Foo;\n'

    assert rows(read(text)) == {
        2: {"Name, Vorname": "Müller, Jörg", "Firma": "ACME", "Notiz": "Stand 4, Halle 2"},
        3: {"Name, Vorname": "Weiß, Anna", "Firma": "Foo", "Notiz": ""},
    }


def test_a_single_column_list_of_addresses_keeps_commas_in_its_cells() -> None:
    text = 'E-Mail\r\na@example.de\r\n"b@example.de, c@example.de"\r\n'

    assert rows(read(text)) == {
        2: {"E-Mail": "a@example.de"},
        3: {"E-Mail": "b@example.de, c@example.de"},
    }


def test_a_quoted_cell_with_line_breaks_and_delimiters_is_one_row() -> None:
    text = (
        "Name;Notiz;E-Mail\r\n"
        'Müller;"Rückruf am Montag;\r\nAngebot über 50 Lizenzen\r\n""dringend""";m@example.de\r\n'
        "Weiß;kurz;w@example.de\r\n"
    )

    assert rows(read(text)) == {
        2: {
            "Name": "Müller",
            "Notiz": 'Rückruf am Montag;\nAngebot über 50 Lizenzen\n"dringend"',
            "E-Mail": "m@example.de",
        },
        3: {"Name": "Weiß", "Notiz": "kurz", "E-Mail": "w@example.de"},
    }


def test_blank_rows_count_as_rows_but_yield_nothing_and_trailing_empty_rows_are_ignored() -> None:
    text = (
        "Name;Firma;E-Mail\r\n"
        "Müller;ACME;m@example.de\r\n"
        "\r\n"
        ";;\r\n"
        "Weiß;Foo;w@example.de\r\n"
        ";;\r\n"
        ";;\r\n"
    )

    records = read(text)

    assert [r.row for r in records] == [2, 5]
    assert records[1].data == {"Name": "Weiß", "Firma": "Foo", "E-Mail": "w@example.de"}


def test_rows_above_the_header_that_are_empty_are_skipped_and_still_numbered() -> None:
    records = read(";;\r\n\r\nName;Firma\r\nMüller;ACME\r\n")

    assert rows(records) == {4: {"Name": "Müller", "Firma": "ACME"}}


def test_a_row_with_more_cells_than_the_header_is_a_bad_row_with_what_could_be_read() -> None:
    text = (
        "Name;Firma;E-Mail\r\n"
        "Müller;ACME;m@example.de;Halle 4;Stand 12\r\n"
        "Weiß;Foo;w@example.de\r\n"
    )

    bad, good = read(text)

    assert bad.row == 2
    assert bad.error == "row 2 has 5 cells but the header has 3"
    assert bad.data == {
        "Name": "Müller",
        "Firma": "ACME",
        "E-Mail": "m@example.de",
        "_extra": ["Halle 4", "Stand 12"],
    }
    assert good.error is None
    assert good.data["Name"] == "Weiß"


def test_a_short_row_is_a_bad_row_and_empty_cells_padding_a_row_are_no_error() -> None:
    text = "Name;Firma;E-Mail;Telefon\r\nMüller;ACME\r\nWeiß;Foo;w@example.de;;;;\r\n"

    short, padded = read(text)

    assert short.error == "row 2 has 2 cells but the header has 4"
    assert short.data == {"Name": "Müller", "Firma": "ACME"}
    assert padded.error is None
    assert padded.data == {"Name": "Weiß", "Firma": "Foo", "E-Mail": "w@example.de", "Telefon": ""}


def test_headers_and_cells_are_trimmed_and_repeated_or_blank_headers_get_unique_names() -> None:
    text = (
        "\ufeff Name ;E-Mail; ;E-Mail;E-Mail;_extra\r\n"
        "  Müller\t; m@example.de ;x;  p@example.de;q@example.de;y\r\n"
    )

    (record,) = read(text, encoding="utf-8-sig")

    assert record.data == {
        "Name": "Müller",
        "E-Mail": "m@example.de",
        "column C": "x",
        "E-Mail (2)": "p@example.de",
        "E-Mail (3)": "q@example.de",
        "_extra (2)": "y",
    }


@pytest.mark.parametrize("filename", ["scans.txt", "scans.tsv", "SCANS.CSV"])
def test_txt_and_tsv_exports_are_read_as_csv(filename: str) -> None:
    records = read(GERMAN_EXPORT.replace(";", "\t"), filename=filename)

    assert [r.data["Firma"] for r in records] == ["Straße & Söhne GmbH", "ACME AG"]


def test_excel_unicode_text_in_utf16_is_read() -> None:
    records = read(GERMAN_EXPORT.replace(";", "\t"), filename="scans.txt", encoding="utf-16")

    assert [r.data["Position"] for r in records] == ["Geschäftsführer", "Einkauf"]


def test_a_badge_column_with_mecard_and_vcard_payloads_adds_contact_fields() -> None:
    vcard = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Weiß;Anna\r\nFN:Anna Weiß\r\nORG:ACME AG\r\n"
        "TITLE:Einkauf\r\nEMAIL;TYPE=work:anna.weiss@acme.example\r\n"
        "TEL;TYPE=cell:+49 171 555\r\nADR;TYPE=work:;;Markt 1;München;;80331;Deutschland\r\n"
        "END:VCARD"
    )
    text = (
        "Scan-Zeit;Badge;Bewertung\r\n"
        '09:14;"MECARD:N:Müller,Jörg;EMAIL:j.mueller@example.de;ORG:Straße GmbH;'
        'TEL:+49 30 1234;;";heiß\r\n'
        f'09:20;"{vcard}";warm\r\n'
    )

    records = read(text)

    assert rows(records) == {
        2: {
            "Scan-Zeit": "09:14",
            "Badge": "MECARD:N:Müller,Jörg;EMAIL:j.mueller@example.de;ORG:Straße GmbH;"
            "TEL:+49 30 1234;;",
            "Bewertung": "heiß",
            "email": "j.mueller@example.de",
            "first_name": "Jörg",
            "last_name": "Müller",
            "company": "Straße GmbH",
            "phone": "+49 30 1234",
        },
        3: {
            "Scan-Zeit": "09:20",
            "Badge": vcard.replace("\r\n", "\n"),
            "Bewertung": "warm",
            "email": "anna.weiss@acme.example",
            "first_name": "Anna",
            "last_name": "Weiß",
            "company": "ACME AG",
            "title": "Einkauf",
            "phone": "+49 171 555",
            "city": "München",
            "country": "Deutschland",
            "fn": "Anna Weiß",
        },
    }


def test_a_badge_payload_never_overwrites_a_column_of_the_export() -> None:
    text = (
        "email;company;Badge\r\n"
        'scanner@example.de;;"MECARD:N:Doe,John;EMAIL:john@example.de;ORG:Doe Inc.;;"\r\n'
    )

    (record,) = read(text)

    assert record.data["email"] == "scanner@example.de"
    assert record.data["company"] == ""
    assert record.data["last_name"] == "Doe"


@pytest.mark.parametrize(
    "payload",
    [
        "MECARD:Doe John without any field names",
        '"MECARD:N:Doe,John;EMAIL"',
        '"BEGIN:VCARD\nVERSION:3.0\nFN:John Doe\nEMAIL:john@example.de"',
        '"BEGIN:VCARD\nFN:A\nEND:VCARD\nBEGIN:VCARD\nFN:B\nEND:VCARD"',
    ],
)
def test_a_malformed_badge_payload_leaves_the_row_as_it_is(payload: str) -> None:
    (record,) = read(f"Name;Badge\r\nDoe;{payload}\r\n")

    assert list(record.data) == ["Name", "Badge"]
    assert record.error is None


# --- XLSX ---------------------------------------------------------------------------------------


def scanner_workbook() -> Workbook:
    """Header in row 3, a blank row in the middle, formatted but empty rows at the end and a
    second sheet that is the active one."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Scans"
    sheet["A3"], sheet["B3"], sheet["C3"], sheet["D3"], sheet["E3"] = (
        "Name",
        "Firma",
        "Budget",
        "Gescannt am",
        "Mitarbeiter",
    )
    sheet.append(["Müller", "Straße GmbH", 5000, datetime(2024, 3, 12), 12.0])
    sheet.append([])
    sheet.append(["  Weiß  ", "ACME AG", 1250.5, datetime(2024, 3, 12, 14, 30), None])
    for row in (10, 11, 12):
        sheet.cell(row=row, column=1).fill = PatternFill("solid", fgColor="FFFF00")
    workbook.create_sheet("Notizen")["A1"] = "nicht importieren"
    workbook.active = 1
    return workbook


def test_an_xlsx_export_is_read_from_its_first_sheet_with_real_row_numbers() -> None:
    records = list(read_export_bytes(xlsx_bytes(scanner_workbook()), "scans.xlsx"))

    assert rows(records) == {
        4: {
            "Name": "Müller",
            "Firma": "Straße GmbH",
            "Budget": "5000",
            "Gescannt am": "2024-03-12",
            "Mitarbeiter": "12",
        },
        6: {
            "Name": "Weiß",
            "Firma": "ACME AG",
            "Budget": "1250.5",
            "Gescannt am": "2024-03-12T14:30:00",
            "Mitarbeiter": "",
        },
    }


def test_an_xlsx_row_with_more_filled_cells_than_the_header_is_a_bad_row() -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Name", "Firma"])
    sheet.append(["Müller", "ACME", None, "Halle 4"])

    (record,) = read_export_bytes(xlsx_bytes(workbook), "scans.xlsx")

    assert record.row == 2
    assert record.error == "row 2 has 4 cells but the header has 2"
    assert record.data == {"Name": "Müller", "Firma": "ACME", "_extra": ["", "Halle 4"]}


def test_a_badge_payload_in_an_xlsx_cell_is_decoded_too() -> None:
    workbook = Workbook()
    workbook.active.append(["Badge"])
    workbook.active.append(["MECARD:N:Doe,John;EMAIL:john@example.de;;"])

    (record,) = read_export_bytes(xlsx_bytes(workbook), "scans.xlsx")

    assert record.data["email"] == "john@example.de"
    assert record.data["first_name"] == "John"


# --- vCard --------------------------------------------------------------------------------------

THREE_CARDS = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "N:Müller;Jörg;;Dr.;\r\n"
    "FN:Dr. Jörg Müller\r\n"
    "ORG:Straße & Söhne GmbH;Vertrieb\r\n"
    "TITLE:Geschäfts\r\n"
    " führer\r\n"
    "EMAIL;TYPE=INTERNET,HOME:joerg@example.org\r\n"
    "item1.EMAIL;TYPE=INTERNET;TYPE=WORK:j.mueller@strasse-soehne.example\r\n"
    "item1.X-ABLabel:_$!<Work>!$_\r\n"
    "TEL;TYPE=FAX,WORK:+49 30 1234-99\r\n"
    "TEL;TYPE=CELL:+49 171 1234567\r\n"
    "ADR;TYPE=HOME:;;Gartenweg 2;Potsdam;;14467;Deutschland\r\n"
    "ADR;TYPE=WORK:;;Hauptstraße 1;Berlin;;10115;Deutschland\r\n"
    "NOTE:Interessiert an Produkt A\\, B und C.\\nRückruf i\r\n"
    " m Mai\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "FN:Anna Schmidt\r\n"
    "EMAIL:anna@private.example\r\n"
    "EMAIL;PREF=1:anna.schmidt@acme.example\r\n"
    'TEL;VALUE=uri;TYPE="voice,work":tel:+49-89-555-0100\r\n'
    "ORG:ACME Corp.\r\n"
    "ADR;TYPE=work:;;1 Main St;Springfield;IL;62701;USA\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "VERSION:2.1\r\n"
    "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Wei=C3=9F;J=C3=BCrgen;;;\r\n"
    "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:J=C3=BCrgen Wei=C3=9F\r\n"
    "ORG;CHARSET=ISO-8859-1;QUOTED-PRINTABLE:B=E4ckerei Wei=DF\r\n"
    "TEL;WORK;VOICE:+49 40 987654\r\n"
    "EMAIL;INTERNET:juergen.weiss@example.de\r\n"
    "NOTE;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Gespr=C3=A4ch am Stand, m=C3=B6chte ein=20=\r\n"
    "Angebot =C3=BCber 50 Lizenzen\r\n"
    "END:VCARD\r\n"
)


def test_a_vcf_file_yields_one_record_per_card_in_contact_field_names() -> None:
    records = read(THREE_CARDS, filename="kontakte.vcf")

    assert rows(records) == {
        1: {
            "email": "j.mueller@strasse-soehne.example",
            "first_name": "Jörg",
            "last_name": "Müller",
            "company": "Straße & Söhne GmbH",
            "title": "Geschäftsführer",
            "phone": "+49 171 1234567",
            "city": "Berlin",
            "country": "Deutschland",
            "notes": "Interessiert an Produkt A, B und C.\nRückruf im Mai",
            "fn": "Dr. Jörg Müller",
        },
        2: {
            "email": "anna.schmidt@acme.example",
            "first_name": "Anna",
            "last_name": "Schmidt",
            "company": "ACME Corp.",
            "title": "",
            "phone": "+49-89-555-0100",
            "city": "Springfield",
            "country": "USA",
            "notes": "",
            "fn": "Anna Schmidt",
        },
        3: {
            "email": "juergen.weiss@example.de",
            "first_name": "Jürgen",
            "last_name": "Weiß",
            "company": "Bäckerei Weiß",
            "title": "",
            "phone": "+49 40 987654",
            "city": "",
            "country": "",
            "notes": "Gespräch am Stand, möchte ein Angebot über 50 Lizenzen",
            "fn": "Jürgen Weiß",
        },
    }
    assert all(r.error is None and r.record_id is None for r in records)


def test_a_card_that_lost_its_end_or_begin_line_is_a_bad_row_and_the_others_are_read() -> None:
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:Jörg Müller\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Anna Weiß\nEND:VCARD\n"
        "VERSION:3.0\nFN:John Doe\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Jane Roe\n"
    )

    records = read(text, filename="kontakte.vcf")

    assert [(r.row, r.data["last_name"], r.error) for r in records] == [
        (1, "Müller", "card 1 has BEGIN:VCARD but no END:VCARD"),
        (2, "Weiß", None),
        (3, "Doe", "card 3 has END:VCARD but no BEGIN:VCARD"),
        (4, "Roe", "card 4 has no END:VCARD; the file may be cut off"),
    ]


def test_a_card_without_structured_name_splits_its_formatted_name() -> None:
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:Doe\\, John\nEND:VCARD\nBEGIN:VCARD\nFN:Müller\nEND:VCARD\n"
    )

    first, second = read(text, filename="kontakte.vcf")

    assert (first.data["first_name"], first.data["last_name"]) == ("John", "Doe")
    assert (second.data["first_name"], second.data["last_name"]) == ("", "Müller")
    assert set(first.data) == set(CONTACT_FIELDS)


# --- how the kind of file is found --------------------------------------------------------------


def test_a_workbook_named_csv_is_still_read_as_a_workbook() -> None:
    records = list(read_export_bytes(xlsx_bytes(scanner_workbook()), "scans.csv"))

    assert [r.row for r in records] == [4, 6]


def test_a_csv_under_an_unknown_name_is_recognised_by_its_content() -> None:
    assert rows(read("Name;Firma\nMüller;ACME\n", filename="export")) == {
        2: {"Name": "Müller", "Firma": "ACME"}
    }


def test_vcards_under_a_txt_name_are_recognised_by_their_content() -> None:
    records = read(THREE_CARDS, filename="kontakte.txt")

    assert [r.data["last_name"] for r in records] == ["Müller", "Schmidt", "Weiß"]


# --- whole-file errors --------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "hint"),
    [
        (b"", "scans.csv", "no header row"),
        (b";;;\r\n\r\n;;;\r\n", "scans.csv", "no header row"),
        (PNG, "badge.png", "export the scans from the scanner app again as CSV or XLSX"),
        (PNG, "scans.csv", "export the scans from the scanner app again as CSV or XLSX"),
        (b"just some notes\nwithout columns\n", "notes.md", "is not a CSV"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), "scans.xls", "save it as .xlsx"),
        (zip_of_text(), "scans.xlsx", "damaged or is not an .xlsx file"),
        (b"FN:John Doe\nEMAIL:john@example.de\n", "kontakte.vcf", "no vCard"),
    ],
)
def test_an_unreadable_file_fails_on_opening_naming_the_file_and_the_fix(
    data: bytes, filename: str, hint: str
) -> None:
    with pytest.raises(ExportError) as raised:
        read_export_bytes(data, filename)

    assert str(raised.value).startswith(f"{filename}: ")
    assert hint in str(raised.value)
    assert isinstance(raised.value, FatalError)


def test_a_truncated_workbook_is_an_export_error() -> None:
    data = xlsx_bytes(scanner_workbook())

    with pytest.raises(ExportError, match=r"^scans\.xlsx: "):
        list(read_export_bytes(data[: len(data) // 2], "scans.xlsx"))


# --- files on disk ------------------------------------------------------------------------------


def test_read_export_reads_a_dropped_file_and_its_hash_identifies_the_content(
    tmp_path: Path,
) -> None:
    path = tmp_path / "messe-hannover.csv"
    path.write_bytes(GERMAN_EXPORT.encode("cp1252"))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())

    records = list(read_export(path))

    assert [r.data["Nachname"] for r in records] == ["Müller", "Weiß"]
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(copy) == file_sha256(path)


def test_a_missing_file_is_an_export_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"^gone\.csv: cannot be read"):
        read_export(tmp_path / "gone.csv")
    with pytest.raises(ExportError, match=r"^gone\.csv: cannot be read"):
        file_sha256(tmp_path / "gone.csv")
