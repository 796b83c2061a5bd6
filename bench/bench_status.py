"""Benchmark: what ``leadwerk status`` and a ``/metrics`` scrape cost on a filled store.

    python bench/bench_status.py [--leads 20000] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Both read the store at the time they are asked (every figure comes from the store and Redis,
none from a process's memory), so their cost grows with the store. Takes ``--leads`` rows of
a fair export in (left pending, as if no worker ran) into a fresh PostgreSQL database, then
times ``collect_status`` and a whole ``GET /metrics`` 20 times each. Prints one JSON object:
milliseconds (median, max) per read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from connectors.sources.base import RawRecord  # noqa: E402
from worker.commands.status import collect_status  # noqa: E402
from worker.pipeline.ingest import ingest_records  # noqa: E402
from worker.runtime.app import init_app  # noqa: E402
from worker.web.app import create_app  # noqa: E402

FAIR = "messe-hannover-2026"


def timed(call: object, times: int = 20) -> dict[str, float]:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        spent.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(spent), 2), "max_ms": round(max(spent), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    name = f"leadwerk_bench_status_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.postgres.rsplit('/', 1)[0]}/{name}"
    try:
        outbox = Path(tempfile.mkdtemp()) / "outbox"
        settings = load_settings(ROOT / "config", database_url=url, outbox_dir=outbox)
        app = init_app(settings)
        rows = [
            RawRecord(
                data={"E-Mail": f"lead{i}@firm{i}.de", "Mitarbeiter": "500", "Land": "DE"},
                occurred_at=None,
            )
            for i in range(args.leads)
        ]
        source = app.config.sources[FAIR]
        ingest_records(app.store, app.config, source, rows, now=datetime.now(UTC))
        with TestClient(create_app(app)) as web:
            result = {
                "leads": args.leads,
                "store": "postgresql",
                "status": timed(lambda: collect_status(app)),
                "metrics_scrape": timed(lambda: web.get("/metrics")),
            }
        app.close()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(result))


if __name__ == "__main__":
    main()
