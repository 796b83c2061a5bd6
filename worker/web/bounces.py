"""``POST /bounces/<provider>``: signed ESP events in. A forged or unsigned delivery is
refused (401) before anything is stored; a signed one is recorded (each event once) and
answered 202; the list check runs when it brought hard bounces."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

import httpx

from config.models import WebhookBounces
from config.settings import env_secret
from connectors.bounces.webhooks import (
    CERT_TIMEOUT,
    PROVIDERS,
    PayloadError,
    Ses,
    SignatureError,
)
from worker.pipeline.hygiene import check_lists, record_reports
from worker.runtime.app import App
from worker.web.hooks import HookAnswer

log = logging.getLogger("leadwerk.bounces")


def bounce_webhook(app: App, provider: str) -> WebhookBounces | None:
    for source in app.config.hygiene.bounce_sources:
        if isinstance(source, WebhookBounces) and source.provider == provider:
            return source
    return None


def receive_bounces(
    app: App, provider: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> HookAnswer:
    """Handle one delivery to ``POST /bounces/<provider>``."""
    source = bounce_webhook(app, provider)
    if source is None:
        return HookAnswer(404, "not_found", f"no bounce webhook for '{provider}' in hygiene.yaml")
    handler = PROVIDERS[provider](source)
    secret = env_secret(source.secret_env) if source.secret_env else None
    if handler.needs_secret and secret is None:
        log.error("/bounces/%s: %s is not set; refusing", provider, source.secret_env)
        return HookAnswer(401, "unsigned", "the signature cannot be checked")
    try:
        handler.verify(headers, body, secret)
    except (SignatureError, PayloadError) as exc:
        log.warning("/bounces/%s refused: %s", provider, exc)
        return HookAnswer(401, "bad_signature", str(exc))
    if isinstance(handler, Ses):
        url = handler.subscribe_url(body)
        if url is not None:
            return _confirm_subscription(url)
    try:
        reports = handler.reports(body)
    except PayloadError as exc:
        return HookAnswer(400, "bad_body", str(exc))
    result = record_reports(app.store, app.config, reports, now)
    if result.hard:
        check_lists(app.store, app.config, now)
    return HookAnswer(
        202,
        "accepted",
        f"{len(reports)} events: hard {result.hard}, soft {result.soft}, policy "
        f"{result.policy}, delivered {result.delivered}, unmatched {result.unmatched}, "
        f"already known {result.duplicates}",
    )


def _confirm_subscription(url: str) -> HookAnswer:
    """SNS asks once to confirm a new subscription: visiting its SubscribeURL does."""
    try:
        httpx.get(url, timeout=CERT_TIMEOUT).raise_for_status()
    except httpx.HTTPError as exc:
        return HookAnswer(502, "not_confirmed", f"confirming the SNS subscription failed: {exc}")
    return HookAnswer(200, "subscribed", "SNS subscription confirmed")
