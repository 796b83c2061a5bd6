"""Benchmark: a big fair export through ``leadwerk import`` into PostgreSQL + Redis, worked
off by worker processes: how long until the command returns, how long until every lead is
accounted for, and how deep the queues grow.

    python bench/bench_import_backlog.py [--rows 100000] [--workers 2] [--no-clock]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]

The export is messy like a real one: Windows-1252, ``;``, the German headers of the example
config's ``messe-hannover-2026`` mapping (bench_import.py's generator), and besides its bad
e-mails every 1000th row cut short, one with a cell too many, one with a phone cell that holds
words. A fresh PostgreSQL database (dropped afterwards) and a Redis namespace of its own;
``--workers`` ``leadwerk worker`` processes and a ``leadwerk clock`` (unless ``--no-clock``),
each its own process as deployed; notifications go to the file outbox.

Prints one JSON object: ``import_seconds`` (until ``leadwerk import`` returned),
``accounted_seconds`` (from its start until no event is pending, no MQL waits for routing and
no message waits to be sent), ``queue_peak`` (the most messages waiting in the Redis queues
at once, sampled every 0.1 s, in total and per queue) and the import's own summary counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_import import _drop_database, _postgres_database, generate  # noqa: E402

SOURCE = "messe-hannover-2026"
QUEUES = ("score", "route", "notify")


def make_messy(path: Path) -> None:
    """Spoil a few rows of the generated export the way real exports are spoilt."""
    lines = path.read_bytes().decode("cp1252").split("\r\n")
    for n in range(1, len(lines)):
        if not lines[n]:
            continue
        if n % 1000 == 7:  # cut short: 4 of 10 cells
            lines[n] = ";".join(lines[n].split(";")[:4])
        elif n % 1000 == 13:  # a cell too many
            lines[n] += ";Halle 4"
        elif n % 1000 == 21:  # words in the phone column
            cells = lines[n].split(";")
            cells[5] = "bitte nicht anrufen"
            lines[n] = ";".join(cells)
    path.write_bytes("\r\n".join(lines).encode("cp1252"))


class QueueSampler(threading.Thread):
    """Samples the waiting messages of each queue (the Redis lists dramatiq consumes, its
    delay queues included) until stopped; keeps the peak."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.keys = {q: (f"{namespace}:{q}", f"{namespace}:{q}.DQ") for q in QUEUES}
        self.peak = 0
        self.peak_by_queue = dict.fromkeys(QUEUES, 0)
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pipe = self.client.pipeline(transaction=False)
            for keys in self.keys.values():
                for key in keys:
                    pipe.llen(key)
            counts = pipe.execute()
            depths = {q: counts[2 * i] + counts[2 * i + 1] for i, q in enumerate(QUEUES)}
            self.peak = max(self.peak, sum(depths.values()))
            for queue, depth in depths.items():
                self.peak_by_queue[queue] = max(self.peak_by_queue[queue], depth)
            self.samples += 1
            self.done.wait(0.1)


def outstanding(database_url: str) -> dict[str, int]:
    """What still waits: events not scored, MQLs not routed, messages not sent."""
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        events = conn.execute("SELECT count(*) FROM events WHERE status = 'pending'").fetchone()
        unrouted = conn.execute(
            "SELECT count(*) FROM contacts c WHERE c.mql_at IS NOT NULL AND c.stage = 'mql' "
            "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.contact_id = c.id)"
        ).fetchone()
        messages = conn.execute(
            "SELECT count(*) FROM messages WHERE status IN ('pending', 'sending')"
        ).fetchone()
    return {
        "events": events[0] if events else 0,
        "unrouted": unrouted[0] if unrouted else 0,
        "messages": messages[0] if messages else 0,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    export = work / "messe-export.csv"
    generate(export, args.rows)
    make_messy(export)
    config_dir = work / "config"
    shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
    name, database_url = _postgres_database(args.postgres)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "LEADWERK_DATABASE_URL": database_url,
        "LEADWERK_REDIS_URL": args.redis,
        "LEADWERK_REDIS_NAMESPACE": namespace,
        "LEADWERK_OUTBOX_DIR": str(work / "outbox"),
        "LEADWERK_LOG_LEVEL": "WARNING",
        "LEADWERK_ACCEPT_SECRET": "bench-import-backlog-link-key",  # a shared deployment needs one
    }
    command = [sys.executable, "-m", "worker", "--config", str(config_dir)]
    processes: list[subprocess.Popen[bytes]] = []
    sampler = QueueSampler(args.redis, f"leadwerk-{namespace}")
    try:
        # The schema first, so that the processes do not race to migrate an empty database.
        subprocess.run([*command, "migrate"], env=env, check=True, capture_output=True)
        roles = ["worker"] * args.workers + ([] if args.no_clock else ["clock"])
        for role in roles:
            processes.append(
                subprocess.Popen(
                    [*command, role],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        sampler.start()
        start = time.perf_counter()
        imported = subprocess.run(
            [*command, "import", str(export), "--source", SOURCE, "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        import_seconds = time.perf_counter() - start
        if imported.returncode != 0:
            raise SystemExit(f"leadwerk import failed: {imported.stderr[-2000:]}")
        summary = json.loads(imported.stdout.strip().splitlines()[-1])
        left = outstanding(database_url)
        while any(left.values()) and time.perf_counter() - start < args.timeout:
            time.sleep(0.5)
            left = outstanding(database_url)
        accounted_seconds = time.perf_counter() - start
    finally:
        sampler.done.set()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        keys = list(sampler.client.scan_iter(f"leadwerk-{namespace}:*"))
        if keys:
            sampler.client.delete(*keys)
        _drop_database(args.postgres, name)
    return {
        "rows": args.rows,
        "workers": args.workers,
        "clock": not args.no_clock,
        "database": "postgresql",
        "received": summary["received"],
        "accepted": summary["accepted"],
        "quarantined": summary["quarantined"],
        "warnings": len(summary["warnings"]),
        "import_seconds": round(import_seconds, 2),
        "accounted_seconds": round(accounted_seconds, 2),
        "complete": not any(left.values()),
        "left": left,
        "leads_per_s": round(summary["accepted"] / accounted_seconds, 1),
        "queue_peak": {"total": sampler.peak, **sampler.peak_by_queue},
        "queue_samples": sampler.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-clock", action="store_true")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="Seconds to wait for the backlog."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
