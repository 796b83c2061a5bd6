"""CRM sync into a real BottleCRM: leads routed by Leadwerk land there once, with their rep and
status, follow a stage change, survive the CRM going down, and go when a person is erased."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.lead_helpers import fair_row, restore_logging  # noqa: F401
from tests.servers.bottlecrm import BottleCrm
from tests.test_crm_sync import NOW, owners_in_store, route_all
from tests.test_walking_skeleton import ALWAYS_OPEN_TEAM
from worker.commands.crmsync import drain
from worker.commands.erasure import forget
from worker.commands.stage import change_stage
from worker.runtime.app import App, init_app


@pytest.fixture
def leadwerk(
    bottlecrm: BottleCrm, config_dir: Path, make_settings: Any
) -> Iterator[tuple[App, dict[str, str]]]:
    first, second = bottlecrm.users.values()
    owners = {"anna": first, "jonas": first, "lea": second, "mehmet": second, "sophie": first}
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    (config_dir / "crm.yaml").write_text(
        "crm:\n"
        "  kind: bottlecrm\n"
        f"  base_url: {bottlecrm.base_url}\n"
        "  token_env: BOTTLECRM_TOKEN\n"
        f"  owners: {owners}\n"
        "  map: {company: company_name, title: job_title, score: description}\n",
        encoding="utf-8",
    )
    settings = make_settings(env={"BOTTLECRM_TOKEN": bottlecrm.token})
    application = init_app(settings)
    yield application, owners
    application.close()


def hot_rows() -> list[Any]:
    run = uuid.uuid4().hex[:8]
    return [
        fair_row(f"eva.mueller@bigcorp-{run}.de", size=5000, title="Head of IT", at=NOW),
        fair_row(f"l.gruber@alpenwerk-{run}.at", size=1200, country="AT", title="CIO", at=NOW),
        fair_row(f"j.schmidt@mb-nord-{run}.de", size=250, title="Geschäftsführer", at=NOW),
    ]


def test_mqls_are_in_bottlecrm_once_assigned_to_their_reps_and_a_rerun_adds_nothing(
    leadwerk: tuple[App, dict[str, str]], bottlecrm: BottleCrm
) -> None:
    app, owners = leadwerk
    rows = hot_rows()
    route_all(app, rows)
    assert drain(app, NOW).sent == 3

    for email, rep in owners_in_store(app).items():
        [lead] = bottlecrm.leads(email)
        assert [user["id"] for user in lead["assigned_to"]] == [owners[rep]]
        assert lead["status"] == "assigned"
    [eva] = bottlecrm.leads(rows[0].data["E-Mail"])
    assert eva["job_title"] == "Head of IT"

    route_all(app, rows, NOW + timedelta(minutes=5))
    drain(app, NOW + timedelta(minutes=5))
    assert all(len(bottlecrm.leads(row.data["E-Mail"])) == 1 for row in rows)


def test_a_lead_already_in_bottlecrm_is_updated_not_duplicated(
    leadwerk: tuple[App, dict[str, str]], bottlecrm: BottleCrm
) -> None:
    app, owners = leadwerk
    rows = hot_rows()[:1]
    email = rows[0].data["E-Mail"]
    with bottlecrm.api() as client:
        made = client.post("/api/leads/", json={"email": email.upper(), "first_name": "Eva"})
        assert made.status_code == 200, made.text

    route_all(app, rows)
    assert drain(app, NOW).sent == 1

    [lead] = bottlecrm.leads(email)
    rep = owners_in_store(app)[email]
    assert lead["id"] == made.json()["id"]
    assert [user["id"] for user in lead["assigned_to"]] == [owners[rep]]


def test_a_stage_change_and_an_erasure_follow_the_lead_into_bottlecrm(
    leadwerk: tuple[App, dict[str, str]], bottlecrm: BottleCrm
) -> None:
    app, _ = leadwerk
    eva, lukas, _ = (row.data["E-Mail"] for row in hot_rows())
    route_all(app, [fair_row(eva, size=5000, at=NOW), fair_row(lukas, size=5000, at=NOW)])
    drain(app, NOW)

    change_stage(app.store, eva, "disqualified", now=NOW, config=app.config)
    forget(app, lukas)
    assert drain(app, NOW).sent == 2

    [lead] = bottlecrm.leads(eva)
    assert lead["status"] == "closed"
    assert bottlecrm.leads(lukas) == []


def test_bottlecrm_down_then_back_gets_every_lead_once(
    leadwerk: tuple[App, dict[str, str]], bottlecrm: BottleCrm
) -> None:
    app, _ = leadwerk
    rows = hot_rows()
    bottlecrm.stop()
    try:
        route_all(app, rows)
        down = drain(app, NOW)
        assert down.sent == 0 and down.retried == 3 and down.stopped
    finally:
        bottlecrm.restart()
    back = drain(app, NOW + timedelta(minutes=1))
    assert back.sent == 3
    assert all(len(bottlecrm.leads(row.data["E-Mail"])) == 1 for row in rows)
