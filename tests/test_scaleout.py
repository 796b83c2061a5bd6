"""More workers on one backlog: two ``leadwerk worker`` processes against one Redis and one
PostgreSQL (or RabbitMQ) share the work, handed to them in batches, and no lead is scored,
routed or mailed twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dramatiq
import pytest
import redis
from sqlalchemy import func, select, text

from config.settings import Settings
from tests.lead_helpers import FAIR
from tests.process_helpers import process_env, started
from tests.redis_namespace import own_namespace
from tests.servers.smtp import SmtpServer
from tests.test_exactly_once import leadwerk_command, staff_desk, write_fair_export
from tests.test_shutdown import STOPPED
from worker.pipeline.sweep import batches
from worker.runtime.app import init_app
from worker.store.models import Assignment, Contact, Event, Message, Score

LEADS = 300


def migrated(
    config_dir: Path,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    namespace: str,
    smtp: SmtpServer,
    **settings: str,
) -> dict[str, str]:
    """The processes' environment for a deployment on PostgreSQL and Redis that mails through
    ``smtp``, its store migrated as the Procfile's release step does."""
    env = process_env(
        config_dir,
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        smtp_url=smtp.url,
        **settings,
    )
    leadwerk_command(env, "migrate")
    return env


@pytest.mark.parametrize("broker", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_two_workers_on_one_backlog_process_every_lead_once_and_send_every_email_once(
    broker: str,
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    queues = {"broker_url": request.getfixturevalue("rabbitmq_url")} if broker == "rabbitmq" else {}
    staff_desk(config_dir)
    export = write_fair_export(tmp_path / "messe.csv", LEADS)
    with own_namespace(redis_url) as namespace, SmtpServer() as smtp:
        env = migrated(config_dir, tmp_path, postgres_url, redis_url, namespace, smtp, **queues)
        with started(env, tmp_path, ("worker",), ("worker",)) as workers:
            for worker in workers:
                worker.wait_for_line(" started with ")
            # Given two workers waiting, when 300 hot leads from the fair arrive at once
            leadwerk_command(env, "import", str(export), "--source", FAIR)
            smtp.wait_for(LEADS, timeout=240)
            codes = [worker.stop() for worker in workers]
        app = init_app(make_settings(database_url=postgres_url))
        try:
            with app.store.session() as session:
                contacts = session.scalar(select(func.count()).select_from(Contact))
                pending = session.scalar(
                    select(func.count()).select_from(Event).where(Event.status == "pending")
                )
                scores = Counter(session.scalars(select(Score.contact_id)))
                routed = Counter(session.scalars(select(Assignment.rep)))
                sent = Counter(session.scalars(select(Message.status)))
        finally:
            app.close()

    # Then both workers took a share of the work and stopped cleanly
    assert codes == [0, 0]
    finished = []
    for worker in workers:
        stopped = STOPPED.search(worker.output)
        assert stopped, worker.output
        finished.append(int(stopped["finished"]))
        assert "Traceback" not in worker.output, worker.output
    assert all(count > 0 for count in finished), finished
    # in batches: 16 messages of 19 leads, not 300 of one
    assert sum(finished) == len(batches(range(LEADS))) == 16
    # And every lead was scored once, and routed once: round robin dealt 100 to each rep
    assert contacts == LEADS
    assert pending == 0
    assert len(scores) == LEADS
    assert set(scores.values()) == {1}
    assert routed == {"lea": 100, "mehmet": 100, "sophie": 100}
    # And every e-mail was sent once, and received once
    assert sent == {"sent": LEADS}
    received = Counter(str(mail.message["Message-ID"]) for mail in smtp.messages)
    assert len(received) == LEADS
    assert set(received.values()) == {1}


def test_an_import_hands_its_leads_to_the_workers_in_batches(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    export = write_fair_export(tmp_path / "messe.csv", 1200)
    with own_namespace(redis_url) as namespace:
        env = process_env(
            config_dir,
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
        )
        # Given no worker running, when 1,200 leads are imported
        leadwerk_command(env, "import", str(export), "--source", FAIR)
        client = redis.Redis.from_url(redis_url)
        queue = f"leadwerk-{namespace}:backlog"
        waiting = [
            dramatiq.Message.decode(client.hget(f"{queue}.msgs", key))
            for key in client.lrange(queue, 0, -1)
        ]
        new_leads_line = client.llen(f"leadwerk-{namespace}:score")
        client.close()
    app = init_app(make_settings(database_url=postgres_url))
    try:
        with app.store.session() as session:
            events = sorted(session.scalars(select(Event.id)))
            # (PostgreSQL was told to look at the grown tables: its planner knows their size)
            sizes = dict(
                session.execute(
                    text(
                        "SELECT relname, reltuples FROM pg_class "
                        "WHERE relname IN ('contacts', 'events')"
                    )
                ).all()
            )
    finally:
        app.close()

    # Then the backlog queue holds 16 batches of 75 leads, every lead in one of them once,
    # and a new lead's queue is clear of them
    assert {message.actor_name for message in waiting} == {"score_backlog"}
    assert new_leads_line == 0
    assert [len(message.args[0]) for message in waiting] == [75] * 16
    assert sorted(i for message in waiting for i in message.args[0]) == events
    assert sizes == {"contacts": 1200, "events": 1200}


def test_a_new_lead_is_not_kept_waiting_behind_a_backlog(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """A backlog's batches wait on a queue of their own, behind new leads: a lead that
    arrives while a fair's import is being worked off is routed before most of the fair."""
    staff_desk(config_dir)
    export = write_fair_export(tmp_path / "messe.csv", 1500)
    late = write_fair_export(tmp_path / "late.csv", 1)
    late.write_text(late.read_text().replace("lead0@firm0.de", "late@latecomer.de"))
    with own_namespace(redis_url) as namespace, SmtpServer() as smtp:
        env = migrated(config_dir, tmp_path, postgres_url, redis_url, namespace, smtp)
        app = init_app(make_settings(database_url=postgres_url))
        try:
            with started(env, tmp_path, ("worker",)) as (worker,):
                worker.wait_for_line(" started with ")
                # Given a worker busy with a fair's 1,500 leads, in batches
                leadwerk_command(env, "import", str(export), "--source", FAIR)
                # When one more lead arrives
                leadwerk_command(env, "import", str(late), "--source", FAIR)
                # Then it is routed while most of the fair still waits to be scored
                latecomer = select(Assignment.id).join(Contact, Contact.id == Assignment.contact_id)
                latecomer = latecomer.where(Contact.email == "late@latecomer.de")
                deadline = time.monotonic() + 60
                with app.store.session() as session:
                    while session.scalar(latecomer) is None and time.monotonic() < deadline:
                        session.commit()
                        time.sleep(0.05)
                    pending = session.scalar(
                        select(func.count()).select_from(Event).where(Event.status == "pending")
                    )
                    assert session.scalar(latecomer) is not None
                assert pending > 750, pending  # more than half of the fair
                # And the fair is worked off all the same
                smtp.wait_for(1501, timeout=240)
        finally:
            app.close()
