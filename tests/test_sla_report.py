"""``leadwerk sla report`` over a simulated week of assignments written straight into the store,
on SQLite and PostgreSQL, read the way a sales manager would: medians, bands, breaches, funnel."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from config.settings import Settings
from tests.sla_helpers import SLA
from worker.commands.cli import app as cli
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, Contact, Event, StageChange

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday noon; the week before is reported
MONDAY = datetime(2026, 11, 16, 13, 0, tzinfo=UTC)  # in the window, which opens at 12:00


@dataclass
class Lead:
    rep: str
    team: str
    source: str
    made: datetime
    accept_after: timedelta | None  # None: never accepted
    sla: str = "hot"
    due_in: timedelta = timedelta(minutes=5)
    to_sql: bool = False
    notice_after: timedelta = timedelta(seconds=3)  # received → notification sent


def week() -> list[Lead]:
    minutes = [1, 2, 3, 4, 6, 12, 30, 90]  # Jonas: half within his 5 minutes
    leads = [
        Lead(
            "jonas",
            "enterprise-dach",
            "typeform-demo",
            MONDAY + timedelta(days=i % 5, hours=i),
            timedelta(minutes=m),
            to_sql=i < 2,
            notice_after=timedelta(seconds=30 if i == 0 else 3),
        )
        for i, m in enumerate(minutes)
    ]
    leads += [
        Lead("lea", "enterprise-dach", "messe-hannover-2026", MONDAY + timedelta(hours=h), after)
        for h, after in (
            (1, timedelta(minutes=2)),
            (2, timedelta(minutes=5)),  # accepted the very minute it was due: within
            (3, timedelta(minutes=8)),
            (4, None),  # still open, long past due: a breach
        )
    ]
    leads[-3].to_sql = True
    # Mehmet (09:00-18:00 Berlin) gets a standard lead on Friday at 16:30 and accepts it on
    # Monday at 09:30: 2 hours of his working time, not a weekend.
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    leads.append(
        Lead(
            "mehmet",
            "inside-sales",
            "messe-hannover-2026",
            friday,
            datetime(2026, 11, 23, 8, 30, tzinfo=UTC) - friday,
            sla="standard",
            due_in=datetime(2026, 11, 23, 10, 30, tzinfo=UTC) - friday,
        )
    )
    return leads


def store_week(app: App, leads: list[Lead]) -> None:
    with app.store.session() as session:
        for n, lead in enumerate(leads):
            email = f"lead{n}@company{n}.de"
            contact = Contact(
                email=email, email_domain=f"company{n}.de", fields={}, source=lead.source
            )
            session.add(contact)
            session.flush()
            received = lead.made - lead.notice_after
            event = Event(
                contact_id=contact.id,
                source=lead.source,
                record_key=f"r{n}",
                type="form",
                occurred_at=received,
                received_at=received,
                status="processed",
            )
            session.add(event)
            session.flush()
            accepted = lead.made + lead.accept_after if lead.accept_after else None
            session.add(
                Assignment(
                    contact_id=contact.id,
                    event_id=event.id,
                    rep=lead.rep,
                    team=lead.team,
                    rule="simulated",
                    reason="simulated week",
                    sla_policy=lead.sla,
                    due_at=lead.made + lead.due_in,
                    status="accepted" if accepted else "open",
                    accepted_at=accepted,
                    notified_at=lead.made,
                    created_at=lead.made,
                )
            )
            stages = [("lead", "mql", received)]
            if accepted:
                stages.append(("mql", "sal", accepted))
            if accepted and lead.to_sql:
                stages.append(("sal", "sql", accepted + timedelta(days=1)))
            for before, after, at in stages:
                session.add(
                    StageChange(
                        contact_id=contact.id, from_stage=before, to_stage=after, cause="x", at=at
                    )
                )
        # An MQL from October, accepted in the week: neither in the week's speed nor its funnel
        old = Contact(email="old@old.de", email_domain="old.de", fields={}, source="typeform-demo")
        session.add(old)
        session.flush()
        october = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
        session.add_all(
            [
                Assignment(
                    contact_id=old.id,
                    rep="jonas",
                    team="enterprise-dach",
                    rule="simulated",
                    reason="simulated",
                    sla_policy="hot",
                    due_at=october + timedelta(minutes=5),
                    status="accepted",
                    accepted_at=MONDAY,
                    created_at=october,
                ),
                StageChange(
                    contact_id=old.id, from_stage="lead", to_stage="mql", cause="x", at=october
                ),
                StageChange(
                    contact_id=old.id, from_stage="mql", to_stage="sal", cause="x", at=MONDAY
                ),
            ]
        )


def report(settings: Settings, config_dir: Path, *args: str) -> Any:
    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config_dir),
            "sla",
            "report",
            "--since",
            "7d",
            "--now",
            NOW.isoformat(),
            *args,
        ],
        env={"LEADWERK_DATABASE_URL": settings.database_url},
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


@pytest.fixture
def week_in_store(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Settings:
    # The example team (with working hours); "hot" on the wall clock, "standard" on hours
    (config_dir / "sla.yaml").write_text(SLA, encoding="utf-8")
    settings = make_settings(database_url=database_url)
    app = init_app(settings)
    store_week(app, week())
    app.close()
    return settings


def test_the_report_shows_each_reps_median_p95_share_within_sla_and_bands(
    week_in_store: Settings, config_dir: Path
) -> None:
    data = report(week_in_store, config_dir, "--json")

    jonas, lea, mehmet = (data["reps"][r] for r in ("jonas", "lea", "mehmet"))
    assert (jonas["leads"], jonas["accepted"]) == (8, 8)
    assert jonas["time_to_accept_min"] == {"median": 5.0, "p95": 90.0}
    assert (jonas["within_sla"], jonas["breaches"], jonas["within_sla_share"]) == (4, 4, 0.5)
    assert jonas["bands_min"] == {"0-5": 4, "5-15": 2, "15-60": 1, "60+": 1}

    assert (lea["leads"], lea["accepted"], lea["open"]) == (4, 3, 1)
    assert lea["time_to_accept_min"] == {"median": 5.0, "p95": 8.0}
    assert (lea["within_sla"], lea["breaches"]) == (2, 2)
    assert lea["bands_min"] == {"0-5": 1, "5-15": 2, "15-60": 0, "60+": 0}

    # Friday 16:30 to Monday 09:30 is two hours of Mehmet's working time, within his 4 hours
    assert mehmet["time_to_accept_min"] == {"median": 120.0, "p95": 120.0}
    assert (mehmet["within_sla_share"], mehmet["bands_min"]["60+"]) == (1.0, 1)


def test_the_report_adds_up_per_team_and_keeps_system_delay_apart_from_human_delay(
    week_in_store: Settings, config_dir: Path
) -> None:
    data = report(week_in_store, config_dir, "--json")

    team = data["teams"]["enterprise-dach"]
    assert (team["leads"], team["accepted"], team["within_sla"], team["breaches"]) == (12, 11, 6, 6)
    assert team["time_to_accept_min"] == {"median": 5.0, "p95": 90.0}
    assert data["teams"]["inside-sales"]["leads"] == 1
    assert data["all"]["leads"] == 13
    # Leadwerk took 3 s from receipt to notification (once 30 s); the people took the rest
    assert data["reps"]["jonas"]["system_delay_s"] == {"median": 3.0, "p95": 30.0}
    assert data["reps"]["jonas"]["human_delay_min"] == {"median": 5.0, "p95": 90.0}


def test_the_funnel_follows_the_weeks_mqls_to_sal_and_sql_per_source(
    week_in_store: Settings, config_dir: Path
) -> None:
    funnel = report(week_in_store, config_dir, "--json")["funnel"]

    assert funnel["sources"]["typeform-demo"] == {
        "mql": 8,
        "sal": 8,
        "sql": 2,
        "mql_to_sal": 1.0,
        "sal_to_sql": 0.25,
        "mql_to_sql": 0.25,
    }
    assert funnel["sources"]["messe-hannover-2026"] == {
        "mql": 5,
        "sal": 4,
        "sql": 1,
        "mql_to_sal": 0.8,
        "sal_to_sql": 0.25,
        "mql_to_sql": 0.2,
    }
    assert (funnel["all"]["mql"], funnel["all"]["sal"], funnel["all"]["sql"]) == (13, 12, 3)


def test_the_text_report_has_a_line_per_rep(week_in_store: Settings, config_dir: Path) -> None:
    text = report(week_in_store, config_dir)

    jonas = next(line for line in text.splitlines() if line.strip().startswith("jonas"))
    assert jonas.split() == [
        "jonas",
        "8",
        "8",
        "5.0m",
        "1.5h",
        "50.0%",
        "4",
        "4",
        "2",
        "1",
        "1",
    ]
    assert "typeform-demo" in text
