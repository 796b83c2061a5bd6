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
each its own process as deployed and started before the import (it begins once each has written
its first heartbeat: ``boot_seconds``); notifications go to the file outbox, a stand-in for the
mail server, in a folder of its own on ``/dev/shm`` where the machine has one (``--outbox``
names another): on ext4 without a journal, each new file's inode is looked for past every inode
freed in the last minutes, and the previous run's deleted outbox made the workers spend a third
more CPU (30,000 rows, two pairs: 15.8-17.5 s against 9.6-11.0 s).

First, the yardstick: the same rows through what a hand-written loader would do, in a
process of its own: Python's ``csv``, ``email-validator`` and ``phonenumbers``, and one
multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per 500 rows (a transaction each, psycopg)
into a table of its own in the same fresh database, before the Leadwerk processes start.

Prints one JSON object: ``yardstick_seconds``; ``import_seconds`` (until ``leadwerk import``
returned) and ``import_cpu_seconds``; ``routed_seconds`` (from its start until no event is
pending and no MQL waits for routing: the backlog scored and routed) and ``accounted_seconds``
(until, besides, no message waits to be sent); each as a ratio to the yardstick;
``cpu_budget``, the CPU seconds every part used from the import's start until the backlog was
accounted for (the import with its pool, each worker and the clock, and, where they run on
this machine, PostgreSQL and Redis) against the core-seconds that 2x the yardstick offers on
this machine's cores; ``import_pool_cpu_seconds``, the CPU of the processes that prepared the file's
records for the import, and ``import_peak_rss_with_children_mib`` (both sampled);
``queue_peak`` (the most messages waiting in the Redis queues at once, sampled every 0.1 s,
in total and per queue; a batch of leads is one message); per process (``processes``) its
CPU seconds (``system_cpu_seconds``: the kernel's part of them) and peak RSS (the kernel's
VmHWM, and the sampled peak of the process with its children, every 0.5 s); and the
import's own summary counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from bench.procfs import TICKS, cpu_seconds, named, stat_fields  # noqa: E402
from worker.runtime.broker import BACKLOG_QUEUE, QUEUES  # noqa: E402

SOURCE = "messe-hannover-2026"
COUNTRIES = {"deutschland": "DE", "österreich": "AT", "schweiz": "CH"}
YARDSTICK_COLUMNS = 10
LEAD_QUEUES = ("score", BACKLOG_QUEUE, "route")  # where events and MQLs wait for a worker
YARDSTICK_BATCH = 500


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
        self.ready: dict[str, int] = {}  # the last sample: messages ready (not delayed) a queue
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
            self.ready = {q: counts[2 * i] for i, q in enumerate(QUEUES)}
            self.peak = max(self.peak, sum(depths.values()))
            for queue, depth in depths.items():
                self.peak_by_queue[queue] = max(self.peak_by_queue[queue], depth)
            self.samples += 1
            self.done.wait(0.1)

    def drained(self, queues: tuple[str, ...], after: int) -> bool:
        """No message ready on ``queues`` in a sample taken after the ``after``-th."""
        return self.samples > after and not any(self.ready.get(q) for q in queues)


def yardstick(export: Path, database_url: str) -> dict[str, Any]:
    """Load the export as a plain script would: parse, validate the e-mail, put the phone in
    E.164, and insert 500 rows a statement; rows with a bad e-mail or the wrong number of
    cells are left out. Run in a child process (``--yardstick``), timed there."""
    import csv

    import phonenumbers
    import psycopg
    from email_validator import EmailNotValidError, validate_email

    E164 = phonenumbers.PhoneNumberFormat.E164

    start, cpu = time.perf_counter(), time.process_time()
    columns = ", ".join(f"c{n}" for n in range(YARDSTICK_COLUMNS))
    placeholders = "(" + ", ".join(["%s"] * YARDSTICK_COLUMNS) + ")"
    stored = left_out = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE yardstick_leads (c0 text PRIMARY KEY, "
            + ", ".join(f"c{n} text" for n in range(1, YARDSTICK_COLUMNS))
            + ")"
        )

        def insert(rows: list[list[str | None]]) -> int:
            values = ", ".join([placeholders] * len(rows))
            statement = f"INSERT INTO yardstick_leads ({columns}) VALUES {values} "
            flat = [cell for row in rows for cell in row]
            return conn.execute(statement + "ON CONFLICT DO NOTHING", flat).rowcount

        with export.open(encoding="cp1252", newline="") as stream:
            reader = csv.reader(stream, delimiter=";")
            next(reader)
            rows: list[list[str | None]] = []
            for cells in reader:
                if len(cells) != YARDSTICK_COLUMNS:
                    left_out += 1
                    continue
                try:
                    email = validate_email(cells[0], check_deliverability=False).normalized
                except EmailNotValidError:
                    left_out += 1
                    continue
                country = COUNTRIES.get(cells[6].lower(), cells[6].upper())
                phone = None
                try:
                    number = phonenumbers.parse(cells[5], country)
                    if phonenumbers.is_possible_number(number):
                        phone = phonenumbers.format_number(number, E164)
                except phonenumbers.NumberParseException:
                    pass
                rows.append([email.lower(), *cells[1:5], phone, country, *cells[7:]])
                if len(rows) == YARDSTICK_BATCH:
                    stored += insert(rows)
                    rows.clear()
            if rows:
                stored += insert(rows)
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "stored": stored,
        "left_out": left_out,
    }


def outbox_folder(parent: Path | None = None) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the workers' file outbox, in ``parent`` or else on
    ``/dev/shm`` where there is one (see the module's docstring)."""
    shm = Path("/dev/shm")
    where = parent or (shm if shm.is_dir() else None)
    return tempfile.TemporaryDirectory(dir=where, prefix="leadwerk-outbox-")


def run_yardstick(export: Path, database_url: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--yardstick", str(export), "--postgres", database_url]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class ProcessSampler(threading.Thread):
    """Samples the RSS of processes with their children (``/proc``) every 0.5 s until
    stopped; keeps each one's peak. :meth:`final` adds the kernel's own high-water mark and
    the CPU seconds, read before the process ends."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_kib = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        tree, todo = [], [pid]
        while todo:
            current = todo.pop()
            tree.append(current)
            try:
                for task in Path(f"/proc/{current}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
        return tree

    @staticmethod
    def _status(pid: int, field: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                rss = sum(self._status(p, "VmRSS") for p in self._tree(pid))
                self.peak_kib[name] = max(self.peak_kib[name], rss)
            self.done.wait(0.5)

    def final(self) -> dict[str, dict[str, float]]:
        facts = {}
        for name, pid in self.pids.items():
            stat = stat_fields(pid)
            system = int(stat[12]) / TICKS if stat else 0.0
            facts[name] = {
                "cpu_seconds": round(cpu_seconds(pid), 1),
                "system_cpu_seconds": round(system, 1),
                "vm_hwm_mib": round(self._status(pid, "VmHWM") / 1024, 1),
                "peak_rss_with_children_mib": round(self.peak_kib[name] / 1024, 1),
            }
        return facts


def server_cpu_seconds() -> dict[str, float]:
    """The CPU seconds so far of this machine's PostgreSQL and Redis servers, every process
    of each with the connections that ended (empty where ``/proc`` shows none of them)."""
    totals = {
        server: sum(cpu_seconds(pid, with_reaped_children=True) for pid in named(name))
        for server, name in (("postgresql", "postgres"), ("redis", "redis-server"))
    }
    return {server: seconds for server, seconds in totals.items() if seconds}


def cpu_budget(used: dict[str, float], yardstick_seconds: float, cores: int) -> dict[str, Any]:
    """The CPU the backlog used, by part, against what 2x the yardstick offers on ``cores``:
    where ``total`` exceeds ``at_2x``, no scheduling can finish within 2x; ``cores_for_2x``
    is the fewest cores that could at this CPU per lead (the work spread perfectly)."""
    total = sum(used.values())
    return {
        "core_seconds": {part: round(seconds, 1) for part, seconds in used.items()},
        "total": round(total, 1),
        "cores": cores,
        "at_2x": round(2 * yardstick_seconds * cores, 1),
        "cores_for_2x": round(total / (2 * yardstick_seconds), 1),
    }


class ImportTree(threading.Thread):
    """The import process with the processes it starts (those that prepare a file's
    records), sampled from ``/proc`` every 0.2 s until stopped: the peak of their summed RSS,
    and the CPU seconds of the started ones (the last sample of each counts, so at most
    0.2 s of each is missed)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.cpu: dict[int, float] = {}
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            tree = ProcessSampler._tree(self.pid)
            rss = sum(ProcessSampler._status(pid, "VmRSS") for pid in tree)
            self.peak_kib = max(self.peak_kib, rss)
            for pid in tree[1:]:
                seconds = cpu_seconds(pid)
                if seconds:  # 0 once gone meanwhile: its last sample counts
                    self.cpu[pid] = seconds
            self.done.wait(0.2)

    def pool_cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def wait_started(
    database_url: str,
    roles: list[str],
    processes: list[subprocess.Popen[bytes]],
    logs: list[Path],
    timeout: float = 120.0,
) -> float:
    """Wait until each of ``roles`` has written its first heartbeat; the seconds it took."""
    import psycopg

    wanted = {role: roles.count(role) for role in set(roles)}
    spawned = time.perf_counter()
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        while time.perf_counter() - spawned < timeout:
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise SystemExit(f"a process exited: {log.read_text()[-2000:]}")
            rows = conn.execute("SELECT kind, count(*) FROM heartbeats GROUP BY kind").fetchall()
            conn.commit()
            if all(dict(rows).get(role, 0) >= count for role, count in wanted.items()):
                return time.perf_counter() - spawned
            time.sleep(0.1)
    raise SystemExit(f"the workers and clock did not start within {timeout:.0f} s")


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


def run(args: argparse.Namespace, work: Path, outbox: Path) -> dict[str, Any]:
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
        "LEADWERK_OUTBOX_DIR": str(outbox),
        "LEADWERK_LOG_LEVEL": "WARNING",
        "LEADWERK_ACCEPT_SECRET": "bench-import-backlog-link-key",  # a shared deployment needs one
    }
    command = [sys.executable, "-m", "worker", "--config", str(config_dir)]
    processes: list[subprocess.Popen[bytes]] = []
    sampler = QueueSampler(args.redis, f"leadwerk-{namespace}")
    memory: ProcessSampler | None = None
    try:
        measured = run_yardstick(export, database_url)
        # The schema first, so that the processes do not race to migrate an empty database.
        subprocess.run([*command, "migrate"], env=env, check=True, capture_output=True)
        roles = ["worker"] * args.workers + ([] if args.no_clock else ["clock"])
        logs = [work / f"{role}{n}.log" for n, role in enumerate(roles, 1)]
        for role, log in zip(roles, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [*command, role], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        names = [f"{role}{n}" for n, role in enumerate(roles, 1)]
        # A deployment's workers and clock run before a file comes: the import starts once
        # each has started (its first heartbeat), their start-up (about a second of CPU each)
        # not competing with it nor counted.
        boot_seconds = wait_started(database_url, roles, processes, logs)
        memory = ProcessSampler({n: p.pid for n, p in zip(names, processes, strict=True)})
        memory.start()
        sampler.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        servers_before = server_cpu_seconds()
        running_before = {n: cpu_seconds(p.pid) for n, p in zip(names, processes, strict=True)}
        start = time.perf_counter()
        importing = subprocess.Popen(
            [*command, "import", str(export), "--source", SOURCE, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        tree = ImportTree(importing.pid)
        tree.start()
        stdout, stderr = importing.communicate()
        import_seconds = time.perf_counter() - start
        tree.done.set()
        tree.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        import_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if importing.returncode != 0:
            raise SystemExit(f"leadwerk import failed: {stderr[-2000:]}")
        summary = json.loads(stdout.strip().splitlines()[-1])
        # The store is asked only once no lead waits in a queue: counting the pending events
        # walks the status index's entries of every row updated meanwhile, a tenth of a
        # second at 100,000 leads, and asked twice a second throughout, it added several
        # seconds of PostgreSQL's CPU to what is measured.
        imported_at = sampler.samples
        left, routed_seconds = {}, None
        while time.perf_counter() - start < args.timeout:
            if sampler.drained(LEAD_QUEUES, imported_at):
                left = outstanding(database_url)
                if routed_seconds is None and not left["events"] and not left["unrouted"]:
                    routed_seconds = time.perf_counter() - start
                if not any(left.values()):
                    break
            time.sleep(0.25)
        left = left or outstanding(database_url)
        accounted_seconds = time.perf_counter() - start
        routed_seconds = routed_seconds or accounted_seconds
        servers_after = server_cpu_seconds()
        used = {
            "import": import_cpu + tree.pool_cpu_seconds(),
            **{
                n: cpu_seconds(p.pid) - running_before[n]
                for n, p in zip(names, processes, strict=True)
            },
            **{s: servers_after[s] - servers_before.get(s, 0.0) for s in servers_after},
        }
        facts = memory.final()
    finally:
        sampler.done.set()
        if memory is not None:
            memory.done.set()
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
        "outbox_in": str(outbox.parent),
        "boot_seconds": round(boot_seconds, 2),
        "database": "postgresql",
        "received": summary["received"],
        "accepted": summary["accepted"],
        "quarantined": summary["quarantined"],
        "warnings": len(summary["warnings"]),
        "yardstick": measured,
        "yardstick_seconds": measured["seconds"],
        "import_seconds": round(import_seconds, 2),
        "import_cpu_seconds": round(import_cpu, 2),
        "import_pool_cpu_seconds": round(tree.pool_cpu_seconds(), 2),
        "import_peak_rss_with_children_mib": round(tree.peak_kib / 1024, 1),
        "routed_seconds": round(routed_seconds, 2),
        "accounted_seconds": round(accounted_seconds, 2),
        "import_to_yardstick": round(import_seconds / measured["seconds"], 2),
        "routed_to_yardstick": round(routed_seconds / measured["seconds"], 2),
        "accounted_to_yardstick": round(accounted_seconds / measured["seconds"], 2),
        "cpu_budget": cpu_budget(used, measured["seconds"], os.cpu_count() or 1),
        "complete": not any(left.values()),
        "left": left,
        "leads_per_s": round(summary["accepted"] / accounted_seconds, 1),
        "queue_peak": {"total": sampler.peak, **sampler.peak_by_queue},
        "queue_samples": sampler.samples,
        "processes": facts,
        # Batches that failed (a deadlock, a lost connection) and went the per-lead way.
        "batches_failed": sum(
            log.read_text(errors="replace").count("each goes on its own") for log in logs
        ),
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
    parser.add_argument(
        "--outbox", type=Path, help="Where the outbox folder is made (default: /dev/shm)."
    )
    parser.add_argument("--yardstick", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.yardstick:
        print(json.dumps(yardstick(args.yardstick, args.postgres)))
        return
    with tempfile.TemporaryDirectory() as tmp, outbox_folder(args.outbox) as outbox:
        result = run(args, Path(tmp), Path(outbox))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
