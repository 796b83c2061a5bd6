"""Multi-process mode against Redis: the worker process and ``run`` as a group."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import dramatiq

from config.settings import Settings
from worker.runtime.app import App
from worker.runtime.embedded import start_worker

log = logging.getLogger("leadwerk.processes")


def run_worker(app: App, broker: dramatiq.Broker) -> int:
    """A dramatiq worker in this process until SIGTERM/SIGINT; heartbeats to the store."""
    from worker.runtime.clock import heartbeat

    worker = start_worker(app, broker)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    identity = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker %s started with %d threads", identity, app.settings.worker_threads)
    while not stop.wait(10):
        heartbeat(app, identity, "worker")
    worker.stop()
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
    children = [
        subprocess.Popen(web),
        subprocess.Popen([*exe, *config, "worker"]),
        subprocess.Popen([*exe, *config, "clock"]),
    ]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        if any(child.poll() is not None for child in children):
            log.error("a Leadwerk process exited; stopping the group")
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    return max((child.wait() or 0) for child in children)
