"""``leadwerk stage``: a person moves a lead along its lifecycle (``rules.lifecycle``).

Every change is stored in ``stage_changes`` with its time and cause, so the funnel can be
rebuilt from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.loader import Config
from rules.contact import mask_email
from rules.lifecycle import StageError, check_manual_move
from worker.pipeline.crm import record
from worker.store.db import Store
from worker.store.models import Assignment, Contact, StageChange


@dataclass(frozen=True)
class Moved:
    contact_id: int
    email: str
    from_stage: str
    to_stage: str
    cause: str

    def describe(self) -> str:
        return (
            f"lead {self.contact_id} ({mask_email(self.email)}): "
            f"{self.from_stage} → {self.to_stage} ({self.cause})"
        )


def find_contact(session: Session, lead: str, lock: bool = False) -> Contact | None:
    """A lead by its id or its e-mail address; ``lock``: locked for the change that follows."""
    lead = lead.strip()
    query = select(Contact).where(
        Contact.id == int(lead) if lead.isdigit() else Contact.email == lead
    )
    return session.scalars(query.with_for_update() if lock else query).first()


def record_move(
    session: Session, contact: Contact, to_stage: str, cause: str, now: datetime
) -> None:
    """Store the change with its time and cause, and move the contact."""
    session.add(
        StageChange(
            contact_id=contact.id, from_stage=contact.stage, to_stage=to_stage, cause=cause, at=now
        )
    )
    contact.stage = to_stage
    contact.updated_at = now


def change_stage(
    store: Store,
    lead: str,
    to_stage: str,
    reason: str | None = None,
    now: datetime | None = None,
    config: Config | None = None,
) -> Moved:
    """Move a lead by hand: to ``sql``, ``recycled`` or ``disqualified``.

    Recycling or disqualifying closes the lead's open assignment, so its SLA clock stops;
    recycling also frees the owner, so that the next time it becomes an MQL it is routed anew.
    """
    now = now or datetime.now(UTC)
    with store.session() as session:
        contact = find_contact(session, lead)
        if contact is None:
            raise StageError(f"no lead {lead}")
        before = contact.stage
        check_manual_move(contact.id, before, to_stage)
        cause = f"leadwerk stage: {reason}" if reason else "leadwerk stage"
        record_move(session, contact, to_stage, cause, now)
        if config is not None:  # the CRM follows the lead's stage
            record(session.connection(), config, contact, "stage", {"stage": to_stage}, now)
        if to_stage in ("recycled", "disqualified"):
            for assignment in session.scalars(
                select(Assignment).where(
                    Assignment.contact_id == contact.id, Assignment.status == "open"
                )
            ):
                assignment.status = "closed"
        if to_stage == "recycled":
            contact.owner = None
        return Moved(contact.id, contact.email, before, to_stage, cause)
