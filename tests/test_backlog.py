"""A backlog worked off in batches ends exactly where working it one lead at a time ends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row, restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.test_cli_skeleton import leadwerk
from worker.pipeline.backlog import work_backlog
from worker.pipeline.ingest import ingest_records
from worker.pipeline.lead import score_and_route
from worker.runtime.app import App, init_app
from worker.store.models import (
    Assignment,
    Contact,
    Event,
    Message,
    RepCounter,
    Score,
    StageChange,
)

# A Wednesday morning: every rep of the example team is at work.
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def backlog_rows() -> list[Any]:
    """A fair export of 40 leads of all kinds, a few of them scanned twice or three times
    (their second scan turns some into MQLs), and an account owner's colleague."""
    rows = []
    for n in range(40):
        rows.append(
            fair_row(
                f"lead{n}@{'gmail.com' if n % 9 == 0 else f'firm{n % 6}.de'}",
                size=(50, 250, 1500, 5000)[n % 4],
                title=("Head of IT", "Engineer", "Werkstudent", "CTO", "")[n % 5],
                country=("DE", "AT", "FR")[n % 3],
                rating=("hot", "warm", "cold")[n % 3],
                at=datetime(2026, 11, 20 + n % 5, 10, n, tzinfo=UTC),
            )
        )
    for n in (1, 2, 4, 7, 2):  # scanned again, later, hotter
        rows.append(
            fair_row(
                f"lead{n}@firm{n % 6}.de",
                size=(50, 250, 1500, 5000)[n % 4],
                title="Head of Sales",
                rating="hot",
                at=datetime(2026, 11, 28, 15, n, tzinfo=UTC),
            )
        )
    return rows


def outcome(app: App) -> dict[str, Any]:
    """What a user sees of a worked backlog: each contact's score, stage and owner, who got
    which lead by which rule, the team's counters, the messages and the stage history."""
    with app.store.session() as session:
        email = dict(session.execute(select(Contact.id, Contact.email)).all())
        return {
            "contacts": sorted(
                (c.email, round(c.score or 0, 3), c.stage, c.owner)
                for c in session.scalars(select(Contact))
            ),
            "assignments": [
                (email[a.contact_id], a.rep, a.team, a.rule, a.sla_policy)
                for a in session.scalars(select(Assignment).order_by(Assignment.id))
            ],
            "counters": sorted(
                (c.team, c.rep, c.assigned_total, c.last_assigned_at)
                for c in session.scalars(select(RepCounter))
            ),
            "messages": [
                (email[m.contact_id], m.recipient, m.purpose, m.channel, m.status)
                for m in session.scalars(select(Message).order_by(Message.id))
            ],
            "scores": [
                (email[s.contact_id], s.event_id, round(s.score, 3), s.mql)
                for s in session.scalars(select(Score).order_by(Score.event_id))
            ],
            "stage_changes": sorted(
                (email[g.contact_id], g.from_stage, g.to_stage, g.cause)
                for g in session.scalars(select(StageChange))
            ),
        }


def test_a_backlog_worked_in_batches_ends_as_one_lead_at_a_time_does(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    results = []
    for way in ("one at a time", "in batches"):
        settings = make_settings(
            database_url=f"sqlite:///{tmp_path / (way.replace(' ', '-') + '.db')}"
        )
        app = init_app(settings)
        try:
            report = ingest_records(
                app.store, app.config, app.config.sources[FAIR], backlog_rows(), now=NOW
            )
            assert report.quarantined == 0, report.problems
            if way == "one at a time":
                for event_id in report.event_ids:
                    score_and_route(app.store, app.config, event_id, NOW)
            else:
                sent: list[Message] = []
                worked = work_backlog(
                    app.store, app.config, report.event_ids, lambda: NOW, sent.extend, 7
                )
                assert worked.scored == len(report.event_ids)
                assert worked.handed_back == []
                assert len(sent) == worked.messages
            results.append(outcome(app))
        finally:
            app.close()
    one_at_a_time, in_batches = results
    assert len(one_at_a_time["assignments"]) >= 8  # the backlog has MQLs for both teams
    assert {a[2] for a in one_at_a_time["assignments"]} >= {"enterprise-dach", "inside-sales"}
    assert in_batches == one_at_a_time


def test_run_once_sums_up_a_big_pass_and_lists_each_lead_when_asked(config_dir: Path) -> None:
    project = config_dir.parent
    summed = leadwerk("run", "--once", "--demo", "--demo-count", "60", cwd=project)
    assert summed.returncode == 0, summed.stderr
    assert "accounted for 60 leads: 60 processed" in summed.stdout
    [summary] = [line for line in summed.stdout.splitlines() if line.startswith("60 leads: ")]
    stages = dict(reversed(part.split(" ")) for part in summary[10:].split(";")[0].split(", "))
    assert sum(int(count) for count in stages.values()) == 60
    assert " score " not in summed.stdout  # no line per lead

    listed = leadwerk("run", "--once", "--verbose", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert len([line for line in listed.stdout.splitlines() if " score " in line]) == 60
    assert "@" in listed.stdout and "***@" in listed.stdout  # e-mails masked


def test_a_drained_backlog_writes_each_mql_its_email_and_marks_it_sent_and_notified(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with running(settings) as leadwerk:
        app = leadwerk.app
        report = ingest_records(
            app.store, app.config, app.config.sources[FAIR], backlog_rows(), now=NOW
        )
        leadwerk.drain()
        with app.store.session() as session:
            messages = session.scalars(select(Message)).all()
            assignments = session.scalars(select(Assignment)).all()
            events = session.scalars(select(Event.status)).all()
    assert report.accepted == len(events) and set(events) == {"processed"}
    assert assignments and all(a.notified_at is not None for a in assignments)
    assert messages and {m.status for m in messages} == {"sent"}
    written = {p.name for p in settings.outbox_dir.iterdir()}
    assert {m.remote_id for m in messages} == written
    assert len(written) == len(messages)
