"""CRM sync end to end: leads taken in, scored and routed for real, the CRM outbox drained
into a local HubSpot (and a real BottleCRM), an outage ridden out, the SLA clock stopped by a
rep's first activity in the CRM, the account owner read from the CRM."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.lead_helpers import fair_row, restore_logging, take_in  # noqa: F401
from tests.servers.hubspot import HubSpotServer
from tests.sla_helpers import add_mql, write_config
from tests.test_sla_clock import assignments_of, timer_id
from tests.test_walking_skeleton import ALWAYS_OPEN_TEAM
from worker.commands.cli import app as cli
from worker.commands.crmsync import crm_tick, drain
from worker.commands.erasure import forget
from worker.commands.operations import accept_lead
from worker.commands.stage import change_stage
from worker.commands.status import collect_status
from worker.pipeline.crm import crm_status, record
from worker.pipeline.route import route_contact
from worker.pipeline.sla import fire_timer
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, Contact, CrmChange

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday morning
REPS = ["anna", "jonas", "lea", "mehmet", "sophie"]
OWNER_IDS = {f"{rep}@example.com": str(200 + i) for i, rep in enumerate(REPS)}
HOT = [
    fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT", at=NOW),
    fair_row("l.gruber@alpenwerk.at", size=1200, country="AT", title="CIO", at=NOW),
    fair_row("j.schmidt@mb-nord.de", size=250, title="Geschäftsführer", at=NOW),
]


def crm_yaml(base_url: str, extra: str = "") -> str:
    return (
        "crm:\n"
        "  kind: hubspot\n"
        f"  base_url: {base_url}\n"
        "  token_env: HUBSPOT_TOKEN\n"
        "  owners: by_email\n"
        "  map: {company: company, title: jobtitle, score: hubspotscore}\n"
        "  first_activity: poll\n" + extra
    )


@pytest.fixture
def hubspot() -> Iterator[HubSpotServer]:
    with HubSpotServer(token="pat-eu1-leadwerk", owners=OWNER_IDS) as server:
        yield server


@pytest.fixture
def leadwerk(
    hubspot: HubSpotServer, config_dir: Path, make_settings: Any, database_url: str
) -> Iterator[App]:
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    (config_dir / "crm.yaml").write_text(crm_yaml(hubspot.base_url), encoding="utf-8")
    settings = make_settings(database_url=database_url, env={"HUBSPOT_TOKEN": hubspot.token})
    application = init_app(settings)
    yield application
    application.close()


@pytest.fixture
def timed(
    hubspot: HubSpotServer, config_dir: Path, make_settings: Any, database_url: str
) -> Iterator[App]:
    """The SLA clock's config (breaches reassign) with the local HubSpot as the CRM."""
    write_config(config_dir)
    (config_dir / "crm.yaml").write_text(crm_yaml(hubspot.base_url), encoding="utf-8")
    settings = make_settings(database_url=database_url, env={"HUBSPOT_TOKEN": hubspot.token})
    application = init_app(settings)
    yield application
    application.close()


def breached(app: App, contact: int) -> tuple[Assignment, Assignment, datetime]:
    """The lead's SLA breached five minutes after NOW: its first and its new assignment."""
    [first] = assignments_of(app, contact)
    breach_at = NOW + timedelta(minutes=5)
    fire_timer(app.store, app.config, timer_id(app, first.id, "breach"), breach_at)
    _, new = assignments_of(app, contact)
    return first, new, breach_at


def route_all(app: App, rows: list[Any], now: datetime = NOW) -> list[int]:
    ids = take_in(app.store, app.config, rows, now)
    for contact_id in ids:
        route_contact(app.store, app.config, contact_id, now)
    return ids


def owners_in_store(app: App) -> dict[str, str]:
    with app.store.session() as session:
        rows = session.execute(
            select(Contact.email, Assignment.rep)
            .join(Assignment, Assignment.contact_id == Contact.id)
            .where(Assignment.status == "open")
        ).all()
    return {email: rep for email, rep in rows}


def test_every_mql_is_in_the_crm_once_owned_by_its_reps_crm_user(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT)
    result = drain(leadwerk, NOW)
    owners = owners_in_store(leadwerk)
    assert result.sent == len(owners) == 3 and result.dead == 0
    assert len(hubspot.contacts) == 3
    for email, rep in owners.items():
        _, contact = hubspot.by_email(email)
        assert contact["hubspot_owner_id"] == OWNER_IDS[f"{rep}@example.com"]
        assert contact["lifecyclestage"] == "marketingqualifiedlead"
    _, eva = hubspot.by_email("eva.mueller@bigcorp.de")
    assert eva["jobtitle"] == "Head of IT" and float(eva["hubspotscore"]) > 0
    assert len(hubspot.requests_to("POST", "/crm/v3/objects/contacts/batch/upsert")) == 1


def test_the_same_import_again_creates_nothing_new_in_the_crm(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT)
    drain(leadwerk, NOW)
    contacts_before = {cid: dict(props) for cid, props in hubspot.contacts.items()}
    calls_before = len(hubspot.calls)

    route_all(leadwerk, HOT, NOW + timedelta(minutes=5))
    again = drain(leadwerk, NOW + timedelta(minutes=5))

    assert again.sent == 0
    assert hubspot.contacts == contacts_before
    assert len(hubspot.calls) == calls_before


def test_an_hour_of_crm_outage_drains_afterwards_in_order_with_nothing_lost_or_doubled(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    hubspot.stop()
    route_all(leadwerk, HOT)
    change_stage(
        leadwerk.store, "eva.mueller@bigcorp.de", "disqualified", now=NOW, config=leadwerk.config
    )
    forget(leadwerk, "j.schmidt@mb-nord.de")

    minute = NOW
    while minute < NOW + timedelta(hours=1):
        down = drain(leadwerk, minute)
        assert down.sent == 0 and down.dead == 0
        minute += timedelta(minutes=1)
    waiting = crm_status(leadwerk.store, leadwerk.config, minute)
    assert waiting["pending"] == 4 and waiting["dead"] == 0  # 2 upserts, 1 stage, 1 delete
    assert waiting["retrying"] >= 1 and "ConnectError" in waiting["last_error"]
    assert collect_status(leadwerk, minute)["crm"]["pending"] == 4

    hubspot.start()
    after = drain(leadwerk, minute + timedelta(minutes=15))

    assert after.sent == 4 and after.dead == 0
    assert sorted(p["email"] for p in hubspot.contacts.values()) == [
        "eva.mueller@bigcorp.de",
        "l.gruber@alpenwerk.at",
    ]
    _, eva = hubspot.by_email("eva.mueller@bigcorp.de")
    assert eva["lifecyclestage"] == "other"  # disqualified: the stage after the upsert
    with leadwerk.store.session() as session:
        erased = session.scalars(select(CrmChange).where(CrmChange.change == "delete")).one()
    assert (erased.status, erased.lead, erased.payload) == ("sent", "erased", {})


def test_a_rate_limited_batch_waits_as_hubspot_asks_and_goes_out(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT)
    hubspot.rate_limit(1, retry_after="0")
    result = drain(leadwerk, NOW)
    assert result.sent == 3
    assert len(hubspot.contacts) == 3


def test_a_lead_the_crm_refuses_is_dead_with_the_crms_answer_and_shown_in_status(
    leadwerk: App, hubspot: HubSpotServer, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot.refuse_property = "jobtitle"
    route_all(leadwerk, HOT[:1])
    result = drain(leadwerk, NOW)
    assert result.dead == 1
    data = crm_status(leadwerk.store, leadwerk.config, NOW)
    [dead] = data["dead_changes"]
    assert dead["lead"] == "e***@bigcorp.de"
    assert dead["error"] == "CRM hubspot refused the request (VALIDATION_ERROR)"

    monkeypatch.setenv("HUBSPOT_TOKEN", hubspot.token)
    monkeypatch.setenv("LEADWERK_DATABASE_URL", leadwerk.settings.database_url)
    shown = CliRunner().invoke(cli, ["--config", str(config_dir), "crm", "status"])
    assert shown.exit_code == 0
    assert "CRM hubspot: 0 waiting, 0 sent, 1 dead" in shown.stdout
    assert "dead" in shown.stdout and "e***@bigcorp.de" in shown.stdout
    assert "eva.mueller" not in shown.stdout


def crm_command(app: App, hubspot: HubSpotServer, config_dir: Path, *args: str) -> Any:
    """``leadwerk crm ...`` as an admin runs it against this deployment."""
    env = {"HUBSPOT_TOKEN": hubspot.token, "LEADWERK_DATABASE_URL": app.settings.database_url}
    return CliRunner().invoke(cli, ["--config", str(config_dir), "crm", *args], env=env)


def test_a_refused_lead_is_replayed_once_the_cause_is_fixed_and_reaches_the_crm(
    leadwerk: App, hubspot: HubSpotServer, config_dir: Path
) -> None:
    # Given a lead the CRM refused (a property the portal lacked): dead after one attempt
    hubspot.refuse_property = "jobtitle"
    route_all(leadwerk, HOT[:1])
    assert drain(leadwerk, NOW).dead == 1
    [dead] = crm_status(leadwerk.store, leadwerk.config, NOW)["dead_changes"]

    # When the admin has the property added and replays the dead change
    hubspot.refuse_property = None
    replayed = crm_command(leadwerk, hubspot, config_dir, "replay", "--all")
    after = drain(leadwerk, NOW + timedelta(minutes=1))

    # Then the next round sends it: the lead is in the CRM, owned by its rep's user
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 dead CRM change(s)" in replayed.stdout
    assert after.sent == 1 and after.dead == 0
    [(email, rep)] = owners_in_store(leadwerk).items()
    _, contact = hubspot.by_email(email)  # type: ignore[misc]
    assert contact["hubspot_owner_id"] == OWNER_IDS[f"{rep}@example.com"]
    data = crm_status(leadwerk.store, leadwerk.config, NOW)
    assert (data["dead"], data["pending"]) == (0, 0)
    # and a change that is no longer dead cannot be replayed twice
    again = crm_command(leadwerk, hubspot, config_dir, "replay", str(dead["id"]))
    assert again.exit_code == 1 and f"no dead CRM change {dead['id']}" in again.output


def test_a_dead_change_that_a_later_one_overtook_stays_dead_on_replay(
    timed: App, hubspot: HubSpotServer, config_dir: Path
) -> None:
    # Given a lead whose hand-over the CRM refused, then reassigned after an SLA breach, and
    # the reassignment sent once the cause was fixed
    hubspot.refuse_property = "jobtitle"
    contact = add_mql(timed.store, 1, NOW)
    route_contact(timed.store, timed.config, contact, NOW)
    assert drain(timed, NOW).dead == 1
    hubspot.refuse_property = None
    first, new, breach_at = breached(timed, contact)
    assert drain(timed, breach_at).sent == 1

    # When the admin replays every dead change
    replayed = crm_command(timed, hubspot, config_dir, "replay", "--all")
    after = drain(timed, breach_at + timedelta(minutes=1))

    # Then the old hand-over stays dead and the CRM keeps the new rep as owner
    assert replayed.exit_code == 0, replayed.output
    assert "left dead" in replayed.stdout and "l***@company1.de" in replayed.stdout
    assert "replayed 0 dead CRM change(s)" in replayed.stdout
    assert after.sent == 0
    [lead] = hubspot.contacts.values()
    assert new.rep != first.rep
    assert lead["hubspot_owner_id"] == OWNER_IDS[f"{new.rep}@example.com"]
    assert crm_status(timed.store, timed.config, NOW)["dead"] == 1


def test_the_reps_first_activity_in_the_crm_stops_the_sla_clock(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT[:1])
    drain(leadwerk, NOW)
    contact_id, _ = hubspot.by_email("eva.mueller@bigcorp.de")
    called = NOW + timedelta(minutes=7)
    hubspot.engage(contact_id, called)

    done = crm_tick(leadwerk, read_back=True, now=NOW + timedelta(minutes=10))

    assert done.stopped_clocks == 1
    with leadwerk.store.session() as session:
        assignment = session.scalars(select(Assignment)).one()
        contact = session.get(Contact, assignment.contact_id)
    assert (assignment.status, assignment.accepted_at, contact.stage) == (
        "accepted",
        called,
        "sal",
    )


def test_routing_takes_the_account_owner_from_the_crm(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    hubspot.companies["bigcorp.de"] = OWNER_IDS["sophie@example.com"]
    # A first contact from the company, not an MQL: its domain is asked about.
    take_in(leadwerk.store, leadwerk.config, [fair_row("it@bigcorp.de", rating="cold")], NOW)
    crm_tick(leadwerk, read_back=True, now=NOW)

    route_all(leadwerk, HOT[:1], NOW + timedelta(minutes=1))

    with leadwerk.store.session() as session:
        assignment = session.scalars(select(Assignment)).one()
    assert (assignment.rep, assignment.rule) == ("sophie", "account owner")


def test_forget_deletes_the_lead_in_the_crm(leadwerk: App, hubspot: HubSpotServer) -> None:
    route_all(leadwerk, HOT[:1])
    drain(leadwerk, NOW)
    assert hubspot.by_email("eva.mueller@bigcorp.de") is not None

    erased = forget(leadwerk, "eva.mueller@bigcorp.de")
    drain(leadwerk, NOW)

    assert erased.crm
    assert hubspot.by_email("eva.mueller@bigcorp.de") is None
    with leadwerk.store.session() as session:
        assert session.scalar(select(func.count()).select_from(CrmChange)) == 1


def test_without_crm_yaml_nothing_waits_for_a_crm(
    config_dir: Path, make_settings: Any, database_url: str
) -> None:
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    application = init_app(make_settings(database_url=database_url))
    try:
        route_all(application, HOT[:1])
        with application.store.session() as session:
            assert session.scalar(select(func.count()).select_from(CrmChange)) == 0
        assert collect_status(application, NOW)["crm"] is None
    finally:
        application.close()


def test_a_call_task_reaches_the_crm_on_the_lead_for_its_owner(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT[:1])
    rep = owners_in_store(leadwerk)["eva.mueller@bigcorp.de"]
    due = NOW + timedelta(days=1)
    with leadwerk.store.transaction() as connection:
        eva = connection.execute(select(Contact).where(Contact.email.like("eva%"))).one()
        task = {"subject": "Call about the conversation at the fair", "due": due.isoformat()}
        record(connection, leadwerk.config, eva, "task", {**task, "rep": rep}, NOW)

    assert drain(leadwerk, NOW).sent == 2  # the lead, then its task

    contact_id, _ = hubspot.by_email("eva.mueller@bigcorp.de")
    [made] = hubspot.tasks
    assert made["properties"]["hs_task_subject"] == "Call about the conversation at the fair"
    assert made["properties"]["hubspot_owner_id"] == OWNER_IDS[f"{rep}@example.com"]
    assert made["associations"][0]["to"]["id"] == contact_id


def test_a_reassignment_after_a_breach_moves_the_lead_to_the_new_reps_crm_user(
    timed: App, hubspot: HubSpotServer
) -> None:
    contact = add_mql(timed.store, 1, NOW)
    route_contact(timed.store, timed.config, contact, NOW)
    drain(timed, NOW)
    first, new, breach_at = breached(timed, contact)

    assert drain(timed, breach_at).sent == 1

    [lead] = hubspot.contacts.values()
    assert new.rep != first.rep
    assert lead["hubspot_owner_id"] == OWNER_IDS[f"{new.rep}@example.com"]
    assert len(hubspot.requests_to("POST", "/crm/v3/objects/contacts/batch/upsert")) == 2


def test_accepting_a_lead_moves_it_to_the_sales_stage_in_the_crm(
    leadwerk: App, hubspot: HubSpotServer
) -> None:
    route_all(leadwerk, HOT[:1])
    drain(leadwerk, NOW)
    # When the rep accepts the lead (link, Slack or leadwerk accept: one function)
    assert accept_lead(leadwerk, "eva.mueller@bigcorp.de", NOW + timedelta(minutes=3))
    assert drain(leadwerk, NOW + timedelta(minutes=3)).sent == 1
    # Then the CRM shows it as sales-accepted
    _, contact = hubspot.by_email("eva.mueller@bigcorp.de")
    assert contact["lifecyclestage"] == "salesqualifiedlead"
