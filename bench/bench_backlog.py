"""Benchmark: a backlog of 10,000 leads through ``leadwerk run --once``, timed as a whole
process from the outside.

    python bench/bench_backlog.py [--leads 10000] [--runs 3] [--verbose]
        [--postgres postgresql://postgres@127.0.0.1:5432/test --redis redis://127.0.0.1:6379/0
         --workers 2]

The job (the same as the n8n side-by-side's): fetch the leads as one JSON array over HTTP (a
local server this script runs), score them with 3 rules (+30 demo request, +20 company size
>= 200, -50 free-mail address; MQL at 50), and hand every MQL to a team of two always-open
reps, one e-mail each, written to the file outbox. The leads are generated deterministically
(seeded like the n8n kit's generator: 1,228 MQLs in 10,000).

Each run starts from an empty store: embedded (SQLite, one process) by default; with
``--postgres`` a fresh PostgreSQL database (dropped afterwards) and, with ``--redis``, a Redis
namespace of its own and ``--workers`` worker threads.

Prints one JSON object: per run its wall time, CPU time and peak RSS (of the process), the
lines it printed, and whether every lead is accounted for (every event processed, every MQL
routed to a rep, one e-mail file per MQL, the MQLs exactly the generator's own); then the
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_import import _drop_database, _postgres_database  # noqa: E402

FREE_MAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com"]
FREE_MAIL += ["gmx.de", "proton.me"]
FORMS = ["demo-request", "newsletter", "ebook-download", "contact-us", "webinar"]

CONFIG = {
    "leadwerk.yaml": """\
timezone: UTC
public_url: http://127.0.0.1:18880
mail_from: "Leadwerk <leads@example.com>"
""",
    "sources.yaml": """\
sources:
  - name: bench-leads
    kind: http_json
    url: {url}
    records: ""
    id_field: id
    event: {{type: form, form: "$.form"}}
    map: {{email: "$.email", first_name: "$.first_name", last_name: "$.last_name",
          company: "$.company", company_size: "$.company_size", country: "$.country"}}
""",
    "scoring.yaml": f"""\
version: 1
mql:
  threshold: 50
fit:
  - name: large company
    when: company_size >= 200
    points: 20
  - name: free-mail address
    when: email_domain in lists.free_mail
    points: -50
engagement:
  - name: demo request
    when: event.type == "form" and event.form == "demo-request"
    points: 30
lists:
  free_mail: [{", ".join(FREE_MAIL)}]
""",
    "routing.yaml": """\
rules:
  - name: everyone
    team: sales
    strategy: round_robin
""",
    "team.yaml": """\
teams:
  sales: {members: [alice, bob]}
reps:
  alice: {name: Alice Example, email: alice@example.com, notify: email, timezone: UTC,
          hours: {mon-sun: "00:00-24:00"}}
  bob: {name: Bob Example, email: bob@example.com, notify: email, timezone: UTC,
        hours: {mon-sun: "00:00-24:00"}}
""",
    "sla.yaml": "policies: []\n",
}


def score(lead: dict[str, Any]) -> int:
    """The job's three rules, in plain Python: what the MQLs must be."""
    points = 30 if lead["form"] == "demo-request" else 0
    points += 20 if (lead.get("company_size") or 0) >= 200 else 0
    points -= 50 if lead["email"].split("@")[-1].lower() in FREE_MAIL else 0
    return points


def generate(n: int) -> list[dict[str, Any]]:
    """The leads, as the n8n kit's generator makes them (same seed, same draws)."""
    rnd = random.Random(42 + n)
    corporate = [f"corp{i}.example.com" for i in range(200)]
    leads = []
    for i in range(n):
        domain = rnd.choice(FREE_MAIL) if rnd.random() < 0.25 else rnd.choice(corporate)
        leads.append(
            {
                "id": f"L{n}-{i:06d}",
                "email": f"person{i}@{domain}",
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "company": domain.split(".")[0].title(),
                "company_size": rnd.choice([5, 20, 50, 120, 199, 200, 350, 1000, 5000]),
                "form": rnd.choices(FORMS, [0.35, 0.2, 0.2, 0.15, 0.1])[0],
                "country": rnd.choice(["US", "GB", "DE", "FR", "IN", "BR"]),
                "created_at": f"2026-11-{1 + i % 28:02d}T10:00:00Z",
            }
        )
    return leads


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_config(directory: Path, url: str) -> None:
    directory.mkdir(parents=True)
    for name, text in CONFIG.items():
        text = text.format(url=url) if name == "sources.yaml" else text
        (directory / name).write_text(text, encoding="utf-8")
    templates = directory / "templates"
    templates.mkdir()
    for template in (ROOT / "config" / "templates").glob("*.j2"):
        shutil.copy(template, templates)


def check_sqlite(path: Path, outbox: Path, want: set[str], leads: int) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        return _check(lambda sql: db.execute(sql).fetchall(), outbox, want, leads)


def check_postgres(url: str, outbox: Path, want: set[str], leads: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as db:
        return _check(lambda sql: db.execute(sql).fetchall(), outbox, want, leads)


def _check(query: Any, outbox: Path, want: set[str], leads: int) -> dict[str, Any]:
    routed = {
        email
        for (email,) in query(
            "SELECT c.email FROM contacts c JOIN assignments a ON a.contact_id = c.id"
        )
    }
    events = dict(query("SELECT status, count(*) FROM events GROUP BY status"))
    messages = dict(query("SELECT status, count(*) FROM messages GROUP BY status"))
    emails = len(list(outbox.glob("*.eml"))) if outbox.exists() else 0
    return {
        "events": events,
        "routed": len(routed),
        "messages": messages,
        "emails_written": emails,
        "accounted": (
            events == {"processed": leads}
            and routed == want
            and emails == len(want)
            and messages == {"sent": len(want)}
        ),
    }


def run_once(args: argparse.Namespace, url: str, want: set[str], work: Path) -> dict[str, Any]:
    config_dir = work / "config"
    write_config(config_dir, url)
    outbox = work / "outbox"
    # As installed: Python caches the bytecode of Leadwerk's modules (an environment that
    # forbids it would compile them on every start).
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "LEADWERK_OUTBOX_DIR": str(outbox),
        "LEADWERK_LOG_LEVEL": os.environ.get("LEADWERK_LOG_LEVEL", "INFO"),
    }
    database = None
    if args.postgres:
        database, env["LEADWERK_DATABASE_URL"] = _postgres_database(args.postgres)
        env["LEADWERK_ACCEPT_SECRET"] = uuid.uuid4().hex  # links are signed with it
        if args.redis:
            env["LEADWERK_REDIS_URL"] = args.redis
            env["LEADWERK_REDIS_NAMESPACE"] = f"bench-{uuid.uuid4().hex[:8]}"
        env["LEADWERK_WORKER_THREADS"] = str(args.workers)
    else:
        env["LEADWERK_DATABASE_URL"] = f"sqlite:///{work / 'leadwerk.db'}"
    command = [sys.executable, "-m", "worker", "--config", str(config_dir), "run", "--once"]
    if args.verbose:
        command.append("--verbose")
    if args.tree:
        env["PYTHONPATH"] = str(args.tree)
    try:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work
        )
        out, err = process.communicate()
        wall = time.perf_counter() - start
        # communicate() reaped the process; its peak RSS is in the children's usage, which
        # only ever grows: so each run is measured in a child process of its own.
        if process.returncode != 0:
            print(err.decode()[-3000:], file=sys.stderr)
        if args.postgres:
            checked = check_postgres(env["LEADWERK_DATABASE_URL"], outbox, want, args.leads)
        else:
            checked = check_sqlite(work / "leadwerk.db", outbox, want, args.leads)
    finally:
        if database is not None:
            _drop_database(args.postgres, database)
    return {
        "exit": process.returncode,
        "wall_s": round(wall, 2),
        "stdout_lines": len(out.splitlines()),
        "stderr_lines": len(err.splitlines()),
        **checked,
    }


def measured(args: argparse.Namespace, url: str, want: set[str]) -> dict[str, Any]:
    """One run in a child process, so that its peak RSS is that of this run alone."""
    import resource

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        with tempfile.TemporaryDirectory(prefix="leadwerk-backlog-") as work:
            result = run_once(args, url, want, Path(work))
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
        result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="run --once --verbose")
    parser.add_argument("--postgres", help="a PostgreSQL URL to create a database under")
    parser.add_argument("--redis", help="a Redis URL (with --postgres)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads (with --postgres)")
    parser.add_argument(
        "--tree", type=Path, help="run Leadwerk from this source tree (a before/after series)"
    )
    args = parser.parse_args()
    leads = generate(args.leads)
    want = {lead["email"] for lead in leads if score(lead) >= 50}
    server = serve(json.dumps(leads).encode())
    url = f"http://127.0.0.1:{server.server_address[1]}/leads.json"
    try:
        runs = [measured(args, url, want) for _ in range(args.runs)]
    finally:
        server.shutdown()
    print(
        json.dumps(
            {
                "leads": args.leads,
                "mqls": len(want),
                "store": "postgresql" + (" + redis" if args.redis else "")
                if args.postgres
                else "sqlite (embedded)",
                "runs": runs,
                "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "all_accounted": all(r["accounted"] and r["exit"] == 0 for r in runs),
            }
        )
    )


if __name__ == "__main__":
    main()
