"""Benchmark: one backlog worked off by 1, 2 and 4 ``leadwerk worker`` processes against one
Redis and one PostgreSQL (and, with ``--rabbitmq``, by 2 workers on RabbitMQ): leads per
second, and CPU per lead, the figure a fleet larger than this machine divides.

    python bench/bench_scaleout.py [--leads 5000] [--workers 1,2,4] [--threads 4]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]
        [--rabbitmq amqp://guest:guest@127.0.0.1:5672/%2F]

For each run: a fresh PostgreSQL database (dropped afterwards), a Redis namespace of its own,
the example config and a fair export of ``--leads`` rows (bench_import.py's generator) stored
at once by ``leadwerk import`` before any worker runs, so the whole backlog waits on the
queue. Then the workers start (each its own process, as deployed; notifications go to the
file outbox, on ``/dev/shm`` as in bench_import_backlog.py) and the run ends when no event is
pending, no MQL waits for routing and no message waits to be sent.

Prints one JSON object: per run ``seconds`` (from the first worker's start line to the end),
``leads_per_s``, ``worker_cpu_seconds`` (user + system of the worker processes from /proc,
their start-up excluded), ``cpu_ms_per_lead``, ``boot_seconds`` (until the last worker
started) and what each worker finished. Linux only (/proc). On a machine of N cores the
rate stops growing at about N workers; the CPU per lead is what more hosts share out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_import import _drop_database, _postgres_database, generate  # noqa: E402
from bench.bench_import_backlog import outbox_folder, outstanding  # noqa: E402
from bench.procfs import cpu_seconds  # noqa: E402
from worker.runtime.broker import QUEUES  # noqa: E402

SOURCE = "messe-hannover-2026"


def finished_messages(log: str) -> int | None:
    """The count in the worker's last line: "worker stopped: SIGTERM, N messages finished"."""
    for line in reversed(log.splitlines()):
        if "messages finished" in line:
            return int(line.split(" messages finished")[0].rsplit(" ", 1)[1])
    return None


def clear_rabbitmq(url: str) -> None:
    """Leadwerk's queues in RabbitMQ deleted: a run starts from an empty broker."""
    from dramatiq.common import dq_name, xq_name

    from worker.runtime.broker import rabbitmq_connection

    connection = rabbitmq_connection(url)
    try:
        channel = connection.channel()
        for queue in QUEUES:
            for name in (queue, dq_name(queue), xq_name(queue)):
                channel.queue_delete(name)
    finally:
        connection.close()


def run(
    args: argparse.Namespace, workers: int, rabbitmq: str | None, work: Path, outboxes: Path
) -> dict[str, Any]:
    export = work / "messe-export.csv"
    if not export.exists():
        generate(export, args.leads)
    config_dir = work / f"config-{uuid.uuid4().hex[:6]}"
    shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
    name, database_url = _postgres_database(args.postgres)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")},
        "LEADWERK_DATABASE_URL": database_url,
        "LEADWERK_REDIS_URL": args.redis,
        "LEADWERK_REDIS_NAMESPACE": namespace,
        "LEADWERK_OUTBOX_DIR": str(outboxes / namespace),
        "LEADWERK_ACCEPT_SECRET": "bench-link-signing-key",
        "LEADWERK_LOG_LEVEL": "INFO",
        "LEADWERK_WORKER_THREADS": str(args.threads),
    }
    if rabbitmq:
        env["LEADWERK_BROKER_URL"] = rabbitmq
        clear_rabbitmq(rabbitmq)
    command = [sys.executable, "-m", "worker", "--config", str(config_dir)]
    processes: list[subprocess.Popen[bytes]] = []
    logs = [work / f"worker-{namespace}-{n}.log" for n in range(workers)]
    try:
        subprocess.run([*command, "migrate"], env=env, check=True, capture_output=True)
        imported = subprocess.run(
            [*command, "import", str(export), "--source", SOURCE, "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        if imported.returncode != 0:
            raise SystemExit(f"leadwerk import failed: {imported.stderr[-2000:]}")
        summary = json.loads(imported.stdout.strip().splitlines()[-1])
        for log in logs:
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [*command, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        spawned = time.perf_counter()
        # Each worker's CPU at its start line is its start-up: what follows is the work.
        boot_cpu: dict[int, float] = {}
        first_start: float | None = None
        all_started: float | None = None
        left = outstanding(database_url)
        while any(left.values()) and time.perf_counter() - spawned < args.timeout:
            for process, log in zip(processes, logs, strict=True):
                if process.pid not in boot_cpu and " started with " in log.read_text():
                    boot_cpu[process.pid] = cpu_seconds(process.pid)
                    first_start = first_start or time.perf_counter()
                if process.poll() is not None:
                    raise SystemExit(f"a worker exited: {log.read_text()[-2000:]}")
            if len(boot_cpu) < workers:
                time.sleep(0.05)
                continue
            all_started = all_started or time.perf_counter()
            time.sleep(0.25)
            left = outstanding(database_url)
        ended = time.perf_counter()
        work_cpu = sum(cpu_seconds(p.pid) - boot_cpu.get(p.pid, 0.0) for p in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        import redis

        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(f"leadwerk-{namespace}:*"))
        if keys:
            client.delete(*keys)
        _drop_database(args.postgres, name)
        shutil.rmtree(config_dir, ignore_errors=True)
    seconds = ended - (first_start or spawned)
    accepted = summary["accepted"]
    return {
        "broker": "rabbitmq" if rabbitmq else "redis",
        "workers": workers,
        "threads_per_worker": args.threads,
        "leads": accepted,
        "complete": not any(left.values()),
        "left": left,
        "seconds": round(seconds, 2),
        "leads_per_s": round(accepted / seconds, 1),
        "worker_cpu_seconds": round(work_cpu, 2),
        "cpu_ms_per_lead": round(1000 * work_cpu / accepted, 2),
        "boot_seconds": None if all_started is None else round(all_started - spawned, 2),
        "messages_finished_per_worker": [finished_messages(log.read_text()) for log in logs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,4", help="Worker counts to run, in order.")
    parser.add_argument("--threads", type=int, default=4, help="LEADWERK_WORKER_THREADS.")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--rabbitmq", default=None, help="Also a run of 2 workers with this RabbitMQ as broker."
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds to wait per run.")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, outbox_folder() as outboxes:
        for count in (int(n) for n in args.workers.split(",")):
            runs.append(run(args, count, None, Path(tmp), Path(outboxes)))
        if args.rabbitmq:
            runs.append(run(args, 2, args.rabbitmq, Path(tmp), Path(outboxes)))
    print(
        json.dumps(
            {"cores": os.cpu_count(), "load_average_at_end": os.getloadavg(), "runs": runs},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
