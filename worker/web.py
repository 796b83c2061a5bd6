"""The web process: webhooks in, accept links, /healthz, /metrics.

A webhook answers 202 only once the record is durably stored; 401 for a missing or wrong
signature (nothing stored); 400 for a body that is not JSON or lacks the mapped e-mail
(quarantined with the reason); 413 past the size limit; a repeated delivery answers 202 and
adds nothing.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from connectors.sources.base import RawRecord
from connectors.sources.typeform import (
    TypeformConfig,
    parse_typeform_webhook,
    verify_typeform_signature,
)
from connectors.sources.webhook import (
    SignatureError,
    WebhookConfig,
    record_from_webhook,
    verify_webhook,
)
from worker.accept import AcceptLinkError, verify_accept
from worker.app import App
from worker.operations import accept_assignment
from worker.pipeline.ingest import ingest_records, quarantine
from worker.store.models import Assignment, Contact

log = logging.getLogger("leadwerk.web")

WEBHOOKS = Counter(
    "leadwerk_webhooks_total", "Webhook deliveries by source and outcome", ["source", "outcome"]
)


def create_app(app: App) -> Starlette:
    settings = app.settings

    async def healthz(request: Request) -> Response:
        try:
            with app.store.session() as session:
                session.execute(select(1))
        except Exception as exc:  # the store is the one thing we cannot work without
            return JSONResponse({"status": "unhealthy", "store": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def hook(request: Request) -> Response:
        name = request.path_params["source"]
        source = app.config.sources.get(name)
        if not isinstance(source, WebhookConfig | TypeformConfig):
            return JSONResponse({"error": f"no webhook source named '{name}'"}, status_code=404)
        limit = getattr(source, "max_body_bytes", settings.max_body_bytes)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _answer(name, "too_large", 413, f"body larger than {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            return _answer(name, "too_large", 413, f"body larger than {limit} bytes")
        secret_env = getattr(source, "secret_env", None)
        secret = settings.secret(secret_env) if secret_env else None
        if not secret:
            log.error("webhook %s: the secret env var %s is not set; refusing", name, secret_env)
            return _answer(name, "unauthorized", 401, "signature cannot be checked")
        if isinstance(source, WebhookConfig):
            try:
                verify_webhook(source, secret, request.headers, body, datetime.now(UTC))
            except SignatureError as exc:
                return _answer(name, "unauthorized", 401, str(exc))
        elif not verify_typeform_signature(secret, body, request.headers.get("typeform-signature")):
            return _answer(name, "unauthorized", 401, "signature does not match")
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            with app.store.session() as session:
                quarantine(
                    session,
                    name,
                    RawRecord(data={"body": body.decode("utf-8", "replace")}),
                    f"not JSON: {exc}",
                    "body",
                )
            return _answer(name, "bad_request", 400, f"body is not a JSON object: {exc}")
        record = (
            record_from_webhook(source, payload)
            if isinstance(source, WebhookConfig)
            else parse_typeform_webhook(payload)
        )
        report = ingest_records(app.store, app.config, source, [record])
        if report.quarantined:
            problem = report.problems[0]
            return _answer(
                name, "bad_request", 400, f"{problem.field}: {problem.reason} (quarantined)"
            )
        if report.accepted:
            from worker.pipeline.actors import score_lead

            for event_id in report.event_ids:
                score_lead.send(event_id)
            return _answer(name, "accepted", 202, "stored")
        return _answer(name, "duplicate", 202, "already received")

    async def accept(request: Request) -> Response:
        try:
            assignment_id = verify_accept(settings, request.path_params["token"])
        except AcceptLinkError as exc:
            return HTMLResponse(f"<p>{exc}</p>", status_code=403)
        now = datetime.now(UTC)
        with app.store.session() as session:
            assignment = session.get(Assignment, assignment_id, with_for_update=True)
            if assignment is None:
                return HTMLResponse("<p>This lead no longer exists.</p>", status_code=404)
            if assignment.status != "open":
                return HTMLResponse(f"<p>This lead was already {assignment.status}.</p>")
            contact = session.get(Contact, assignment.contact_id)
            assert contact is not None
            text = accept_assignment(session, assignment, contact, now, "accepted by link")
        return HTMLResponse(f"<p>Thank you: {text}.</p>")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/hooks/{source}", hook, methods=["POST"]),
            Route("/accept/{token}", accept, methods=["GET"]),
        ]
    )


def _answer(source: str, outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels(source, outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)


def serve(app: App, host: str, port: int) -> None:
    log.info("web listening on http://%s:%s", host, port)
    uvicorn.run(create_app(app), host=host, port=port, log_level="warning")
