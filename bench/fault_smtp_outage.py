"""Fault run: the mail server is down for ten minutes while new leads keep coming, then back.

    python bench/fault_smtp_outage.py [--rate 2] [--before 30] [--outage 600] [--after 60]

The deployment of ``bench/speed_to_lead.py`` (a fresh PostgreSQL database, a Redis namespace,
one ``leadwerk web`` and ``--workers`` ``leadwerk worker`` processes) plus one ``leadwerk clock``,
all with the default retry settings. Signed webhooks (each an MQL routed to a rep on e-mail)
are POSTed at ``--rate`` per second throughout. The SMTP server (aiosmtpd, in a child process)
accepts mail for ``--before`` seconds, is stopped for ``--outage`` seconds (connection refused)
and started again on the same port; leads keep flowing ``--after`` seconds more, then the run
waits for the last e-mails (at most ``SETTLE_TIMEOUT``).

Prints one JSON object: leads sent and accepted; leads whose new-lead e-mail arrived and those
missing; all e-mails received (new leads, and the SLA reminders, escalations and reassignments
the example ``sla.yaml`` sends for leads nobody accepts) and duplicates among them (one
Message-ID received twice); messages in the store by purpose and status, and dead letters; the
longest wait of a lead's first e-mail after the server's return (for leads that came before
it: arrival minus return time; after it: arrival minus the webhook); and the log lines of the
Leadwerk processes by level, with the number of tracebacks among them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_to_lead import LEAD_IN_MAIL, PG_ADMIN, Deployment, _free_port, fire

SETTLE_TIMEOUT = 180  # seconds to wait for the last e-mails after the last webhook
TRACEBACK = "Traceback (most recent call last)"
MESSAGE_ID = re.compile(rb"^Message-ID: (\S+)", re.MULTILINE | re.IGNORECASE)

Receipt = tuple[int | None, bytes | None, float]  # lead number, Message-ID, when accepted


def _smtp_server(port: int, conn: Connection) -> None:
    """Accept every e-mail on ``port``; on ``stop``, send back a :data:`Receipt` of each
    accepted e-mail and exit (the port refuses connections from then on)."""
    from aiosmtpd.controller import Controller

    receipts: list[Receipt] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            content = envelope.original_content or b""
            lead = LEAD_IN_MAIL.search(content)
            message_id = MESSAGE_ID.search(content)
            receipts.append(
                (
                    int(lead.group(1)) if lead else None,
                    message_id.group(1) if message_id else None,
                    time.monotonic(),
                )
            )
            return "250 2.0.0 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    conn.send("up")
    while conn.recv() == "leads":
        conn.send({number for number, _, _ in receipts if number is not None})
    conn.send(receipts)
    controller.stop()


class SmtpProcess:
    """The mail server in a child process: started, stopped and started again on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.receipts: list[Receipt] = []
        self._conn: Connection | None = None
        self._process: multiprocessing.Process | None = None

    def start(self) -> None:
        ours, theirs = multiprocessing.Pipe()
        self._process = multiprocessing.Process(
            target=_smtp_server, args=(self.port, theirs), daemon=True
        )
        self._process.start()
        ours.recv()
        self._conn = ours

    def stop(self) -> None:
        if self._conn is None or self._process is None:
            return
        self._conn.send("stop")
        self.receipts += self._conn.recv()
        self._process.join(timeout=10)
        self._conn = self._process = None

    def leads(self) -> set[int]:
        """The leads an e-mail came for so far (their first is the new-lead e-mail)."""
        leads = {number for number, _, _ in self.receipts if number is not None}
        if self._conn is not None:
            self._conn.send("leads")
            leads |= self._conn.recv()
        return leads


class LoggedDeployment(Deployment):
    """The bench deployment with a clock, each process logging JSON lines to a file."""

    def __init__(self, workdir: Path, smtp_port: int, workers: int, threads: int) -> None:
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True)
        super().__init__(workdir, smtp_port, workers, threads)
        self.clock = self._start("clock")

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}-{len(list(self.logs.iterdir()))}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            cwd=Path(__file__).resolve().parent.parent,
            env={**self.env, "LEADWERK_LOG_FORMAT": "json"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def store_counts(self) -> dict[str, Any]:
        import psycopg

        url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.database}"
        with psycopg.connect(url) as conn:
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            by_purpose = conn.execute(
                "SELECT purpose || ' ' || status, count(*) FROM messages GROUP BY 1 ORDER BY 1"
            ).fetchall()
        return {"dead_letters": dead[0] if dead else 0, "messages": dict(by_purpose)}

    def stop(self) -> None:
        self.clock.terminate()
        try:
            self.clock.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.clock.kill()
        super().stop()

    def log_lines(self) -> dict[str, int]:
        """Log lines of all processes by level, and tracebacks among them."""
        levels: Counter[str] = Counter()
        tracebacks = 0
        for path in self.logs.iterdir():
            for line in path.read_text(errors="replace").splitlines():
                tracebacks += line.count(TRACEBACK)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    levels[str(record.get("level", "?"))] += 1
        return {"tracebacks": tracebacks, **dict(sorted(levels.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2.0, help="leads per second")
    parser.add_argument("--before", type=float, default=30.0, help="seconds before the outage")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the server is down")
    parser.add_argument("--after", type=float, default=60.0, help="seconds of leads after it")
    parser.add_argument("--workers", type=int, default=2, help="leadwerk worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    args = parser.parse_args()

    load_before = [round(x, 1) for x in os.getloadavg()]
    smtp = SmtpProcess(_free_port())
    smtp.start()
    with tempfile.TemporaryDirectory(prefix="leadwerk-fault-") as workdir:
        deployment = LoggedDeployment(Path(workdir), smtp.port, args.workers, args.threads)
        try:
            fired: dict[str, Any] = {}
            duration = args.before + args.outage + args.after

            def load() -> None:
                fired["sent"], fired["statuses"] = fire(deployment.url, args.rate, duration, 0)

            loader = threading.Thread(target=load)
            started = time.monotonic()
            loader.start()
            time.sleep(args.before)
            smtp.stop()
            went_down = time.monotonic()
            time.sleep(max(0.0, started + args.before + args.outage - time.monotonic()))
            smtp.start()
            came_back = time.monotonic()
            loader.join()
            accepted = fired["statuses"].get(202, 0)
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while len(smtp.leads()) < accepted and time.monotonic() < deadline:
                time.sleep(1)
            time.sleep(5)  # a duplicate would come now
            smtp.stop()
            store = deployment.store_counts()
        finally:
            smtp.stop()
            deployment.stop()
        logs = deployment.log_lines()

    sent: dict[int, float] = fired["sent"]
    per_message_id = Counter(message_id for _, message_id, _ in smtp.receipts)
    first_arrival: dict[int, float] = {}
    for number, _, at in smtp.receipts:
        if number is not None:
            first_arrival.setdefault(number, at)
    waits = [at - max(came_back, sent[n]) for n, at in first_arrival.items() if n in sent]
    waiting_at_return = [
        n
        for n, at in first_arrival.items()
        if n in sent and sent[n] < came_back and at >= came_back
    ]
    print(
        json.dumps(
            {
                "rate_per_s": args.rate,
                "outage_s": round(came_back - went_down, 1),
                "leads_sent": len(sent),
                "statuses": {str(k): v for k, v in sorted(fired["statuses"].items(), key=str)},
                "leads_emailed": len(first_arrival),
                "missing": len(set(sent) - set(first_arrival)),
                "emails_received": len(smtp.receipts),
                "duplicates": sum(count - 1 for count in per_message_id.values() if count > 1),
                "delivered_after_return": len(waiting_at_return),
                "max_delay_after_return_s": round(max(waits), 1) if waits else None,
                "store": store,
                "log_lines": logs,
                # Everything shares the machine's cores with whatever else runs on it.
                "load_average_before_after": [load_before, [round(x, 1) for x in os.getloadavg()]],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
