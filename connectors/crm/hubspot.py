"""HubSpot CRM v3 with a private-app token.

Leads are contacts, upserted by e-mail in batches (``POST
/crm/v3/objects/contacts/batch/upsert`` with ``idProperty: email``); the owner is
``hubspot_owner_id`` (owners found by e-mail through ``/crm/v3/owners``), the stage
``lifecyclestage``. A 429 waits for ``Retry-After``, else for the rest of the interval the
``X-HubSpot-RateLimit-*`` headers announce; a 409 (two writers on one contact) is tried again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from connectors.crm.base import Activity, CrmConnector, CrmLead, Upserted, chunks
from connectors.errors import ConnectorError, RetriableError, SkippableError
from connectors.http import parse_retry_after

# The association type of a task to a contact, as HubSpot defines it.
TASK_TO_CONTACT = 204
FIRST_ENGAGEMENT = "hs_sa_first_engagement_date"


class _Gone(ConnectorError):
    """A 404: no such object."""


def _inspect(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is None and response.headers.get("X-HubSpot-RateLimit-Remaining") == "0":
            interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
            wait = int(interval) / 1000 if interval and interval.isdigit() else None
        raise RetriableError("CRM hubspot: rate limited (429)", retry_after=wait)
    if status == 409:
        raise RetriableError("CRM hubspot: conflict (409), another write to the same record")
    if status == 404:
        raise _Gone("not found")
    if status == 400:
        category = _category(response)
        raise SkippableError(f"CRM hubspot refused the request ({category or 400})")


def _category(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("category")) if isinstance(body, dict) and body.get("category") else None


class HubSpotCrm(CrmConnector):
    kind = "hubspot"
    max_batch = 100
    default_map: ClassVar[dict[str, str]] = {
        "first_name": "firstname",
        "last_name": "lastname",
        "company": "company",
        "title": "jobtitle",
        "phone": "phone",
    }
    default_stages: ClassVar[dict[str, str]] = {
        "lead": "lead",
        "mql": "marketingqualifiedlead",
        "sal": "salesqualifiedlead",
        "sql": "salesqualifiedlead",
        "recycled": "lead",
        "disqualified": "other",
    }

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        token = self.secret(self.config.token_env, "the private-app token")
        headers = {"Authorization": f"Bearer {token}"}
        return self.call(method, path, headers=headers, inspect=_inspect, **kwargs).body

    def _properties(self, lead: CrmLead) -> dict[str, Any]:
        properties = {key: _text(value) for key, value in self.mapped(lead.fields).items()}
        properties["email"] = lead.email
        if lead.owner:
            properties["hubspot_owner_id"] = lead.owner
        if lead.stage:
            properties["lifecyclestage"] = self.stage_value(lead.stage)
        return properties

    def upsert_leads(self, leads: Sequence[CrmLead]) -> list[Upserted]:
        results: dict[str, Upserted] = {}
        for batch in chunks(_last_per_email(leads), self.max_batch):
            inputs = [
                {"idProperty": "email", "id": lead.email, "properties": self._properties(lead)}
                for lead in batch
            ]
            try:
                body = self._call(
                    "POST", "/crm/v3/objects/contacts/batch/upsert", json={"inputs": inputs}
                )
            except SkippableError as refused:
                # The batch was refused as a whole: find the leads at fault one by one.
                if len(batch) == 1:
                    results[batch[0].email.lower()] = Upserted(batch[0].email, error=refused)
                    continue
                for lead in batch:
                    [one] = self.upsert_leads([lead])
                    results[lead.email.lower()] = one
                continue
            for row in body.get("results", []):
                email = str(row.get("properties", {}).get("email") or row.get("id", "")).lower()
                results[email] = Upserted(email, crm_id=str(row["id"]))
            for error in body.get("errors", []):
                for key in error.get("context", {}).get("ids", []):
                    message = f"{self.label} refused the contact ({error.get('category')})"
                    results.setdefault(
                        str(key).lower(), Upserted(str(key), error=SkippableError(message))
                    )
        missing = RetriableError(f"{self.label}: the batch answer left the contact out")
        return [
            results.get(lead.email.lower(), Upserted(lead.email, error=missing)) for lead in leads
        ]

    def _patch(self, crm_id: str, properties: dict[str, Any]) -> None:
        try:
            self._call(
                "PATCH", f"/crm/v3/objects/contacts/{crm_id}", json={"properties": properties}
            )
        except _Gone:
            raise SkippableError(f"{self.label}: contact {crm_id} is not in the CRM") from None

    def set_owner(self, crm_id: str, owner: str) -> None:
        self._patch(crm_id, {"hubspot_owner_id": owner})

    def set_stage(self, crm_id: str, stage: str) -> None:
        self._patch(crm_id, {"lifecyclestage": self.stage_value(stage)})

    def create_task(self, crm_id: str, owner: str | None, subject: str, due: datetime) -> str:
        properties = {
            "hs_task_subject": subject,
            "hs_timestamp": due.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "hs_task_status": "NOT_STARTED",
        }
        if owner:
            properties["hubspot_owner_id"] = owner
        body = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": crm_id},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": TASK_TO_CONTACT,
                        }
                    ],
                }
            ],
        }
        return str(self._call("POST", "/crm/v3/objects/tasks", json=body)["id"])

    def delete(self, crm_id: str) -> None:
        try:
            self._call("DELETE", f"/crm/v3/objects/contacts/{crm_id}")
        except _Gone:
            return

    def find_lead(self, email: str) -> str | None:
        try:
            body = self._call(
                "GET", f"/crm/v3/objects/contacts/{email}", params={"idProperty": "email"}
            )
        except _Gone:
            return None
        return str(body["id"])

    def find_user(self, email: str) -> str | None:
        body = self._call("GET", "/crm/v3/owners", params={"email": email, "limit": 1})
        for owner in body.get("results", []):
            if str(owner.get("email", "")).lower() == email.lower():
                return str(owner["id"])
        return None

    def account_owner(self, domain: str) -> str | None:
        query = {
            "filterGroups": [
                {"filters": [{"propertyName": "domain", "operator": "EQ", "value": domain}]}
            ],
            "properties": ["domain", "hubspot_owner_id"],
            "limit": 1,
        }
        body = self._call("POST", "/crm/v3/objects/companies/search", json=query)
        for company in body.get("results", []):
            owner = company.get("properties", {}).get("hubspot_owner_id")
            if owner:
                return str(owner)
        return None

    def first_activity(self, since: datetime) -> list[Activity]:
        stamp = str(int(since.timestamp() * 1000))
        found = [
            Activity(str(row["id"]), _parse_time(row["properties"][FIRST_ENGAGEMENT]), email)
            for row in self._search_contacts(FIRST_ENGAGEMENT, stamp)
            if row["properties"].get(FIRST_ENGAGEMENT)
            for email in [row["properties"].get("email")]
        ]
        return sorted(found, key=lambda activity: activity.at)

    def _search_contacts(self, prop: str, since_ms: str) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            query: dict[str, Any] = {
                "filterGroups": [
                    {"filters": [{"propertyName": prop, "operator": "GTE", "value": since_ms}]}
                ],
                "properties": ["email", prop],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "limit": 100,
            }
            if after:
                query["after"] = after
            body = self._call("POST", "/crm/v3/objects/contacts/search", json=query)
            yield from body.get("results", [])
            after = body.get("paging", {}).get("next", {}).get("after")
            if not after:
                return


def _last_per_email(leads: Sequence[CrmLead]) -> list[CrmLead]:
    """HubSpot refuses a batch that names one contact twice: the latest state wins."""
    latest: dict[str, CrmLead] = {}
    for lead in leads:
        latest.pop(lead.email.lower(), None)
        latest[lead.email.lower()] = lead
    return list(latest.values())


def _text(value: Any) -> str:
    """HubSpot properties are strings."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _parse_time(value: Any) -> datetime:
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
