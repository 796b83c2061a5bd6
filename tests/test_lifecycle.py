"""Lifecycle stages: lead → MQL → SAL → SQL, recycled and disqualified; every change stored with
its time and cause, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from config.loader import Config, load_config
from config.settings import Settings
from tests.lead_helpers import fair_row, restore_logging, take_in  # noqa: F401
from worker.commands.cli import app
from worker.commands.stage import StageError, change_stage
from worker.pipeline.route import route_contact
from worker.pipeline.sweep import find_pending
from worker.store.db import Store
from worker.store.models import Assignment, Contact, Score, StageChange

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday morning
EVA = "eva.mueller@bigcorp.de"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
def config(settings: Settings) -> Config:
    return load_config(settings)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings.database_url)
    yield store
    store.close()


def hot_lead(store: Store, config: Config, email: str = EVA, at: datetime = T0) -> int:
    """A hot fair contact from a big German company: fit 45 + engagement 40 = an MQL."""
    row = fair_row(email, size=5000, title="Head of IT", rating="hot", at=at)
    (contact_id,) = take_in(store, config, [row], at)
    return contact_id


def contact(store: Store, contact_id: int) -> Contact:
    with store.session() as session:
        found = session.get(Contact, contact_id)
        assert found is not None
        return found


def changes(store: Store, contact_id: int) -> list[tuple[str | None, str, str, datetime]]:
    with store.session() as session:
        rows = session.scalars(
            select(StageChange).where(StageChange.contact_id == contact_id).order_by(StageChange.id)
        )
        return [(c.from_stage, c.to_stage, c.cause, c.at) for c in rows]


def stage_cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["--config", str(settings.config_dir), "stage", *args],
        env={"LEADWERK_DATABASE_URL": settings.database_url},
    )
    return result.exit_code, result.output


def test_a_lead_goes_from_mql_to_sal_to_sql_and_each_step_is_recorded(
    settings: Settings, config: Config, store: Store
) -> None:
    # Given: a hot lead scored at T0, routed, and accepted by the rep an hour later
    contact_id = hot_lead(store, config)
    route_contact(store, config, contact_id, T0)
    with store.session() as session:
        from worker.commands.operations import accept_assignment

        assignment = session.scalars(
            select(Assignment).where(Assignment.contact_id == contact_id)
        ).one()
        lead = session.get(Contact, contact_id)
        accept_assignment(session, config, assignment, lead, T0 + timedelta(hours=1), "ok")
    # When: the rep marks it sales-qualified with the real command
    code, out = stage_cli(settings, EVA, "sql", "--reason", "budget confirmed")
    # Then: the lead is an SQL, and the way there is stored with times and causes
    assert code == 0, out
    assert out.strip().startswith(f"lead {contact_id} (e***@bigcorp.de): sal → sql")
    assert contact(store, contact_id).stage == "sql"
    steps = changes(store, contact_id)
    assert [(f, t) for f, t, _, _ in steps] == [("lead", "mql"), ("mql", "sal"), ("sal", "sql")]
    assert steps[0][2].startswith("score 85.0 >= 60 (rules v3, ")
    assert steps[0][3] == T0
    assert steps[1][3] == T0 + timedelta(hours=1)
    assert steps[2][2] == "leadwerk stage: budget confirmed"


def test_moves_the_lifecycle_does_not_allow_are_refused_with_the_reason(
    settings: Settings, config: Config, store: Store
) -> None:
    mql_id = hot_lead(store, config)
    take_in(store, config, [fair_row("m.weiss@kleinteil.de", size=40, rating="warm", at=T0)], T0)

    code, out = stage_cli(settings, "m.weiss@kleinteil.de", "sql")
    assert code == 1
    assert "is a lead: only an SAL becomes an SQL" in out

    code, out = stage_cli(settings, str(mql_id), "sql")
    assert code == 1
    assert (
        "is an MQL: only an SAL becomes an SQL; "
        f"the rep accepts it first (leadwerk accept {mql_id})" in out
    )

    code, out = stage_cli(settings, "m.weiss@kleinteil.de", "recycled")
    assert code == 1
    assert "only MQLs, SALs, SQLs and disqualified leads can be recycled" in out

    code, out = stage_cli(settings, "nobody@nowhere.de", "disqualified")
    assert (code, out.strip()) == (1, "no lead nobody@nowhere.de")

    code, _ = stage_cli(settings, str(mql_id), "sal")  # SAL only comes from accepting
    assert code == 2

    assert [t for _, t, _, _ in changes(store, mql_id)] == ["mql"]


def test_the_mql_date_sticks_when_decay_lowers_the_score_later(
    config: Config, store: Store
) -> None:
    # Given: an MQL at T0 (85 points)
    contact_id = hot_lead(store, config)
    assert contact(store, contact_id).mql_at == T0
    # When: a lukewarm visit 90 days later is scored; the fair's 40 points have decayed to 5
    later = T0 + timedelta(days=90)
    take_in(
        store,
        config,
        [fair_row(EVA, size=5000, title="Head of IT", rating="warm", at=later)],
        later,
    )
    # Then: the score is 50, below the threshold, yet the contact stays an MQL since T0
    found = contact(store, contact_id)
    assert round(found.score, 1) == 50.0
    assert (found.stage, found.mql_at) == ("mql", T0)
    with store.session() as session:
        last = session.scalars(select(Score).order_by(Score.id.desc())).first()
        assert last is not None and last.mql is False
    assert [t for _, t, _, _ in changes(store, contact_id)] == ["mql"]


def test_a_recycled_contact_can_become_an_mql_again_and_is_routed_anew(
    config: Config, store: Store
) -> None:
    # Given: an MQL routed to a rep, who hands it back to marketing
    contact_id = hot_lead(store, config)
    route_contact(store, config, contact_id, T0)
    moved = change_stage(store, EVA, "recycled", "no budget before Q3", now=T0 + timedelta(days=2))
    assert (moved.from_stage, moved.to_stage) == ("mql", "recycled")
    recycled = contact(store, contact_id)
    assert (recycled.stage, recycled.owner) == ("recycled", None)
    with store.session() as session:
        statuses = session.scalars(
            select(Assignment.status).where(Assignment.contact_id == contact_id)
        ).all()
    assert statuses == ["closed"]  # its SLA clock stopped
    # When: half a year later the contact is hot at the next fair
    later = T0 + timedelta(days=180)
    row = fair_row(EVA, size=5000, title="Head of IT", rating="hot", at=later)
    assert take_in(store, config, [row], later) == [contact_id]
    # Then: an MQL again, with the new date, and routed again
    again = contact(store, contact_id)
    assert (again.stage, again.mql_at) == ("mql", later)
    assert contact_id in find_pending(store, later).contacts  # the sweep would route it too
    assert route_contact(store, config, contact_id, later) != []
    steps = changes(store, contact_id)
    assert [(f, t) for f, t, _, _ in steps] == [
        ("lead", "mql"),
        ("mql", "recycled"),
        ("recycled", "mql"),
    ]
    assert steps[1][2] == "leadwerk stage: no budget before Q3"
    assert steps[0][3] == T0 and steps[2][3] == later


def test_disqualifying_by_hand_closes_the_open_assignment(config: Config, store: Store) -> None:
    contact_id = hot_lead(store, config)
    route_contact(store, config, contact_id, T0)
    change_stage(store, str(contact_id), "disqualified", "works for a competitor", now=T0)
    with store.session() as session:
        status = session.scalars(
            select(Assignment.status).where(Assignment.contact_id == contact_id)
        ).one()
    assert status == "closed"
    assert contact(store, contact_id).stage == "disqualified"
    with pytest.raises(StageError, match="is disqualified already"):
        change_stage(store, str(contact_id), "disqualified", now=T0)


def test_the_stage_command_explains_itself(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stage", "--help"])
    assert result.exit_code == 0
    assert "sql|recycled|disqualified" in result.output
