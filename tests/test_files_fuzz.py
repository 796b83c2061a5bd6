"""Fuzzing the export parsers: whatever is dropped into the folder, the only failure is an
ExportError, and every row of a well-formed export comes back exactly once."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from connectors.sources.base import RawRecord
from connectors.sources.files import ExportError, read_export_bytes

FILENAMES = ["scans.csv", "scans.txt", "scans.xlsx", "kontakte.vcf", "export", "scans.dat"]
DELIMITERS = [";", ",", "\t"]
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "utf-16"]
# Text German Excel writes in Windows-1252, with the delimiters, quotes and line breaks.
CP1252_ALPHABET = "abcxyzABCXYZ019 @.-_/()&'\"äöüÄÖÜßé€§°;,\t\r\n"
FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def read_all(data: bytes, filename: str) -> list[RawRecord] | None:
    """Every record of the file, or None when the whole file was refused with ExportError."""
    try:
        return list(read_export_bytes(data, filename))
    except ExportError:
        return None


def normalised(cell: str) -> str:
    """A cell as the parsers give it back: line breaks as \\n, trimmed."""
    return cell.replace("\r\n", "\n").replace("\r", "\n").strip()


@dataclass
class Grid:
    """A spreadsheet as a scanner app would write it: a header row and ragged data rows."""

    header: list[str]
    rows: list[list[str]]

    def cells(self) -> list[str]:
        return [*self.header, *(cell for row in self.rows for cell in row)]

    def expected(self, *, padded: bool) -> dict[int, tuple[list[str], list[str], int | None]]:
        """Row number -> (cells under the header, cells beyond it, the cell count its error
        names or None) for each non-blank row. In a ``padded`` table (CSV) a row written
        with fewer cells than the header is a bad row too."""
        expected = {}
        width = len(self.header)
        for number, row in enumerate(self.rows, start=2):
            cells = [normalised(c) for c in row]
            while cells and not cells[-1]:
                cells.pop()
            if not cells:
                continue
            if len(cells) > width:
                expected[number] = (cells[:width], cells[width:], len(cells))
            elif padded and len(row) < width:
                expected[number] = (cells, [], len(row))
            else:
                expected[number] = (cells + [""] * (width - len(cells)), [], None)
        return expected


def any_cell(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # A badge payload would add contact fields to the row; that has its own tests.
    return st.text(alphabet, max_size=12).filter(
        lambda c: not c.strip().upper().startswith(("MECARD:", "BEGIN:VCARD"))
    )


def header_cell(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Header names hold no delimiter: one in a header makes any file ambiguous."""
    return st.text(alphabet, min_size=1, max_size=10).filter(
        lambda c: c.strip() and not set(c) & set(";,\t\ufeff")
    )


@st.composite
def grids(
    draw: st.DrawFn, alphabet: st.SearchStrategy[str], columns: int | None = None, surplus: int = 2
) -> Grid:
    """A header of 2 to 6 columns (or exactly ``columns``) and up to 8 rows, each with up to
    ``surplus`` cells more than the header."""
    header = draw(st.lists(header_cell(alphabet), min_size=columns or 2, max_size=columns or 6))
    row = st.lists(any_cell(alphabet), max_size=len(header) + surplus)
    return Grid(header, draw(st.lists(row, max_size=8)))


UNICODE = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(";,\t\r\n\" '")
CP1252 = st.sampled_from(CP1252_ALPHABET)


@st.composite
def csv_exports(draw: st.DrawFn) -> tuple[Grid, bytes, str]:
    encoding = draw(st.sampled_from(ENCODINGS))
    grid = draw(grids(CP1252 if encoding == "cp1252" else UNICODE))
    delimiter = draw(st.sampled_from(DELIMITERS))
    line_end = draw(st.sampled_from(["\r\n", "\n"]))
    # The csv module quotes a cell only for the characters of its own line end, so a bare
    # CR in a cell of an LF file would be a broken file, not a hard one.
    assume(line_end == "\r\n" or not any("\r" in cell for cell in grid.cells()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_end)
    writer.writerow(grid.header)
    writer.writerows(grid.rows)
    data = buffer.getvalue().encode(encoding)
    if encoding == "cp1252":
        # Windows-1252 bytes that also happen to be valid UTF-8 cannot be told apart.
        assume(data.isascii() or not is_utf8(data))
    return grid, data, draw(st.sampled_from(["scans.csv", "scans.txt", "export"]))


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def assert_every_row_comes_back_once(
    grid: Grid, records: list[RawRecord], *, padded: bool = True
) -> None:
    expected = grid.expected(padded=padded)
    assert [r.row for r in records] == sorted(expected)
    for record in records:
        assert record.row is not None
        cells, extra, count = expected[record.row]
        values = list(record.data.values())
        if count is not None:
            assert record.error == (
                f"row {record.row} has {count} cells but the header has {len(grid.header)}"
            )
            assert values == ([*cells, extra] if extra else cells)
        else:
            assert record.error is None
            assert values == cells
        assert record.record_id is None
    names = [normalised(h) for h in grid.header]
    # Repeated names and "_extra" get numbered; the values above still prove none was lost.
    good = [record for record in records if record.error is None]
    if good and len(set(names)) == len(names) and "_extra" not in names:
        assert list(good[0].data) == names


@FUZZ_SETTINGS
@given(data=st.binary(max_size=400), filename=st.sampled_from(FILENAMES))
def test_arbitrary_bytes_yield_records_or_an_export_error_and_nothing_else(
    data: bytes, filename: str
) -> None:
    records = read_all(data, filename)

    for record in records or []:
        assert isinstance(record.data, dict)
        assert isinstance(record.row, int) and record.row >= 1


VCARD_LINES = st.sampled_from(
    [
        "BEGIN:VCARD",
        "END:VCARD",
        "VERSION:3.0",
        "N:Müller;Jörg;;;",
        "FN:Jörg Müller",
        'EMAIL;TYPE="work,pref":j@example.de',
        "item1.TEL;TYPE=cell:tel:+49 1",
        "ADR;TYPE=work:;;Weg 1;Berlin;;10115;Deutschland",
        "NOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=latin-9:=E4=",
        "ORG;CHARSET=nonsense;QUOTED-PRINTABLE:=C3=",
        " folded",
        "\t",
        "",
        "\\",
        '"',
        ";;:;",
    ]
)


@FUZZ_SETTINGS
@given(lines=st.lists(VCARD_LINES | st.text(max_size=20), max_size=25))
def test_any_mix_of_vcard_lines_yields_records_or_an_export_error(lines: list[str]) -> None:
    text = "\r\n".join(lines)

    for data, filename in ((text.encode(), "kontakte.vcf"), (badge_csv(text), "scans.csv")):
        for record in read_all(data, filename) or []:
            assert all(isinstance(v, str | list) for v in record.data.values())


def badge_csv(payload: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=";").writerows([["Name", "Badge"], ["Doe", payload]])
    return buffer.getvalue().encode()


@FUZZ_SETTINGS
@given(export=csv_exports())
def test_every_row_of_a_generated_csv_comes_back_once_or_as_a_bad_row(
    export: tuple[Grid, bytes, str],
) -> None:
    grid, data, filename = export

    assert_every_row_comes_back_once(grid, list(read_export_bytes(data, filename)))


@FUZZ_SETTINGS
@given(grid=grids(UNICODE, columns=1, surplus=0), delimiter=st.sampled_from(DELIMITERS))
def test_every_row_of_a_one_column_csv_comes_back_once(grid: Grid, delimiter: str) -> None:
    # With no delimiter in the header there is nothing to tell a surplus cell from a cell
    # holding the delimiter, so these rows never have more cells than the header.
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(grid.header)
    writer.writerows(grid.rows)

    records = list(read_export_bytes(buffer.getvalue().encode(), "emails.csv"))

    assert_every_row_comes_back_once(grid, records)


# openpyxl refuses control characters, and text starting with "=" would be a formula.
XLSX_TEXT = st.characters(blacklist_categories=("Cs", "Cc", "Cn")) | st.sampled_from('\n\t ;,"')


def has_formula(grid: Grid) -> bool:
    return any(cell.startswith("=") for cell in grid.cells())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids(XLSX_TEXT).filter(lambda g: not has_formula(g)))
def test_every_row_of_a_generated_workbook_comes_back_once_or_as_a_bad_row(grid: Grid) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(grid.header)
    for row in grid.rows:
        sheet.append([cell or None for cell in row])
    buffer = io.BytesIO()
    workbook.save(buffer)

    records = list(read_export_bytes(buffer.getvalue(), "s.xlsx"))

    assert_every_row_comes_back_once(grid, records, padded=False)


def sample_workbook() -> bytes:
    workbook = Workbook()
    workbook.active.append(["Name", "Firma", "Budget"])
    workbook.active.append(["Müller", "Straße GmbH", 5000])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


WORKBOOK = sample_workbook()


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0), flips=st.lists(st.integers(min_value=0), max_size=4))
def test_a_damaged_workbook_yields_records_or_an_export_error(cut: int, flips: list[int]) -> None:
    damaged = bytearray(WORKBOOK)
    for position in flips:
        damaged[position % len(damaged)] ^= 0xFF
    del damaged[cut % len(damaged) + 1 :]

    records = read_all(bytes(damaged), "scans.xlsx")

    assert records is None or all(r.row is not None and r.row >= 1 for r in records)
