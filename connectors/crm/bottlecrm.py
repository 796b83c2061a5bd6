"""BottleCRM (open source, PyPI ``django-crm``) through its REST API and a personal access
token (``bcrm_pat_…``, scopes ``leads:read leads:write users:read tasks:write
accounts:read``).

BottleCRM has no batch or upsert endpoint and refuses a second lead with an e-mail the
organisation has already (400, ``errors.email``), so an upsert is a create that, when refused
for the e-mail, finds the lead and PATCHes it. A rep is the organisation's profile whose user
has the rep's e-mail (``GET /api/users/?email=``). With no batch endpoint, the leads of a
batch are sent :data:`PARALLEL` at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from connectors.crm.base import Activity, CrmConnector, CrmLead, Upserted, website_domain
from connectors.errors import ConnectorError, RetriableError, SkippableError

# Requests in flight at once for a batch of upserts.
PARALLEL = 4


class _Refused(ConnectorError):
    """A 400 from BottleCRM: the fields it refused (names only, never values)."""

    def __init__(self, errors: Any) -> None:
        self.fields = sorted(errors) if isinstance(errors, dict) else []
        super().__init__(f"refused: {', '.join(self.fields) or 'the request'}")


class _Gone(ConnectorError):
    """A 404: the lead is not (or no longer) there."""


def _inspect(response: httpx.Response) -> None:
    if response.status_code == 400:
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            errors = None
        raise _Refused(errors)
    if response.status_code == 404:
        raise _Gone("not found")


class BottleCrm(CrmConnector):
    kind = "bottlecrm"
    default_map: ClassVar[dict[str, str]] = {
        "first_name": "first_name",
        "last_name": "last_name",
        "company": "company_name",
        "title": "job_title",
        "phone": "phone",
        "score": "description",
    }
    default_stages: ClassVar[dict[str, str]] = {
        "lead": "assigned",
        "mql": "assigned",
        "sal": "in process",
        "sql": "in process",
        "recycled": "recycled",
        "disqualified": "closed",
    }

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret(self.config.token_env, 'the API token')}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, headers=self._auth, inspect=_inspect, **kwargs).body

    def _body(self, lead: CrmLead) -> dict[str, Any]:
        body: dict[str, Any] = {"email": lead.email, **self.mapped(lead.fields)}
        if "description" in body and body["description"] is not None:
            body["description"] = str(body["description"])
        if lead.owner:
            body["assigned_to"] = [lead.owner]
        if lead.stage:
            body["status"] = self.stage_value(lead.stage)
        return body

    def upsert_leads(self, leads: Sequence[CrmLead]) -> list[Upserted]:
        # No batch endpoint: the leads of a batch (one change per lead) go out side by side.
        if len(leads) <= 1:
            return [self._upsert(lead) for lead in leads]
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(leads))) as pool:
            return list(pool.map(self._upsert, leads))

    def _upsert(self, lead: CrmLead) -> Upserted:
        body = self._body(lead)
        if lead.crm_id:  # known from an earlier upsert: one PATCH, unless it has gone since
            try:
                self._call("PATCH", f"/api/leads/{lead.crm_id}/", json=body)
                return Upserted(lead.email, crm_id=lead.crm_id)
            except _Gone:
                pass
            except _Refused as refused:
                return Upserted(lead.email, error=SkippableError(f"{self.label} {refused}"))
        try:
            created = self._call("POST", "/api/leads/", json=body)
            return Upserted(lead.email, crm_id=str(created["id"]))
        except _Refused as refused:
            if refused.fields != ["email"]:
                return Upserted(lead.email, error=SkippableError(f"{self.label} {refused}"))
        crm_id = self.find_lead(lead.email)
        if crm_id is None:  # refused for its e-mail yet not found: another writer, try again
            return Upserted(
                lead.email, error=RetriableError(f"{self.label}: the lead is being written")
            )
        try:
            self._call("PATCH", f"/api/leads/{crm_id}/", json=body)
        except _Refused as refused:
            return Upserted(lead.email, error=SkippableError(f"{self.label} {refused}"))
        return Upserted(lead.email, crm_id=crm_id)

    def _patch(self, crm_id: str, body: dict[str, Any]) -> None:
        try:
            self._call("PATCH", f"/api/leads/{crm_id}/", json=body)
        except _Refused as refused:
            raise SkippableError(f"{self.label} {refused}") from None
        except _Gone:
            raise SkippableError(f"{self.label}: lead {crm_id} is not in the CRM") from None

    def set_owner(self, crm_id: str, owner: str) -> None:
        self._patch(crm_id, {"assigned_to": [owner]})

    def set_stage(self, crm_id: str, stage: str) -> None:
        self._patch(crm_id, {"status": self.stage_value(stage)})

    def create_task(self, crm_id: str, owner: str | None, subject: str, due: datetime) -> str:
        body: dict[str, Any] = {
            "title": subject[:200],
            "lead": crm_id,
            "status": "New",
            "priority": "Medium",
            "due_date": due.astimezone(UTC).date().isoformat(),
        }
        if owner:
            body["assigned_to"] = [owner]
        try:
            made = self._call("POST", "/api/tasks/", json=body)
        except (_Refused, _Gone) as exc:
            raise SkippableError(f"{self.label} task {exc}") from None
        return str(made.get("id", ""))

    def delete(self, crm_id: str) -> None:
        try:
            self._call("DELETE", f"/api/leads/{crm_id}/")
        except _Gone:
            return

    def _leads(self, **params: Any) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = {**params, "limit": 100, "offset": offset}
            body = self._call("GET", "/api/leads/", params=page)
            yield from body["open_leads"]["open_leads"]
            yield from body["close_leads"]["close_leads"]
            offsets = [body["open_leads"]["offset"], body["close_leads"]["offset"]]
            offset = max((o for o in offsets if o), default=None)

    def find_lead(self, email: str) -> str | None:
        # ``?email=`` matches a part of the address: keep the exact one.
        for lead in self._leads(email=email):
            if str(lead.get("email") or "").lower() == email.lower():
                return str(lead["id"])
        return None

    def find_user(self, email: str) -> str | None:
        body = self._call("GET", "/api/users/", params={"email": email})
        for profile in body["active_users"]["active_users"]:
            if str(profile["user_details"]["email"]).lower() == email.lower():
                return str(profile["id"])
        return None

    def account_owner(self, domain: str) -> str | None:
        offset: int | None = 0
        while offset is not None:
            body = self._call("GET", "/api/accounts/", params={"limit": 100, "offset": offset})
            page = body["active_accounts"]
            for account in page["open_accounts"]:
                owners = account.get("assigned_to") or []
                if website_domain(account.get("website")) == domain.lower() and owners:
                    return str(owners[0]["id"])
            offset = page["offset"] or None
        return None

    def first_activity(self, since: datetime) -> list[Activity]:
        found = []
        for lead in self._leads(status=self.stage_value("mql")):
            first = lead.get("first_response_at") or lead.get("last_contacted")
            if not first:
                continue
            at = datetime.fromisoformat(str(first).replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            if at >= since:
                found.append(Activity(str(lead["id"]), at, str(lead.get("email") or "") or None))
        return sorted(found, key=lambda activity: activity.at)
