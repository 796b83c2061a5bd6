"""The writes that hand a lead to a rep, in as few round trips as the store allows.

Routing holds the team's counter rows locked from the moment it reads them until its
transaction commits, so that parallel workers never hand out the same turn. Every round trip
inside that window makes every other lead for the team wait. On PostgreSQL the assignment,
the contact's new owner and score, the rep's counter, the SLA timers, the outbox messages and
the CRM outbox's change therefore go out as one statement (data-modifying CTEs), with the
assignment's id drawn from its sequence beforehand; SQLite, with one writer at a time anyway,
gets them one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Connection,
    Select,
    TextClause,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from worker.pipeline.score import update_contact
from worker.store.ctes import binds, insert_cte, prefixed, with_defaults
from worker.store.models import ASSIGNMENTS, CONTACTS, COUNTERS, CRM_CHANGES, MESSAGES, TIMERS

NEXT_ASSIGNMENT_ID = func.nextval(func.pg_get_serial_sequence(ASSIGNMENTS.name, "id"))

_INSERT_ASSIGNMENT = insert(ASSIGNMENTS).returning(ASSIGNMENTS.c.id)
_INSERT_MESSAGE = insert(MESSAGES).returning(MESSAGES.c.id)
_INSERT_CRM_CHANGE = insert(CRM_CHANGES)
_COUNT_ASSIGNMENT = (
    update(COUNTERS)
    .where(COUNTERS.c.team == bindparam("counter_team"), COUNTERS.c.rep == bindparam("counter_rep"))
    .values(assigned_total=COUNTERS.c.assigned_total + 1, last_assigned_at=bindparam("now"))
)


@dataclass(frozen=True)
class HandOver:
    """Everything a hand-over writes. ``assignment``: the row's values, with its ``id``, when
    the id was drawn beforehand; empty when the row is in already. ``messages``: the outbox
    rows' values, in order; ``crm_changes``: the CRM outbox rows' (none without a CRM)."""

    assignment_id: int
    assignment: dict[str, Any]
    contact_id: int
    contact_changes: dict[str, Any]
    counter: tuple[str, str] | None  # (team, rep) whose lifetime count goes up
    now: datetime
    timers: Sequence[tuple[str, datetime]]  # (kind, fire_at)
    messages: Sequence[dict[str, Any]]
    crm_changes: Sequence[dict[str, Any]] = ()


def insert_assignment(connection: Connection, values: dict[str, Any]) -> int:
    """The assignment on its own, for a store that draws its id on insert (SQLite)."""
    return int(connection.execute(_INSERT_ASSIGNMENT, values).scalar_one())


def write(connection: Connection, plan: HandOver) -> list[int]:
    """Write the hand-over; returns the messages' ids in order. On PostgreSQL the assignment,
    its id drawn beforehand, goes out with the rest; elsewhere it was inserted on its own
    first (:func:`insert_assignment`)."""
    if connection.dialect.name == "postgresql":
        return _write_together(connection, plan)
    return _write_apart(connection, plan)


def _write_apart(connection: Connection, plan: HandOver) -> list[int]:
    """One statement per write; the assignment is in already (:func:`insert_assignment`)."""
    update_contact(connection, plan.contact_id, plan.contact_changes)
    if plan.counter is not None:
        team, rep = plan.counter
        connection.execute(
            _COUNT_ASSIGNMENT, {"counter_team": team, "counter_rep": rep, "now": plan.now}
        )
    if plan.timers:
        params: dict[str, Any] = {"assignment_id": plan.assignment_id}
        for index, (kind, fire_at) in enumerate(plan.timers):
            params[f"kind_{index}"], params[f"fire_at_{index}"] = kind, fire_at
        connection.execute(_insert_timers(len(plan.timers)), params)
    for change in plan.crm_changes:
        connection.execute(_INSERT_CRM_CHANGE, change)
    return [connection.execute(_INSERT_MESSAGE, row).scalar_one() for row in plan.messages]


@functools.lru_cache(maxsize=8)
def _insert_timers(count: int) -> TextClause:
    """``count`` timers of one assignment in one statement, built once per count: an
    executemany goes through the driver's pipeline, which cost several times more, and
    SQLAlchemy compiles a multi-row ``insert().values()`` anew on every call."""
    rows = ", ".join(f"(:assignment_id, :kind_{i}, :fire_at_{i})" for i in range(count))
    stamps = [bindparam(f"fire_at_{i}", type_=TIMERS.c.fire_at.type) for i in range(count)]
    return text(
        f"INSERT INTO {TIMERS.name} (assignment_id, kind, fire_at) VALUES {rows}"
    ).bindparams(*stamps)


def _write_together(connection: Connection, plan: HandOver) -> list[int]:
    assignment = with_defaults(ASSIGNMENTS, plan.assignment)
    messages = [with_defaults(MESSAGES, row) for row in plan.messages]
    crm_changes = [with_defaults(CRM_CHANGES, row) for row in plan.crm_changes]
    statement = _together(
        tuple(assignment),
        tuple(plan.contact_changes),
        plan.counter is not None,
        len(plan.timers),
        tuple(tuple(row) for row in messages),
        tuple(tuple(row) for row in crm_changes),
    )
    params: dict[str, Any] = prefixed("a", assignment)
    params["c_id"] = plan.contact_id
    params.update(prefixed("c", plan.contact_changes))
    if plan.counter is not None:
        params["counter_team"], params["counter_rep"] = plan.counter
        params["now"] = plan.now
    for index, (kind, fire_at) in enumerate(plan.timers):
        params[f"t{index}_kind"], params[f"t{index}_fire_at"] = kind, fire_at
    for index, row in enumerate(messages):
        params.update(prefixed(f"m{index}", row))
    for index, row in enumerate(crm_changes):
        params.update(prefixed(f"x{index}", row))
    ids = connection.execute(statement, params).one()
    return list(ids[: len(plan.messages)])


@functools.lru_cache(maxsize=64)
def _together(
    assignment: tuple[str, ...],
    contact: tuple[str, ...],
    counted: bool,
    timers: int,
    messages: tuple[tuple[str, ...], ...],
    crm_changes: tuple[tuple[str, ...], ...] = (),
) -> Select[Any]:
    """The hand-over as one statement, built once per shape (which contact columns change,
    how many timers, messages and CRM changes)."""
    ctes: list[CTE] = [insert_cte("a", ASSIGNMENTS, assignment)]
    contact_update = update(CONTACTS).where(CONTACTS.c.id == bindparam("c_id"))
    ctes.append(contact_update.values(binds("c", CONTACTS, contact)).cte("c"))
    if counted:
        ctes.append(_COUNT_ASSIGNMENT.cte("k"))
    for index in range(timers):
        values = {
            "assignment_id": bindparam("a_id", type_=ASSIGNMENTS.c.id.type),
            "kind": bindparam(f"t{index}_kind", type_=TIMERS.c.kind.type),
            "fire_at": bindparam(f"t{index}_fire_at", type_=TIMERS.c.fire_at.type),
        }
        ctes.append(insert(TIMERS).values(values).cte(f"t{index}"))
    for index, columns in enumerate(crm_changes):
        ctes.append(insert_cte(f"x{index}", CRM_CHANGES, columns))
    written = [
        insert_cte(f"m{index}", MESSAGES, columns, returning=True)
        for index, columns in enumerate(messages)
    ]
    columns = [select(cte.c.id).scalar_subquery() for cte in written] or [literal(0)]
    return select(*columns).add_cte(*ctes, *written)
