"""``leadwerk crm status | sync [--once]``: what waits to go to the CRM, and sending it.

The clock runs the same rounds (:func:`crm_tick`) while ``leadwerk clock`` or ``run`` is up;
``sync`` is for a CRM sync of its own, and ``sync --once`` for cron and for draining after an
outage by hand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.errors import ConnectorError
from worker.pipeline.crm import (
    SyncResult,
    poll_first_activity,
    refresh_account_owners,
    sync,
)
from worker.runtime.app import App

log = logging.getLogger("leadwerk.crm")


@dataclass
class Drained:
    """What one pass did: the rounds' totals, SLA clocks stopped, domains asked about."""

    result: SyncResult = field(default_factory=SyncResult)
    stopped_clocks: int = 0
    domains: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        line = self.result.describe()
        if self.stopped_clocks:
            line += f"; {self.stopped_clocks} SLA clock(s) stopped by a first activity"
        if self.domains:
            line += f"; account owners of {self.domains} domain(s) read"
        return line + "".join(f"; {error}" for error in self.errors)


def drain(app: App, now: datetime | None = None) -> SyncResult:
    """Rounds until nothing more is due now (or the CRM stops answering)."""
    assert app.crm is not None
    total = SyncResult()
    while True:
        result = sync(app.store, app.config, app.crm, now or datetime.now(UTC))
        total.sent += result.sent
        total.retried += result.retried
        total.dead += result.dead
        total.stopped = result.stopped
        if result.stopped or not (result.sent or result.dead):
            return total


def crm_tick(app: App, read_back: bool, now: datetime | None = None) -> Drained:
    """Send what is due; with ``read_back`` also poll the CRM's first activities (when
    crm.yaml says ``first_activity: poll``) and refresh account owners."""
    assert app.crm is not None and app.config.crm is not None
    done = Drained(result=drain(app, now))
    if not read_back:
        return done
    at = now or datetime.now(UTC)
    try:
        if app.config.crm.first_activity == "poll":
            done.stopped_clocks = poll_first_activity(app.store, app.config, app.crm, at)
        done.domains = refresh_account_owners(app.store, app.config, app.crm, at)
    except ConnectorError as exc:
        done.errors.append(str(exc))
    return done


def run_forever(app: App, every: float = 5.0) -> None:
    """``leadwerk crm sync``: a round every ``every`` seconds, reading back every
    ``poll_every``."""
    assert app.config.crm is not None
    poll_every = app.config.crm.poll_every.total_seconds()
    last_read = 0.0
    while True:
        read_back = time.monotonic() - last_read >= poll_every
        if read_back:
            last_read = time.monotonic()
        done = crm_tick(app, read_back)
        if done.result.sent or done.result.dead or done.result.stopped or done.errors:
            log.info("CRM sync: %s", done.describe())
        time.sleep(every)
