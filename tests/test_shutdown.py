"""Stopping Leadwerk as a platform does (SIGTERM): every process says it stopped and exits 0,
and work in a stopping worker's hands is finished, or handed back to the queue for another
worker; no lead is lost and no e-mail is sent twice."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker

from tests.lead_helpers import FAIR
from tests.process_helpers import free_port, process_env, started, web_answers
from tests.redis_namespace import own_namespace
from tests.servers.smtp import SmtpServer
from tests.test_exactly_once import leadwerk_command, staff_desk, write_fair_export
from worker.runtime.processes import Tally

LEADS = 6
STOPPED = re.compile(
    r"worker stopped: SIGTERM, (?P<finished>\d+) messages finished, "
    r"(?P<returned>\d+) returned to the queue"
)


class HoldingSmtpServer(SmtpServer):
    """Holds the first e-mail's DATA until released: the sending worker is mid-message."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    def _accept(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.holding.is_set():
            self.holding.set()
            self.release.wait(timeout=60)
        return super()._accept(server, session, envelope)


def test_web_worker_and_clock_each_say_they_stopped_on_sigterm_and_exit_0(
    config_dir: Path, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with own_namespace(redis_url) as namespace:
        env = process_env(
            config_dir,
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            web_port=str(port),
        )
        with started(env, tmp_path, ("web",), ("worker",), ("clock",)) as processes:
            web, worker, clock = processes
            web.wait_for(web_answers(port), "answer on /healthz")
            worker.wait_for_line(" started with ")
            clock.wait_for_line("clock started")
            codes = [process.stop() for process in processes]
    assert codes == [0, 0, 0]
    assert "web stopped: SIGTERM" in web.output
    assert STOPPED.search(worker.output), worker.output
    assert "clock stopped: SIGTERM" in clock.output
    for process in processes:
        assert "Traceback" not in process.output, process.output


def test_leadwerk_run_in_one_process_says_it_stopped_on_sigterm_and_exits_0(
    config_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = process_env(
        config_dir, tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}", web_port=str(port)
    )
    with started(env, tmp_path, ("run",)) as [run]:
        run.wait_for(web_answers(port), "answer on /healthz")
        code = run.stop()
    assert code == 0
    assert re.search(r"leadwerk run stopped: SIGTERM, \d+ messages finished", run.output)
    assert "Traceback" not in run.output, run.output


def test_a_worker_stopped_mid_email_sends_it_and_another_worker_takes_over_the_rest(
    config_dir: Path, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    staff_desk(config_dir)
    export = write_fair_export(tmp_path / "messe.csv", LEADS)
    with own_namespace(redis_url) as namespace, HoldingSmtpServer() as smtp:
        env = process_env(
            config_dir,
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            smtp_url=smtp.url,
        )
        # Given six hot leads from the fair, queued on Redis
        leadwerk_command(env, "import", str(export), "--source", FAIR)
        with started({**env, "LEADWERK_WORKER_THREADS": "1"}, tmp_path, ("worker",)) as [first]:
            # When the worker is stopped while the SMTP server has its first e-mail in hand
            assert smtp.holding.wait(timeout=60), first.output
            first.popen.send_signal(signal.SIGTERM)
            first.wait_for_line("worker stopping: SIGTERM")
            smtp.release.set()
            code = first.stop()
        # And a second worker starts
        with started(env, tmp_path, ("worker",)) as [second]:
            smtp.wait_for(LEADS, timeout=60)
            second.stop()

    # Then the first worker finished the e-mail in its hands, said so, and exited cleanly
    assert code == 0
    stopped = STOPPED.search(first.output)
    assert stopped, first.output
    assert int(stopped["finished"]) >= 1
    assert "Traceback" not in first.output, first.output
    # And every lead's e-mail arrived exactly once
    ids = [str(mail.message["Message-ID"]) for mail in smtp.messages]
    assert len(ids) == len(set(ids)) == LEADS


def test_a_stopping_worker_finishes_the_message_in_hand_and_hands_back_what_it_only_fetched(
    redis_url: str,
) -> None:
    with own_namespace(redis_url) as namespace:
        broker = RedisBroker(url=redis_url, namespace=f"leadwerk-{namespace}")
        in_hand, release = threading.Event(), threading.Event()

        @dramatiq.actor(broker=broker, queue_name="held", max_retries=0)
        def hold(n: int) -> None:
            in_hand.set()
            release.wait(timeout=30)

        # Given five messages and a worker with one thread busy with the first of them
        for n in range(5):
            hold.send(n)
        tally = Tally()
        broker.add_middleware(tally)
        worker = Worker(broker, worker_threads=1, worker_timeout=100)
        worker.start()
        tally.count_returns(worker)
        assert in_hand.wait(timeout=30)
        # When the worker is asked to stop, and only then the message in hand completes
        stopping = threading.Thread(target=worker.stop)
        stopping.start()
        while any(thread.running for thread in worker.workers):
            stopping.join(timeout=0.05)
        release.set()
        stopping.join(timeout=30)
        back_on_the_queue = broker.client.llen(f"leadwerk-{namespace}:held")
        broker.close()

    # Then it finished the one in hand, handed back what it had fetched, and lost nothing
    assert tally.finished == 1
    assert tally.returned >= 1
    assert back_on_the_queue == 4
