"""Benchmark: the clock's nurture pass over 1M active enrolments in PostgreSQL, 10 % due.

    python bench/bench_nurture.py [--enrolments 1000000] [--due 0.10]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Fills a new PostgreSQL database (dropped afterwards) with one contact per enrolment (10,000
recipient domains, German addresses) and that many active e-mail enrolments, ``--due`` of
them due now, the rest next week. Then measures, best of ``--repeat`` runs:

* ``select``: one hand-written SQL statement that selects the same due rows with what the
  pass needs of each (id, contact, channel, due time, recipient domain): the floor;
* ``pass``: :func:`worker.pipeline.nurture.enqueue_due_steps`, the clock's job: claims the
  due rows in batches with ``UPDATE ... RETURNING`` (``FOR UPDATE SKIP LOCKED``), applies the
  limits and enqueues them (500 enrolments a queue message, on the in-process broker);
* ``pass_with_limits``: the same with the example's limits (3 a day per domain, 60 a
  minute), so nearly every due row is moved to a later opening in its contact's send window.

Between runs the rows are put back as they were. Prints one JSON object: seconds, rows,
rows/s, and the pass's time as a multiple of the select's (the target is at most 3).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)  # a Tuesday, inside the send window
COUNTRIES = ["DE", "AT", "CH", "NL", "GB", "US"]

HAND_WRITTEN = """
SELECT e.id, e.contact_id, e.channel, e.next_due_at, c.email_domain
FROM nurture_enrolments e JOIN contacts c ON c.id = e.contact_id
WHERE e.status = 'active' AND e.next_due_at <= %(now)s
  AND (e.enqueued_at IS NULL OR e.enqueued_at < %(lease)s)
"""


def fill(url: str, enrolments: int, due_share: float) -> int:
    """Contacts and enrolments by COPY; returns how many are due."""
    import psycopg

    due = int(enrolments * due_share)
    later = NOW + timedelta(days=7)
    contacts = io.StringIO()
    rows = io.StringIO()
    for n in range(1, enrolments + 1):
        domain = f"firma{n % 10_000}.de"
        country = COUNTRIES[n % len(COUNTRIES)]
        fields = json.dumps({"first_name": "Eva", "country": country, "email": f"p{n}@{domain}"})
        contacts.write(
            f"{n}\tp{n}@{domain}\t{domain}\t{fields}\tbench\tlead\t{NOW.isoformat()}\t"
            f"{NOW.isoformat()}\n"
        )
        at = (NOW - timedelta(minutes=n % 600) if n <= due else later).isoformat()
        rows.write(
            f"{n}\t{n}\tebook-followup\temail\t1\t{at}\t{at}\tactive\t0\t"
            f"{NOW.isoformat()}\t{NOW.isoformat()}\n"
        )
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        with conn.cursor() as cursor:
            columns = "id, email, email_domain, fields, source, stage, created_at, updated_at"
            with cursor.copy(f"COPY contacts ({columns}) FROM STDIN") as copy:
                copy.write(contacts.getvalue())
            columns = (
                "id, contact_id, sequence, channel, step, planned_at, next_due_at, status, "
                "call_tasks, enrolled_at, updated_at"
            )
            with cursor.copy(f"COPY nurture_enrolments ({columns}) FROM STDIN") as copy:
                copy.write(rows.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE contacts")
        conn.execute("VACUUM ANALYZE nurture_enrolments")
    return due


def reset(url: str) -> None:
    """Every row back as it was: not enqueued, due when it was planned."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE nurture_enrolments SET enqueued_at = NULL, next_due_at = planned_at "
            "WHERE enqueued_at IS NOT NULL OR next_due_at <> planned_at"
        )
        conn.execute("VACUUM ANALYZE nurture_enrolments")


def best(runs: int, setup: Callable[[], None], work: Callable[[], int]) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        count = work()
        times.append(time.perf_counter() - start)
    return min(times), count


def config_dir(limits: bool) -> Path:
    folder = Path(tempfile.mkdtemp()) / "config"
    shutil.copytree(ROOT / "config", folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    nurture = folder / "nurture.yaml"
    if not limits:
        nurture.write_text(re.sub(r"^limits:.*\n", "", nurture.read_text(), flags=re.M))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrolments", type=int, default=1_000_000)
    parser.add_argument("--due", type=float, default=0.10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    import psycopg

    from config.loader import load_config
    from config.settings import load_settings
    from worker.pipeline.nurture import ENQUEUE_LEASE, enqueue_due_steps
    from worker.runtime.broker import setup_broker
    from worker.store.db import Store

    name = f"bench_nurture_{uuid.uuid4().hex[:8]}"
    admin = args.postgres
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        store = Store(url)
        started = time.perf_counter()
        due = fill(url, args.enrolments, args.due)
        filled = time.perf_counter() - started

        reader = psycopg.connect(url, autocommit=True)  # pooled, as the store's are

        def select_due() -> int:
            params = {"now": NOW, "lease": NOW - ENQUEUE_LEASE}
            return len(reader.execute(HAND_WRITTEN, params).fetchall())

        results: dict[str, Any] = {
            "enrolments": args.enrolments,
            "due": due,
            "fill_s": round(filled, 1),
        }
        select_s, selected = best(args.repeat, lambda: None, select_due)
        results["select"] = {"s": round(select_s, 3), "rows": selected}
        for label, limits in (("pass", False), ("pass_with_limits", True)):
            settings = load_settings(config_dir(limits), env={}, database_url=url)
            config = load_config(settings)
            broker = setup_broker(settings)
            spread = 0

            def run_pass(config: Any = config) -> int:
                nonlocal spread
                done = enqueue_due_steps(store, config, NOW)
                spread = done.spread
                return len(done.enqueued)

            seconds, enqueued = best(args.repeat, lambda: reset(url), run_pass)
            broker.flush_all()  # type: ignore[attr-defined]
            results[label] = {
                "s": round(seconds, 3),
                "enqueued": enqueued,
                "moved_by_limits": spread,
                "rows_per_s": round((enqueued + spread) / seconds),
                "x_select": round(seconds / select_s, 2),
            }
        store.close()
        reader.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
