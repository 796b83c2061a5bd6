"""Benchmark: 1,000 MQLs synced into a local BottleCRM, against a bare httpx loop.

    python bench/bench_crm.py [--leads 1000] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Starts a real BottleCRM (tests/servers/bottlecrm.py: its cached virtualenv and database, an
organisation of its own), then measures in the same run:

* ``leadwerk``: ``leads`` new MQLs waiting in the CRM outbox (as routing's hand-over writes
  them, each with its rep and stage) drained by ``worker.commands.crmsync.drain``;
* ``leadwerk_again``: the same leads queued and drained once more (an import run twice): every
  lead exists, so BottleCRM refuses the create and the upsert finds and updates it instead;
* ``bare_httpx``: one ``POST /api/leads/`` per lead from a plain ``httpx.Client`` loop, with
  the same bodies, nothing else (no owner lookup, no outbox, no retries).

Prints one JSON object: seconds, leads/s and HTTP requests per lead of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from connectors.crm import build_crm  # noqa: E402
from connectors.crm.base import IN_LINE_RETRY  # noqa: E402
from connectors.http import make_client  # noqa: E402
from tests.servers.bottlecrm import BottleCrm  # noqa: E402
from worker.commands.crmsync import drain  # noqa: E402
from worker.pipeline.crm import change_row  # noqa: E402
from worker.runtime.app import init_app  # noqa: E402
from worker.store.models import CRM_CHANGES  # noqa: E402

TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas]}
  inside-sales: {manager: anna, members: [anna]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com}
"""


def queue(app: Any, emails: list[str]) -> None:
    now = datetime.now(UTC)
    rows = [
        change_row(
            None,
            email,
            "upsert",
            {
                "fields": {"first_name": "Eva", "company": "Bigcorp AG", "score": 82.0},
                "rep": "anna" if i % 2 else "jonas",
                "stage": "mql",
            },
            now,
        )
        for i, email in enumerate(emails)
    ]
    with app.store.transaction() as connection:
        connection.execute(CRM_CHANGES.insert(), rows)


def timed_drain(app: Any, counter: list[int], leads: int) -> dict[str, Any]:
    counter[0] = 0
    start = time.perf_counter()
    result = drain(app)
    seconds = time.perf_counter() - start
    assert result.sent == leads and result.dead == 0, result.describe()
    return _figures(seconds, counter[0], leads)


def _figures(seconds: float, requests: int, leads: int) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "leads_per_s": round(leads / seconds, 1),
        "requests": requests,
        "requests_per_lead": round(requests / leads, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    crm = BottleCrm.start(args.postgres)
    workdir = Path(tempfile.mkdtemp(prefix="leadwerk-bench-crm-"))
    try:
        config_dir = workdir / "config"
        shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
        (config_dir / "team.yaml").write_text(TEAM, encoding="utf-8")
        first, second = crm.users.values()
        (config_dir / "crm.yaml").write_text(
            "crm:\n  kind: bottlecrm\n"
            f"  base_url: {crm.base_url}\n  token_env: BOTTLECRM_TOKEN\n"
            f"  owners: {{anna: '{first}', jonas: '{second}'}}\n",
            encoding="utf-8",
        )
        env = {"BOTTLECRM_TOKEN": crm.token}
        os.environ.update(env)
        settings = load_settings(
            config_dir,
            env={"PATH": os.environ["PATH"]},
            database_url=f"sqlite:///{workdir / 'leadwerk.db'}",
            outbox_dir=workdir / "outbox",
        )
        app = init_app(settings)
        counter = [0]

        def count(request: httpx.Request) -> None:
            counter[0] += 1

        client = make_client()
        client.event_hooks["request"].append(count)
        assert app.config.crm is not None
        app.crm = build_crm(app.config.crm, env, client=client, retry=IN_LINE_RETRY)

        app.crm.find_user("warm-up@example.com")  # both sides meet a warm server
        run = uuid.uuid4().hex[:8]
        emails = [f"lead{i}.{run}@bench-{i % 97}.example" for i in range(args.leads)]
        queue(app, emails)
        first_sync = timed_drain(app, counter, args.leads)
        queue(app, emails)
        again = timed_drain(app, counter, args.leads)

        bare_emails = [f"bare{i}.{run}@bench-{i % 97}.example" for i in range(args.leads)]
        headers = {"Authorization": f"Bearer {crm.token}"}
        with httpx.Client(base_url=crm.base_url, headers=headers, timeout=30) as bare:
            start = time.perf_counter()
            for i, email in enumerate(bare_emails):
                body = {
                    "email": email,
                    "first_name": "Eva",
                    "company_name": "Bigcorp AG",
                    "description": "82.0",
                    "assigned_to": [first if i % 2 else second],
                    "status": "assigned",
                }
                bare.post("/api/leads/", json=body).raise_for_status()
            bare_seconds = time.perf_counter() - start
        app.close()
        print(
            json.dumps(
                {
                    "leads": args.leads,
                    "crm": "bottlecrm (gunicorn, 2 workers x 4 threads, PostgreSQL)",
                    "leadwerk": first_sync,
                    "leadwerk_again": again,
                    "bare_httpx": _figures(bare_seconds, args.leads, args.leads),
                    "leadwerk_vs_bare": round(
                        first_sync["leads_per_s"] / (args.leads / bare_seconds), 2
                    ),
                },
                indent=2,
            )
        )
    finally:
        crm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
