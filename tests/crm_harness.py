"""One CRM under test, whichever kind: its connector, its reps and a look into its records.

The contract suite (``test_crm_contract.py``) runs the same sentences against every kind
through this: the local HubSpot and Salesforce servers and a real BottleCRM.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pytest

from config.models import CrmSettings
from connectors.crm import build_crm
from connectors.crm.base import CrmConnector
from tests.conftest import CI
from tests.servers.bottlecrm import BottleCrm, BottleCrmUnavailable
from tests.servers.hubspot import HubSpotServer
from tests.servers.salesforce import SalesforceServer

# Quick retries: a test that sees a CRM down should not wait out production backoff.
FAST_RETRY = {"max_attempts": 2, "base_wait": 0.01, "max_wait": 0.05}
REP_EMAILS = {"anna": "anna@leadwerk-crm.example", "jonas": "jonas@leadwerk-crm.example"}


@dataclass
class Seen:
    """A lead as the CRM holds it, in Leadwerk's words."""

    crm_id: str
    email: str
    owner: str | None
    stage: str | None
    fields: dict[str, Any]


class Harness(Protocol):
    kind: str
    settings: CrmSettings
    env: dict[str, str]
    reps: dict[str, str]  # rep name -> e-mail as the CRM knows the user

    def connector(self, **overrides: Any) -> CrmConnector: ...
    def leads(self) -> list[Seen]: ...
    def add_account(self, domain: str, owner: str) -> None: ...
    def act_on(self, crm_id: str, at: datetime) -> None: ...
    def tasks_on(self, crm_id: str) -> list[str]: ...
    @contextmanager
    def down(self) -> Iterator[None]: ...


class _Base:
    kind = ""
    settings: CrmSettings
    env: dict[str, str]

    def connector(self, **overrides: Any) -> CrmConnector:
        settings = self.settings.model_copy(update=overrides)
        return build_crm(settings, self.env, retry=FAST_RETRY)

    def find(self, email: str) -> Seen | None:
        return next((s for s in self.leads() if s.email.lower() == email.lower()), None)


class HubSpotHarness(_Base):
    kind = "hubspot"

    def __init__(self, server: HubSpotServer) -> None:
        self.server = server
        self.reps = dict(REP_EMAILS)
        self.env = {"HUBSPOT_TOKEN": server.token}
        self.settings = CrmSettings(
            kind="hubspot",
            base_url=server.base_url,
            token_env="HUBSPOT_TOKEN",
            map={"company": "company", "score": "hubspotscore"},
        )

    def leads(self) -> list[Seen]:
        stages = {"marketingqualifiedlead": "mql", "salesqualifiedlead": "sql", "lead": "lead"}
        with self.server.lock:
            return [
                Seen(
                    cid,
                    p["email"],
                    p.get("hubspot_owner_id"),
                    stages.get(p.get("lifecyclestage", ""), p.get("lifecyclestage")),
                    {"company": p.get("company")},
                )
                for cid, p in self.server.contacts.items()
            ]

    def add_account(self, domain: str, owner: str) -> None:
        self.server.companies[domain] = owner

    def act_on(self, crm_id: str, at: datetime) -> None:
        self.server.engage(crm_id, at)

    def tasks_on(self, crm_id: str) -> list[str]:
        return [
            t["properties"]["hs_task_subject"]
            for t in self.server.tasks
            if t["associations"][0]["to"]["id"] == crm_id
        ]

    @contextmanager
    def down(self) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()


class SalesforceHarness(_Base):
    kind = "salesforce"

    def __init__(self, server: SalesforceServer) -> None:
        self.server = server
        self.reps = dict(REP_EMAILS)
        self.env = {"SF_CLIENT_ID": server.client_id, "SF_CLIENT_SECRET": server.client_secret}
        self.settings = CrmSettings(
            kind="salesforce",
            base_url=server.base_url,
            client_id_env="SF_CLIENT_ID",
            client_secret_env="SF_CLIENT_SECRET",
        )

    def leads(self) -> list[Seen]:
        stages = {"Open - Not Contacted": "mql", "Working - Contacted": "sql"}
        with self.server.lock:
            return [
                Seen(
                    lid,
                    v["Email"],
                    v.get("OwnerId"),
                    stages.get(v.get("Status", ""), v.get("Status")),
                    {"company": v.get("Company")},
                )
                for lid, v in self.server.leads.items()
            ]

    def add_account(self, domain: str, owner: str) -> None:
        self.server.accounts.append({"Website": f"https://www.{domain}/", "OwnerId": owner})

    def act_on(self, crm_id: str, at: datetime) -> None:
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        self.server.tasks.append({"WhoId": crm_id, "Subject": "Call", "CreatedDate": stamp})

    def tasks_on(self, crm_id: str) -> list[str]:
        return [t["Subject"] for t in self.server.tasks if t.get("WhoId") == crm_id]

    @contextmanager
    def down(self) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()


_ACCOUNT = """
import sys, django
django.setup()
from common.models import Org, Profile
from accounts.models import Account
org = Org.objects.get(id=sys.argv[1])
account = Account.objects.create(name=sys.argv[2], website="https://www." + sys.argv[2], org=org)
account.assigned_to.add(Profile.objects.get(id=sys.argv[3]))
print("{}")
"""

_ACT = """
import sys, django
django.setup()
from datetime import datetime
from leads.models import Lead
Lead.objects.filter(id=sys.argv[1]).update(first_response_at=datetime.fromisoformat(sys.argv[2]))
print("{}")
"""

_TASKS = """
import json, sys, django
django.setup()
from tasks.models import Task
print(json.dumps([t.title for t in Task.objects.filter(lead_id=sys.argv[1])]))
"""


class BottleCrmHarness(_Base):
    kind = "bottlecrm"

    def __init__(self, crm: BottleCrm) -> None:
        self.crm = crm
        self.reps = dict(crm.rep_emails)
        self.env = {"BOTTLECRM_TOKEN": crm.token}
        self.settings = CrmSettings(
            kind="bottlecrm", base_url=crm.base_url, token_env="BOTTLECRM_TOKEN"
        )

    def leads(self) -> list[Seen]:
        stages = {"assigned": "mql", "in process": "sql"}
        return [
            Seen(
                lead["id"],
                lead["email"],
                lead["assigned_to"][0]["id"] if lead["assigned_to"] else None,
                stages.get(lead["status"], lead["status"]),
                {"company": lead.get("company_name")},
            )
            for lead in self.crm.leads()
        ]

    def add_account(self, domain: str, owner: str) -> None:
        self.crm._django(_ACCOUNT, self.crm.org, domain, owner)

    def act_on(self, crm_id: str, at: datetime) -> None:
        self.crm._django(_ACT, crm_id, at.isoformat())

    def tasks_on(self, crm_id: str) -> list[str]:
        return list(self.crm._django(_TASKS, crm_id))

    @contextmanager
    def down(self) -> Iterator[None]:
        self.crm.stop()
        try:
            yield
        finally:
            self.crm.restart()


@contextmanager
def harness_of(kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The harness of one kind, its CRM running for the test."""
    if kind == "hubspot":
        owners = {email: str(100 + i) for i, email in enumerate(REP_EMAILS.values())}
        with HubSpotServer(owners=owners) as server:
            yield HubSpotHarness(server)
    elif kind == "salesforce":
        users = {email: f"005{i:015d}" for i, email in enumerate(REP_EMAILS.values())}
        with SalesforceServer(users=users) as server:
            yield SalesforceHarness(server)
    else:
        crm = request.getfixturevalue("bottlecrm")
        yield BottleCrmHarness(crm)


def start_bottlecrm(admin_url: str) -> BottleCrm:
    """A running BottleCRM, or the test skipped with the reason (failed under CI=true)."""
    try:
        return BottleCrm.start(admin_url)
    except BottleCrmUnavailable as exc:
        if CI:
            pytest.fail(f"BottleCRM cannot run: {exc} (CI=true: it must)")
        pytest.skip(f"BottleCRM cannot run here: {exc}")
