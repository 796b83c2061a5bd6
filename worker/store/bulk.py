"""Many rows into one table, or many rows of one table updated, in one short statement,
the rows travelling as one JSON document; inserted rows' ids come back in row order.

SQLAlchemy sends many rows with ``RETURNING`` as one ``INSERT ... VALUES`` of a parameter per
value (5,000 for 500 scores), and many updates as one statement per row. On PostgreSQL,
psycopg converts a statement's placeholders with a regular expression and caches the result
only for statements up to 4 KB: each such statement was parsed anew, a quarter of a backlog
worker's CPU. On SQLite, building the parameters of every row, value by value, was a tenth
of a ``run --once``. Here PostgreSQL unpacks the document with ``jsonb_to_recordset`` and
SQLite with ``json_each``: a short statement of the same text every time, prepared once.
For the same reason a list of ids to look up travels as one array on PostgreSQL
(:func:`listed`, :func:`among`).
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Connection,
    Executable,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from worker.store.ctes import rows_with_defaults


def document(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one JSON text, by orjson (a datetime keeps its offset; a naive one is
    UTC, as UtcDateTime takes it); what orjson refuses (an integer beyond 64 bits) by
    ``json``."""
    try:
        return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(rows, default=_json_value, ensure_ascii=False)


def listed(dialect: str, column_: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column_ IN :name``, a list bound at execution; on PostgreSQL ``column_ = ANY(:name)``,
    one parameter however many values: an ``IN`` list of a batch's 500 ids is a new query
    text that psycopg converts and PostgreSQL parses every time (2.2 ms of the client's CPU,
    against 0.35 ms for the array)."""
    if dialect == "postgresql":
        return column_ == any_(bindparam(name, type_=postgresql.ARRAY(column_.type)))
    return column_.in_(bindparam(name, expanding=True))


def among(dialect: str, column_: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``column_ IN values``, as :func:`listed` binds it."""
    if dialect == "postgresql":
        return column_ == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column_.type)))
    return column_.in_(values)


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


def unpacked(dialect: str, table: Table, names: tuple[str, ...], *extra: ColumnClause[Any]) -> Any:
    """The rows of the JSON :document (see :func:`packed`) as a FROM clause of ``names``
    (``table``'s columns) and the ``extra`` columns, and ``_place``, each row's place in the
    document (on PostgreSQL, of a document packed ``ordered``)."""
    if dialect == "postgresql":
        return recordset(table, names, *extra, column(_PLACE, Integer))
    # SQLite: each row an array of its values, already as SQLAlchemy would bind them.
    each = func.json_each(bindparam("document", type_=Text)).table_valued("key", "value")
    every = [*names, *(c.name for c in extra)]
    return select(
        *[
            func.json_extract(each.c.value, literal_column(f"'$[{i}]'")).label(n)
            for i, n in enumerate(every)
        ],
        each.c.key.label(_PLACE),
    ).subquery()


def packed(
    dialect: Dialect,
    table: Table,
    names: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    ordered: bool = False,
) -> str:
    """``rows`` as the JSON :document that :func:`unpacked` reads: on PostgreSQL the rows
    as they are (a datetime keeps its offset; a naive one is UTC, as UtcDateTime takes it),
    ``ordered``: with their places; on SQLite each row as an array of its values of ``names``
    and then of the extra columns, each value as the column's own type binds it (the same
    text for dates and JSON)."""
    if dialect.name == "postgresql":
        if not ordered:
            return document(rows)
        return document([{**row, _PLACE: place} for place, row in enumerate(rows)])
    if not rows:
        return "[]"
    # Every value in a C call, then only the columns whose type binds them: per value, a
    # Python-level loop cost as much as the binding.
    every = (*names, *(name for name in rows[0] if name not in names))
    values = operator.itemgetter(*every) if len(every) > 1 else lambda row: (row[every[0]],)
    binds = _binds(dialect, table, names)
    arrays = []
    for row in rows:
        array = list(values(row))
        for index, bind in binds:
            array[index] = bind(array[index])
        arrays.append(array)
    return document(arrays)


@functools.lru_cache(maxsize=64)
def _binds(dialect: Dialect, table: Table, names: tuple[str, ...]) -> tuple[tuple[int, Any], ...]:
    """Where in a row of ``names`` a column's type binds the value, and how."""
    types = (table.c[name].type.dialect_impl(dialect) for name in names)
    processors = (type_.bind_processor(dialect) for type_ in types)
    return tuple((index, bind) for index, bind in enumerate(processors) if bind is not None)


@functools.lru_cache(maxsize=64)
def _insert(dialect: str, table: Table, names: tuple[str, ...], returning: bool) -> Executable:
    rows = unpacked(dialect, table, names)
    statement = insert(table).from_select(
        list(names), select(*[rows.c[name] for name in names]).order_by(rows.c[_PLACE])
    )
    return statement.returning(table.c.id) if returning else statement


def insert_ids(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (all with the same keys) into ``table``; their new ids, in row order.

    Columns a row leaves out take their defaults, the Python-side ones included, as
    SQLAlchemy's own insert gives them. The rows are inserted in document order, so the ids
    that PostgreSQL's sequence or SQLite's rowid hand out ascend in that order (SQLAlchemy's
    ``sort_by_parameter_order`` relies on the same)."""
    if not rows:
        return []
    return sorted(_inserted(connection, table, rows, returning=True).scalars().all())


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` in their order as :func:`insert_ids` does, without asking for their
    ids: a statement per run of rows with the same keys, where SQLAlchemy's ``executemany``
    sends one per row (a backlog's stage changes and enrolments were 20,000 statements for
    30,000 leads)."""
    for _, same in itertools.groupby(rows, key=tuple):
        _inserted(connection, table, list(same), returning=False)


def _inserted(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]], returning: bool
) -> Any:
    rows = rows_with_defaults(table, rows)
    names = tuple(rows[0])
    dialect = connection.dialect
    statement = _insert(dialect.name, table, names, returning)
    data = packed(dialect, table, names, rows, ordered=True)
    return connection.execute(statement, {"document": data})


@functools.lru_cache(maxsize=64)
def _update(dialect: str, table: Table, key: str, names: tuple[str, ...]) -> Executable:
    rows = unpacked(dialect, table, names, column(key, Integer))
    return (
        update(table)
        .where(table.c.id == rows.c[key])
        .values({name: rows.c[name] for name in names})
    )


def update_rows(
    connection: Connection, table: Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Update the rows of ``table`` whose id is each row's ``key``, to the row's other
    values (the same columns in every row). A row given twice takes the later values, as
    one update after the other would leave it."""
    if not rows:
        return
    last = list({row[key]: row for row in rows}.values())
    names = tuple(name for name in last[0] if name != key)
    dialect = connection.dialect
    statement = _update(dialect.name, table, key, names)
    connection.execute(statement, {"document": packed(dialect, table, names, last)})
