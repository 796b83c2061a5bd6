"""Lifecycle stages: lead → MQL → SAL → SQL, plus recycled and disqualified.

Scoring moves a lead to ``mql`` (or ``disqualified``), accepting an assignment moves an MQL to
``sal``; the rest are people's decisions, made with ``leadwerk stage``. Every change is stored
in ``stage_changes`` with its time and cause, so the funnel can be rebuilt from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from rules.contact import mask_email
from worker.store.db import Store
from worker.store.models import Assignment, Contact, StageChange

STAGES: Final = ("lead", "mql", "sal", "sql", "recycled", "disqualified")
LABELS: Final = {
    "lead": "a lead",
    "mql": "an MQL",
    "sal": "an SAL",
    "sql": "an SQL",
    "recycled": "recycled",
    "disqualified": "disqualified",
}

# What people may set by hand, and from which stages. A recycled contact goes back to
# marketing: scoring treats it like a lead and it can become an MQL again.
MANUAL_MOVES: Final[dict[str, frozenset[str]]] = {
    "sql": frozenset({"sal"}),
    "recycled": frozenset({"mql", "sal", "sql", "disqualified"}),
    "disqualified": frozenset({"lead", "mql", "sal", "sql", "recycled"}),
}


class StageError(ValueError):
    """A move the lifecycle does not allow, or a lead that does not exist."""


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
    store: Store, lead: str, to_stage: str, reason: str | None = None, now: datetime | None = None
) -> Moved:
    """Move a lead by hand: to ``sql``, ``recycled`` or ``disqualified``.

    Recycling or disqualifying closes the lead's open assignment, so its SLA clock stops;
    recycling also frees the owner, so that the next time it becomes an MQL it is routed anew.
    """
    now = now or datetime.now(UTC)
    allowed = MANUAL_MOVES.get(to_stage)
    if allowed is None:
        raise StageError(
            f"'{to_stage}' cannot be set by hand; choose one of {', '.join(MANUAL_MOVES)}"
        )
    with store.session() as session:
        contact = find_contact(session, lead)
        if contact is None:
            raise StageError(f"no lead {lead}")
        before = contact.stage
        if before not in allowed:
            raise StageError(_refusal(contact, to_stage))
        cause = f"leadwerk stage: {reason}" if reason else "leadwerk stage"
        record_move(session, contact, to_stage, cause, now)
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


def _refusal(contact: Contact, to_stage: str) -> str:
    """Why a move is refused, and what would make it possible."""
    now_is = f"lead {contact.id} is {LABELS.get(contact.stage, contact.stage)}"
    if contact.stage == to_stage:
        return f"{now_is} already"
    if to_stage == "sql":
        hint = (
            f"; the rep accepts it first (leadwerk accept {contact.id})"
            if contact.stage == "mql"
            else ""
        )
        return f"{now_is}: only an SAL becomes an SQL{hint}"
    if to_stage == "recycled":
        return f"{now_is}: only MQLs, SALs, SQLs and disqualified leads can be recycled"
    return f"{now_is}: cannot move to {to_stage}"
