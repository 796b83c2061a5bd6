"""A backlog worked off in batches ends exactly where working it one lead at a time ends."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
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
    CrmChange,
    Event,
    Message,
    NurtureEnrolment,
    NurtureRefusal,
    RepCounter,
    Score,
    SlaTimer,
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
                (email[a.contact_id], a.rep, a.team, a.rule, a.sla_policy, a.reason, a.skipped)
                for a in session.scalars(select(Assignment).order_by(Assignment.id))
            ],
            "timers": sorted(
                (email[a.contact_id], t.kind, t.fire_at)
                for t, a in session.execute(
                    select(SlaTimer, Assignment).join(
                        Assignment, Assignment.id == SlaTimer.assignment_id
                    )
                )
            ),
            "counters": sorted(
                (c.team, c.rep, c.assigned_total, c.last_assigned_at)
                for c in session.scalars(select(RepCounter))
            ),
            "messages": [
                (
                    email.get(m.contact_id),
                    m.recipient,
                    m.purpose,
                    m.channel,
                    m.status,
                    m.subject,
                    m.digest_key is not None,
                )
                for m in session.scalars(select(Message).order_by(Message.id))
            ],
            "scores": [
                (email[s.contact_id], s.event_id, round(s.score, 3), s.mql)
                for s in session.scalars(select(Score).order_by(Score.event_id))
            ],
            "enrolments": sorted(
                (email[n.contact_id], n.sequence, n.channel, n.status, n.next_due_at)
                for n in session.scalars(select(NurtureEnrolment))
            ),
            "refusals": sorted(
                (email[r.contact_id], r.sequence, r.reason)
                for r in session.scalars(select(NurtureRefusal))
            ),
            "stage_changes": sorted(
                (email[g.contact_id], g.from_stage, g.to_stage, g.cause)
                for g in session.scalars(select(StageChange))
            ),
            "crm_changes": [
                (email.get(c.contact_id), c.lead, c.change, c.payload, c.status)
                for c in session.scalars(select(CrmChange).order_by(CrmChange.id))
            ],
        }


# A CRM that is never called here: what routing hands over waits in its outbox.
QUIET_CRM = """\
crm:
  kind: hubspot
  base_url: http://127.0.0.1:9
  token_env: HUBSPOT_TOKEN
  map: {company: company, title: jobtitle, score: hubspotscore}
"""


def test_a_backlog_worked_in_batches_ends_as_one_lead_at_a_time_does(
    make_settings: Callable[..., Settings],
    config_dir: Path,
    database_url: str,
    second_database_url: str,
) -> None:
    (config_dir / "crm.yaml").write_text(QUIET_CRM, encoding="utf-8")
    results = []
    for way, url in (("one at a time", database_url), ("in batches", second_database_url)):
        settings = make_settings(database_url=url, env={"HUBSPOT_TOKEN": "pat-eu1-quiet"})
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
    assert one_at_a_time["enrolments"]  # the example's nurture takes the leads that are no MQL
    assert len(one_at_a_time["crm_changes"]) == len(one_at_a_time["assignments"])
    assert in_batches == one_at_a_time


# Routing that reads every count the batch router keeps in memory: open leads per company,
# the account's owner, today's load (least loaded, capacities), lifetime turns (round robin,
# weighted), with jonas in both teams.
CROWDED_ROUTING = """\
rules:
  - name: busy account
    when: account.open_leads >= 4
    team: inside-sales
    strategy: least_loaded
  - name: enterprise DACH
    when: country in ["DE", "AT", "CH"] and company_size >= 1000
    team: enterprise-dach
    strategy: round_robin
  - name: account owner
    when: account.owner is not none
    assign: account_owner
  - name: everyone else
    team: inside-sales
    strategy: weighted
fallback: {notify: [anna]}
"""


def crowded_rows(seed: int, count: int, known: list[str]) -> list[Any]:
    """Leads of a few companies at once, big DACH firms beyond the enterprise team's daily
    capacity, free-mail leads, and second scans of leads of this and earlier backlogs
    (``known``, which grows)."""
    rnd = random.Random(seed)
    rows = []
    for n in range(count):
        if known and rnd.random() < 0.25:
            email = rnd.choice(known)
        else:
            domain = rnd.choice(
                ["gmx.de", *(f"konzern{i}.de" for i in range(12)), f"firma{seed}-{n}.de"]
            )
            email = f"p{seed}-{n}@{domain}"
            known.append(email)
        rows.append(
            fair_row(
                email,
                size=rnd.choice((5000, 1200, 300, 40)),
                title=rnd.choice(("Head of IT", "CTO", "Einkauf", "")),
                country=rnd.choice(("DE", "AT", "CH", "FR")),
                rating=rnd.choice(("hot", "hot", "warm")),
                at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC) + timedelta(minutes=seed * 500 + n),
            )
        )
    return rows


@pytest.mark.parametrize(("digest_after", "batch"), [(0, 6), (4, 6), (0, 40)])
def test_routing_a_batch_under_one_lock_keeps_every_count_as_one_at_a_time_does(
    make_settings: Callable[..., Settings],
    config_dir: Path,
    database_url: str,
    second_database_url: str,
    digest_after: int,
    batch: int,
) -> None:
    """The batch router keeps the team's counters, today's counts and the companies' owners
    and open leads in memory: each pick must see what the store would show it. A backlog
    arrives on top of an earlier one (counters and today's counts not zero) and is worked
    both ways, on SQLite and PostgreSQL, with and without digests."""
    (config_dir / "routing.yaml").write_text(CROWDED_ROUTING, encoding="utf-8")
    team = (config_dir / "team.yaml").read_text(encoding="utf-8")
    team = team.replace("members: [mehmet, sophie, tom]", "members: [mehmet, sophie, tom, jonas]")
    team = team.replace("capacity: {per_day: 20}", "capacity: {per_day: 6}")  # jonas
    (config_dir / "team.yaml").write_text(team, encoding="utf-8")
    results = []
    for way, url in (("one at a time", database_url), ("in batches", second_database_url)):
        settings = make_settings(database_url=url, digest_after=digest_after)
        app = init_app(settings)
        known: list[str] = []
        try:
            for seed, count in ((1, 40), (2, 260)):
                source = app.config.sources[FAIR]
                rows = crowded_rows(seed, count, known)
                report = ingest_records(app.store, app.config, source, rows, now=NOW)
                assert report.quarantined == 0, report.problems
                # Each batch reads the clock 10 s after the one before; one at a time,
                # each lead is worked at the time its batch would read.
                ticks = itertools.count(seed * 100)
                clock = functools.partial(lambda t: NOW + timedelta(seconds=10 * next(t)), ticks)
                if way == "one at a time":
                    for n, event_id in enumerate(sorted(report.event_ids)):
                        at = NOW + timedelta(seconds=10 * (seed * 100 + n // batch))
                        score_and_route(app.store, app.config, event_id, at)
                else:
                    worked = work_backlog(
                        app.store,
                        app.config,
                        report.event_ids,
                        clock,
                        list,
                        batch,
                    )
                    assert worked.handed_back == []
            results.append(outcome(app))
        finally:
            app.close()
    one_at_a_time, in_batches = results
    rules = {a[3] for a in one_at_a_time["assignments"]}
    assert {"busy account", "account owner", "enterprise DACH", "everyone else"} <= rules
    assert any("capacity" in str(a[6]) for a in one_at_a_time["assignments"])
    if digest_after:
        assert any(held for *_, held in one_at_a_time["messages"])
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
