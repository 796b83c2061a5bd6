"""Lifecycle stages: lead → MQL → SAL → SQL, plus recycled and disqualified.

Scoring moves a lead to ``mql`` (or ``disqualified``), accepting an assignment moves an MQL to
``sal``; the rest are people's decisions, made with ``leadwerk stage``. This module is the state
machine alone: which moves people may make by hand, and why a move is refused.
"""

from __future__ import annotations

from typing import Final

STAGES: Final = ("lead", "mql", "sal", "sql", "recycled", "disqualified")
LABELS: Final = {
    "lead": "a lead",
    "mql": "an MQL",
    "sal": "an SAL",
    "sql": "an SQL",
    "recycled": "recycled",
    "disqualified": "disqualified",
}

# What people may set by hand, and from which stages. A recycled contact goes back to
# marketing: scoring treats it like a lead and it can become an MQL again.
MANUAL_MOVES: Final[dict[str, frozenset[str]]] = {
    "sql": frozenset({"sal"}),
    "recycled": frozenset({"mql", "sal", "sql", "disqualified"}),
    "disqualified": frozenset({"lead", "mql", "sal", "sql", "recycled"}),
}


class StageError(ValueError):
    """A move the lifecycle does not allow, or a lead that does not exist."""


def check_manual_move(lead_id: int, stage: str, to_stage: str) -> None:
    """Raise :class:`StageError` with the reason when lead ``lead_id`` in ``stage`` may not be
    moved to ``to_stage`` by hand."""
    allowed = MANUAL_MOVES.get(to_stage)
    if allowed is None:
        raise StageError(
            f"'{to_stage}' cannot be set by hand; choose one of {', '.join(MANUAL_MOVES)}"
        )
    if stage not in allowed:
        raise StageError(_refusal(lead_id, stage, to_stage))


def _refusal(lead_id: int, stage: str, to_stage: str) -> str:
    """Why a move is refused, and what would make it possible."""
    now_is = f"lead {lead_id} is {LABELS.get(stage, stage)}"
    if stage == to_stage:
        return f"{now_is} already"
    if to_stage == "sql":
        hint = f"; the rep accepts it first (leadwerk accept {lead_id})" if stage == "mql" else ""
        return f"{now_is}: only an SAL becomes an SQL{hint}"
    if to_stage == "recycled":
        return f"{now_is}: only MQLs, SALs, SQLs and disqualified leads can be recycled"
    return f"{now_is}: cannot move to {to_stage}"
