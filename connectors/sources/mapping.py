"""``map:`` and ``event:`` of a source: from a raw record to contact fields and event fields.

Map values: ``$.a.b`` is a JSON path; ``ref:NAME`` a Typeform answer by field ref;
``hidden:NAME`` a Typeform hidden field; anything else a column header (exact, then ignoring
case and surrounding blanks). Mapped keys that are not contact fields go to the event, so a
fair export's ``rating: "Bewertung"`` is read by rules as ``event.rating``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

from connectors.sources.base import RawRecord
from connectors.sources.http_json import json_path

DEFAULT_EVENT_TYPES = {
    "tradefair_files": "tradefair",
    "typeform": "form",
    "webhook": "webhook",
    "http_json": "form",
}


def resolve(spec: Any, data: Mapping[str, Any]) -> Any:
    if not isinstance(spec, str):
        return spec
    if spec.startswith("$"):
        return json_path(data, spec)
    if spec.startswith("ref:"):
        return (data.get("answers_by_ref") or {}).get(spec[4:])
    if spec.startswith("hidden:"):
        return (data.get("hidden") or {}).get(spec[7:])
    if spec in data:
        return data[spec]
    wanted = spec.strip().casefold()
    for key, value in data.items():
        if isinstance(key, str) and key.strip().casefold() == wanted:
            return value
    return None


_READ_PREFIXES = ("$", "ref:", "hidden:")


class RecordMapper:
    """A source's ``map:`` and ``event:``, worked out once for all its records: from one
    record to (contact, event). Event constants stay as written; ``$.x`` are read.

    ``contact_fields`` are the contact's field names; mapped names that are not among them
    go to the event. A contact field that ``map:`` does not name is taken from the record's
    own key of that name (vCard and badge payloads arrive with field names).
    """

    def __init__(
        self,
        *,
        kind: str,
        field_map: Mapping[str, Any],
        event_spec: Mapping[str, Any],
        contact_fields: Set[str],
    ) -> None:
        # (name, spec, whether spec is a column header, whether name is a contact field)
        self._mapped = [
            (
                name,
                spec,
                isinstance(spec, str) and not spec.startswith(_READ_PREFIXES),
                name in contact_fields,
            )
            for name, spec in field_map.items()
        ]
        self._unmapped = [name for name in contact_fields if name not in field_map]
        self._event = [
            (name, spec, isinstance(spec, str) and spec.startswith("$"))
            for name, spec in event_spec.items()
        ]
        self._event_type = DEFAULT_EVENT_TYPES.get(kind, kind)

    def columns(self) -> list[tuple[str, str]]:
        """(field, column header) for each field that ``map:`` reads from a column."""
        return [(name, spec) for name, spec, is_header, _ in self._mapped if is_header]

    def missing_columns(self, header: Sequence[str]) -> list[tuple[str, str]]:
        """(field, column) for each mapped column that ``header`` lacks, matched as records
        are read (exactly, else ignoring case and surrounding blanks)."""
        present = {name.strip().casefold() for name in header}
        return [
            (name, column)
            for name, column in self.columns()
            if column not in header and column.strip().casefold() not in present
        ]

    def __call__(self, record: RawRecord) -> tuple[dict[str, Any], dict[str, Any]]:
        data = record.data
        contact: dict[str, Any] = {}
        event: dict[str, Any] = {}
        for name, spec, is_header, is_contact in self._mapped:
            # An exact header is one lookup; anything else (paths, other case) is resolved.
            value = data.get(spec, _MISSING) if is_header else _MISSING
            if value is _MISSING:
                value = resolve(spec, data)
            if value is None and name in data:
                value = data[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            (contact if is_contact else event)[name] = value
        for name in self._unmapped:
            if name not in contact and data.get(name) not in (None, ""):
                value = data[name]
                if isinstance(value, str | int | float):
                    contact[name] = value
        for name, spec, is_path in self._event:
            value = resolve(spec, data) if is_path else spec
            if value is not None:
                event[name] = value
        event.setdefault("type", self._event_type)
        return contact, event


_MISSING = object()
