"""``leadwerk forget EMAIL``: erasure of a person on request.

The contact, its events (raw payloads included), scores, stage changes, assignments, SLA
timers, nurture enrolments and refusals, outbox messages and CRM changes go (the foreign keys
cascade), a CRM delete is queued when a CRM is configured, and so do quarantined records that
carry the address and the file-outbox copies of its messages. Aggregates that name nobody
(rep counters) stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import String, cast, delete, func, select

from rules.contact import FieldError, mask_email, normalise_email
from worker.pipeline.crm import record_erasure
from worker.pipeline.digest import forget_in_digests
from worker.runtime.app import App
from worker.store.models import BounceEvent, Contact, Event, Message, Quarantine

log = logging.getLogger("leadwerk.erasure")


@dataclass
class Erased:
    contacts: int = 0
    events: int = 0
    messages: int = 0
    quarantined: int = 0
    outbox_files: int = 0
    crm: bool = False  # a delete waits in the CRM outbox


def forget(app: App, email: str) -> Erased:
    try:
        address = normalise_email(email)
    except FieldError:
        address = email.strip()
    erased = Erased()
    with app.store.session() as session:
        for contact in session.scalars(
            select(Contact).where(func.lower(Contact.email) == address.lower())
        ).all():
            erased.events = (
                session.scalar(
                    select(func.count()).select_from(Event).where(Event.contact_id == contact.id)
                )
                or 0
            )
            erased.messages = (
                session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.contact_id == contact.id)
                )
                or 0
            )
            erased.outbox_files += _remove_outbox_files(Path(app.settings.outbox_dir), contact.id)
            forget_in_digests(session, contact.id)
            erased.crm = record_erasure(session, app.config, contact, datetime.now(UTC))
            session.delete(contact)
            erased.contacts += 1
        # Bounce reports name the address too, also those no contact matched.
        session.execute(delete(BounceEvent).where(BounceEvent.recipient == address.lower()))
        # The address as a whole JSON string value, so lisa@x.de survives forgetting a@x.de.
        pattern = f'%"{address.lower()}"%'
        erased.quarantined = (
            session.execute(
                delete(Quarantine).where(func.lower(cast(Quarantine.raw, String)).like(pattern))
            ).rowcount
            or 0
        )
    log.info("erased %s: %s", mask_email(address), erased)
    return erased


def _remove_outbox_files(directory: Path, contact_id: int) -> int:
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(f"lead_{contact_id}_*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
