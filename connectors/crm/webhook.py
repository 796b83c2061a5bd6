"""Any other CRM: every change as a signed JSON POST to one URL.

The body is ``{"change": "upsert" | "owner" | "stage" | "task" | "delete", ...}``. Headers:
``X-Leadwerk-Timestamp`` (Unix seconds) and ``X-Leadwerk-Signature: sha256=<hex>``, the
HMAC-SHA256 with the secret in ``token_env`` of ``<timestamp>.<body>``, so a receiver can
refuse a forged or replayed delivery. The lead's id on the receiving side is its e-mail. A
webhook cannot be asked anything: no account owners, no first activity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.crm.base import Activity, CrmConnector, CrmLead, Upserted
from connectors.errors import ConnectorError, SkippableError


class _Delivered(ConnectorError):
    """Any 2xx: the receiver took the change, whatever its answer's body."""


def _delivered(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        raise _Delivered("delivered")
    if status in (400, 409, 410, 422):
        raise SkippableError(f"CRM webhook: the receiver refused the change ({status})")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Leadwerk-Signature`` value of a delivery."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookCrm(CrmConnector):
    kind = "webhook"

    def _post(self, payload: dict[str, Any]) -> None:
        secret = self.secret(self.config.token_env, "the signing secret")
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Leadwerk-Timestamp": stamp,
            "X-Leadwerk-Signature": sign(secret, stamp, body),
        }
        try:
            self.call(
                "POST", self.config.base_url, content=body, headers=headers, inspect=_delivered
            )
        except _Delivered:
            return

    def upsert_leads(self, leads: Sequence[CrmLead]) -> list[Upserted]:
        results = []
        for lead in leads:
            payload = {"change": "upsert", "email": lead.email, "fields": self.mapped(lead.fields)}
            payload.update(owner=lead.owner, stage=lead.stage)
            try:
                self._post(payload)
            except SkippableError as exc:
                results.append(Upserted(lead.email, error=exc))
                continue
            results.append(Upserted(lead.email, crm_id=lead.email))
        return results

    def set_owner(self, crm_id: str, owner: str) -> None:
        self._post({"change": "owner", "email": crm_id, "owner": owner})

    def set_stage(self, crm_id: str, stage: str) -> None:
        self._post({"change": "stage", "email": crm_id, "stage": self.stage_value(stage)})

    def create_task(self, crm_id: str, owner: str | None, subject: str, due: datetime) -> str:
        due_text = due.astimezone(UTC).isoformat()
        self._post(
            {"change": "task", "email": crm_id, "owner": owner, "subject": subject, "due": due_text}
        )
        return ""

    def delete(self, crm_id: str) -> None:
        self._post({"change": "delete", "email": crm_id})

    def find_lead(self, email: str) -> str | None:
        return email

    def find_user(self, email: str) -> str | None:
        return email

    def account_owner(self, domain: str) -> str | None:
        return None

    def first_activity(self, since: datetime) -> list[Activity]:
        return []
