"""Helpers for tests that need stored leads: rows of the example fair export, taken in through
the real ingest and score steps at a time the test chooses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from config.loader import Config
from connectors.sources.base import RawRecord
from worker.pipeline.ingest import ingest_records
from worker.pipeline.score import score_event
from worker.store.db import Store

FAIR = "messe-hannover-2026"


def fair_row(
    email: str,
    *,
    size: int | str = "",
    title: str = "",
    country: str = "DE",
    rating: str = "hot",
    at: datetime | None = None,
) -> RawRecord:
    """One row of a badge scanner export, with the example config's column names."""
    data: dict[str, Any] = {
        "E-Mail": email,
        "Position": title,
        "Land": country,
        "Mitarbeiter": str(size),
        "Bewertung": rating,
        "Notiz": f"{rating} at {at.isoformat() if at else 'the fair'}",
    }
    return RawRecord(data=data, occurred_at=at)


def take_in(store: Store, config: Config, rows: list[RawRecord], now: datetime) -> list[int]:
    """Ingest the rows and score each new event at ``now``; the ids of MQLs to route."""
    report = ingest_records(store, config, config.sources[FAIR], rows, now=now)
    assert report.quarantined == 0, report.problems
    to_route = []
    for event_id in report.event_ids:
        contact_id = score_event(store, config, event_id, now)
        if contact_id is not None:
            to_route.append(contact_id)
    return to_route


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI sets up logging on the stderr a CliRunner lends it and closes afterwards:
    drop handlers left on such a closed stream (by earlier tests), and put the handlers back
    after this test, so that log lines always have somewhere to go."""
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not _closed(h)]
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _closed(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return bool(getattr(stream, "closed", False))
