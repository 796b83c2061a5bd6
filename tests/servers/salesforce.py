"""A local Salesforce (REST API v60.0) for the contract tests.

    with SalesforceServer(client_id="cid", client_secret="sec", users={"anna@x.de": "005A"}) as sf:
        sf.accounts.append({"Website": "https://www.bigcorp.de", "OwnerId": "005A"})
        sf.leads                     # id -> fields
        sf.expire_tokens()           # the next call gets 401 INVALID_SESSION_ID
        sf.lock_next(2)              # the next two upserted records fail UNABLE_TO_LOCK_ROW

Serves ``POST /services/oauth2/token`` (client credentials, form body), ``PATCH
/services/data/v60.0/composite/sobjects/Lead/<external id field>`` (upsert of up to 200
records, one result each, in order), ``PATCH|DELETE .../sobjects/Lead/<id>``, ``POST
.../sobjects/Task`` and ``GET .../query?q=`` for the SOQL shapes the connector sends (Lead by
external id, User by Email, Account by Website LIKE, Task since a time). Errors come as
Salesforce sends them: a list of ``{"errorCode", "message"}``.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

from tests.servers.crmserver import Answer, Call, CrmServer, bearer

API = "/services/data/v60.0"
_WHERE_EQ = re.compile(r"WHERE (\w+) = '((?:[^'\\]|\\.)*)'")
_LIKE = re.compile(r"LIKE '%((?:[^'\\]|\\.)*)%'")
_SINCE = re.compile(r"CreatedDate >= (\S+)")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class SalesforceServer(CrmServer):
    def __init__(
        self,
        client_id: str = "leadwerk-client",
        client_secret: str = "leadwerk-secret",
        users: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.users = dict(users or {})
        self.leads: dict[str, dict[str, Any]] = {}
        self.accounts: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self._valid: set[str] = set()
        self._locks = 0
        self._ids = itertools.count(1)

    def expire_tokens(self) -> None:
        with self.lock:
            self._valid.clear()

    def lock_next(self, records: int) -> None:
        with self.lock:
            self._locks += records

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):015d}"

    def lead_by(self, field: str, value: str) -> tuple[str, dict[str, Any]] | None:
        for lead_id, lead in self.leads.items():
            if str(lead.get(field, "")).lower() == value.lower():
                return lead_id, lead
        return None

    def answer(self, call: Call) -> Answer:
        if call.path == "/services/oauth2/token":
            return self._token(call.body or {})
        if bearer(call.headers) not in self._valid:
            return Answer(
                401, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]
            )
        path = call.path.removeprefix(API)
        if call.method == "PATCH" and path.startswith("/composite/sobjects/Lead/"):
            return self._upsert(path.rsplit("/", 1)[1], call.body)
        if call.method == "GET" and path == "/query":
            return self._query(call.params["q"])
        if call.method == "POST" and path == "/sobjects/Task":
            task = {"Id": self._id("00T"), **call.body, "CreatedDate": _now()}
            self.tasks.append(task)
            return Answer(201, {"id": task["Id"], "success": True, "errors": []})
        if path.startswith("/sobjects/Lead/"):
            lead_id = path.rsplit("/", 1)[1]
            if lead_id not in self.leads:
                return Answer(
                    404,
                    [
                        {
                            "errorCode": "NOT_FOUND",
                            "message": "The requested resource does not exist",
                        }
                    ],
                )
            if call.method == "PATCH":
                self.leads[lead_id].update(call.body)
                return Answer(204)
            if call.method == "DELETE":
                del self.leads[lead_id]
                return Answer(204)
        return Answer(404, [{"errorCode": "NOT_FOUND", "message": "no route"}])

    def _token(self, form: dict[str, str]) -> Answer:
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return Answer(
                400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            )
        self.tokens_issued += 1
        token = f"00D!token{self.tokens_issued}"
        self._valid.add(token)
        return Answer(
            200,
            {
                "access_token": token,
                "instance_url": self.base_url,
                "token_type": "Bearer",
                "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
            },
        )

    def _upsert(self, field: str, body: dict[str, Any]) -> Answer:
        records = body["records"]
        if len(records) > 200:
            return Answer(
                400, [{"errorCode": "EXCEEDED_ID_LIMIT", "message": "record limit exceeded"}]
            )
        results = []
        for record in records:
            values = {k: v for k, v in record.items() if k != "attributes"}
            if self._locks:
                self._locks -= 1
                results.append(_failure("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access"))
                continue
            if not values.get("LastName") or not values.get("Company"):
                results.append(
                    _failure("REQUIRED_FIELD_MISSING", "Required fields are missing", ["LastName"])
                )
                continue
            owner = values.get("OwnerId")
            if owner is not None and owner not in self.users.values():
                results.append(
                    _failure("INVALID_CROSS_REFERENCE_KEY", "invalid owner", ["OwnerId"])
                )
                continue
            found = self.lead_by(field, str(values.get(field, "")))
            if found is None:
                lead_id = self._id("00Q")
                self.leads[lead_id] = values
                results.append({"id": lead_id, "success": True, "created": True, "errors": []})
            else:
                found[1].update(values)
                results.append({"id": found[0], "success": True, "created": False, "errors": []})
        return Answer(200, results)

    def _query(self, soql: str) -> Answer:
        records: list[dict[str, Any]] = []
        if soql.startswith("SELECT Id FROM Lead"):
            field, value = _WHERE_EQ.search(soql).groups()  # type: ignore[union-attr]
            found = self.lead_by(field, _unquote(value))
            records = [{"Id": found[0]}] if found else []
        elif soql.startswith("SELECT Id FROM User"):
            _, value = _WHERE_EQ.search(soql).groups()  # type: ignore[union-attr]
            user = self.users.get(_unquote(value).lower())
            records = [{"Id": user}] if user else []
        elif soql.startswith("SELECT OwnerId, Website FROM Account"):
            part = _unquote(_LIKE.search(soql).group(1)).lower()  # type: ignore[union-attr]
            records = [a for a in self.accounts if part in str(a.get("Website", "")).lower()]
        elif soql.startswith("SELECT WhoId, CreatedDate FROM Task"):
            since = _SINCE.search(soql).group(1)  # type: ignore[union-attr]
            records = sorted(
                (
                    {"WhoId": t["WhoId"], "CreatedDate": t["CreatedDate"]}
                    for t in self.tasks
                    if t.get("WhoId") and t["CreatedDate"] >= since
                ),
                key=lambda t: t["CreatedDate"],
            )
        else:
            return Answer(400, [{"errorCode": "MALFORMED_QUERY", "message": "unexpected query"}])
        return Answer(200, {"totalSize": len(records), "done": True, "records": records})


def _failure(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": None,
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": fields or []}],
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
