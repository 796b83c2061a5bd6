"""Benchmark: speed to lead, from a signed webhook to the rep's e-mail, on real processes.

    python bench/speed_to_lead.py [--rates 20,100] [--duration 60] [--workers 2] [--history N]

``--history N`` starts each rate with N earlier leads in the store (as after months of use), to
show that a new lead's lookups do not grow with it.

Everything runs on 127.0.0.1: for each rate a fresh PostgreSQL database and a Redis namespace
of its own, one ``leadwerk web`` and ``--workers`` ``leadwerk worker`` processes, and an
aiosmtpd server (in a child process of this one) that records when each e-mail is accepted.
Signed webhooks (a demo request from a Head of IT at a large German firm: an MQL, routed to a
rep on e-mail) are POSTed at a steady rate for ``--duration`` seconds, then the run waits for
the last e-mails (at most 60 s). Latency per lead = SMTP receive time - webhook send time,
matched by the lead's e-mail address in the message (both clocks are the host's monotonic
clock). A lead whose e-mail has not come by then counts as slower than every other; a
percentile that falls on such leads is null: the deployment could not keep up with the rate.

Prints one JSON object: per rate p50/p95/p99/max latency (ms), leads sent, 202s, e-mails
received, missing, the rate e-mails were delivered at, peak RSS (VmHWM) and CPU seconds of each
process, CPU milliseconds per lead of each part (web, workers, PostgreSQL, Redis, SMTP server,
load generator: they all share the machine's cores), the machine's load average (other work
competes for the same cores), and whether the target at 100 leads/s holds (p50 < 50 ms, p99 <
250 ms). The fast path needs no clock: the webhook enqueues ``score_lead`` itself.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import math
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import cpu_seconds, named  # noqa: E402

PG_ADMIN = os.environ.get("LEADWERK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LEADWERK_TEST_REDIS", "redis://127.0.0.1:6379/15")
SECRET = "bench-hook-secret"
MAX_DURATION = 120  # seconds per rate: the loops are bounded whatever is asked
SETTLE_TIMEOUT = 60  # seconds to wait for the last e-mails after the last webhook
LEAD_IN_MAIL = re.compile(rb"bench-(\d+)@")

SOURCES = """
sources:
  - name: demo-requests
    kind: webhook
    secret_env: BENCH_HOOK_SECRET
    event: {type: form, form: demo-request}
    map: {email: "$.email", first_name: "$.first_name", last_name: "$.last_name",
          company: "$.company", company_size: "$.company_size", country: "$.country",
          title: "$.title"}
"""
# The example teams, all on e-mail and open around the clock: every lead goes to a rep now.
TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet, sophie, tom]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com, weight: 2}
  lea: {name: Lea Hoffmann, email: lea@example.com, timezone: Europe/Vienna}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com, weight: 2}
  sophie: {name: Sophie Becker, email: sophie@example.com}
  tom: {name: Tom Fischer, email: tom@example.com}
"""


# --- the SMTP server, in a child process so that it does not share this process's GIL -----


def _smtp_sink(conn: Connection) -> None:
    """Accept every e-mail; remember (lead number, monotonic time) when each was accepted.
    Answers the parent's commands: ``count``, then ``stop`` (sends the receipts and exits)."""
    from aiosmtpd.controller import Controller

    receipts: list[tuple[int | None, float]] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            at = time.monotonic()
            found = LEAD_IN_MAIL.search(envelope.original_content or b"")
            receipts.append((int(found.group(1)) if found else None, at))
            return "250 2.0.0 OK"

    class EphemeralPort(Controller):
        def _trigger_server(self) -> None:
            assert self.server is not None
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    controller = EphemeralPort(Sink(), hostname="127.0.0.1", port=0)
    controller.start()
    conn.send(controller.port)
    while True:
        command = conn.recv()
        if command == "count":
            conn.send(len(receipts))
        else:
            conn.send(list(receipts))
            break
    controller.stop()


# --- the Leadwerk processes -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path) -> Path:
    config = directory / "project" / "config"
    shutil.copytree(
        ROOT / "config", config, ignore=shutil.ignore_patterns("*.py", "__pycache__", "tests")
    )
    (config / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    (config / "team.yaml").write_text(TEAM, encoding="utf-8")
    return config


def _proc_stats(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM, MiB) and CPU seconds used so far, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return {"peak_rss_mib": round(hwm / 1024, 1), "cpu_s": round(cpu_seconds(pid), 1)}


def cpu_by_role(deployment: Deployment, sink_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part of the set-up. Everything shares the machine's
    cores, so what the database, Redis and the load itself use counts against the target."""
    return {
        "web": cpu_seconds(deployment.web.pid),
        "workers": sum(cpu_seconds(w.pid) for w in deployment.workers),
        "postgresql": sum(cpu_seconds(pid) for pid in named("postgres")),
        "redis": sum(cpu_seconds(pid) for pid in named("redis-server")),
        "smtp_server": cpu_seconds(sink_pid),
        "load_generator": cpu_seconds(os.getpid()),
    }


class Deployment:
    """A fresh database, a Redis namespace, one web and N worker processes."""

    def __init__(self, workdir: Path, smtp_port: int, workers: int, threads: int) -> None:
        import psycopg

        self.database = f"leadwerk_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        config = _config(workdir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
        self.env.update(
            LEADWERK_CONFIG_DIR=str(config),
            LEADWERK_DATABASE_URL=f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.database}",
            LEADWERK_REDIS_URL=REDIS,
            LEADWERK_REDIS_NAMESPACE=self.namespace,
            LEADWERK_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            LEADWERK_LOG_LEVEL="WARNING",
            LEADWERK_WORKER_THREADS=str(threads),
            LEADWERK_ACCEPT_SECRET="bench-speed-to-lead-link-key",  # a shared deployment needs one
            BENCH_HOOK_SECRET=SECRET,
        )
        self.workers: list[subprocess.Popen[bytes]] = []
        # The web process migrates the fresh database before the workers start.
        self.web = self._start("web", "--host", "127.0.0.1", "--port", str(self.port))
        try:
            self._wait_healthy()
            self.workers = [self._start("worker") for _ in range(workers)]
            self._wait_consumers(workers)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/demo-requests"

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError("leadwerk web exited; run it by hand to see why")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("leadwerk web did not become healthy in 60 s")

    def _wait_consumers(self, count: int) -> None:
        """dramatiq workers announce themselves in the namespace's heartbeat set."""
        import redis

        client = redis.Redis.from_url(REDIS)
        deadline = time.monotonic() + 60
        while client.zcard(f"leadwerk-{self.namespace}:__heartbeats__") < count:
            if any(w.poll() is not None for w in self.workers):
                raise RuntimeError("a leadwerk worker exited; run it by hand to see why")
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start in 60 s")
            time.sleep(0.2)
        client.close()

    def stats(self) -> dict[str, Any]:
        return {
            "web": _proc_stats(self.web.pid),
            "workers": [_proc_stats(worker.pid) for worker in self.workers],
        }

    def add_history(self, leads: int) -> None:
        """Fill the store as months of use would: ``leads`` earlier contacts with two
        processed events each and an assignment, spread over 2,000 company domains (none of
        the load's). The lookups of every new lead must not grow with it."""
        import psycopg

        if leads <= 0:
            return
        url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.database}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO contacts (email, email_domain, fields, source, stage, score, "
                "owner, created_at, updated_at) SELECT 'earlier-' || g || '@old' || mod(g, 2000) "
                "|| '.example.org', 'old' || mod(g, 2000) || '.example.org', '{}', "
                "'demo-requests', 'sal', 80, (ARRAY['jonas','lea','mehmet','sophie','tom'])"
                "[mod(g, 5) + 1], now() - interval '90 days', now() - interval '90 days' "
                "FROM generate_series(1, %(n)s) g",
                {"n": leads},
            )
            conn.execute(
                "INSERT INTO events (contact_id, source, record_key, type, attrs, raw, "
                "occurred_at, received_at, status, attempts) SELECT c.id, 'demo-requests', "
                "'earlier-' || c.id || '-' || k, 'form', '{\"form\": \"demo-request\"}', "
                "'{}', now() - interval '90 days', now() - interval '90 days', 'processed', 0 "
                "FROM contacts c CROSS JOIN generate_series(1, 2) k"
            )
            conn.execute(
                "INSERT INTO assignments (contact_id, rep, team, rule, reason, skipped, "
                "status, created_at) SELECT id, owner, 'inside-sales', 'everyone else', "
                "'history', '[]', 'accepted', now() - interval '90 days' FROM contacts"
            )
            conn.execute("ANALYZE")

    def stop(self) -> None:
        import psycopg
        import redis

        for process in [*self.workers, self.web]:
            process.terminate()
        for process in [*self.workers, self.web]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(f"leadwerk-{self.namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


# --- the load -----------------------------------------------------------------------------


def _lead(number: int) -> bytes:
    return json.dumps(
        {
            "email": f"bench-{number}@firm{number}.example.com",
            "first_name": "Eva",
            "last_name": f"Lead {number}",
            "company": f"Firm {number} AG",
            "company_size": 5000 if number % 3 == 0 else 500,
            "country": "DE",
            "title": "Head of IT",
        }
    ).encode()


def fire(url: str, rate: float, duration: float, first: int) -> tuple[dict[int, float], Counter]:
    """POST signed webhooks at ``rate`` per second for ``duration`` seconds, each at its slot
    whatever the answers take; returns the send time of each lead and the status codes.

    The sender is ``http.client`` over kept-alive connections, the lightest client at hand:
    in production the sender runs elsewhere, here it competes for the same two cores."""
    parts = urlsplit(url)
    local = threading.local()
    sent: dict[int, float] = {}
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()

    def post(number: int) -> None:
        body = _lead(number)
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Signature-256": f"sha256={signature}"}
        at = time.monotonic()
        try:
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(
                    parts.hostname, parts.port, timeout=10
                )
            connection.request("POST", parts.path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            status: int | str = answer.status
        except (OSError, http.client.HTTPException) as exc:
            local.connection = None
            status = type(exc).__name__
        with lock:
            sent[number] = at
            statuses[status] += 1

    total = int(rate * duration)
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.monotonic() + 0.1
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, first + i)
    return sent, statuses


def _percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ordered list."""
    index = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def run_rate(
    rate: float,
    duration: float,
    workers: int,
    threads: int,
    smtp_port: int,
    sink: Connection,
    sink_pid: int,
    first: int,
    history: int,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="leadwerk-bench-") as workdir:
        deployment = Deployment(Path(workdir), smtp_port, workers, threads)
        try:
            deployment.add_history(history)
            # Warm-up (not measured): connections, template caches, the first queries.
            before = _count(sink)
            warm, _ = fire(deployment.url, rate, 2, first)
            _wait_for(sink, before, len(warm), 30)
            baseline = _count(sink)
            cpu_before = cpu_by_role(deployment, sink_pid)
            started = time.monotonic()
            sent, statuses = fire(deployment.url, rate, duration, first + len(warm))
            fired_for = time.monotonic() - started
            accepted = statuses.get(202, 0)
            _wait_for(sink, baseline, accepted, SETTLE_TIMEOUT)
            cpu_after = cpu_by_role(deployment, sink_pid)
            processes = deployment.stats()
        finally:
            deployment.stop()
    return {
        "rate": rate,
        "earlier_leads_in_store": history,
        "sent": len(sent),
        "fired_for_s": round(fired_for, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "_sent": sent,
        "processes": processes,
        # CPU per lead sent, measured window only (no start-up, no warm-up).
        "cpu_ms_per_lead": {
            role: round((cpu_after[role] - cpu_before[role]) * 1000 / max(len(sent), 1), 2)
            for role in cpu_before
        },
    }


def _count(sink: Connection) -> int:
    sink.send("count")
    return int(sink.recv())


def _wait_for(sink: Connection, baseline: int, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _count(sink) - baseline < expected and time.monotonic() < deadline:
        time.sleep(0.2)


def summarise(run: dict[str, Any], receipts: dict[int, float]) -> dict[str, Any]:
    """Percentiles over every lead sent: one whose e-mail did not come within the settle
    timeout counts as slower than all others, and a percentile that falls on it is null."""
    sent: dict[int, float] = run.pop("_sent")
    arrived = {n: receipts[n] for n in sent if n in receipts}
    latencies = sorted((arrived[n] - sent[n]) * 1000 for n in arrived)
    run["emails"] = len(latencies)
    run["missing"] = len(sent) - len(latencies)
    ranked = latencies + [math.inf] * run["missing"]
    if ranked:
        run["latency_ms"] = {
            name: _ms(_percentile(ranked, share))
            for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
        }
    if arrived:
        span = max(arrived.values()) - min(sent.values())
        run["delivered_per_s"] = round(len(arrived) / span, 1)
    run["peak_worker_rss_mib"] = max(w["peak_rss_mib"] for w in run["processes"]["workers"])
    return run


def _ms(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 1)


def main() -> None:
    from config.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100", help="leads per second, comma-separated")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per rate")
    parser.add_argument("--workers", type=int, default=2, help="leadwerk worker processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=Settings.model_fields["worker_threads"].default,
        help="threads per worker process (LEADWERK_WORKER_THREADS)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="earlier leads in the store before the load (2 events and 1 assignment each)",
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    duration = min(args.duration, MAX_DURATION)

    load_before = [round(x, 1) for x in os.getloadavg()]
    ours, theirs = multiprocessing.Pipe()
    sink = multiprocessing.Process(target=_smtp_sink, args=(theirs,), daemon=True)
    sink.start()
    smtp_port = ours.recv()
    runs = []
    first = 0
    try:
        for rate in rates:
            run = run_rate(
                rate,
                duration,
                args.workers,
                args.threads,
                smtp_port,
                ours,
                sink.pid or 0,
                first,
                args.history,
            )
            runs.append(run)
            first += 1_000_000  # lead numbers never repeat across rates
    finally:
        ours.send("stop")
        receipts_list = ours.recv()
        sink.join(timeout=10)
    receipts: dict[int, float] = {}
    for number, at in receipts_list:
        if number is not None:
            receipts.setdefault(number, at)  # the first arrival counts
    duplicates = sum(
        n - 1 for n in Counter(n for n, _ in receipts_list if n is not None).values() if n > 1
    )
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            # Other work on the machine competes for the same cores: read figures with it.
            "load_average_before_after": [load_before, [round(x, 1) for x in os.getloadavg()]],
        },
        "duration_s": duration,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "duplicate_emails": duplicates,
        "runs": [summarise(run, receipts) for run in runs],
    }
    at_100 = next((r for r in result["runs"] if r["rate"] == 100), None)
    if at_100 is not None and "latency_ms" in at_100:
        latency = at_100["latency_ms"]
        result["target_at_100"] = {
            "p50_under_50ms": latency["p50"] is not None and latency["p50"] < 50,
            "p99_under_250ms": latency["p99"] is not None and latency["p99"] < 250,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
