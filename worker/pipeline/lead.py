"""The fast path of a new lead: score and route in one transaction.

A pending event is scored and, when its contact becomes an MQL, routed before the
transaction ends: the contact stays locked from the first read to the assignment, nothing
written is read back, and the new-lead messages are written claimed for the caller, which
sends them right after the commit. Speed to lead is the point: this halves the round trips
to the store compared with scoring, routing and claiming one after the other.
"""

from __future__ import annotations

from datetime import datetime

from config.loader import Config
from worker.pipeline.route import Known, route_locked
from worker.pipeline.score import score_locked, update_contact
from worker.store.db import Store
from worker.store.models import Message


def score_and_route(store: Store, config: Config, event_id: int, now: datetime) -> list[Message]:
    """Score a pending event and route its contact if it is an MQL to be routed. Returns the
    messages to send now, claimed (``sending``); none when the event was processed before."""
    with store.transaction() as connection:
        scored = score_locked(connection, config, event_id, now, write_contact=False)
        if scored is None:
            return []
        if not scored.needs_routing:
            update_contact(connection, scored.contact.id, scored.contact_changes)
            return []
        # The contact's new score goes out with its owner: one UPDATE of the contact, not two.
        known = Known(scored.latest_event, scored.score, scored.contact_changes)
        return route_locked(connection, config, scored.contact, now, known, claim=True)
