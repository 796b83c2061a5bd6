"""What each CRM kind does about its own vendor's ways: HubSpot's rate limits and conflicts,
Salesforce's token refresh and locked rows, the webhook sink's signature."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest

from config.models import CrmSettings
from connectors.crm import build_crm
from connectors.crm.base import CrmLead
from connectors.errors import FatalError, RetriableError, SkippableError
from tests.crm_harness import FAST_RETRY
from tests.servers.crmserver import Answer, Call, CrmServer
from tests.servers.hubspot import HubSpotServer
from tests.servers.salesforce import SalesforceServer


@pytest.fixture
def hubspot() -> Iterator[HubSpotServer]:
    with HubSpotServer(owners={"anna@x.de": "101"}) as server:
        yield server


def hubspot_crm(server: HubSpotServer, **retry: Any) -> Any:
    settings = CrmSettings(kind="hubspot", base_url=server.base_url, token_env="HS_TOKEN")
    return build_crm(settings, {"HS_TOKEN": server.token}, retry={**FAST_RETRY, **retry})


def test_hubspot_waits_the_retry_after_it_is_given_and_sends_again(
    hubspot: HubSpotServer,
) -> None:
    hubspot.rate_limit(1, retry_after="0")
    [done] = hubspot_crm(hubspot).upsert_leads([CrmLead("eva@bigcorp.de")])
    assert done.crm_id and len(hubspot.contacts) == 1
    upserts = hubspot.requests_to("POST", "/crm/v3/objects/contacts/batch/upsert")
    assert len(upserts) == 2


def test_hubspot_asking_for_a_long_wait_comes_back_as_a_retry_after_for_the_outbox(
    hubspot: HubSpotServer,
) -> None:
    hubspot.rate_limit(1, retry_after="120")
    with pytest.raises(RetriableError) as later:
        hubspot_crm(hubspot).upsert_leads([CrmLead("eva@bigcorp.de")])
    assert later.value.retry_after == 120
    assert len(hubspot.calls) == 1


def test_hubspot_without_retry_after_waits_out_the_rate_limit_interval(
    hubspot: HubSpotServer,
) -> None:
    headers = {
        "X-HubSpot-RateLimit-Remaining": "0",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    }
    hubspot.script([Answer(429, {"category": "RATE_LIMITS"}, headers)])
    with pytest.raises(RetriableError) as later:
        hubspot_crm(hubspot, max_wait=5).upsert_leads([CrmLead("eva@bigcorp.de")])
    assert later.value.retry_after == 10


def test_a_hubspot_conflict_is_tried_again(hubspot: HubSpotServer) -> None:
    hubspot.script([Answer(409, {"category": "CONFLICT", "message": "Contact already exists"})])
    [done] = hubspot_crm(hubspot).upsert_leads([CrmLead("eva@bigcorp.de")])
    assert done.crm_id and len(hubspot.contacts) == 1


def test_a_batch_naming_one_contact_twice_goes_out_once_with_its_latest_state(
    hubspot: HubSpotServer,
) -> None:
    results = hubspot_crm(hubspot).upsert_leads(
        [CrmLead("eva@bigcorp.de", stage="mql"), CrmLead("Eva@BigCorp.de", stage="sql")]
    )
    assert results[0].crm_id == results[1].crm_id
    [contact] = hubspot.contacts.values()
    assert contact["lifecyclestage"] == "salesqualifiedlead"


@pytest.fixture
def salesforce() -> Iterator[SalesforceServer]:
    with SalesforceServer(users={"anna@x.de": "005000000000000001"}) as server:
        yield server


def salesforce_crm(server: SalesforceServer) -> Any:
    settings = CrmSettings(
        kind="salesforce",
        base_url=server.base_url,
        client_id_env="SF_ID",
        client_secret_env="SF_SECRET",
    )
    env = {"SF_ID": server.client_id, "SF_SECRET": server.client_secret}
    return build_crm(settings, env, retry=FAST_RETRY)


def test_salesforce_signs_in_once_and_again_only_when_the_token_expires(
    salesforce: SalesforceServer,
) -> None:
    crm = salesforce_crm(salesforce)
    crm.upsert_leads([CrmLead("eva@bigcorp.de")])
    crm.find_user("anna@x.de")
    assert salesforce.tokens_issued == 1
    salesforce.expire_tokens()
    assert crm.find_user("anna@x.de") == "005000000000000001"
    assert salesforce.tokens_issued == 2


def test_salesforce_refusing_the_client_credentials_names_the_variables(
    salesforce: SalesforceServer,
) -> None:
    settings = CrmSettings(
        kind="salesforce",
        base_url=salesforce.base_url,
        client_id_env="SF_ID",
        client_secret_env="SF_SECRET",
    )
    crm = build_crm(settings, {"SF_ID": "someone", "SF_SECRET": "wrong"}, retry=FAST_RETRY)
    with pytest.raises(FatalError, match="check SF_ID and SF_SECRET"):
        crm.find_user("anna@x.de")


def test_a_locked_row_is_a_passing_fault_for_that_lead_alone(
    salesforce: SalesforceServer,
) -> None:
    salesforce.lock_next(1)
    locked, fine = salesforce_crm(salesforce).upsert_leads(
        [CrmLead("eva@bigcorp.de"), CrmLead("tom@smallco.de")]
    )
    assert isinstance(locked.error, RetriableError) and "UNABLE_TO_LOCK_ROW" in str(locked.error)
    assert fine.crm_id and len(salesforce.leads) == 1


def test_leads_go_to_salesforce_in_composite_requests_of_up_to_200(
    salesforce: SalesforceServer,
) -> None:
    leads = [CrmLead(f"lead{i}@bigcorp.de") for i in range(450)]
    results = salesforce_crm(salesforce).upsert_leads(leads)
    assert all(r.crm_id for r in results) and len(salesforce.leads) == 450
    upserts = salesforce.requests_to("PATCH", "/services/data/v60.0/composite/sobjects/Lead/")
    assert [len(call.body["records"]) for call in upserts] == [200, 200, 50]


def test_a_missing_last_name_and_company_are_sent_as_salesforce_expects(
    salesforce: SalesforceServer,
) -> None:
    [done] = salesforce_crm(salesforce).upsert_leads([CrmLead("eva@bigcorp.de")])
    lead = salesforce.leads[done.crm_id]
    assert (lead["LastName"], lead["Company"]) == ("[not provided]", "[not provided]")


def test_a_quote_in_an_e_mail_cannot_change_a_soql_query(salesforce: SalesforceServer) -> None:
    assert salesforce_crm(salesforce).find_user("x' OR Email != '") is None


class Receiver(CrmServer):
    """Any other CRM: takes signed JSON changes, answers 204."""

    def answer(self, call: Call) -> Answer:
        return Answer(204)


def test_the_webhook_sink_signs_every_change_with_hmac_sha256() -> None:
    with Receiver() as receiver:
        settings = CrmSettings(
            kind="webhook",
            base_url=receiver.base_url + "/crm-changes",
            token_env="CRM_WEBHOOK_SECRET",
            map={"company": "company"},
        )
        crm = build_crm(settings, {"CRM_WEBHOOK_SECRET": "s3cret"}, retry=FAST_RETRY)
        [done] = crm.upsert_leads([CrmLead("eva@bigcorp.de", {"company": "BigCorp"}, "anna")])
        crm.set_stage(done.crm_id, "sql")
        crm.delete(done.crm_id)
    bodies = [call.body for call in receiver.calls]
    assert bodies == [
        {
            "change": "upsert",
            "email": "eva@bigcorp.de",
            "fields": {"company": "BigCorp"},
            "owner": "anna",
            "stage": None,
        },
        {"change": "stage", "email": "eva@bigcorp.de", "stage": "sql"},
        {"change": "delete", "email": "eva@bigcorp.de"},
    ]
    for call in receiver.calls:
        stamp = call.headers["x-leadwerk-timestamp"]
        assert abs(int(stamp) - time.time()) < 60
        signed = stamp.encode() + b"." + call.raw
        expected = hmac.new(b"s3cret", signed, hashlib.sha256).hexdigest()
        assert call.headers["x-leadwerk-signature"] == f"sha256={expected}"


def test_a_webhook_receiver_refusing_a_change_is_a_refusal_not_a_retry() -> None:
    class Refusing(CrmServer):
        def answer(self, call: Call) -> Answer:
            return Answer(422, {"error": "unprocessable"})

    with Refusing() as receiver:
        settings = CrmSettings(kind="webhook", base_url=receiver.base_url, token_env="SECRET")
        crm = build_crm(settings, {"SECRET": "s"}, retry=FAST_RETRY)
        with pytest.raises(SkippableError, match=r"refused the change \(422\)"):
            crm.set_stage("eva@bigcorp.de", "sql")
    assert len(receiver.calls) == 1
