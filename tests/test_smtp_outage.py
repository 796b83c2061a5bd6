"""A mail server outage drains by itself: while it is down, new leads keep coming and their
e-mails wait in the outbox; when it is back, each is delivered once, within a minute, and none
is dead-lettered. The outage is compressed (20 s, retries capped at 3 s); the real ten minutes
run in ``bench/fault_smtp_outage.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row
from tests.pipeline_helpers import Running, running
from tests.servers.smtp import SmtpServer
from tests.test_notify_pipeline import leadwerk_settings, staff_desk  # noqa: F401
from worker.pipeline.actors import score_lead
from worker.pipeline.ingest import ingest_records
from worker.store.models import DeadLetter, Message

LEAD_EVERY_S = 0.5
OUTAGE_S = 20.0


def a_lead_arrives(leadwerk: Running, number: int) -> None:
    """A hot lead from the fair (an MQL), taken in and handed to the workers."""
    app = leadwerk.app
    row = fair_row(f"lead{number}@firm{number}.de", size=5000, title="Head of IT")
    report = ingest_records(app.store, app.config, app.config.sources[FAIR], [row])
    for event_id in report.event_ids:
        score_lead.send(event_id)


def test_a_mail_server_outage_drains_by_itself_each_email_once_within_a_minute(
    config_dir: Path,
    leadwerk_settings: Callable[..., Settings],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    staff_desk(config_dir, "lea")
    caplog.set_level(logging.WARNING)
    smtp = SmtpServer()
    smtp.start()
    settings = leadwerk_settings(smtp_url=smtp.url, retry_base=0.5, retry_cap=3)
    with running(settings) as leadwerk:
        # Given leads arriving steadily, every half second
        stop = threading.Event()
        count = 0

        def leads() -> None:
            nonlocal count
            while not stop.is_set():
                count += 1
                a_lead_arrives(leadwerk, count)
                stop.wait(LEAD_EVERY_S)

        feeder = threading.Thread(target=leads)
        feeder.start()
        try:
            smtp.wait_for(3, timeout=30)
            # When the mail server goes down for a while, and comes back
            smtp.stop()
            time.sleep(OUTAGE_S)
            back_at = datetime.now(UTC)  # taken before the start: a send may follow at once
            smtp.start()
            time.sleep(2)
        finally:
            stop.set()
            feeder.join()
        try:
            mails = smtp.wait_for(count, timeout=60)
            time.sleep(1)  # a duplicate would come now
            mails = smtp.messages
        finally:
            smtp.stop()
        with leadwerk.app.store.session() as session:
            messages = list(session.scalars(select(Message)))
            dead = list(session.scalars(select(DeadLetter)))

    # Then every lead's e-mail arrived exactly once, and none was given up
    assert count >= OUTAGE_S / LEAD_EVERY_S
    ids = Counter(mail.message["Message-ID"] for mail in mails)
    assert len(ids) == count and max(ids.values()) == 1
    assert {m.status for m in messages} == {"sent"} and len(messages) == count
    assert dead == []
    # those that waited out the outage were retried, and sent within a minute of its end
    waited = [m for m in messages if m.attempts > 1]
    assert len(waited) >= OUTAGE_S / LEAD_EVERY_S / 2
    assert all(m.sent_at is not None and m.sent_at >= back_at for m in waited)
    assert max((m.sent_at - back_at).total_seconds() for m in waited) < 60  # type: ignore[operator]
    # Each failed try was a warning without a traceback; nothing logged an error
    warnings = [r for r in caplog.records if r.name == "leadwerk.notify"]
    assert warnings and all(r.levelno == logging.WARNING and not r.exc_info for r in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
