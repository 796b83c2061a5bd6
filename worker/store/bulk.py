"""Many rows into one table in one short statement on PostgreSQL, their ids in row order.

SQLAlchemy sends many rows with ``RETURNING`` as one ``INSERT ... VALUES`` of a parameter per
value (5,000 for 500 scores). psycopg converts a statement's placeholders with a regular
expression and caches the result only for statements up to 4 KB: each such statement was
parsed anew, a quarter of a backlog worker's CPU. Here the rows travel as one JSON document,
unpacked by ``jsonb_to_recordset``: a short statement of the same text every time, whose
conversion psycopg caches and PostgreSQL prepares. SQLite keeps SQLAlchemy's own statement.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnClause,
    Connection,
    Executable,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql


def document(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one JSON text, by orjson (a datetime keeps its offset; a naive one is
    UTC, as UtcDateTime takes it); what orjson refuses (an integer beyond 64 bits) by
    ``json``."""
    try:
        return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(rows, default=_json_value, ensure_ascii=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):  # stored as UTC, as UtcDateTime does
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat() + "Z"
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def recordset(table: Table, names: tuple[str, ...], *extra: ColumnClause[Any]) -> Any:
    """``jsonb_to_recordset(:document)`` as rows of ``names``, typed as ``table``'s columns,
    and of the ``extra`` columns."""
    columns = [column(name, table.c[name].type) for name in names]
    return (
        func.jsonb_to_recordset(cast(bindparam("document", type_=Text), postgresql.JSONB))
        .table_valued(*columns, *extra)
        .render_derived(with_types=True)
    )


# Each row's place in the document (ORDER BY needs it: PostgreSQL numbers the rows of a
# function with a column definition list only inside ``ROWS FROM``).
_PLACE = "_place"


@functools.lru_cache(maxsize=64)
def _insert_ids(table: Table, names: tuple[str, ...]) -> Executable:
    rows = recordset(table, names, column(_PLACE, Integer))
    return (
        insert(table)
        .from_select(
            list(names), select(*[rows.c[name] for name in names]).order_by(rows.c[_PLACE])
        )
        .returning(table.c.id)
    )


def insert_ids(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (all with the same keys) into ``table``; their new ids, in row order.

    Columns a row leaves out take their defaults, the Python-side ones included, as
    SQLAlchemy's own insert gives them. On PostgreSQL the rows are inserted in document
    order, so the ids a sequence hands out ascend in that order (SQLAlchemy's
    ``sort_by_parameter_order`` relies on the same)."""
    if not rows:
        return []
    if connection.dialect.name != "postgresql":
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(connection.execute(statement, list(rows)).scalars().all())
    rows = _with_defaults(table, rows)
    names = tuple(rows[0])
    placed = [{**row, _PLACE: place} for place, row in enumerate(rows)]
    ids = connection.execute(_insert_ids(table, names), {"document": document(placed)})
    return sorted(ids.scalars().all())


def _with_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the Python-side defaults of the columns they leave out (a server
    default applies by itself)."""
    given = rows[0].keys()
    defaults = [
        c.default
        for c in table.c
        if c.key not in given and c.default is not None and not c.primary_key
    ]
    if not defaults:
        return list(rows)
    filled = []
    for row in rows:
        extra: dict[str, Any] = {}
        for default in defaults:
            if default.is_scalar:
                extra[default.column.key] = default.arg
            elif default.is_callable:
                extra[default.column.key] = default.arg(None)
        filled.append({**row, **extra})
    return filled
