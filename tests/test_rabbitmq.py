"""RabbitMQ as the broker (``LEADWERK_BROKER_URL=amqp://...``): the web, worker and clock
processes as deployed pass a lead from a webhook to the rep's inbox once; status and /readyz
read RabbitMQ; Redis still holds the clock's lease."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path

import httpx
import pika
import pika.exceptions
import pytest
from sqlalchemy import select

from config.errors import ConfigErrors
from config.settings import Settings, load_settings
from tests.conftest import RABBITMQ_URL
from tests.process_helpers import free_port, process_env, started, web_answers
from tests.redis_namespace import own_namespace
from tests.servers.smtp import SmtpServer
from tests.source_helpers import as_body, sign_hex
from tests.test_exactly_once import leadwerk_command, staff_desk
from tests.test_status_facts import scrape
from worker.commands.status import broker_queues, collect_status, health
from worker.pipeline.actors import send_message
from worker.runtime.app import init_app
from worker.runtime.broker import setup_broker
from worker.runtime.rabbitmq import rabbitmq_connection
from worker.store.models import Assignment, Message
from worker.web.app import readiness

pytestmark = pytest.mark.rabbitmq

DEMO_SECRET = "demo-hook-secret"
DEMO_SOURCE = """
  - name: demo-requests
    kind: webhook
    secret_env: DEMO_HOOK_SECRET
    signature: {header: X-Signature-256, prefix: "sha256=", encoding: hex}
    event: {type: form, form: demo-request}
    map: {email: "$.email", first_name: "$.first_name", company: "$.company",
          title: "$.title", country: "$.country", company_size: "$.company_size"}
"""
DEMO_REQUEST = {
    "email": "eva.mueller@bigcorp.de",
    "first_name": "Eva",
    "company": "BigCorp AG",
    "title": "Head of IT",
    "country": "DE",
    "company_size": 5000,
}


def add_demo_request_hook(config_dir: Path) -> None:
    """A signed webhook for demo requests: a Head of IT at a large German firm asking for a
    demo is an MQL on the example rules."""
    with (config_dir / "sources.yaml").open("a", encoding="utf-8") as sources:
        sources.write(DEMO_SOURCE)


def test_a_webhook_becomes_one_email_to_the_routed_rep_with_rabbitmq_as_the_broker(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
) -> None:
    staff_desk(config_dir)
    add_demo_request_hook(config_dir)
    port = free_port()
    with own_namespace(redis_url) as namespace, SmtpServer() as smtp:
        env = process_env(
            config_dir,
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            broker_url=rabbitmq_url,
            smtp_url=smtp.url,
            web_port=str(port),
        )
        env["DEMO_HOOK_SECRET"] = DEMO_SECRET
        leadwerk_command(env, "migrate")
        with started(env, tmp_path, ("web",), ("worker",), ("clock",)) as processes:
            web, worker, clock = processes
            web.wait_for(web_answers(port), "answer on /healthz")
            worker.wait_for_line(" started with ")
            clock.wait_for_line("clock started")
            # Given web, worker and clock on RabbitMQ, when a demo request arrives
            body = as_body(DEMO_REQUEST)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/hooks/demo-requests",
                content=body,
                headers={"X-Signature-256": sign_hex(body, secret=DEMO_SECRET)},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            # Then the rep's e-mail arrives
            smtp.wait_for(1, timeout=60)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            codes = [process.stop() for process in processes]
        status = json.loads(leadwerk_command(env, "status", "--json", exit_code=1))
        settings = make_settings(
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            broker_url=rabbitmq_url,
        )
        app = init_app(settings)
        try:
            with app.store.session() as session:
                [assignment] = session.scalars(select(Assignment))
                [message] = session.scalars(select(Message))
        finally:
            app.close()

    # once, to the rep the lead was routed to, and marked sent
    [mail] = smtp.messages
    assert assignment.rep in {"lea", "mehmet", "sophie"}
    assert parseaddr(mail.message["To"])[1] == f"{assignment.rep}@example.com"
    assert message.status == "sent"
    assert str(mail.message["Message-ID"]) == message.message_id
    # And /readyz checked RabbitMQ and Redis; status read the queues from RabbitMQ, empty
    assert ready.json() == {"status": "ok", "store": "up", "broker": "up", "redis": "up"}
    assert status["broker"]["mode"] == "rabbitmq"
    assert {name: q["ready"] for name, q in status["broker"]["queues"].items()} == {
        "score": 0,
        "backlog": 0,
        "route": 0,
        "notify": 0,
        "nurture": 0,
    }
    assert codes == [0, 0, 0]
    for process in processes:
        assert "Traceback" not in process.output, process.output


def test_status_and_metrics_count_the_messages_waiting_in_rabbitmq_and_asking_declares_nothing(
    make_settings: Callable[..., Settings], redis_url: str, rabbitmq_url: str
) -> None:
    settings = make_settings(redis_url=redis_url, broker_url=rabbitmq_url)
    app = init_app(settings)
    try:
        # Given no process has declared Leadwerk's queues yet, status finds them empty
        before = broker_queues(app)
        assert not declared(rabbitmq_url, "notify")
        # When three e-mails are handed to the workers and none runs
        broker = setup_broker(settings)
        for message_id in (1, 2, 3):
            send_message.send(message_id)
        after = broker_queues(app)
        metrics = scrape(app)
        broker.close()
    finally:
        app.close()

    assert before["queues"]["notify"] == {"ready": 0, "delayed": 0, "dead": 0, "oldest_age_s": None}
    # Then status counts them on the notify queue, and nothing elsewhere
    assert after["mode"] == "rabbitmq"
    assert after["queues"]["notify"]["ready"] == 3
    assert sum(q["ready"] + q["delayed"] + q["dead"] for q in after["queues"].values()) == 3
    # And /metrics shows the same depth, and no age RabbitMQ cannot know
    assert metrics[("leadwerk_queue_depth", (("queue", "notify"), ("state", "ready")))] == 3
    assert not [key for key in metrics if key[0] == "leadwerk_queue_oldest_age_seconds"]


def declared(url: str, queue: str) -> bool:
    connection = rabbitmq_connection(url)
    try:
        connection.channel().queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()
    return True


def test_a_rabbitmq_that_does_not_answer_shows_in_readyz_status_and_at_start(
    config_dir: Path, make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path
) -> None:
    nowhere = f"amqp://leadwerk:s3cret@127.0.0.1:{free_port()}/%2F"
    app = init_app(make_settings(redis_url=redis_url, broker_url=nowhere))
    try:
        checks = readiness(app)
        queues = broker_queues(app)
        problems = health(app, collect_status(app))
    finally:
        app.close()
    env = process_env(config_dir, tmp_path, redis_url=redis_url, broker_url=nowhere)
    worker = subprocess.run(
        [sys.executable, "-m", "worker", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checks == {"store": True, "broker": False, "redis": True}
    assert queues["mode"] == "rabbitmq"
    assert queues["error"]
    assert problems[0].startswith("RabbitMQ does not answer: AMQPConnectionError"), problems
    # the worker refuses to start, in one line that names RabbitMQ and hides the password
    assert worker.returncode == 2
    [line] = worker.stderr.strip().splitlines()
    assert line.startswith("cannot reach RabbitMQ at amqp://leadwerk:***@127.0.0.1:"), line


def test_a_broker_url_needs_redis_and_an_amqp_scheme(config_dir: Path) -> None:
    with pytest.raises(ConfigErrors) as without_redis:
        load_settings(config_dir, env={"LEADWERK_BROKER_URL": RABBITMQ_URL})
    with pytest.raises(ConfigErrors) as wrong_scheme:
        load_settings(
            config_dir,
            env={
                "LEADWERK_REDIS_URL": "redis://127.0.0.1:6379/0",
                "LEADWERK_BROKER_URL": "http://guest:s3cret@127.0.0.1:5672/",
            },
        )

    assert without_redis.value.render() == (
        "LEADWERK_BROKER_URL: needs LEADWERK_REDIS_URL too: Redis holds the clock's lease"
    )
    assert wrong_scheme.value.render() == (
        "LEADWERK_BROKER_URL: 'http://guest:***@127.0.0.1:5672/' is not a URL Leadwerk can use; "
        "expected amqp://USER:PASSWORD@HOST:5672/VHOST or amqps://...:5671/VHOST"
    )
