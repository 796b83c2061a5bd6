"""Receiving one webhook delivery: verify, parse, store, answer.

The web process reads the body (refusing it past the size limit while it streams in) and
hands it here, in a worker thread, since storing it waits on the database. The answers are
the product's contract:

* ``202`` once the record is durably stored, or when it was stored before (a re-delivery
  adds nothing);
* ``200`` ``ignored`` for a Typeform event that is not a completed response (a partial
  response): a 2xx, so that Typeform does not deliver it again and again;
* ``400`` for a body that is not a JSON object or that lacks what the mapping needs (the
  mapped e-mail): quarantined with the reason, visible in ``leadwerk quarantine list``;
* ``401`` for a missing, wrong or stale signature, with nothing stored;
* ``404`` for a path that names no webhook source, ``413`` past the size limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from config.settings import EnvSecrets, env_secret
from connectors.errors import BodyTooLargeError, IgnoredDelivery, SignatureError, SkippableError
from connectors.sources.base import PushedSource, RawRecord
from connectors.sources.registry import pushed_source
from worker.pipeline.ingest import ingest_records, quarantine
from worker.runtime.app import App

log = logging.getLogger("leadwerk.webhooks")


@dataclass(frozen=True)
class HookAnswer:
    status: int
    outcome: str  # accepted | duplicate | ignored | bad_request | unauthorized | ...
    detail: str


def webhook_source(app: App, name: str) -> PushedSource | None:
    """The source that takes deliveries to ``/hooks/<name>``, if one is configured."""
    source = app.config.sources.get(name)
    return pushed_source(source, EnvSecrets()) if source is not None else None


def body_limit(app: App, source: PushedSource) -> int:
    """The largest body a source accepts: its ``max_body_bytes``, else the setting."""
    return source.max_body_bytes or app.settings.max_body_bytes


def receive_webhook(
    app: App, name: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> HookAnswer:
    """Handle one delivery to ``POST /hooks/<name>``; ``headers`` are looked up without
    regard to case (Starlette's headers are)."""
    source = webhook_source(app, name)
    if source is None:
        return HookAnswer(404, "not_found", f"no webhook source named '{name}'")
    limit = body_limit(app, source)
    if len(body) > limit:
        return HookAnswer(413, "too_large", f"body larger than {limit} bytes")
    refused = _check_signature(app, name, source, headers, body, now)
    if refused is not None:
        log.warning("webhook %s refused: %s", name, refused.detail)
        return refused
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    except (ValueError, RecursionError) as exc:
        reason = f"the body is not a JSON object ({_short(exc)})"
        raw = RawRecord(data={"body": body.decode("utf-8", "replace")})
        return _quarantine(app, name, raw, reason, "body")
    try:
        record = source.receive(payload)
    except IgnoredDelivery as exc:
        return HookAnswer(200, "ignored", str(exc))
    except SkippableError as exc:
        return _quarantine(app, name, RawRecord(data=payload), str(exc), exc.field or "body")
    report = ingest_records(app.store, app.config, source.config, [record], now=now)
    if report.quarantined:
        problem = report.problems[0]
        return HookAnswer(400, "bad_request", f"{problem.field}: {problem.reason} (quarantined)")
    if report.accepted:
        _ring(report.event_ids)
        return HookAnswer(202, "accepted", "stored")
    return HookAnswer(202, "duplicate", "already received")


def _check_signature(
    app: App,
    name: str,
    source: PushedSource,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> HookAnswer | None:
    secret_env = source.secret_env
    secret = env_secret(secret_env) if secret_env else None
    if not secret:
        what = f"environment variable {secret_env} is not set" if secret_env else "no secret_env"
        log.error(
            "webhook %s: %s, so no delivery can be verified; set it to the secret the sender "
            "signs with (Typeform: the webhook's secret)",
            name,
            what,
        )
        return HookAnswer(401, "unauthorized", "signature cannot be checked")
    try:
        source.verify(secret, headers, body, now)
    except BodyTooLargeError as exc:
        return HookAnswer(413, "too_large", str(exc))
    except SignatureError as exc:
        return HookAnswer(401, "unauthorized", str(exc))
    return None


def _quarantine(app: App, name: str, record: RawRecord, reason: str, field: str) -> HookAnswer:
    with app.store.session() as session:
        quarantine(session, name, record, reason, field)
    log.warning("webhook %s: quarantined a delivery: %s", name, reason)
    return HookAnswer(400, "bad_request", f"{field}: {reason} (quarantined)")


def _ring(event_ids: list[int]) -> None:
    """Tell the workers. The record is stored already, so a broker that is away costs a
    delay (the clock's sweep finds the event), never the lead, and never a 5xx that would
    make the sender deliver again."""
    from worker.pipeline.actors import score_lead

    for event_id in event_ids:
        try:
            score_lead.send(event_id)
        except Exception as exc:  # any broker failure; the sweep re-derives the work
            log.warning("event %s stored; the queue is unreachable (%s)", event_id, exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "…"
