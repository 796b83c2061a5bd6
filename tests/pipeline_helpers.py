"""Helpers for pipeline tests: a running Leadwerk on the broker and store a test picks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq

from config.settings import Settings
from worker.runtime.app import App, init_app
from worker.runtime.broker import setup_broker
from worker.runtime.embedded import drain, start_worker


@dataclass
class Running:
    app: App
    broker: dramatiq.Broker
    worker: dramatiq.Worker

    def drain(self) -> None:
        drain(self.app, self.broker, self.worker)


@contextmanager
def running(settings: Settings, **parts: Any) -> Iterator[Running]:
    app = init_app(settings, **parts)
    broker = setup_broker(settings)
    if settings.redis_url:
        broker.flush_all()
    worker = start_worker(app, broker)
    try:
        yield Running(app, broker, worker)
    finally:
        worker.stop()
        broker.close()
        app.close()
