"""``leadwerk hygiene``: bounces read from a folder, lists reported, addresses restored,
suspended lists resumed. The text forms of what the commands print."""

from __future__ import annotations

from typing import Any

from worker.pipeline.hygiene import ImportResult, ListFigures
from worker.store.models import AddressChange


def describe_import(path: str, result: ImportResult) -> str:
    lines = [
        f"{path}: read {result.read}, hard {result.hard}, soft {result.soft}, "
        f"policy {result.policy}, unmatched {result.unmatched}, "
        f"unparseable {len(result.unparseable_files)}"
        + (f", delivered {result.delivered}" if result.delivered else "")
        + (f", already imported {result.duplicates}" if result.duplicates else "")
    ]
    lines += [f"  unparseable: {u['file']}: {u['reason']}" for u in result.unparseable_files]
    return "\n".join(lines)


_COLUMNS = (
    ("list", 28),
    ("size", 8),
    ("age", 5),
    ("exp.bad", 8),
    ("sent", 7),
    ("hard", 6),
    ("soft", 6),
    ("policy", 7),
    ("rate", 7),
    ("status", 10),
    ("stale", 7),
    ("last mailed", 12),
    ("cold", 4),
)


def render_report(figures: list[ListFigures]) -> str:
    if not figures:
        return "no lists yet: no contacts are stored"
    rows = [[name for name, _ in _COLUMNS]]
    for f in figures:
        rows.append(
            [
                f.name,
                str(f.size),
                f"{f.age_months:g}",
                f"{f.expected_bad * 100:.1f}%",
                str(f.sent),
                str(f.hard),
                str(f.soft),
                str(f.policy),
                f"{f.bounce_rate * 100:.1f}%",
                f.status,
                str(f.stale),
                f.last_mailed.date().isoformat() if f.last_mailed else "never",
                "yes" if f.cold else "no",
            ]
        )
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, (_, width) in zip(row, _COLUMNS, strict=True)
        ).rstrip()
        for row in rows
    )


def change_line(change: AddressChange) -> str:
    return f"{change.at.isoformat()}  {change.from_state} → {change.to_state}: {change.cause}"


def report_json(figures: list[ListFigures]) -> list[dict[str, Any]]:
    return [f.as_dict() for f in figures]
