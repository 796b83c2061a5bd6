"""A local HubSpot (CRM v3) that speaks the documented shapes, for the contract tests.

    with HubSpotServer(token="pat-test", owners={"anna@x.de": "101"}) as hubspot:
        hubspot.companies["bigcorp.de"] = "101"      # the company's hubspot_owner_id
        hubspot.contacts                             # id -> properties
        hubspot.engage(contact_id, at)               # a rep's first engagement

Serves ``POST /crm/v3/objects/contacts/batch/upsert`` (``idProperty: email``; a batch naming
one contact twice is a 400), ``PATCH|DELETE /crm/v3/objects/contacts/{id}``, ``GET
/crm/v3/objects/contacts/{email}?idProperty=email``, ``POST
/crm/v3/objects/contacts/search`` (``GTE`` on one property, sorted, paged with ``after``),
``GET /crm/v3/owners?email=``, ``POST /crm/v3/objects/companies/search`` (``domain EQ``) and
``POST /crm/v3/objects/tasks``. A wrong token is a 401 as HubSpot sends it. Every answer
carries ``X-HubSpot-RateLimit-*`` headers; :meth:`rate_limit` answers the next requests with
429 and ``Retry-After``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from tests.servers.crmserver import Answer, Call, CrmServer, bearer

LIMIT = 100


class HubSpotServer(CrmServer):
    def __init__(self, token: str = "pat-na1-test", owners: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.owners = dict(owners or {})
        self.contacts: dict[str, dict[str, Any]] = {}
        self.companies: dict[str, str] = {}
        self.tasks: list[dict[str, Any]] = []
        self.refuse_property: str | None = None  # a property this portal does not have
        self._ids = itertools.count(501)

    def rate_limit(self, times: int, retry_after: str = "0") -> None:
        headers = {
            "Retry-After": retry_after,
            "X-HubSpot-RateLimit-Remaining": "0",
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        }
        body = {
            "status": "error",
            "category": "RATE_LIMITS",
            "message": "You have reached your secondly limit.",
        }
        self.script(Answer(429, body, headers) for _ in range(times))

    def engage(self, contact_id: str, at: datetime) -> None:
        with self.lock:
            stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
            self.contacts[contact_id]["hs_sa_first_engagement_date"] = stamp

    def by_email(self, email: str) -> tuple[str, dict[str, Any]] | None:
        for contact_id, props in self.contacts.items():
            if str(props.get("email", "")).lower() == email.lower():
                return contact_id, props
        return None

    def answer(self, call: Call) -> Answer:
        answer = self._route(call)
        answer.headers.update(
            {
                "X-HubSpot-RateLimit-Max": "190",
                "X-HubSpot-RateLimit-Remaining": "189",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            }
        )
        return answer

    def _route(self, call: Call) -> Answer:
        if bearer(call.headers) != self.token:
            return Answer(
                401,
                {
                    "status": "error",
                    "category": "INVALID_AUTHENTICATION",
                    "message": "Authentication credentials not found.",
                },
            )
        path, method = call.path, call.method
        contacts = "/crm/v3/objects/contacts"
        if method == "POST" and path == f"{contacts}/batch/upsert":
            return self._upsert(call.body["inputs"])
        if method == "POST" and path == f"{contacts}/search":
            return self._search(call.body)
        if method == "GET" and path == "/crm/v3/owners":
            email = call.params.get("email", "").lower()
            rows = [
                {"id": owner_id, "email": address, "type": "PERSON", "archived": False}
                for address, owner_id in self.owners.items()
                if not email or address.lower() == email
            ]
            return Answer(200, {"results": rows})
        if method == "POST" and path == "/crm/v3/objects/companies/search":
            domain = call.body["filterGroups"][0]["filters"][0]["value"]
            owner = self.companies.get(domain)
            rows = (
                []
                if owner is None
                else [
                    {
                        "id": "9" + str(len(domain)),
                        "properties": {"domain": domain, "hubspot_owner_id": owner},
                    }
                ]
            )
            return Answer(200, {"total": len(rows), "results": rows})
        if method == "POST" and path == "/crm/v3/objects/tasks":
            task = {"id": str(next(self._ids)), **call.body}
            self.tasks.append(task)
            return Answer(201, {"id": task["id"], "properties": call.body["properties"]})
        if path.startswith(f"{contacts}/"):
            key = path.rsplit("/", 1)[1]
            if call.params.get("idProperty") == "email":
                found = self.by_email(key)
                key = found[0] if found else ""
            if key not in self.contacts:
                return Answer(
                    404,
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "resource not found",
                    },
                )
            if method == "GET":
                return Answer(200, {"id": key, "properties": self.contacts[key]})
            if method == "PATCH":
                self.contacts[key].update(call.body["properties"])
                return Answer(200, {"id": key, "properties": self.contacts[key]})
            if method == "DELETE":
                del self.contacts[key]
                return Answer(204)
        return Answer(
            404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "no route"}
        )

    def _upsert(self, inputs: list[dict[str, Any]]) -> Answer:
        emails = [str(i["id"]).lower() for i in inputs]
        if len(set(emails)) != len(emails):
            return Answer(
                400,
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Duplicate IDs found in batch input",
                },
            )
        if self.refuse_property and any(self.refuse_property in i["properties"] for i in inputs):
            return Answer(
                400,
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": f'Property "{self.refuse_property}" does not exist',
                },
            )
        results = []
        for item in inputs:
            props = {k: str(v) for k, v in item["properties"].items()}
            found = self.by_email(item["id"])
            if found is None:
                contact_id, new = str(next(self._ids)), True
                self.contacts[contact_id] = {"email": str(item["id"]).lower()}
            else:
                contact_id, new = found[0], False
            self.contacts[contact_id].update(props)
            results.append({"id": contact_id, "properties": self.contacts[contact_id], "new": new})
        return Answer(200, {"status": "COMPLETE", "results": results})

    def _search(self, query: dict[str, Any]) -> Answer:
        rule = query["filterGroups"][0]["filters"][0]
        prop, since = rule["propertyName"], int(rule["value"])

        def millis(value: str) -> int:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)

        hits = sorted(
            (
                (millis(props[prop]), contact_id)
                for contact_id, props in self.contacts.items()
                if props.get(prop) and millis(props[prop]) >= since
            ),
        )
        start = int(query.get("after") or 0)
        page = hits[start : start + min(int(query.get("limit", 10)), LIMIT)]
        rows = [
            {"id": cid, "properties": {p: self.contacts[cid].get(p) for p in query["properties"]}}
            for _, cid in page
        ]
        body: dict[str, Any] = {"total": len(hits), "results": rows}
        if start + len(page) < len(hits):
            body["paging"] = {"next": {"after": str(start + len(page))}}
        return Answer(200, body)
