"""Helpers for the tests of /admin/, /metrics and alerts: a store in a state whose figures
the tests know, and the admin token they open the dashboard with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from connectors.sources.base import RawRecord
from tests.lead_helpers import FAIR, fair_row, take_in
from tests.web_links import MAIL_TEAM, send_all
from worker.pipeline.ingest import ingest_records
from worker.pipeline.route import route_contact
from worker.runtime.app import App
from worker.store.models import DeadLetter, Message, Quarantine

ADMIN_TOKEN = "a-long-admin-token-for-tests-0123456789"


def mail_team(config_dir: Path) -> None:
    """Everyone on the team is told by e-mail (written to the file outbox)."""
    (config_dir / "team.yaml").write_text(MAIL_TEAM, encoding="utf-8")


@dataclass(frozen=True)
class KnownState:
    mqls: int
    sent: int
    dead_letter: int  # the id of the one open dead letter
    failed_message: int  # the outbox message it holds
    quarantined: int  # the id of the one quarantined record


def known_state(app: App, now: datetime) -> KnownState:
    """Three hot leads from the fair: two told their rep, the third's e-mail failed for good
    and waits as a dead letter; and one badge scan without an e-mail in quarantine."""
    rows = [
        fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT"),
        fair_row("jan.schmidt@maschinen.de", size=800, title="CTO"),
        fair_row("ida.berg@anlagen.at", size=1200, title="Head of IT", country="AT"),
    ]
    contacts = take_in(app.store, app.config, rows, now)
    messages = [
        m for contact in contacts for m in route_contact(app.store, app.config, contact, now)
    ]
    *to_send, failing = messages
    with app.store.session() as session:
        message = session.get(Message, failing)
        assert message is not None
        message.status = "failed"
        message.error = "550 5.1.1 mailbox unavailable"
    send_all(app, now)
    with app.store.session() as session:
        letter = DeadLetter(
            actor="send_message",
            args=[failing],
            error="UndeliverableError: 550 5.1.1 mailbox unavailable",
        )
        session.add(letter)
        session.flush()
        letter_id = letter.id
    report = ingest_records(
        app.store,
        app.config,
        app.config.sources[FAIR],
        [RawRecord(data={"E-Mail": "", "Firma": "No Mail GmbH"}, record_id="scan-7", row=7)],
        now=now,
    )
    assert report.quarantined == 1

    with app.store.session() as session:
        quarantined = session.scalars(select(Quarantine.id)).one()
    return KnownState(len(contacts), len(to_send), letter_id, failing, quarantined)
