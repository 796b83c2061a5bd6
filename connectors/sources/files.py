"""Parsers for badge-scanner exports (source kind ``tradefair_files``): CSV, XLSX and vCard.

Every data row becomes one :class:`RawRecord` with ``data = {header: cell text}`` and ``row``
set to the number a spreadsheet shows for it (the header is row 1 when it is the first row).
Mapping headers to lead fields happens later, in ingest. vCard files carry no headers, so
their cards come out under Leadwerk's contact field names (:data:`CONTACT_FIELDS`).

Whole-file problems raise :class:`ExportError` as soon as the file is opened, a quote that is
never closed at the end of a CSV and a damaged sheet at the end of a workbook included, so that
a caller can take the records in as they come and still take a file whole or not at all; a
single bad row comes out as a record with ``error`` set, which ingest quarantines while the
rest of the file goes on. Exports are read whole: a fair's worth of scans is a few megabytes
at most.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from connectors.errors import FatalError
from connectors.sources.base import RawRecord

if TYPE_CHECKING:  # openpyxl is imported only to read a workbook (5 MB in every process)
    from openpyxl.workbook.workbook import Workbook

CSV_SUFFIXES = frozenset({".csv", ".txt", ".tsv"})
VCARD_SUFFIXES = frozenset({".vcf", ".vcard"})

#: The fields a vCard or a badge QR code is read into, named as Leadwerk's contact fields;
#: ``fn`` is the card's formatted name as written.
CONTACT_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "city",
    "country",
    "notes",
    "fn",
)

#: Key under which a bad row keeps the cells that have no header.
EXTRA_CELLS_KEY = "_extra"

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Order decides ties: German Excel writes ';', "Unicode text" exports use tabs.
_DELIMITERS = (";", "\t", ",")
_WITHOUT_DELIMITERS = str.maketrans("", "", "".join(_DELIMITERS))
_SAMPLE_CHARS = 65536
# csv.Sniffer's quote regex can take quadratic time, so it only sees the start of the file.
_SNIFF_CHARS = 4096
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x1f\x7f]")
_ESCAPED_CHAR = re.compile(r"\\(.)", re.DOTALL)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MECARD_KEY = re.compile(r"[A-Z][A-Z0-9-]*")
# The first letters of BEGIN:VCARD and MECARD: in any case; no other character upper-cases
# to B or M, so a cell starting otherwise is no badge payload (checked for every cell).
_BADGE_INITIALS = frozenset("BbMm")
_NOT_AN_EXPORT = (
    "is not a CSV, Excel (.xlsx) or vCard (.vcf) export; export the scans from the scanner "
    "app again as CSV or XLSX"
)


class ExportError(FatalError):
    """The whole export file is unreadable; the message names the file and the likely fix."""


def read_export(path: Path) -> Iterator[RawRecord]:
    """Read one export file; see :func:`read_export_bytes`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return read_export_bytes(data, path.name)


def read_export_bytes(data: bytes, filename: str) -> Iterator[RawRecord]:
    """Parse an export held in memory; ``filename`` gives the extension and names the file
    in error messages.

    The content decides where it is unambiguous: a ZIP archive is read as an XLSX workbook
    whatever its name. Otherwise the extension decides (``.vcf``/``.vcard``, ``.csv``/
    ``.txt``/``.tsv``), and text under any other name is a vCard when it starts with
    ``BEGIN:VCARD`` and a CSV when its first line splits on a delimiter.

    Raises :class:`ExportError` here, before the first record, when the file cannot be read
    to its end (a file that breaks further on, by a quote never closed or a damaged sheet,
    included): reading the records then never fails.
    """
    name = PurePath(filename).name
    suffix = PurePath(filename).suffix.lower()
    if data.startswith(_ZIP_MAGIC):
        return _read_xlsx(data, name)
    if data.startswith(_OLE_MAGIC):
        raise ExportError(
            f"{name}: is an old Excel 97-2003 (.xls) or a password-protected workbook; open it "
            "in Excel and save it as .xlsx without a password, or as CSV"
        )
    text = _decode_text(data, name)
    if suffix in VCARD_SUFFIXES or _starts_with_vcard(text):
        return _read_vcards(text, name)
    if suffix in CSV_SUFFIXES or _widest_header(text) > 1:
        return _read_csv(text, name)
    raise ExportError(f"{name}: {_NOT_AN_EXPORT}")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes as hex: the same export dropped twice is taken in once."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return digest.hexdigest()


def _unreadable(path: Path, exc: OSError) -> ExportError:
    return ExportError(
        f"{path.name}: cannot be read ({exc.strerror}); check that the file is still there "
        "and that Leadwerk may read it"
    )


# --- text and CSV -----------------------------------------------------------------------------


def _decode_text(data: bytes, name: str) -> str:
    """Decode a text export: UTF-16 with BOM (Excel's "Unicode text"), UTF-8 with or without
    BOM, else Windows-1252 (what German Excel writes). A UTF-8 BOM is trusted even when a
    stray byte later is broken, since falling back would garble every umlaut in the file.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise ExportError(f"{name}: {_NOT_AN_EXPORT}") from None
    elif data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                raise ExportError(f"{name}: {_NOT_AN_EXPORT}") from None
    if _looks_binary(text):
        raise ExportError(f"{name}: {_NOT_AN_EXPORT}")
    return text


def _looks_binary(text: str) -> bool:
    """True for images, PDFs and other binaries: text exports have no NUL and hardly any
    control characters (a few may stand for line breaks inside cells)."""
    if "\x00" in text:
        return True
    sample = text[:_SAMPLE_CHARS]
    return len(_CONTROL_CHARS.findall(sample)) * 20 > len(sample)


def _clean_cell(text: str) -> str:
    """Trim a cell and write its line breaks as ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _read_csv(text: str, name: str) -> Iterator[RawRecord]:
    delimiter = _detect_delimiter(text)
    # The csv module alone, to the end of the file, before the first record (a quarter of
    # the time that building the records takes): a file broken at its end fails right here.
    for _ in _csv_rows(text, delimiter, name, clean=False):
        pass
    return _table_records(_csv_rows(text, delimiter, name), name, padded=True)


def _csv_reader(text: str, delimiter: str) -> Iterator[list[str]]:
    """The csv module's reader; spaces after a delimiter are skipped so that a quoted cell
    written as ``a, "b, c"`` is still one cell (cells are trimmed anyway)."""
    return csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True
    )


def _csv_rows(
    text: str, delimiter: str, name: str, *, clean: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """Rows as (row number, cells, cleaned unless ``clean`` is false); a quoted multi-line
    cell keeps its row one row."""
    number = 0
    try:
        for number, cells in enumerate(_csv_reader(text, delimiter), start=1):
            if not clean:
                yield number, cells
            elif "\r" in "".join(cells):  # a line break inside a quoted cell
                yield number, [_clean_cell(cell) for cell in cells]
            else:
                yield number, list(map(str.strip, cells))
    except csv.Error as exc:
        raise ExportError(
            f"{name}: row {number + 1} cannot be read ({exc}); a quote that is never closed is "
            "the usual cause: open the file in Excel and save it as CSV again"
        ) from exc


def _parse_sample(sample: str, delimiter: str) -> list[list[str]]:
    try:
        return list(_csv_reader(sample, delimiter))
    except csv.Error:
        return []


def _header_width(rows: list[list[str]]) -> int:
    """Cells of the first row with any content, not counting empty cells at its end. A row
    of nothing but delimiters (``;;;``) is empty whichever delimiter split it."""
    for cells in rows:
        if not "".join(cells).translate(_WITHOUT_DELIMITERS).strip():
            continue
        width = len(cells)
        while not cells[width - 1].strip():
            width -= 1
        return width
    return 0


def _widest_header(text: str) -> int:
    sample = text[:_SAMPLE_CHARS]
    return max(_header_width(_parse_sample(sample, d)) for d in _DELIMITERS)


def _detect_delimiter(text: str) -> str:
    """Pick ``;``, tab or ``,``.

    csv.Sniffer judges by how regularly a character repeats across lines, which copes with a
    header such as ``Name, Vorname;Firma``; its guess is kept only if it splits the header
    row. Otherwise the delimiter that splits the header into the most cells wins. A file whose
    header has no delimiter at all has one column: then the delimiter that splits the fewest
    cells anywhere is safest, so that no row is cut apart.
    """
    sample = text[:_SAMPLE_CHARS]
    rows = {d: _parse_sample(sample, d) for d in _DELIMITERS}
    widths = {d: _header_width(rows[d]) for d in _DELIMITERS}
    sniffed = _sniff(sample)
    if sniffed is not None and widths[sniffed] > 1:
        return sniffed
    widest = max(widths.values())
    if widest > 1:
        return next(d for d in _DELIMITERS if widths[d] == widest)
    if widest == 0:  # nothing but empty rows: the file fails for want of a header anyway
        return _DELIMITERS[0]
    return min(_DELIMITERS, key=lambda d: sum(len(cells) - 1 for cells in rows[d] if cells))


def _sniff(sample: str) -> str | None:
    try:
        dialect = csv.Sniffer().sniff(sample[:_SNIFF_CHARS], delimiters="".join(_DELIMITERS))
    except csv.Error:
        return None
    return dialect.delimiter if dialect.delimiter in _DELIMITERS else None


# --- rows of a table (CSV and XLSX) -----------------------------------------------------------


class TableRecords(Iterator[RawRecord]):
    """The records of a CSV or XLSX export, with the header they were read under: its
    column names (``header``) and the row it stands in (``header_row``), so that a caller
    can check the columns it maps before it takes a single record in."""

    def __init__(self, records: Iterator[RawRecord], header: list[str], header_row: int) -> None:
        self._records = records
        self.header = header
        self.header_row = header_row

    def __next__(self) -> RawRecord:
        return next(self._records)


def _table_records(
    rows: Iterator[tuple[int, list[str]]], name: str, *, padded: bool
) -> TableRecords:
    """Take the first non-empty row as the header (eagerly, so a file without one fails on
    opening) and return the records of the rows after it. ``padded``: every row is written
    with a cell per column (CSV), so a row with fewer cells has lost some."""
    for number, cells in rows:
        if any(cells):
            header = _header_names(cells)
            return TableRecords(_data_records(rows, header, padded=padded), header, number)
    raise ExportError(
        f"{name}: has no header row; the first filled row must hold the column names "
        "(export again with column headers switched on)"
    )


def _header_names(cells: list[str]) -> list[str]:
    """Column names: trimmed, a blank one named by its column letter (``column C``), a
    repeated one numbered (``E-Mail (2)``) so that no cell is lost under a taken key. A
    column called ``_extra`` is numbered too: that key holds a bad row's surplus cells."""
    names = [cell.replace("\ufeff", "").strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    if not all(names):
        from openpyxl.utils import get_column_letter

        names = [n or f"column {get_column_letter(i)}" for i, n in enumerate(names, start=1)]
    originals = set(names)
    unique: list[str] = []
    taken = {EXTRA_CELLS_KEY}
    for name in names:
        if name in taken:
            n = 2
            while f"{name} ({n})" in taken or f"{name} ({n})" in originals:
                n += 1
            name = f"{name} ({n})"
        taken.add(name)
        unique.append(name)
    return unique


def _data_records(
    rows: Iterator[tuple[int, list[str]]], header: list[str], *, padded: bool
) -> Iterator[RawRecord]:
    """One record per non-blank row. Empty cells at a row's end are dropped first (Excel
    pads rows with delimiters), so a row with filled cells beyond the header is a bad row;
    so is, in a ``padded`` table (CSV), a row with fewer cells than the header: its cells
    can no longer be told apart, a phone number may stand under ``Firma``."""
    width = len(header)
    for number, cells in rows:
        written = len(cells)
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(cells) > width or (padded and written < width):
            data: dict[str, object] = dict(zip(header, cells[:width], strict=False))
            if len(cells) > width:
                data[EXTRA_CELLS_KEY] = cells[width:]
            count = len(cells) if len(cells) > width else written
            yield RawRecord(
                data=data,
                row=number,
                error=f"row {number} has {count} cells but the header has {width}",
            )
            continue
        if len(cells) < width:
            cells += [""] * (width - len(cells))
        data = dict(zip(header, cells, strict=True))
        for cell in cells:
            if cell[:1] in _BADGE_INITIALS:
                for key, value in _badge_fields(cell).items():
                    data.setdefault(key, value)
        yield RawRecord(data=data, row=number)


# --- XLSX -------------------------------------------------------------------------------------


def _read_xlsx(data: bytes, name: str) -> Iterator[RawRecord]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl fails on a damaged file with anything from zlib to XML
        raise ExportError(
            f"{name}: the Excel workbook is damaged or is not an .xlsx file; export it from the "
            "scanner app again, or open it in Excel and save it as .xlsx or CSV"
        ) from exc
    if not workbook.worksheets:
        workbook.close()
        raise ExportError(f"{name}: the workbook has no worksheet; export the scans again")
    # Read to the end before the first record, so that a sheet damaged further on fails here.
    return _table_records(iter(list(_xlsx_rows(workbook, name))), name, padded=False)


def _xlsx_rows(workbook: Workbook, name: str) -> Iterator[tuple[int, list[str]]]:
    """Rows of the first sheet numbered as Excel numbers them; the workbook is closed at
    the end."""
    try:
        sheet = workbook.worksheets[0]
        # Some apps write a wrong sheet size; without it every row in the file is read.
        sheet.reset_dimensions()
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, [_cell_text(value) for value in values]
    except Exception as exc:
        raise ExportError(
            f"{name}: the worksheet is damaged; open the file in Excel and save it as .xlsx "
            "or CSV again"
        ) from exc
    finally:
        workbook.close()


def _cell_text(value: object) -> str:
    """A cell as the text a user reads: whole numbers without ``.0``, dates as ISO 8601
    (a date without a time of day as the date alone)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.isoformat(timespec="seconds")
    if isinstance(value, date | time):
        return value.isoformat()
    return _clean_cell(str(value))


# --- vCard ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Property:
    """One content line of a vCard: ``[group.]NAME;PARAM=a,b:value`` with the value still
    escaped (``\\,`` ``\\;`` ``\\n``) but already decoded from quoted-printable."""

    name: str
    params: tuple[tuple[str, str], ...]
    value: str

    @property
    def types(self) -> frozenset[str]:
        """TYPE values in lower case; vCard 4's ``PREF=1`` counts as ``pref``."""
        types = {v.lower() for k, v in self.params if k == "TYPE"}
        if any(k == "PREF" for k, _ in self.params):
            types.add("pref")
        return frozenset(types)


@dataclass(frozen=True)
class _Card:
    properties: tuple[_Property, ...]
    error: str | None = None


def _starts_with_vcard(text: str) -> bool:
    return text.lstrip()[:11].upper() == "BEGIN:VCARD"


def _read_vcards(text: str, name: str) -> Iterator[RawRecord]:
    cards = _parse_cards(text)
    if not cards:
        raise ExportError(
            f"{name}: holds no vCard (no BEGIN:VCARD line); export the contacts as vCard "
            "(.vcf) again"
        )
    return iter(
        [
            RawRecord(data=_contact_fields(card.properties), row=index, error=card.error)
            for index, card in enumerate(cards, start=1)
        ]
    )


def _parse_cards(text: str) -> list[_Card]:
    """Split a vCard file into cards. A card whose BEGIN or END is missing is still returned,
    with an error, so that it is quarantined rather than silently merged or dropped."""
    cards: list[_Card] = []
    current: list[_Property] | None = None
    outside: list[_Property] = []
    for line in _logical_lines(text):
        prop = _parse_property(line)
        if prop is None:
            continue
        marker = prop.name if prop.value.strip().upper() == "VCARD" else ""
        if marker == "BEGIN":
            if current is not None:
                error = f"card {len(cards) + 1} has BEGIN:VCARD but no END:VCARD"
                cards.append(_Card(tuple(current), error))
            current, outside = [], []
        elif marker == "END":
            if current is None:
                error = f"card {len(cards) + 1} has END:VCARD but no BEGIN:VCARD"
                cards.append(_Card(tuple(outside), error))
                outside = []
            else:
                cards.append(_Card(tuple(current)))
                current = None
        elif current is not None:
            current.append(prop)
        else:
            outside.append(prop)
    if current is not None:
        error = f"card {len(cards) + 1} has no END:VCARD; the file may be cut off"
        cards.append(_Card(tuple(current), error))
    return cards


def _logical_lines(text: str) -> list[str]:
    """Unfold content lines: a line starting with a space or tab continues the one before
    (RFC 6350 3.2, RFC 2426 2.6), and a quoted-printable value ending in ``=`` continues on
    the next line (vCard 2.1, still written by business-card apps)."""
    lines: list[str] = []
    for line in _LINE_BREAK.split(text):
        if lines and lines[-1].endswith("=") and _is_quoted_printable(lines[-1]):
            lines[-1] = lines[-1][:-1] + line
        elif lines and line[:1] in (" ", "\t"):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return lines


def _is_quoted_printable(line: str) -> bool:
    return "QUOTED-PRINTABLE" in line.partition(":")[0].upper()


def _parse_property(line: str) -> _Property | None:
    colon = _find_unquoted(line, ":")
    if colon < 0:
        return None
    head, value = line[:colon], line[colon + 1 :]
    name, *raw_params = _split_unquoted(head, ";")
    params: list[tuple[str, str]] = []
    for raw in raw_params:
        key, sep, values = raw.partition("=")
        if not sep:  # vCard 2.1 writes bare types and encodings: TEL;WORK;VOICE:...
            key, values = "TYPE", key
        key = key.strip().upper()
        params.extend((key, v.strip().strip('"')) for v in values.split(","))
    if any(v.upper() == "QUOTED-PRINTABLE" for k, v in params if k in ("ENCODING", "TYPE")):
        charset = next((v for k, v in params if k == "CHARSET"), "utf-8")
        value = _decode_quoted_printable(value, charset)
    return _Property(name.rpartition(".")[2].strip().upper(), tuple(params), value)


def _find_unquoted(text: str, char: str) -> int:
    quoted = False
    for index, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif c == char and not quoted:
            return index
    return -1


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    while (index := _find_unquoted(text, separator)) >= 0:
        parts.append(text[:index])
        text = text[index + 1 :]
    parts.append(text)
    return parts


def _decode_quoted_printable(value: str, charset: str) -> str:
    raw = quopri.decodestring(value.encode("utf-8"))
    for encoding in (charset, "utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("cp1252", errors="replace")


def _split_escaped(value: str, separator: str) -> list[str]:
    """Split on separators not escaped by a backslash; escapes stay for :func:`_unescape`."""
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            current.append(value[index : index + 2])
            index += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return _ESCAPED_CHAR.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value).strip()


def _components(value: str) -> list[str]:
    """The components of a structured value (N, ORG, ADR), each with its list of values
    (``Hans,Peter`` in N) joined by spaces."""
    return [
        " ".join(v for v in (_unescape(item) for item in _split_escaped(part, ",")) if v)
        for part in _split_escaped(value, ";")
    ]


def _best(
    props: list[_Property], preferred: frozenset[str], excluded: frozenset[str] = frozenset()
) -> _Property | None:
    """The property to take: one with a preferred type before one without, one marked
    ``pref`` before one not, else the first; never one of an excluded type (a fax number is
    no phone to call back)."""
    candidates = [p for p in props if p.value.strip() and not p.types & excluded]
    return max(
        candidates, key=lambda p: (bool(p.types & preferred), "pref" in p.types), default=None
    )


def _without_scheme(value: str, scheme: str) -> str:
    return value[len(scheme) :] if value.lower().startswith(scheme) else value


def _split_full_name(full_name: str) -> tuple[str, str]:
    """(first name, last name) from a formatted name: ``Doe, John`` or ``John Doe``; a single
    word is taken as the last name, the usual form on a German business card."""
    full_name = " ".join(full_name.split())
    if "," in full_name:
        last, _, first = full_name.partition(",")
        return first.strip(), last.strip()
    first, _, last = full_name.rpartition(" ")
    return first, last


def _contact_fields(properties: tuple[_Property, ...]) -> dict[str, str]:
    """A card's properties as Leadwerk's contact fields, every field present."""
    by_name: dict[str, list[_Property]] = {}
    for prop in properties:
        by_name.setdefault(prop.name, []).append(prop)

    def first(name: str) -> str:
        return next((p.value for p in by_name.get(name, []) if p.value.strip()), "")

    fields = dict.fromkeys(CONTACT_FIELDS, "")
    fields["fn"] = _unescape(first("FN"))
    name = [*_components(first("N")), "", ""]
    fields["last_name"], fields["first_name"] = name[0], name[1]
    if not (name[0] or name[1]) and fields["fn"]:
        fields["first_name"], fields["last_name"] = _split_full_name(fields["fn"])
    email = _best(by_name.get("EMAIL", []), frozenset({"work"}))
    if email:
        fields["email"] = _without_scheme(_unescape(email.value), "mailto:")
    phone = _best(by_name.get("TEL", []), frozenset({"work", "cell"}), frozenset({"fax"}))
    if phone:
        fields["phone"] = _without_scheme(_unescape(phone.value), "tel:")
    fields["company"] = _components(first("ORG"))[0]
    fields["title"] = _unescape(first("TITLE"))
    address = _best(by_name.get("ADR", []), frozenset({"work"}))
    if address:
        parts = [*_components(address.value), *[""] * 7]
        fields["city"], fields["country"] = parts[3], parts[6]
    notes = (_unescape(p.value) for p in by_name.get("NOTE", []))
    fields["notes"] = "\n".join(n for n in notes if n)
    return fields


# --- badge QR payloads ------------------------------------------------------------------------


def _badge_fields(cell: str) -> dict[str, str]:
    """The contact fields of a cell holding a scanned badge QR code (a vCard or a MeCard),
    only those with a value; nothing for any other cell or a malformed payload."""
    head = cell[:11].upper()
    if head == "BEGIN:VCARD":
        cards = _parse_cards(cell)
        if len(cards) != 1 or cards[0].error:
            return {}
        fields = _contact_fields(cards[0].properties)
    elif head.startswith("MECARD:"):
        fields = _mecard_fields(cell[len("MECARD:") :]) or {}
    else:
        return {}
    return {key: value for key, value in fields.items() if value}


def _mecard_fields(body: str) -> dict[str, str] | None:
    """Fields of a MeCard (``N:Doe,John;EMAIL:john@x.de;TEL:...;;``, DoCoMo's format, with
    ORG and TITLE as badge printers add them); None when an item is not ``KEY:value``."""
    values: dict[str, list[str]] = {}
    for item in _split_escaped(body, ";"):
        if not item.strip():
            continue
        key, sep, value = item.partition(":")
        key = key.strip().upper()
        if not sep or not _MECARD_KEY.fullmatch(key):
            return None
        values.setdefault(key, []).append(value)

    def first(key: str) -> str:
        return next((v for v in (_unescape(x) for x in values.get(key, [])) if v), "")

    fields = dict.fromkeys(CONTACT_FIELDS, "")
    name = _split_escaped(values.get("N", [""])[0], ",")
    if len(name) >= 2:
        fields["last_name"], fields["first_name"] = _unescape(name[0]), _unescape(name[1])
    else:
        fields["first_name"], fields["last_name"] = _split_full_name(_unescape(name[0]))
    fields["email"] = first("EMAIL")
    fields["phone"] = first("TEL")
    fields["company"] = first("ORG")
    fields["title"] = first("TITLE")
    fields["notes"] = "\n".join(v for v in (_unescape(x) for x in values.get("NOTE", [])) if v)
    address = _split_escaped(values.get("ADR", [""])[0], ",")
    if len(address) == 7:  # PO box, room, street, city, region, postcode, country
        fields["city"], fields["country"] = _unescape(address[3]), _unescape(address[6])
    return fields
