"""The web process: webhooks in, link pages, Slack buttons, /healthz, /readyz, /metrics,
and the admin dashboard (/admin/, worker.web.admin).

Handlers never block the event loop: whatever touches the store, Redis or another server runs
in the thread pool, so a row lock one request waits for never stalls another's webhook.

A webhook answers 202 only once the record is durably stored; 401 for a missing or wrong
signature (nothing stored); 400 for a body that is not JSON or lacks the mapped e-mail
(quarantined with the reason); 413 past the size limit; a repeated delivery answers 202 and
adds nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import redis
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import make_url, select
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from config.loader import Config
from config.settings import mask_url
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
from worker.commands.operations import accept_from_slack
from worker.pipeline.notify import local_time_text
from worker.runtime.alerts import AlertCollector
from worker.runtime.app import App
from worker.runtime.processes import StopSignal
from worker.web.admin import admin_routes, metrics_refusal
from worker.web.bounces import receive_bounces
from worker.web.digest import digest_routes
from worker.web.hooks import body_limit, receive_webhook, webhook_source
from worker.web.hygiene_metrics import ListCollector
from worker.web.links import (
    SECURITY_HEADERS,
    Page,
    accept_by_link,
    accept_page,
    assign_by_link,
    assign_page,
    unsubscribe_by_link,
    unsubscribe_page,
)
from worker.web.metrics import store_registry

log = logging.getLogger("leadwerk.web")

# A form's button or a one-click unsubscribe posts a few bytes.
FORM_LIMIT = 4096
TOO_LARGE = Page("Request too large", ["This request is larger than the page sends."], 413)

# Seconds for posting to a click's response_url; it happens after Slack has its answer.
RESPONSE_URL_TIMEOUT = 5.0

WEBHOOKS = Counter(
    "leadwerk_webhooks_total", "Webhook deliveries by source and outcome", ["source", "outcome"]
)


def create_app(app: App) -> Starlette:
    settings = app.settings
    outbox_metrics = store_registry(app.store, app)
    outbox_metrics.register(AlertCollector(app))
    outbox_metrics.register(ListCollector(app))

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers. It reads nothing, so it never fails on a store
        that is down (that is /readyz's question) and never shows an error text."""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await run_in_threadpool(readiness, app)
        ready = all(checks.values())
        body = {"status": "ok" if ready else "unavailable"} | {
            part: "up" if up else "down" for part, up in checks.items()
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        refusal = metrics_refusal(settings, request)
        if refusal is not None:
            return refusal
        body = await run_in_threadpool(lambda: generate_latest() + generate_latest(outbox_metrics))
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
        return _answer(name, answer.outcome, answer.status, answer.detail, answer.retry_after)

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
        token = request.path_params["token"]
        if request.method != "POST":
            return _page(await run_in_threadpool(accept_page, app, token))
        if await _read_body(request, FORM_LIMIT) is None:
            return _page(TOO_LARGE)
        now = datetime.now(UTC)
        return _page(await run_in_threadpool(accept_by_link, app, token, now))

    async def assign(request: Request) -> Response:
        token = request.path_params["token"]
        if request.method != "POST":
            return _page(await run_in_threadpool(assign_page, app, token))
        body = await _read_body(request, FORM_LIMIT)
        if body is None:
            return _page(TOO_LARGE)
        rep = _form_field(body, "rep")
        now = datetime.now(UTC)
        page = await run_in_threadpool(assign_by_link, app, token, rep, now)
        if page.message_ids:
            await run_in_threadpool(_send_soon, page.message_ids)
        return _page(page)

    async def unsubscribe(request: Request) -> Response:
        """RFC 8058: a mailbox provider POSTs ``List-Unsubscribe=One-Click``; the page's own
        button posts the same. Any POST with a valid link unsubscribes."""
        token = request.path_params["token"]
        if request.method != "POST":
            return _page(await run_in_threadpool(unsubscribe_page, app, token))
        if await _read_body(request, FORM_LIMIT) is None:
            return _page(TOO_LARGE)
        now = datetime.now(UTC)
        return _page(await run_in_threadpool(unsubscribe_by_link, app, token, now))

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
                rep, text = await run_in_threadpool(
                    accept_from_slack, app, action.value or "", action.user_id, now
                )
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
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/hooks/{source}", hook, methods=["POST"]),
            Route("/bounces/{provider}", bounces, methods=["POST"]),
            Route("/accept/{token}", accept, methods=["GET", "POST"]),
            Route("/assign/{token}", assign, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
            Route("/slack/actions", slack_actions, methods=["POST"]),
            *digest_routes(app),
            *admin_routes(app),
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


def _page(page: Page) -> Response:
    return HTMLResponse(page.html(), status_code=page.status, headers=SECURITY_HEADERS)


def _form_field(body: bytes, name: str) -> str:
    """One field of an ``application/x-www-form-urlencoded`` body, or ''."""
    values = parse_qs(body.decode("utf-8", "replace")).get(name)
    return values[0] if values else ""


def _send_soon(message_ids: list[int]) -> None:
    """Ring the doorbell for new outbox messages; the sweep finds them if this is lost."""
    from worker.pipeline.actors import send_message

    for message_id in message_ids:
        send_message.send(message_id)


def readiness(app: App) -> dict[str, bool]:
    """Whether the store and the broker (and, with RabbitMQ, Redis) answer. What went wrong
    is logged here, with the database URL's password masked, and never shown to the caller."""
    checks = {"store": True}
    try:
        with app.store.session() as session:
            session.execute(select(1))
    except Exception as exc:  # any failure means: not ready
        checks["store"] = False
        url = make_url(app.settings.database_url)
        detail = (str(exc).splitlines() or [""])[0]
        if url.password:
            detail = detail.replace(str(url.password), "***")
        log.warning(
            "/readyz: the store at %s does not answer: %s: %s",
            mask_url(app.settings.database_url),
            type(exc).__name__,
            detail,
        )
    if app.settings.broker_url:
        checks["broker"] = rabbitmq_answers(app.settings.broker_url)
    if app.settings.redis_url:
        # With RabbitMQ as the broker, Redis still holds the clock's lease.
        part = "redis" if app.settings.broker_url else "broker"
        checks[part] = True
        client = redis.Redis.from_url(
            app.settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            checks[part] = False
            log.warning("/readyz: Redis does not answer: %s: %s", type(exc).__name__, exc)
        finally:
            client.close()
    return checks


def rabbitmq_answers(url: str) -> bool:
    from worker.runtime.rabbitmq import rabbitmq_problem

    problem = rabbitmq_problem(url, timeout=2)
    if problem is not None:
        log.warning("/readyz: RabbitMQ does not answer: %s", problem)
    return problem is None


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


def _answer(
    source: str, outcome: str, status: int, detail: str, retry_after: int | None = None
) -> Response:
    WEBHOOKS.labels(source, outcome).inc()
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"status": outcome, "detail": detail}, status_code=status, headers=headers)


def serve(app: App, host: str, port: int, stop: StopSignal | None = None) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn answers the requests in progress first. ``stop``
    catches a signal that arrives before uvicorn takes the signals over."""
    log.info("web listening on http://%s:%s", host, port)
    # Kept-alive connections outlast a sender's or proxy's idle ones (load balancers keep
    # 60 s): a delivery sent on a connection just as the server closes it fails with a broken
    # pipe, and the sender has to deliver it again. No access log: worker.runtime.logging keeps
    # "uvicorn.access" quiet anyway, and this way no request even prepares the line.
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=75,
        )
    )
    if stop is not None:

        def stop_early() -> None:
            stop.wait_forever()
            server.should_exit = True

        threading.Thread(target=stop_early, name="leadwerk-web-stop", daemon=True).start()
    server.run()
