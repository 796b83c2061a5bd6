"""Receiving one webhook delivery: verify, parse, store, answer.

The web process reads the body (refusing it past the size limit while it streams in) and
hands it here, in a worker thread, since storing it waits on the database. The answers are
the product's contract:

* ``202`` once the record is durably stored, or when it was stored before (a re-delivery
  adds nothing);
* ``200`` ``ignored`` for a Typeform event that is not a completed response (a partial
  response): a 2xx, so that Typeform does not deliver it again and again;
* ``400`` for a body that is not a JSON object, nests deeper than 64 levels, or lacks what
  the mapping needs (the mapped e-mail): quarantined with the reason, visible in
  ``leadwerk quarantine list`` (once, however often it is delivered again);
* ``401`` for a missing, wrong or stale signature, with nothing stored;
* ``404`` for a path that names no webhook source, ``413`` past the size limit;
* ``503`` with ``Retry-After`` when the store cannot be reached: a statement whose
  connection was cut runs once more on a fresh one first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from config.settings import EnvSecrets, env_secret
from connectors import json_depth
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
    retry_after: int | None = None  # seconds, for a 503


# A store that cannot be reached: a connection refused, or cut under a statement (a
# PostgreSQL restart, a failover, a firewall). The pool drops a cut connection, so the
# delivery's work runs once more on a fresh one; if that fails too, the sender is told to
# come back later. (A busy SQLite file has waited its 30 s already: no second wait.)
_UNREACHABLE = (OperationalError, InterfaceError)
STORE_RETRY_AFTER_S = 30


def _connection_cut(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


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
    attempts = Retrying(
        retry=retry_if_exception(_connection_cut),
        stop=stop_after_attempt(2),
        before_sleep=lambda state: log.warning(
            "webhook %s: %s; running it again", name, _cause(state.outcome.exception())
        ),
        reraise=True,
    )
    try:
        return attempts(_take_in, app, name, source, body, now)
    except _UNREACHABLE as exc:
        log.error("webhook %s: %s; answered 503", name, _cause(exc))
        return HookAnswer(
            503,
            "unavailable",
            "the store cannot be reached; deliver again later",
            retry_after=STORE_RETRY_AFTER_S,
        )


def _take_in(app: App, name: str, source: PushedSource, body: bytes, now: datetime) -> HookAnswer:
    """Parse, store or quarantine a verified delivery; the answer once it is stored."""
    try:
        payload = json_depth.loads(body)
        if not isinstance(payload, dict):
            raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    except ValueError as exc:
        if isinstance(exc, json_depth.JsonDepthError):
            reason = f"the body is {exc}"
        else:
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


def _cause(exc: BaseException | None) -> str:
    """What went wrong with the store, in one line: the driver's first line, without the
    statement SQLAlchemy appends."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"the store cannot be reached ({_short(lines[0]) if lines else type(orig).__name__})"


def _short(exc: BaseException | str) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "…"
