"""``map:`` and ``event:`` of a source: from a raw record to contact fields and event fields.

Map values: ``$.a.b`` is a JSON path; ``ref:NAME`` a Typeform answer by field ref;
``hidden:NAME`` a Typeform hidden field; anything else a column header (exact, then ignoring
case and surrounding blanks). Mapped keys that are not contact fields go to the event, so a
fair export's ``rating: "Bewertung"`` is read by rules as ``event.rating``.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
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


def map_record(
    record: RawRecord,
    *,
    kind: str,
    field_map: Mapping[str, str],
    event_spec: Mapping[str, Any],
    contact_fields: Set[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact, event) from one record. Event constants stay as written; ``$.x`` are read."""
    contact: dict[str, Any] = {}
    event: dict[str, Any] = {}
    for name, spec in field_map.items():
        value = resolve(spec, record.data)
        if value is None and name in record.data:
            value = record.data[name]  # vCard and badge payloads arrive with field names
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        (contact if name in contact_fields else event)[name] = value
    for name in contact_fields:
        if (
            name not in field_map
            and name not in contact
            and record.data.get(name) not in (None, "")
        ):
            value = record.data[name]
            if isinstance(value, str | int | float):
                contact[name] = value
    for name, spec in event_spec.items():
        value = (
            resolve(spec, record.data) if isinstance(spec, str) and spec.startswith("$") else spec
        )
        if value is not None:
            event[name] = value
    event.setdefault("type", DEFAULT_EVENT_TYPES.get(kind, kind))
    return contact, event
