"""A rep hears about a lead once, however often the work is delivered, and even when a worker
dies mid-batch: the one duplicate the outbox allows (the server said OK, the worker died before
marking it sent) is counted, and nothing else is ever sent twice."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row, take_in
from tests.pipeline_helpers import running
from tests.redis_namespace import own_namespace
from tests.servers.smtp import SmtpServer
from tests.test_walking_skeleton import HEADER
from worker.pipeline import notify
from worker.pipeline.actors import send_message
from worker.pipeline.route import route_contact
from worker.pipeline.sweep import enqueue, find_pending
from worker.runtime.app import init_app
from worker.runtime.broker import QUEUES, setup_broker
from worker.store.models import Assignment, Message

ROOT = Path(__file__).resolve().parent.parent

DESK = """
teams:
  desk: {manager: anna, members: [lea, mehmet, sophie]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  lea: {name: Lea Hoffmann, email: lea@example.com}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
  sophie: {name: Sophie Becker, email: sophie@example.com}
"""
DESK_ROUTING = """
rules:
  - name: the desk
    team: desk
    strategy: round_robin
fallback: {notify: [anna]}
"""


def staff_desk(config_dir: Path) -> None:
    """Three reps on e-mail, open around the clock, so no lead waits for working hours."""
    (config_dir / "team.yaml").write_text(DESK, encoding="utf-8")
    (config_dir / "routing.yaml").write_text(DESK_ROUTING, encoding="utf-8")


def a_notification_waiting_in_the_outbox(app: Any) -> int:
    """A hot lead from the fair, scored and routed; its e-mail written to the outbox, unsent."""
    now = datetime.now(UTC)
    row = fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT")
    [contact_id] = take_in(app.store, app.config, [row], now)
    [message_id] = route_contact(app.store, app.config, contact_id, now)
    return message_id


class CountDeliveries(Middleware):
    """Counts how often the worker ran each actor: proof that a message was delivered."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.Message, *, result=None, exception=None
    ) -> None:
        self.runs[message.actor_name] += 1


def test_the_same_send_message_delivered_twice_sends_one_email(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    staff_desk(config_dir)
    deliveries = CountDeliveries()
    with SmtpServer() as smtp, running(make_settings(smtp_url=smtp.url)) as leadwerk:
        leadwerk.broker.add_middleware(deliveries)
        # Given a notification waiting in the outbox
        message_id = a_notification_waiting_in_the_outbox(leadwerk.app)
        # When the very same send_message message is delivered twice
        message = send_message.message(message_id)
        leadwerk.broker.enqueue(message)
        leadwerk.broker.enqueue(message)
        for queue in QUEUES:
            leadwerk.broker.join(queue, fail_fast=False)  # type: ignore[call-arg]
        leadwerk.worker.join()

    # Then the worker ran it twice, and the rep got one e-mail
    assert deliveries.runs["send_message"] == 2
    assert len(smtp.messages) == 1


def test_parallel_deliveries_of_one_message_send_one_email(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    staff_desk(config_dir)
    with SmtpServer() as smtp:
        app = init_app(make_settings(smtp_url=smtp.url, database_url=database_url))
        try:
            # Given a notification waiting in the outbox
            message_id = a_notification_waiting_in_the_outbox(app)
            # When eight threads deliver it at the same moment
            start = threading.Barrier(8)

            def deliver(_: int) -> str:
                start.wait()
                return notify.send_message(app, message_id, lambda: datetime.now(UTC)).status

            with ThreadPoolExecutor(8) as pool:
                outcomes = sorted(pool.map(deliver, range(8)))
        finally:
            app.close()

    # Then one of them sent it and the others found it taken
    assert outcomes == ["sent"] + ["skipped"] * 7
    assert len(smtp.messages) == 1


# --- a worker killed mid-batch ------------------------------------------------------------

LEADS = 50
KILL_AT = 5


class KillingSmtpServer(SmtpServer):
    """Accepts the ``kill_at``-th e-mail, then kills the sending worker before it hears the
    server's OK: the documented gap, at a moment the test chooses."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.kill_at = kill_at
        self.victim: subprocess.Popen[bytes] | None = None

    def _accept(self, server: Any, session: Any, envelope: Any) -> str:
        reply = super()._accept(server, session, envelope)
        if self.victim is not None and len(self.messages) == self.kill_at:
            self.victim.send_signal(signal.SIGKILL)
            self.victim.wait()
        return reply


def write_fair_export(path: Path, count: int) -> Path:
    """``count`` hot leads: Heads of Sales at mid-sized German firms (score 85, MQLs)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";")
    writer.writerow(HEADER)
    for i in range(count):
        lead = [f"lead{i}@firm{i}.de", "", f"Lead {i}", f"Firm {i}", "Head of Sales"]
        writer.writerow([*lead, "", "DE", 500, "hot", ""])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def leadwerk_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def leadwerk_command(env: dict[str, str], *args: str, exit_code: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == exit_code, done.stderr
    return done.stdout


def test_a_worker_killed_mid_batch_leaves_every_lead_notified_and_counts_each_duplicate(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    staff_desk(config_dir)
    export = write_fair_export(tmp_path / "messe.csv", LEADS)
    with own_namespace(redis_url) as namespace, KillingSmtpServer(kill_at=KILL_AT) as smtp:
        settings = make_settings(
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            smtp_url=smtp.url,
            send_lease=2,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
        env.update(
            LEADWERK_CONFIG_DIR=str(config_dir),
            LEADWERK_DATABASE_URL=settings.database_url,
            LEADWERK_REDIS_URL=redis_url,
            LEADWERK_REDIS_NAMESPACE=settings.redis_namespace,
            LEADWERK_SMTP_URL=smtp.url,
            LEADWERK_SEND_LEASE="2",
            LEADWERK_LOG_LEVEL="WARNING",
            LEADWERK_ACCEPT_SECRET="accept-links-secret-for-tests",
        )
        # Given 50 hot leads imported from the fair, queued on Redis
        leadwerk_command(env, "import", str(export), "--source", FAIR)
        # When a worker (one thread: one message in flight) is killed as the 5th e-mail
        # arrives, before it hears the server's OK
        first = leadwerk_process({**env, "LEADWERK_WORKER_THREADS": "1"}, "worker")
        smtp.victim = first
        try:
            smtp.wait_for(KILL_AT, timeout=30)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
        # And a new worker starts while the clock's sweep runs
        second = leadwerk_process(env, "worker")
        app = init_app(settings)
        setup_broker(settings)
        try:
            deadline = time.monotonic() + 40
            while not everyone_notified(app) and time.monotonic() < deadline:
                pending = find_pending(
                    app.store,
                    datetime.now(UTC),
                    older_than=timedelta(seconds=1),
                    send_lease=timedelta(seconds=settings.send_lease),
                )
                enqueue(pending)
                time.sleep(0.5)
            with app.store.session() as session:
                stored = {m.message_id: m for m in session.scalars(select(Message))}
        finally:
            second.terminate()
            second.wait(timeout=15)
            app.close()
        # (with no worker and no clock running any more, status reports unhealthy: exit 1)
        status = json.loads(leadwerk_command(env, "status", "--json", exit_code=1))

    # Then every lead was notified: one message per lead, sent, and received
    received = Counter(str(mail.message["Message-ID"]) for mail in smtp.messages)
    assert len(stored) == LEADS
    assert all(message.status == "sent" for message in stored.values())
    assert set(received) == set(stored)
    # And the only e-mail received twice is the one in the gap, resent and counted
    duplicates = {message_id: n - 1 for message_id, n in received.items() if n > 1}
    assert len(duplicates) == 1
    assert all(stored[message_id].resent_after_crash == 1 for message_id in duplicates)
    assert sum(duplicates.values()) == status["messages_resent_after_crash"] == 1
    assert status["messages"]["sent"] == LEADS


def everyone_notified(app: Any) -> bool:
    with app.store.session() as session:
        assignments = list(session.scalars(select(Assignment)))
    return len(assignments) == LEADS and all(a.notified_at is not None for a in assignments)
