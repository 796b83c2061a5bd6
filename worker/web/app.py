"""The web process: webhooks in, accept links, Slack buttons, /healthz, /metrics.

A webhook answers 202 only once the record is durably stored; 401 for a missing or wrong
signature (nothing stored); 400 for a body that is not JSON or lacks the mapped e-mail
(quarantined with the reason); 413 past the size limit; a repeated delivery answers 202 and
adds nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from config.loader import Config
from connectors.notify.slack import (
    accepted_line,
    card_with_outcome,
    ephemeral_body,
    post_to_response_url,
    replace_original_body,
)
from connectors.notify.slack_actions import (
    BlockActions,
    SlackRequestError,
    parse_block_actions,
    verify_slack_request,
)
from worker.commands.operations import accept_assignment, accept_from_slack
from worker.pipeline.notify import local_time_text
from worker.runtime.app import App
from worker.store.models import Assignment, Contact
from worker.web.accept import AcceptLinkError, verify_accept
from worker.web.bounces import receive_bounces
from worker.web.hooks import body_limit, receive_webhook, webhook_source
from worker.web.hygiene_metrics import ListCollector
from worker.web.metrics import store_registry

log = logging.getLogger("leadwerk.web")

# Seconds for posting to a click's response_url; it happens after Slack has its answer.
RESPONSE_URL_TIMEOUT = 5.0

WEBHOOKS = Counter(
    "leadwerk_webhooks_total", "Webhook deliveries by source and outcome", ["source", "outcome"]
)


def create_app(app: App) -> Starlette:
    settings = app.settings
    outbox_metrics = store_registry(app.store)
    outbox_metrics.register(ListCollector(app))

    async def healthz(request: Request) -> Response:
        try:
            with app.store.session() as session:
                session.execute(select(1))
        except Exception as exc:  # the store is the one thing we cannot work without
            return JSONResponse({"status": "unhealthy", "store": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        body = generate_latest() + generate_latest(outbox_metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def hook(request: Request) -> Response:
        name = request.path_params["source"]
        source = webhook_source(app, name)
        if source is None:
            return JSONResponse({"error": f"no webhook source named '{name}'"}, status_code=404)
        limit = body_limit(app, source)
        body = await _read_body(request, limit)
        if body is None:
            return _answer(name, "too_large", 413, f"body larger than {limit} bytes")
        answer = await run_in_threadpool(
            receive_webhook, app, name, request.headers, body, datetime.now(UTC)
        )
        return _answer(name, answer.outcome, answer.status, answer.detail)

    async def bounces(request: Request) -> Response:
        provider = request.path_params["provider"]
        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            return _answer("bounces", "too_large", 413, "body too large")
        answer = await run_in_threadpool(
            receive_bounces, app, provider, request.headers, body, datetime.now(UTC)
        )
        label = f"bounces:{provider}" if answer.status != 404 else "bounces:unknown"
        return _answer(label, answer.outcome, answer.status, answer.detail)

    async def accept(request: Request) -> Response:
        try:
            assignment_id = verify_accept(settings, request.path_params["token"])
        except AcceptLinkError as exc:
            return HTMLResponse(f"<p>{exc}</p>", status_code=403)
        now = datetime.now(UTC)
        with app.store.session() as session:
            # The lead before its assignment: the order the SLA clock locks them in.
            contact_id = session.scalar(
                select(Assignment.contact_id).where(Assignment.id == assignment_id)
            )
            contact = session.get(Contact, contact_id, with_for_update=True) if contact_id else None
            assignment = session.get(Assignment, assignment_id, with_for_update=True)
            if assignment is None or contact is None:
                return HTMLResponse("<p>This lead no longer exists.</p>", status_code=404)
            if assignment.status != "open":
                return HTMLResponse(f"<p>This lead was already {assignment.status}.</p>")
            text = accept_assignment(session, assignment, contact, now, "accepted by link")
        return HTMLResponse(f"<p>Thank you: {text}.</p>")

    async def slack_actions(request: Request) -> Response:
        """Slack buttons: "Accept" on a lead card accepts the lead and stops its SLA clock.

        Slack ignores the body of this answer, so what the rep sees changes through the
        click's ``response_url``, once the answer is sent (Slack waits 3 s at most): the card
        loses its button and says who accepted it, or the rep alone learns why not."""
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return JSONResponse({"error": "body too large"}, status_code=413)
        secret = (
            settings.slack_signing_secret.get_secret_value()
            if settings.slack_signing_secret
            else None
        )
        if not secret:
            log.error("/slack/actions: LEADWERK_SLACK_SIGNING_SECRET is not set; refusing")
            return JSONResponse({"error": "signature cannot be checked"}, status_code=401)
        now = datetime.now(UTC)
        try:
            verify_slack_request(secret, request.headers, body, now)
        except SlackRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        try:
            interaction = parse_block_actions(body)
        except SlackRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        accepted, texts = 0, []
        accepted_by: tuple[str, str | None] | None = None  # (rep, their Slack user id)
        for action in interaction.actions:
            if action.action_id == "accept_lead":
                rep, text = accept_from_slack(app, action.value or "", action.user_id, now)
                if rep is not None:
                    accepted += 1
                    accepted_by = (rep, action.user_id)
                texts.append(text)
        reply = _slack_reply(app.config, interaction, accepted_by, texts, now)
        return JSONResponse(
            {"accepted": accepted, "text": "; ".join(texts) or "nothing to do"},
            background=(
                BackgroundTask(_respond_in_slack, interaction.response_url, reply)
                if reply is not None and interaction.response_url is not None
                else None
            ),
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/hooks/{source}", hook, methods=["POST"]),
            Route("/bounces/{provider}", bounces, methods=["POST"]),
            Route("/accept/{token}", accept, methods=["GET"]),
            Route("/slack/actions", slack_actions, methods=["POST"]),
        ]
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes (by its declared
    length, or while it streams in), so that an oversized body is never held whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _slack_reply(
    config: Config,
    interaction: BlockActions,
    accepted_by: tuple[str, str | None] | None,
    texts: list[str],
    now: datetime,
) -> dict[str, Any] | None:
    """What to post to the click's response_url: the card, accepted, in place of the one
    clicked; a refusal for the clicking rep's eyes only; or nothing when no lead was asked for."""
    if not texts:
        return None
    summary = "; ".join(texts)
    if accepted_by is None:
        return ephemeral_body(summary)
    rep, slack_user = accepted_by
    line = accepted_line(slack_user, local_time_text(config, rep, now))
    return replace_original_body(card_with_outcome(interaction.message_blocks, line), summary)


async def _respond_in_slack(url: str, body: dict[str, Any]) -> None:
    """Runs after the answer is sent; a failure only costs the rep the updated card, as the
    store already holds the acceptance."""
    problem = await post_to_response_url(url, body, timeout=RESPONSE_URL_TIMEOUT)
    if problem is not None:
        log.warning("/slack/actions: %s", problem)


def _answer(source: str, outcome: str, status: int, detail: str) -> Response:
    WEBHOOKS.labels(source, outcome).inc()
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status)


def serve(app: App, host: str, port: int) -> None:
    log.info("web listening on http://%s:%s", host, port)
    # Kept-alive connections outlast a sender's or proxy's idle ones (load balancers keep
    # 60 s): a delivery sent on a connection just as the server closes it fails with a broken
    # pipe, and the sender has to deliver it again. No access log: worker.runtime.logging keeps
    # "uvicorn.access" quiet anyway, and this way no request even prepares the line.
    uvicorn.run(
        create_app(app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
    )
