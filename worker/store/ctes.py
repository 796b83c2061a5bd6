"""Several writes as one PostgreSQL statement (data-modifying CTEs), built from Core tables.

A round trip to the store costs more than most single-row writes; on the hot path the writes
of a step therefore go out together. Each row is a single-row INSERT of its own, since
SQLAlchemy does not cache the compiled form of a multi-row ``insert().values()``; bound
parameters carry a prefix per CTE, so that ``prefixed(p, row)`` fills ``insert_cte(p, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CTE, ColumnDefault, Table, bindparam, insert


def binds(prefix: str, table: Table, columns: tuple[str, ...]) -> dict[str, Any]:
    """``{column: :<prefix>_<column>}``, typed as the column is."""
    return {key: bindparam(f"{prefix}_{key}", type_=table.c[key].type) for key in columns}


def insert_cte(name: str, table: Table, columns: tuple[str, ...], returning: bool = False) -> CTE:
    """One row into ``table``, its values bound as ``<name>_<column>``."""
    statement = insert(table).values(binds(name, table, columns))
    if returning:
        statement = statement.returning(table.c.id)
    return statement.cte(name)


def prefixed(prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in row.items()}


def with_defaults(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the Python-side column defaults filled in: SQLAlchemy names the bound
    parameter of a default after its column, so two INSERTs into one table in the same
    statement would clash over it, and the row's columns make the statement's shape."""
    return rows_with_defaults(table, [row])[0]


def rows_with_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows (all with the same keys) with the Python-side defaults of the columns they
    leave out, as SQLAlchemy's own insert would give them (a server default applies by
    itself)."""
    given = rows[0].keys()
    defaults = [
        c.default
        for c in table.c
        if c.key not in given and isinstance(c.default, ColumnDefault) and not c.primary_key
    ]
    filled = []
    for row in rows:
        extra: dict[str, Any] = {}
        for default in defaults:
            if default.is_callable:
                extra[default.column.key] = default.arg(None)  # type: ignore[operator]
            elif default.is_scalar:
                extra[default.column.key] = default.arg
        filled.append({**row, **extra})
    return filled
