"""The long-running processes: how they start, say they are alive, and stop.

On SIGTERM (what a Procfile platform sends before it stops a process) or SIGINT (Ctrl-C) a
process finishes the work in its hands, hands back what it had only fetched, says so in one
log line and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq import Middleware, Worker

from config.loader import Config
from config.settings import Settings
from worker.runtime.app import App
from worker.runtime.embedded import start_worker

log = logging.getLogger("leadwerk.processes")

# Seconds between a process's heartbeats; ``leadwerk status`` counts a process as alive
# while its last heartbeat is younger than HEARTBEAT_LIVE_S.
HEARTBEAT_S = 5.0
HEARTBEAT_LIVE_S = 30.0


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class StopSignal:
    """SIGTERM and SIGINT ask the process to stop; which one arrived is remembered for the
    last log line. Installed in the main thread, before anything else takes the signals:
    uvicorn hands a signal it caught on to the handler it found, this one."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._event = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.name = signal.Signals(signum).name
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def wait_forever(self) -> None:
        # In short waits, so that the main thread runs the handler soon after the signal.
        while not self._event.wait(1.0):
            pass


class Tally(Middleware):
    """Counts the messages this process finished (acknowledged, done or failed for good)
    and those it handed back to the broker unprocessed when it stopped."""

    def __init__(self) -> None:
        self.finished = 0
        self.returned = 0
        self._lock = threading.Lock()

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        with self._lock:
            self.finished += 1

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        with self._lock:
            self.finished += 1

    def count_returns(self, worker: Worker) -> None:
        """dramatiq's ``Worker.stop`` gives the messages it fetched but did not start back to
        the broker through each consumer thread's ``requeue_messages``: count them there."""
        for consumer in worker.consumers.values():
            requeue = consumer.requeue_messages

            def counted(messages: Iterable[Any], requeue: Any = requeue) -> None:
                messages = list(messages)
                with self._lock:
                    self.returned += len(messages)
                requeue(messages)

            consumer.requeue_messages = counted  # type: ignore[method-assign]

    def summary(self) -> str:
        return f"{self.finished} messages finished, {self.returned} returned to the queue"


def counted_worker(app: App, broker: dramatiq.Broker) -> tuple[Worker, Tally]:
    """The process's dramatiq worker, started, with its tally."""
    tally = Tally()
    broker.add_middleware(tally)
    worker = start_worker(app, broker)
    tally.count_returns(worker)
    return worker, tally


class Heartbeats:
    """A daemon thread that says "this process is alive" in the store every few seconds,
    and takes that back when the process stops cleanly."""

    def __init__(self, app: App, kind: str, identity: str | None = None) -> None:
        self.app = app
        self.kind = kind
        self.identity = identity or process_identity()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"leadwerk-{kind}-heartbeat")
        self._thread.daemon = True

    def start(self) -> Heartbeats:
        self._thread.start()
        return self

    def _beat(self) -> None:
        from worker.runtime.clock import heartbeat

        while True:
            try:
                heartbeat(self.app, self.identity, self.kind)
            except Exception as exc:  # a store away for a moment must not end the process
                log.warning("%s heartbeat not written: %s", self.kind, type(exc).__name__)
            if self._stop.wait(HEARTBEAT_S):
                return

    def stop(self) -> None:
        from worker.runtime.clock import forget_heartbeat

        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget_heartbeat(self.app, self.identity)
        except Exception as exc:
            log.warning("%s heartbeat not removed: %s", self.kind, type(exc).__name__)


def record_reload(
    app: App, outcome: str, kept: Config, errors: int = 0, first_error: str | None = None
) -> None:
    """A rule change this process took in or refused, where ``leadwerk status`` and
    ``/metrics`` read it (a refusal otherwise shows only in this process's log)."""
    from worker.store.models import ConfigReload

    try:
        with app.store.session() as session:
            session.add(
                ConfigReload(
                    at=datetime.now(UTC),
                    process=process_identity(),
                    outcome=outcome,
                    rules_version=str(kept.ruleset.version),
                    rules_hash=kept.hash,
                    errors=errors,
                    first_error=first_error,
                )
            )
    except Exception as exc:  # the log line still says it
        log.warning("config %s, but not recorded in the store: %s", outcome, type(exc).__name__)


def run_worker(app: App, broker: dramatiq.Broker) -> int:
    """A dramatiq worker in this process until SIGTERM/SIGINT; heartbeats to the store."""
    stop = StopSignal()
    worker, tally = counted_worker(app, broker)
    beats = Heartbeats(app, "worker").start()
    log.info("worker %s started with %d threads", beats.identity, app.settings.worker_threads)
    stop.wait_forever()
    log.info("worker stopping: %s, finishing the work in hand", stop.name)
    worker.stop()
    beats.stop()
    log.info("worker stopped: %s, %s", stop.name, tally.summary())
    return 0


def run_group(settings: Settings, host: str | None, port: int | None) -> int:
    """``leadwerk run`` with Redis: web, worker and clock as child processes."""
    exe = [sys.executable, "-m", "worker"]
    config = ["--config", str(settings.config_dir)]
    web = [*exe, *config, "web"]
    if host:
        web += ["--host", host]
    if port:
        web += ["--port", str(port)]
    stop = StopSignal()
    children = [
        subprocess.Popen(web),
        subprocess.Popen([*exe, *config, "worker"]),
        subprocess.Popen([*exe, *config, "clock"]),
    ]
    while not stop.wait(1):
        if any(child.poll() is not None for child in children):
            log.error("a Leadwerk process exited; stopping the group")
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    codes = [child.wait() for child in children]
    log.info(
        "leadwerk run stopped: %s; web, worker and clock exited with %s",
        stop.name or "a process exited",
        ", ".join(map(str, codes)),
    )
    return max(abs(code) for code in codes)
