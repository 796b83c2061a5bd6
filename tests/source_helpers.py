"""Helpers for the end-to-end source tests: a sources.yaml with every kind of source, the web
app on a real uvicorn server, and the CLI run in-process with the environment a user sets."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from click.testing import Result
from sqlalchemy import func, select
from typer.testing import CliRunner

from worker.commands.cli import app as cli_app
from worker.runtime.app import App
from worker.store.db import Store
from worker.store.models import Contact, Event, Quarantine
from worker.web.app import create_app

EBOOK_SECRET = "ebook-hook-secret"
TYPEFORM_SECRET = "typeform-webhook-secret"
FORMS_TOKEN = "forms-api-token"
TYPEFORM_TOKEN = "tfp_personal_access_token"
FAIR = "messe-hannover-2026"

FAIR_SOURCE = """\
  - name: messe-hannover-2026
    kind: tradefair_files
    path: inbox/tradefair/
    event: {type: tradefair, fair: "Hannover Messe 2026"}
    map: {email: "E-Mail", first_name: "Vorname", last_name: "Nachname", company: "Firma",
          title: "Position", phone: "Telefon", country: "Land", company_size: "Mitarbeiter",
          rating: "Bewertung", notes: "Notiz"}
"""

HOOK_SOURCES = """\
  - name: ebooks
    kind: webhook
    secret_env: EBOOK_HOOK_SECRET
    signature: {header: X-Signature-256, prefix: "sha256=", encoding: hex}
    event: {type: ebook, asset: "$.asset"}
    map: {email: "$.email", first_name: "$.first_name", company: "$.company"}
  - name: ebooks-stamped
    kind: webhook
    secret_env: EBOOK_HOOK_SECRET
    timestamp: {header: X-Timestamp, tolerance: 300s}
    max_body_bytes: 2048
    event: {type: ebook, asset: "$.asset"}
    map: {email: "$.email"}
"""


def pull_sources(forms_url: str | None = None, typeform_url: str | None = None) -> str:
    """The two pull sources of the product's example, pointed at local servers."""
    text = ""
    if forms_url:
        text += f"""\
  - name: website-forms
    kind: http_json
    url: {forms_url}
    auth: {{bearer_env: FORMS_TOKEN}}
    poll_every: 60s
    cursor: {{param: since, field: submitted_at}}
    pagination: {{kind: cursor, token_field: meta.next_cursor, param: cursor}}
    id_field: id
    records: data
    event: {{type: form, form: "$.form_id"}}
    map: {{email: "$.fields.email", first_name: "$.fields.first_name",
          company: "$.fields.company"}}
"""
    if typeform_url:
        text += f"""\
  - name: typeform-demo
    kind: typeform
    form_id: abc123
    token_env: TYPEFORM_TOKEN
    secret_env: TYPEFORM_WEBHOOK_SECRET
    base_url: {typeform_url}
    page_size: 2
    map: {{email: "ref:work_email", first_name: "ref:first_name", company: "ref:company"}}
    event: {{type: form, form: demo-request}}
"""
    return text


def write_sources(config_dir: Path, *parts: str) -> None:
    (config_dir / "sources.yaml").write_text("sources:\n" + "".join(parts), encoding="utf-8")


def sign_hex(body: bytes, secret: str = EBOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def as_body(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


@contextmanager
def web_server(app: App) -> Iterator[str]:
    """Leadwerk's web app on a free port of 127.0.0.1; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(app), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up, not a timing assertion
        if not thread.is_alive():
            raise RuntimeError("the web server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def leadwerk(config_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run a ``leadwerk`` command in-process, as a user would type it with ``env`` set."""
    return CliRunner().invoke(cli_app, ["--config", str(config_dir), *args], env=env or {})


def counts(store: Store) -> dict[str, int]:
    """How many contacts, events and open quarantine entries the store holds."""
    with store.session() as session:
        return {
            "contacts": session.scalar(select(func.count()).select_from(Contact)) or 0,
            "events": session.scalar(select(func.count()).select_from(Event)) or 0,
            "quarantined": session.scalar(
                select(func.count()).select_from(Quarantine).where(Quarantine.status == "open")
            )
            or 0,
        }


def contact(store: Store, email: str) -> Contact | None:
    """The contact with this address, however the case of its local part was kept."""
    with store.session() as session:
        return session.scalar(select(Contact).where(func.lower(Contact.email) == email.lower()))
