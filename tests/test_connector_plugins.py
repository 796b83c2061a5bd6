"""A new kind of source is one class plus its registration.

This module adds two kinds the product does not ship, each defined here and nowhere else: a
partner portal that is polled over HTTP (``partner_portal``) and a webhook that proves its
sender with a shared token (``token_hook``). Once registered with ``register_source``, the
loader validates their entries in ``sources.yaml`` (``rules check``), ``run --once`` polls
the pulled one, the web server takes deliveries for the pushed one, and their leads are
stored and scored like any other.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy import select

from config.settings import Settings
from connectors.errors import IgnoredDelivery, SignatureError, SkippableError
from connectors.http import ClientOwner, request_json_reply
from connectors.sources.base import Page, PulledSource, PushedSource, RawRecord, SourceConfig
from connectors.sources.http_json import require_env
from connectors.sources.registry import (
    SOURCE_KINDS,
    is_pulled,
    register_source,
    unregister_source,
)
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.servers.jsonapi import JsonApiServer
from tests.source_helpers import as_body, contact, counts, leadwerk, web_server, write_sources
from worker.store.db import Store
from worker.store.models import Contact, Score

# --- the two kinds: everything a kind is, in one class each ----------------------------------


class PartnerPortalConfig(SourceConfig):
    kind: Literal["partner_portal"]
    url: str
    key_env: str


class PartnerPortalSource(ClientOwner, PulledSource):
    """``GET <url>?since=<newest submitted_at taken>`` with the portal key as a bearer token;
    the answer is ``{"data": [lead, ...]}``, each lead with an ``id``."""

    kind = "partner_portal"
    config_model = PartnerPortalConfig
    config: PartnerPortalConfig

    def __init__(self, config: PartnerPortalConfig, env: Mapping[str, str]) -> None:
        PulledSource.__init__(self, config, env)
        ClientOwner.__init__(self, None)

    def fetch(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        key = require_env(self.env, self.config.key_env, self.config.name, "the portal key")
        since = (cursor or {}).get("since")
        reply = request_json_reply(
            self._client,
            "GET",
            self.config.url,
            params={"since": since} if since else None,
            headers={"Authorization": f"Bearer {key}"},
            source=self.config.name,
            token_env=self.config.key_env,
        )
        leads = reply.body["data"]
        if leads:
            newest = max(lead["submitted_at"] for lead in leads)
            records = [RawRecord(data=lead, record_id=lead["id"]) for lead in leads]
            yield Page(records, cursor={"since": newest})


class TokenHookConfig(SourceConfig):
    kind: Literal["token_hook"]
    secret_env: str


class TokenHookSource(PushedSource):
    """Deliveries carry the shared token in ``X-Hook-Token`` and the lead under ``lead``;
    ``{"type": "ping"}`` only checks that the hook is there."""

    kind = "token_hook"
    config_model = TokenHookConfig

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        sent = headers.get("X-Hook-Token") or ""
        if not hmac.compare_digest(sent.encode(), secret.encode()):
            raise SignatureError("X-Hook-Token is missing or wrong")

    def receive(self, payload: dict[str, Any]) -> RawRecord:
        if payload.get("type") == "ping":
            raise IgnoredDelivery("a ping carries no lead")
        lead = payload.get("lead")
        if not isinstance(lead, dict):
            raise SkippableError("the delivery has no lead object", field="lead")
        return RawRecord(data=lead, record_id=str(payload.get("id") or "") or None)


@contextmanager
def registered(*kinds: type[PulledSource] | type[PushedSource]) -> Iterator[None]:
    """The kinds registered for the duration of a test, as a plugin would register them."""
    for kind in kinds:
        register_source(kind)
    try:
        yield
    finally:
        for kind in kinds:
            unregister_source(kind.kind)


# --- sources.yaml and the servers ------------------------------------------------------------

PORTAL_KEY = "portal-key-123"
HOOK_TOKEN = "shared-hook-token"


def portal_source(url: str, key: str = "key_env") -> str:
    return f"""\
  - name: partner-portal
    kind: partner_portal
    url: {url}
    {key}: PORTAL_KEY
    poll_every: 5m
    event: {{type: form, form: demo-request}}
    map: {{email: "$.email", first_name: "$.first_name", title: "$.title",
          company_size: "$.employees", country: "$.country"}}
"""


HOOK_SOURCE = """\
  - name: partner-hook
    kind: token_hook
    secret_env: PARTNER_HOOK_TOKEN
    event: {type: ebook, asset: "$.asset"}
    map: {email: "$.email", first_name: "$.first_name"}
"""

PORTAL_LEADS = [
    {
        "id": "pp-1",
        "submitted_at": "2026-11-20T09:00:00Z",
        "email": "ines.krause@stahlbau-krause.de",
        "first_name": "Ines",
        "title": "Head of Procurement",
        "employees": 850,
        "country": "DE",
    },
    {
        "id": "pp-2",
        "submitted_at": "2026-11-21T14:30:00Z",
        "email": "tom.bauer@gmail.com",
        "first_name": "Tom",
        "title": "Student",
        "employees": 1,
        "country": "AT",
    },
]


def check(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(config_dir.parent)  # paths print relative to the project
    result = leadwerk(config_dir, "rules", "check")
    return result.exit_code, result.stdout


# --- the tests -------------------------------------------------------------------------------


def test_a_kind_is_unknown_until_its_class_is_registered_and_then_checks_clean(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sources(config_dir, portal_source("http://127.0.0.1:9/leads"), HOOK_SOURCE)

    before_code, before = check(config_dir, monkeypatch)
    with registered(PartnerPortalSource, TokenHookSource):
        after_code, after = check(config_dir, monkeypatch)

    assert before_code == 1
    assert "unknown source kind 'partner_portal'" in before
    assert "unknown source kind 'token_hook'" in before
    assert after_code == 0, after
    assert after.startswith("config ok:")
    assert "2 sources" in after
    assert "partner_portal" not in SOURCE_KINDS  # the test leaves the registry as it was


def test_rules_check_locates_a_bad_key_of_a_registered_kind_and_suggests_the_key_meant(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sources(config_dir, portal_source("http://127.0.0.1:9/leads", key="kye_env"))
    with registered(PartnerPortalSource):
        code, out = check(config_dir, monkeypatch)

    lines = (config_dir / "sources.yaml").read_text(encoding="utf-8").splitlines()
    entry = next(n for n, line in enumerate(lines, start=1) if "name: partner-portal" in line)
    typo = next(n for n, line in enumerate(lines, start=1) if "kye_env" in line)
    assert code == 1
    # the key the kind's config model requires is missing from the source's entry,
    assert f"config/sources.yaml:{entry}:5: missing key 'key_env'" in out
    # and the key written instead is located, with the key meant
    assert (
        f"config/sources.yaml:{typo}:5: unknown key 'kye_env' (did you mean 'key_env'?)\n"
        f"    {lines[typo - 1]}\n"
        f"        ^"
    ) in out
    assert out.rstrip().endswith("2 error(s)")


def test_run_once_polls_a_registered_kind_and_its_leads_are_stored_and_scored(
    config_dir: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'plugins.db'}"
    env = {"PORTAL_KEY": PORTAL_KEY, "LEADWERK_DATABASE_URL": database_url}
    with (
        JsonApiServer(PORTAL_LEADS, path="/leads", bearer=PORTAL_KEY) as portal,
        registered(PartnerPortalSource),
    ):
        write_sources(config_dir, portal_source(portal.url))
        first = leadwerk(config_dir, "run", "--once", env=env)
        second = leadwerk(config_dir, "run", "--once", env=env)

    assert first.exit_code == 0, first.output
    assert "polled partner-portal: 2 new, 0 known, 0 quarantined" in first.stdout
    assert "accounted for 2 leads: 2 processed" in first.stdout
    # The second run asks only for what is newer than the newest lead taken, which the
    # portal answers with that lead again: known, not new.
    assert second.exit_code == 0, second.output
    assert portal.requests[-1].params.get("since") == "2026-11-21T14:30:00Z"
    assert "polled partner-portal: 0 new, 1 known, 0 quarantined" in second.stdout

    store = Store(database_url)
    try:
        with store.session() as session:
            scored = {
                row.email: (row.score, row.stage)
                for row in session.scalars(select(Contact).order_by(Contact.id))
            }
            score_rows = len(session.scalars(select(Score)).all())
    finally:
        store.close()
    # Ines: a large company (20), a head of (15), in DACH (10), a demo request (50; its
    # engagement decays from the moment it was taken in).
    score, stage = scored["ines.krause@stahlbau-krause.de"]
    assert (score, stage) == (pytest.approx(95, abs=0.01), "mql")
    # Tom: a student (disqualified) with a free-mail address.
    assert scored["tom.bauer@gmail.com"][1] != "mql"
    assert score_rows == 2


def test_a_registered_pushed_kind_takes_deliveries_over_http_as_its_class_says(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    write_sources(config_dir, HOOK_SOURCE)
    settings = make_settings(database_url=database_url, env={"PARTNER_HOOK_TOKEN": HOOK_TOKEN})
    download = {"id": "dl-7", "lead": {"email": "Mia.Roth@Roth-Logistik.de", "asset": "guide"}}
    with (
        registered(TokenHookSource),
        running(settings) as leadwerk_,
        web_server(leadwerk_.app) as url,
    ):

        def deliver(payload: dict[str, Any], token: str = HOOK_TOKEN) -> httpx.Response:
            return httpx.post(
                f"{url}/hooks/partner-hook",
                content=as_body(payload),
                headers={"X-Hook-Token": token},
                timeout=30,
            )

        forged = deliver(download, token="guessed")
        ping = deliver({"type": "ping"})
        empty = deliver({"id": "dl-8"})
        accepted = deliver(download)
        again = deliver(download)
        stored = counts(leadwerk_.app.store)
        mia = contact(leadwerk_.app.store, "mia.roth@roth-logistik.de")

    assert (forged.status_code, forged.json()["status"]) == (401, "unauthorized")
    assert (ping.status_code, ping.json()["status"]) == (200, "ignored")
    assert empty.status_code == 400
    assert "lead: the delivery has no lead object" in empty.json()["detail"]
    assert (accepted.status_code, accepted.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    assert stored == {"contacts": 1, "events": 1, "quarantined": 1}
    assert mia is not None


def test_the_clock_polls_pulled_kinds_only() -> None:
    portal = PartnerPortalConfig.model_validate(
        {"name": "partner-portal", "kind": "partner_portal", "url": "x", "key_env": "K"}
    )
    hook = TokenHookConfig.model_validate(
        {"name": "partner-hook", "kind": "token_hook", "secret_env": "S"}
    )
    with registered(PartnerPortalSource, TokenHookSource):
        assert is_pulled(portal)
        assert not is_pulled(hook)


def test_a_half_written_kind_is_refused_at_registration_naming_what_it_lacks() -> None:
    class NoFetch(PulledSource):
        kind = "no_fetch"
        config_model = SourceConfig

    with pytest.raises(TypeError, match="NoFetch does not implement fetch"):
        register_source(NoFetch)
    assert "no_fetch" not in SOURCE_KINDS


def test_a_kind_name_that_is_taken_is_refused() -> None:
    class AnotherWebhook(TokenHookSource):
        kind = "webhook"

    with pytest.raises(ValueError, match="source kind 'webhook' is registered already"):
        register_source(AnotherWebhook)
    assert SOURCE_KINDS["webhook"].__name__ == "WebhookSource"
