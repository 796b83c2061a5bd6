"""Benchmark: what one refresh of ``/admin/`` costs over a store that has seen many leads.

    python bench/bench_dashboard.py [--leads 200000] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Fills an empty store (a new SQLite file; a new PostgreSQL database, dropped afterwards) with
``--leads`` contacts and their events spread over 30 days, a fifth of them MQLs routed to a
rep with an SLA clock, then times, as the dashboard does every 10 s: the facts
(``overview``: ``collect_status`` and the flow, alerts, SLA at risk), the last 50 MQLs with
their explanation, and the whole page rendered. Prints one JSON object (milliseconds, the
median of 5 runs after one warm-up) per store.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from worker.commands.overview import overview, recent_mqls  # noqa: E402
from worker.runtime.app import init_app  # noqa: E402
from worker.store.models import ASSIGNMENTS, CONTACTS, EVENTS, SCORES  # noqa: E402
from worker.web.admin import _facts, _templates  # noqa: E402

CHUNK = 10_000


def fill(app: Any, leads: int, now: datetime) -> None:
    rng = random.Random(7)
    sources = list(app.config.sources) or ["web"]
    with app.store.transaction() as connection:
        for start in range(0, leads, CHUNK):
            ids = range(start + 1, min(start + CHUNK, leads) + 1)
            at = {i: now - timedelta(seconds=rng.uniform(0, 30 * 86400)) for i in ids}
            mql = {i for i in ids if i % 5 == 0}
            connection.execute(
                CONTACTS.insert(),
                [
                    {
                        "id": i,
                        "email": f"lead{i}@company{i % 997}.de",
                        "email_domain": f"company{i % 997}.de",
                        "fields": {"company": f"Company {i % 997}"},
                        "source": sources[i % len(sources)],
                        "stage": "mql" if i in mql else "lead",
                        "score": 80.0 if i in mql else 20.0,
                        "mql_at": at[i] if i in mql else None,
                        "created_at": at[i],
                        "updated_at": at[i],
                    }
                    for i in ids
                ],
            )
            connection.execute(
                EVENTS.insert(),
                [
                    {
                        "id": i,
                        "contact_id": i,
                        "source": sources[i % len(sources)],
                        "record_key": f"k{i}",
                        "type": "form",
                        "attrs": {},
                        "raw": {},
                        "occurred_at": at[i],
                        "received_at": at[i],
                        "status": "processed",
                        "attempts": 1,
                        "processed_at": at[i],
                    }
                    for i in ids
                ],
            )
            connection.execute(
                SCORES.insert(),
                [
                    {
                        "contact_id": i,
                        "event_id": i,
                        "score": 80.0 if i in mql else 20.0,
                        "fit": 50.0,
                        "engagement": 30.0,
                        "mql": i in mql,
                        "hits": [{"rule": "big company", "kind": "fit", "points": 30}],
                        "ruleset_version": "1",
                        "ruleset_hash": "bench",
                        "computed_at": at[i],
                    }
                    for i in ids
                ],
            )
            if mql:
                connection.execute(
                    ASSIGNMENTS.insert(),
                    [
                        {
                            "contact_id": i,
                            "event_id": i,
                            "rep": "jonas",
                            "team": "enterprise-dach",
                            "rule": "dach enterprise",
                            "strategy": "round_robin",
                            "reason": "round robin: jonas was next",
                            "skipped": [{"rep": "lea", "reason": "away"}],
                            "sla_policy": "hot",
                            "due_at": at[i] + timedelta(hours=4),
                            "status": "open" if i % 10 == 0 else "accepted",
                            "public_id": uuid.uuid4().hex,
                            "created_at": at[i],
                        }
                        for i in sorted(mql)
                    ],
                )


def median_ms(run: Any) -> float:
    run()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def measure(database_url: str, leads: int, config_dir: Path) -> dict[str, Any]:
    settings = load_settings(config_dir, env={"LEADWERK_DATABASE_URL": database_url})
    app = init_app(settings)
    now = datetime.now(UTC)
    try:
        started = time.perf_counter()
        fill(app, leads, now)
        filled = time.perf_counter() - started

        def page() -> str:
            return _templates.get_template("admin/dashboard.html.j2").render(
                **_facts(app), csrf="x", notice=None, bearer=False
            )

        return {
            "leads": leads,
            "fill_s": round(filled, 1),
            "overview_ms": median_ms(lambda: overview(app, datetime.now(UTC))),
            "recent_mqls_ms": median_ms(lambda: recent_mqls(app)),
            "page_ms": median_ms(page),
        }
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args()
    config_dir = ROOT / "config"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", args.leads, config_dir)
    if args.postgres:
        import psycopg

        name = f"leadwerk_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"{args.postgres.rsplit('/', 1)[0]}/{name}"
            results["postgresql"] = measure(url, args.leads, config_dir)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
