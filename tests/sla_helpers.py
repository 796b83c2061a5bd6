"""Helpers for SLA tests: MQLs written straight into the store, and team/SLA configs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from worker.store.db import Store
from worker.store.models import Contact, Event, StageChange

ALWAYS_OPEN_TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com, slack: U024BE7LH}
  lea: {name: Lea Hoffmann, email: lea@example.com}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
"""

SLA = """
policies:
  - name: hot
    when: event.form == "demo-request"
    respond_within: 5m
    clock: calendar
    remind_at: [50%, 80%]
    on_breach: [escalate, reassign]
  - name: standard
    respond_within: 4h
    clock: business_hours
    remind_at: [50%, 80%]
    on_breach: [escalate]
"""


def write_config(config_dir: Path, team: str = ALWAYS_OPEN_TEAM, sla: str = SLA) -> Path:
    (config_dir / "team.yaml").write_text(team, encoding="utf-8")
    (config_dir / "sla.yaml").write_text(sla, encoding="utf-8")
    return config_dir


def add_mql(
    store: Store,
    number: int,
    at: datetime,
    *,
    form: str = "demo-request",
    source: str = "typeform-demo",
    **fields: Any,
) -> int:
    """An MQL from a big German company (enterprise DACH), each at its own domain so that no
    account owner takes over; its event is processed and its MQL stage change recorded."""
    email = f"lead{number}@company{number}.de"
    values = {
        "email": email,
        "first_name": "Eva",
        "last_name": f"Lead{number}",
        "company": f"Company {number} AG",
        "country": "DE",
        "company_size": 5000,
        "title": "Head of IT",
        **fields,
    }
    with store.session() as session:
        contact = Contact(
            email=email,
            email_domain=email.rpartition("@")[2],
            fields=values,
            source=source,
            stage="mql",
            score=80.0,
            fit=45.0,
            engagement=35.0,
            mql_at=at,
            created_at=at,
            updated_at=at,
        )
        session.add(contact)
        session.flush()
        session.add(
            Event(
                contact_id=contact.id,
                source=source,
                record_key=f"r{number}",
                type="form",
                attrs={"form": form},
                occurred_at=at,
                received_at=at,
                status="processed",
                processed_at=at,
            )
        )
        session.add(
            StageChange(
                contact_id=contact.id, from_stage="lead", to_stage="mql", cause="score", at=at
            )
        )
        return contact.id
