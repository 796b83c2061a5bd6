"""The CRM seam: what Leadwerk asks of a system of record, whichever it is.

A connector translates every vendor failure at this boundary: a passing fault (timeout, 5xx,
429, a locked row, a conflict of two writers) is a :class:`RetriableError`, something the
admin must fix (a refused token, a missing scope) a :class:`FatalError`, and one lead the CRM
will not take (a validation error) a :class:`SkippableError`. Messages carry no personal
data: vendor error codes and field names only.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import httpx

from config.models import CrmSettings
from connectors.errors import ConnectorError, FatalError
from connectors.http import ClientOwner, JsonReply, request_json_reply

T = TypeVar("T")
# Behind the CRM outbox, which retries with backoff of its own, a request retries in line only
# across a blip, and waits in line for a Retry-After of up to 30 s.
IN_LINE_RETRY: dict[str, Any] = {"max_attempts": 2, "max_wait": 30.0}


@dataclass(frozen=True)
class CrmLead:
    """One lead as the CRM gets it: keyed by e-mail, with its fields under Leadwerk's names
    (the connector writes those ``map:`` names), its owner's CRM user id and its stage."""

    email: str
    fields: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    stage: str | None = None
    crm_id: str | None = None  # the CRM's id when an earlier upsert learnt it (a hint)


@dataclass(frozen=True)
class Upserted:
    """The outcome of one lead of a batch: the CRM's id, or the error of that lead alone."""

    email: str
    crm_id: str | None = None
    error: ConnectorError | None = None


@dataclass(frozen=True)
class Activity:
    """A first activity the CRM shows on a lead (a call, an e-mail, a task done)."""

    crm_id: str
    at: datetime
    email: str | None = None


class CrmConnector(ABC):
    """One configured CRM. ``config``: the ``crm:`` entry of ``crm.yaml``; ``env``: where
    secrets are read from; ``client``: an HTTP client to use instead of one of its own.

    Building a connector does no I/O. Every call may raise :class:`RetriableError` or
    :class:`FatalError`; :meth:`upsert_leads` reports a lead the CRM refuses in its result
    instead, so that one bad lead never holds up its batch.
    """

    kind: ClassVar[str]
    default_map: ClassVar[dict[str, str]] = {}
    default_stages: ClassVar[dict[str, str]] = {}
    max_batch: ClassVar[int] = 100

    def __init__(
        self,
        config: CrmSettings,
        env: Mapping[str, str],
        client: httpx.Client | None = None,
        retry: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self._http = ClientOwner(client, retry)
        self._users: dict[str, str | None] = {}
        self._users_lock = threading.Lock()

    # --- what every CRM does -------------------------------------------------------------

    @abstractmethod
    def upsert_leads(self, leads: Sequence[CrmLead]) -> list[Upserted]:
        """Create or update each lead by its e-mail, never a second record for one address;
        one result per lead, in order."""

    @abstractmethod
    def set_owner(self, crm_id: str, owner: str) -> None:
        """Give the lead to this CRM user."""

    @abstractmethod
    def set_stage(self, crm_id: str, stage: str) -> None:
        """Move the lead to this Leadwerk stage (written as :meth:`stage_value` says)."""

    @abstractmethod
    def create_task(self, crm_id: str, owner: str | None, subject: str, due: datetime) -> str:
        """A task on the lead for its owner, due then; returns the task's id."""

    @abstractmethod
    def delete(self, crm_id: str) -> None:
        """Erase the lead; a lead that is gone already is no error."""

    @abstractmethod
    def find_lead(self, email: str) -> str | None:
        """The CRM id of the lead with this e-mail, or None."""

    @abstractmethod
    def find_user(self, email: str) -> str | None:
        """The CRM user id of the person with this e-mail, or None."""

    @abstractmethod
    def account_owner(self, domain: str) -> str | None:
        """The CRM user id that owns the company with this web domain, or None."""

    @abstractmethod
    def first_activity(self, since: datetime) -> list[Activity]:
        """Leads whose first activity happened at or after ``since``, oldest first."""

    # --- shared helpers ------------------------------------------------------------------

    @property
    def fields_map(self) -> dict[str, str]:
        """Leadwerk field -> CRM field: the kind's defaults, overridden by ``map:``."""
        return {**self.default_map, **self.config.map}

    def mapped(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A lead's fields under the CRM's names; a field the map does not name stays home."""
        names = self.fields_map
        return {names[key]: value for key, value in fields.items() if key in names}

    def stage_value(self, stage: str) -> str:
        """The CRM's value for a Leadwerk stage: ``stages:`` in crm.yaml, else the kind's."""
        return self.config.stages.get(stage) or self.default_stages.get(stage, stage)

    def owner_id(self, rep: str, email: str) -> str | None:
        """The CRM user of a rep: from the ``owners`` map, else the user with the rep's
        e-mail (looked up once per process)."""
        owners = self.config.owners
        if isinstance(owners, dict):
            return owners.get(rep)
        with self._users_lock:
            if email in self._users:
                return self._users[email]
        found = self.find_user(email)
        with self._users_lock:
            self._users[email] = found
        return found

    @property
    def label(self) -> str:
        return f"CRM {self.kind}"

    def secret(self, env_name: str | None, what: str) -> str:
        """A secret from the environment variable crm.yaml names."""
        if not env_name:
            raise FatalError(f"{self.label}: crm.yaml names no environment variable for {what}")
        value = self.env.get(env_name, "")
        if not value:
            raise FatalError(f"{self.label}: {env_name} ({what}) is not set in the environment")
        return value

    def url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + path

    def call(
        self,
        method: str,
        path: str,
        *,
        inspect: Callable[[httpx.Response], None] | None = None,
        token_env: str | None = None,
        **kwargs: Any,
    ) -> JsonReply:
        """A request through the project's HTTP client (retries, Retry-After, errors
        translated); ``path`` is under ``base_url`` unless it is a full URL."""
        url = path if path.startswith("http") else self.url(path)
        return request_json_reply(
            self._http._client,
            method,
            url,
            source=self.label,
            token_env=token_env or self.config.token_env,
            inspect=inspect,
            **{**self._http._retry, **kwargs},
        )

    def close(self) -> None:
        self._http.close()


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def website_domain(website: Any) -> str | None:
    """``https://www.bigcorp.de/en`` -> ``bigcorp.de``: the domain a lead's e-mail shares."""
    if not website:
        return None
    text = str(website).strip().lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    return host.removeprefix("www.") or None
