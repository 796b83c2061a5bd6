"""One decision: 10,000 generated leads routed by the worker (ingest, scoring and routing on a
real SQLite store, in time order, with live counts) and scored by ``leadwerk score``'s own
path decide the same SLA policy, due time, rule, team, skips and fallback, lead by lead.

Within a team the reps share hours, time zone and holidays (their leave differs), so the due
time does not depend on which of them the live counts favour; the rep itself is compared where
counts cannot decide it: the account owner, a one-member team, the fallback."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from config.settings import Settings
from connectors.sources.base import RawRecord, SourceConfig
from worker.commands.score import score_line
from worker.pipeline.ingest import ingest_records
from worker.pipeline.lead import score_and_route
from worker.pipeline.route import account_facts
from worker.runtime.app import init_app
from worker.store.models import Assignment, Contact, Event

LEADS = 10_000

TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet, sophie, tom]}
  americas: {manager: anna, members: [sam]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com, timezone: Europe/Berlin,
         hours: {mon-fri: "08:00-18:00"}, holidays: DE-NI}
  jonas: {name: Jonas Weber, email: jonas@example.com, timezone: Europe/Berlin,
          hours: {mon-fri: "08:00-17:00"}, holidays: DE-NI,
          away: [{from: 2026-12-23, to: 2027-01-02}]}
  lea: {name: Lea Hoffmann, email: lea@example.com, timezone: Europe/Berlin,
        hours: {mon-fri: "08:00-17:00"}, holidays: DE-NI,
        away: [{from: 2026-12-14, to: 2026-12-18}, {from: 2026-12-28, to: 2026-12-31}]}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com, timezone: Europe/Berlin,
           hours: {mon-fri: "09:00-18:00"}, holidays: DE-NW, weight: 2}
  sophie: {name: Sophie Becker, email: sophie@example.com, timezone: Europe/Berlin,
           hours: {mon-fri: "09:00-18:00"}, holidays: DE-NW,
           away: [{from: 2026-11-16, to: 2026-11-27}]}
  tom: {name: Tom Fischer, email: tom@example.com, timezone: Europe/Berlin,
        hours: {mon-fri: "09:00-18:00"}, holidays: DE-NW,
        away: [{from: 2026-11-16, to: 2026-11-20}]}
  sam: {name: Sam Miller, email: sam@example.com, timezone: America/New_York,
        hours: {mon-fri: "09:00-17:00"}, holidays: US-NY,
        away: [{from: 2026-12-24, to: 2026-12-27}]}
"""

ROUTING = """
rules:
  - name: account owner
    when: account.owner is not none
    assign: account_owner
  - name: enterprise DACH
    when: country in ["DE", "AT", "CH"] and company_size >= 1000
    team: enterprise-dach
    strategy: round_robin
  - name: americas
    when: country in ["US", "CA"]
    team: americas
    strategy: least_loaded
  - name: everyone else
    team: inside-sales
    strategy: weighted
fallback: {notify: [anna]}
"""

SLA = """
policies:
  - name: hot
    when: score >= 90 or event.form == "demo-request"
    respond_within: 5m
    clock: business_hours
    remind_at: [50%, 80%]
    on_breach: [escalate, reassign]
  - name: fair
    when: event.type == "tradefair"
    respond_within: 2h
    clock: calendar
    on_breach: [escalate]
  - name: standard
    respond_within: 4h
    clock: business_hours
    on_breach: [escalate]
"""

COUNTRIES = ["DE", "DE", "DE", "AT", "CH", "US", "CA", "GB", "FR"]
SIZES = [10, 40, 250, 800, 1200, 5000, 20000]
TITLES = ["Head of IT", "Einkaufsleiter", "Geschäftsführer", "Engineer", "CTO", "Werkstudent"]
START = datetime(2026, 11, 1, tzinfo=UTC)  # to 10 Jan: weekends, nights, Christmas, leave


def generated(rng: random.Random) -> list[tuple[datetime, RawRecord]]:
    leads = []
    for number in range(LEADS):
        at = START + timedelta(seconds=rng.randrange(70 * 86400))
        kind = rng.choice(["form", "form", "ebook", "tradefair"])
        data: dict[str, Any] = {
            # a tenth at free-mail addresses, the rest spread over companies that recur
            "email": f"lead{number}@"
            + ("gmail.com" if rng.random() < 0.1 else f"firma{rng.randrange(2500)}.example"),
            "company_size": rng.choice(SIZES),
            "country": rng.choice(COUNTRIES),
            "title": rng.choice(TITLES),
            "kind": kind,
        }
        if kind == "form":
            data["form"] = rng.choice(["demo-request", "contact"])
        elif kind == "tradefair":
            data["rating"] = rng.choice(["hot", "warm"])
        occurred = at - timedelta(hours=rng.choice([0, 0, 5, 200, 900]))
        leads.append((at, RawRecord(data=data, record_id=f"gen-{number}", occurred_at=occurred)))
    return sorted(leads, key=lambda lead: lead[0])


def test_the_worker_and_leadwerk_score_decide_alike_for_10000_leads(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    (config_dir / "team.yaml").write_text(TEAM, encoding="utf-8")
    (config_dir / "routing.yaml").write_text(ROUTING, encoding="utf-8")
    (config_dir / "sla.yaml").write_text(SLA, encoding="utf-8")
    app = init_app(make_settings())
    config = app.config
    leads = generated(random.Random(2026))
    source = SourceConfig(
        name="generated",
        kind="demo",
        event={"type": "$.kind", "form": "$.form", "rating": "$.rating"},
    )
    report = ingest_records(app.store, config, source, [r for _, r in leads], now=leads[-1][0])
    assert report.accepted == LEADS, report.problems
    with app.store.session() as session:
        contact_of = {
            email: id_ for email, id_ in session.execute(select(Contact.email, Contact.id))
        }
        event_of = {
            raw["email"]: event_id for event_id, raw in session.execute(select(Event.id, Event.raw))
        }
    assert len(event_of) == LEADS

    compared = routed = fell_back = owned = 0
    for at, record in leads:
        email = record.data["email"]
        contact_id = contact_of[email]
        with app.store.session() as session:
            contact = session.get(Contact, contact_id)
            assert contact is not None
            account = account_facts(session.connection(), config, contact)
        score_and_route(app.store, config, event_of[email], at)
        event = {key: record.data[key] for key in ("form", "rating") if key in record.data}
        fields = {k: v for k, v in record.data.items() if k not in ("kind", "form", "rating")}
        happened = {"type": record.data["kind"], **event, "at": record.occurred_at.isoformat()}
        line = {"contact": fields, "events": [happened], "account": account or None}
        offline = score_line(config, json.dumps(line), at)
        with app.store.session() as session:
            assignment = session.scalars(
                select(Assignment).where(Assignment.contact_id == contact_id)
            ).one_or_none()
            contact = session.get(Contact, contact_id)
            assert contact is not None
            was_mql = contact.mql_at is not None
        where = f"{email} at {at.isoformat()}"
        assert offline["mql"] == was_mql, where
        compared += 1
        if assignment is None:
            assert offline["route"] is None, where
            continue
        routed += 1
        route, sla = offline["route"], offline["sla"]
        assert (assignment.rule, assignment.team) == (route["rule"], route["team"]), where
        assert assignment.skipped == route["skipped"], where
        assert (assignment.rep is None) == (route["rep"] is None), where
        if assignment.rep is None:
            fell_back += 1
            assert route["fallback"] == ["anna"], where
            assert assignment.reason.endswith("sent to anna"), where
        if assignment.rule == "account owner" or assignment.team == "americas":
            owned += assignment.rule == "account owner"
            assert assignment.rep == route["rep"], where
        assert assignment.sla_policy == sla["policy"], where
        assert assignment.due_at is not None
        assert assignment.due_at == datetime.fromisoformat(sla["due"]), where
    app.close()
    # The generated leads reach every branch that is compared
    assert compared == LEADS
    assert routed > 2000 and fell_back > 20 and owned > 100, (routed, fell_back, owned)
