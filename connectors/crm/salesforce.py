"""Salesforce through its REST API, signed in with the OAuth 2.0 client-credentials flow.

Leads are upserted by an external id field (``external_id_field``, the e-mail in lower case)
up to 200 at a time with the sObject Collections composite request; ``OwnerId`` and
``Status`` carry the owner and the stage. An access token that has expired (401) is replaced
once and the request sent again. ``UNABLE_TO_LOCK_ROW`` (another writer holds the record) and
``DUPLICATE_VALUE`` (two upserts of one key racing) are passing faults, tried again; other
record errors refuse that lead alone. Account owners come from SOQL on ``Account.Website``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from connectors.crm.base import (
    Activity,
    CrmConnector,
    CrmLead,
    Upserted,
    chunks,
    website_domain,
)
from connectors.errors import ConnectorError, FatalError, RetriableError, SkippableError

API = "/services/data/v60.0"
PASSING = frozenset({"UNABLE_TO_LOCK_ROW", "DUPLICATE_VALUE", "REQUEST_LIMIT_EXCEEDED"})
# Salesforce requires both on a Lead; a web form rarely has them.
NOT_PROVIDED = "[not provided]"


class _Expired(ConnectorError):
    """A 401: the access token has expired or was revoked."""


class _Gone(ConnectorError):
    """A 404: no such record."""


def _codes(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    rows = body if isinstance(body, list) else [body]
    return [str(r.get("errorCode")) for r in rows if isinstance(r, dict) and r.get("errorCode")]


def _inspect(response: httpx.Response) -> None:
    status = response.status_code
    if status == 401:
        raise _Expired("the access token was refused")
    if status == 404:
        raise _Gone("not found")
    if status in (400, 403, 409):
        codes = _codes(response)
        if PASSING.intersection(codes):
            raise RetriableError(f"CRM salesforce answered {status} ({', '.join(codes)})")
        if status == 400:
            raise SkippableError(f"CRM salesforce refused the request ({', '.join(codes)})")


def soql_quote(value: str) -> str:
    """A string literal for SOQL: backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SalesforceCrm(CrmConnector):
    kind = "salesforce"
    max_batch = 200
    default_map: ClassVar[dict[str, str]] = {
        "first_name": "FirstName",
        "last_name": "LastName",
        "company": "Company",
        "title": "Title",
        "phone": "Phone",
    }
    default_stages: ClassVar[dict[str, str]] = {
        "lead": "Open - Not Contacted",
        "mql": "Open - Not Contacted",
        "sal": "Working - Contacted",
        "sql": "Working - Contacted",
        "recycled": "Open - Not Contacted",
        "disqualified": "Closed - Not Converted",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token: tuple[str, str] | None = None  # (access token, instance URL)
        self._token_lock = threading.Lock()

    def _sign_in(self, stale: str | None = None) -> tuple[str, str]:
        with self._token_lock:
            if self._token is not None and self._token[0] != stale:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self.secret(self.config.client_id_env, "the OAuth client id"),
                "client_secret": self.secret(
                    self.config.client_secret_env, "the OAuth client secret"
                ),
            }
            try:
                body = self.call(
                    "POST",
                    "/services/oauth2/token",
                    data=form,
                    token_env=self.config.client_secret_env,
                    inspect=_inspect,
                ).body
            except (_Expired, SkippableError) as exc:
                raise FatalError(
                    f"{self.label}: sign-in refused ({exc}); check {self.config.client_id_env} "
                    f"and {self.config.client_secret_env}"
                ) from None
            instance = str(body.get("instance_url") or self.config.base_url).rstrip("/")
            self._token = (str(body["access_token"]), instance)
            return self._token

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        token, instance = self._sign_in()
        for attempt in (1, 2):
            try:
                return self.call(
                    method,
                    instance + API + path,
                    headers={"Authorization": f"Bearer {token}"},
                    inspect=_inspect,
                    token_env=self.config.client_secret_env,
                    **kwargs,
                ).body
            except _Expired:
                if attempt == 2:
                    raise FatalError(
                        f"{self.label}: a fresh access token was refused too; check the "
                        "connected app's permissions"
                    ) from None
                token, instance = self._sign_in(stale=token)
        raise AssertionError("unreachable")

    def _query(self, soql: str) -> list[dict[str, Any]]:
        body = self._call("GET", "/query", params={"q": soql})
        records: list[dict[str, Any]] = list(body.get("records", []))
        while body.get("nextRecordsUrl"):
            token, instance = self._sign_in()
            body = self.call(
                "GET",
                instance + str(body["nextRecordsUrl"]),
                headers={"Authorization": f"Bearer {token}"},
                inspect=_inspect,
            ).body
            records += body.get("records", [])
        return records

    def _record(self, lead: CrmLead) -> dict[str, Any]:
        record: dict[str, Any] = {"attributes": {"type": "Lead"}}
        record.update(self.mapped(lead.fields))
        record[self.config.external_id_field] = lead.email.lower()
        record["Email"] = lead.email
        record.setdefault("LastName", NOT_PROVIDED)
        record.setdefault("Company", NOT_PROVIDED)
        if not record["LastName"]:
            record["LastName"] = NOT_PROVIDED
        if not record["Company"]:
            record["Company"] = NOT_PROVIDED
        if lead.owner:
            record["OwnerId"] = lead.owner
        if lead.stage:
            record["Status"] = self.stage_value(lead.stage)
        return record

    def upsert_leads(self, leads: Sequence[CrmLead]) -> list[Upserted]:
        results: list[Upserted] = []
        path = f"/composite/sobjects/Lead/{self.config.external_id_field}"
        for batch in chunks(leads, self.max_batch):
            body = {"allOrNone": False, "records": [self._record(lead) for lead in batch]}
            rows = self._call("PATCH", path, json=body)
            for lead, row in zip(batch, rows, strict=True):
                results.append(self._outcome(lead, row))
        return results

    def _outcome(self, lead: CrmLead, row: dict[str, Any]) -> Upserted:
        if row.get("success"):
            return Upserted(lead.email, crm_id=str(row["id"]))
        codes = [str(e.get("statusCode")) for e in row.get("errors", [])]
        fields = sorted({f for e in row.get("errors", []) for f in e.get("fields", [])})
        detail = ", ".join(codes) + (f" on {', '.join(fields)}" if fields else "")
        if PASSING.intersection(codes):
            return Upserted(lead.email, error=RetriableError(f"{self.label}: {detail}"))
        return Upserted(lead.email, error=SkippableError(f"{self.label} refused: {detail}"))

    def _patch(self, crm_id: str, values: dict[str, Any]) -> None:
        try:
            self._call("PATCH", f"/sobjects/Lead/{crm_id}", json=values)
        except _Gone:
            raise SkippableError(f"{self.label}: lead {crm_id} is not in the CRM") from None

    def set_owner(self, crm_id: str, owner: str) -> None:
        self._patch(crm_id, {"OwnerId": owner})

    def set_stage(self, crm_id: str, stage: str) -> None:
        self._patch(crm_id, {"Status": self.stage_value(stage)})

    def create_task(self, crm_id: str, owner: str | None, subject: str, due: datetime) -> str:
        task: dict[str, Any] = {
            "WhoId": crm_id,
            "Subject": subject[:255],
            "ActivityDate": due.astimezone(UTC).date().isoformat(),
            "Status": "Not Started",
        }
        if owner:
            task["OwnerId"] = owner
        return str(self._call("POST", "/sobjects/Task", json=task)["id"])

    def delete(self, crm_id: str) -> None:
        try:
            self._call("DELETE", f"/sobjects/Lead/{crm_id}")
        except _Gone:
            return

    def find_lead(self, email: str) -> str | None:
        field = self.config.external_id_field
        rows = self._query(f"SELECT Id FROM Lead WHERE {field} = {soql_quote(email.lower())}")
        return str(rows[0]["Id"]) if rows else None

    def find_user(self, email: str) -> str | None:
        rows = self._query(
            f"SELECT Id FROM User WHERE Email = {soql_quote(email)} AND IsActive = true"
        )
        return str(rows[0]["Id"]) if rows else None

    def account_owner(self, domain: str) -> str | None:
        like = soql_quote(f"%{domain.replace('%', '').replace('_', '')}%")
        rows = self._query(f"SELECT OwnerId, Website FROM Account WHERE Website LIKE {like}")
        for row in rows:
            if website_domain(row.get("Website")) == domain.lower():
                return str(row["OwnerId"])
        return None

    def first_activity(self, since: datetime) -> list[Activity]:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = self._query(
            "SELECT WhoId, CreatedDate FROM Task "
            f"WHERE WhoId != null AND CreatedDate >= {stamp} ORDER BY CreatedDate"
        )
        first: dict[str, Activity] = {}
        for row in rows:
            at = datetime.fromisoformat(str(row["CreatedDate"]).replace("Z", "+00:00"))
            first.setdefault(str(row["WhoId"]), Activity(str(row["WhoId"]), at.astimezone(UTC)))
        return list(first.values())
