"""What every CRM connector promises, run against each: local HubSpot and Salesforce servers
that speak their documented shapes, and a real BottleCRM."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.crm.base import CrmLead
from connectors.errors import FatalError, RetriableError, SkippableError
from tests.crm_harness import harness_of


@pytest.fixture(params=["hubspot", "salesforce", "bottlecrm"])
def crm(request: pytest.FixtureRequest) -> Iterator[Any]:
    with harness_of(request.param, request) as harness:
        yield harness


def _email(name: str = "eva") -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@bigcorp-{uuid.uuid4().hex[:6]}.de"


def _owner(crm: Any, rep: str) -> str:
    owner = crm.connector().owner_id(rep, crm.reps[rep])
    assert owner, f"the CRM has no user for {rep}"
    return owner


def test_a_lead_is_created_once_with_its_owner_and_stage(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    anna = _owner(crm, "anna")
    [made] = connector.upsert_leads([CrmLead(email, {"company": "BigCorp"}, anna, "mql")])
    assert made.error is None and made.crm_id
    seen = crm.find(email)
    assert (seen.crm_id, seen.owner, seen.stage) == (made.crm_id, anna, "mql")
    assert seen.fields["company"] == "BigCorp"


def test_the_same_lead_upserted_again_updates_it_and_creates_no_second_record(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    anna = _owner(crm, "anna")
    [first] = connector.upsert_leads([CrmLead(email, {"company": "BigCorp"}, anna, "mql")])
    before = len(crm.leads())
    [again] = connector.upsert_leads([CrmLead(email, {"company": "BigCorp AG"}, anna, "mql")])
    assert again.crm_id == first.crm_id
    assert len(crm.leads()) == before
    assert crm.find(email).fields["company"] == "BigCorp AG"


def test_a_batch_of_leads_comes_back_one_result_per_lead_in_order(crm: Any) -> None:
    connector = crm.connector()
    anna = _owner(crm, "anna")
    emails = [_email(f"lead{i}") for i in range(5)]
    results = connector.upsert_leads([CrmLead(e, {"company": "X"}, anna, "mql") for e in emails])
    assert [r.email.lower() for r in results] == emails
    assert all(r.crm_id and r.error is None for r in results)
    assert {crm.find(e).crm_id for e in emails} == {r.crm_id for r in results}


def test_a_reassignment_and_a_stage_change_follow_the_lead(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    anna, jonas = _owner(crm, "anna"), _owner(crm, "jonas")
    [made] = connector.upsert_leads([CrmLead(email, {"company": "X"}, anna, "mql")])
    connector.set_owner(made.crm_id, jonas)
    connector.set_stage(made.crm_id, "sql")
    seen = crm.find(email)
    assert (seen.owner, seen.stage) == (jonas, "sql")


def test_a_task_lands_on_the_lead(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    anna = _owner(crm, "anna")
    [made] = connector.upsert_leads([CrmLead(email, {"company": "X"}, anna, "mql")])
    due = datetime.now(UTC) + timedelta(days=1)
    connector.create_task(made.crm_id, anna, "Call about the conversation at the fair", due)
    assert crm.tasks_on(made.crm_id) == ["Call about the conversation at the fair"]


def test_a_deleted_lead_is_gone_and_deleting_it_again_is_no_error(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    [made] = connector.upsert_leads([CrmLead(email, {"company": "X"}, None, "mql")])
    assert connector.find_lead(email) == made.crm_id
    connector.delete(made.crm_id)
    assert crm.find(email) is None
    assert connector.find_lead(email) is None
    connector.delete(made.crm_id)


def test_a_rep_is_found_by_e_mail_and_a_stranger_is_not(crm: Any) -> None:
    connector = crm.connector()
    assert connector.find_user(crm.reps["anna"]) != connector.find_user(crm.reps["jonas"])
    assert connector.find_user("nobody@leadwerk-crm.example") is None


def test_an_account_owner_is_read_by_the_company_domain(crm: Any) -> None:
    domain = f"acme-{uuid.uuid4().hex[:8]}.com"
    jonas = _owner(crm, "jonas")
    crm.add_account(domain, jonas)
    connector = crm.connector()
    assert connector.account_owner(domain) == jonas
    assert connector.account_owner(f"other-{domain}") is None


def test_the_first_activity_on_a_lead_is_reported_after_the_time_asked(crm: Any) -> None:
    connector, email = crm.connector(), _email()
    [made] = connector.upsert_leads([CrmLead(email, {"company": "X"}, _owner(crm, "anna"), "mql")])
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    crm.act_on(made.crm_id, since + timedelta(minutes=2))
    found = {a.crm_id: a.at for a in connector.first_activity(since)}
    assert found.get(made.crm_id) == since + timedelta(minutes=2)
    later = {a.crm_id for a in connector.first_activity(since + timedelta(minutes=3))}
    assert made.crm_id not in later


def test_a_crm_that_is_down_is_a_passing_fault(crm: Any) -> None:
    connector = crm.connector()
    connector.find_user(crm.reps["anna"])  # signed in, where the kind signs in
    with crm.down(), pytest.raises(RetriableError):
        connector.upsert_leads([CrmLead(_email(), {"company": "X"}, None, "mql")])


def test_a_wrong_credential_stops_with_the_variable_to_fix(crm: Any) -> None:
    crm.env = {key: "wrong-" + value for key, value in crm.env.items()}
    with pytest.raises(FatalError) as failed:
        crm.connector().find_user(crm.reps["anna"])
    assert any(name in str(failed.value) for name in crm.env)


def test_a_missing_credential_names_the_variable(crm: Any) -> None:
    crm.env = {}
    with pytest.raises(FatalError, match="is not set in the environment"):
        crm.connector().find_user(crm.reps["anna"])


def test_a_lead_the_crm_refuses_fails_alone_and_the_batch_goes_on(crm: Any) -> None:
    good, bad = _email("good"), _email("bad")
    refused_owner = {"hubspot": None, "salesforce": "005NOSUCHUSER", "bottlecrm": "not-a-uuid"}
    fields = {"company": "X", "nickname": "1"}
    connector = crm.connector(map={"nickname": "hs_nickname"})
    if crm.kind == "hubspot":
        crm.server.refuse_property = "hs_nickname"
    results = connector.upsert_leads(
        [
            CrmLead(bad, fields, refused_owner[crm.kind], "mql"),
            CrmLead(good, {"company": "X"}, None, "mql"),
        ]
    )
    assert isinstance(results[0].error, SkippableError)
    assert results[1].crm_id and crm.find(good) is not None
    assert bad not in str(results[0].error)
