"""``/admin/``: the dashboard a person reads in a browser, and who may read it.

The admin token (``LEADWERK_ADMIN_TOKEN``) opens ``/admin/`` and ``/metrics``: sent as a bearer
token (Prometheus, scripts), or typed once into the dashboard's login form, which sets a
session cookie signed with the token itself (HttpOnly, SameSite=Strict, Secure over HTTPS):
changing the token ends every session. Each session carries a random CSRF token that every
button's form sends back; a POST without it changes nothing. Without an admin token set,
``/admin/`` does not exist (404) and ``/metrics`` answers only to clients on loopback.

The page is rendered on the server from :func:`worker.commands.overview.overview`, the facts of
``leadwerk status``; a small script of our own (no CDN, no build step) fetches the live part
again every few seconds. The buttons use the same operations as ``leadwerk dlq replay`` and
``leadwerk quarantine retry``.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import dramatiq
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from config.settings import Settings
from worker.commands.operations import replay_dead_letters, retry_quarantine
from worker.commands.overview import open_dead_letters, open_quarantine, overview, recent_mqls
from worker.runtime.app import App
from worker.web.links import SECURITY_HEADERS

COOKIE = "leadwerk_admin"
SESSION_MAX_AGE = 12 * 3600
# The page's own script and style sheet, and fetches of the live part: nothing else.
ADMIN_HEADERS = SECURITY_HEADERS | {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
STATIC = {"admin.js": "text/javascript", "admin.css": "text/css"}
LOGIN_FIELD_LIMIT = 4096
REFRESH_SECONDS = 10

_templates = Environment(
    loader=PackageLoader("worker.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _token(settings: Settings) -> str | None:
    secret = settings.admin_token
    return secret.get_secret_value() or None if secret is not None else None


def _serializer(token: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(token, salt="leadwerk-admin-session")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Access:
    """Who a request is: ``bearer`` (the token in the Authorization header; no CSRF check,
    as no browser sends it by itself), ``session`` (a valid cookie, with its CSRF token), or
    nobody (None)."""

    kind: str | None
    csrf: str = ""

    @property
    def allowed(self) -> bool:
        return self.kind is not None


def access(settings: Settings, request: Request) -> Access:
    token = _token(settings)
    if token is None:
        return Access(None)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given and _same(given.strip(), token):
        return Access("bearer")
    cookie = request.cookies.get(COOKIE)
    if cookie:
        try:
            session = _serializer(token).loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return Access(None)
        if isinstance(session, dict) and isinstance(session.get("csrf"), str):
            return Access("session", session["csrf"])
    return Access(None)


def metrics_refusal(settings: Settings, request: Request) -> Response | None:
    """Why ``/metrics`` is not shown to this request (None: it is). With an admin token set,
    it needs the token (401); without one, it answers only to loopback (404 to the rest)."""
    if _token(settings) is not None:
        if access(settings, request).allowed:
            return None
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else Response(status_code=404)


def _html(body: str, status: int = 200, **headers: str) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=ADMIN_HEADERS | headers)


def _not_found() -> Response:
    return Response("Not Found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)


def _login_page(message: str | None, status: int) -> HTMLResponse:
    body = _templates.get_template("admin/login.html.j2").render(message=message)
    return _html(body, status, **{"WWW-Authenticate": 'Bearer realm="leadwerk admin"'})


def _refused(request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        return _login_page(None, 401)
    return Response(
        "the admin token is needed",
        status_code=401,
        media_type="text/plain",
        headers=SECURITY_HEADERS,
    )


def _facts(app: App) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "now": now,
        "o": overview(app, now),
        "mqls": recent_mqls(app),
        "dead_letters": open_dead_letters(app),
        "quarantine": open_quarantine(app),
        "refresh": REFRESH_SECONDS,
    }


NOTICES = {
    "replayed": "Dead letter {id} replayed: its work is on the queue again.",
    "retried": "Quarantined record {id} taken in.",
    "still": "Quarantined record {id} still fails: {reason}",
    "gone": "{id} was already dealt with.",
    "csrf": "That form had expired; nothing was changed. Try again.",
}


def admin_routes(app: App) -> list[Route]:
    settings = app.settings

    def guard(request: Request) -> tuple[Access, Response | None]:
        if _token(settings) is None:
            return Access(None), _not_found()
        who = access(settings, request)
        return who, (None if who.allowed else _refused(request))

    async def dashboard(request: Request) -> Response:
        who, refused = guard(request)
        if refused is not None:
            return refused
        facts = await run_in_threadpool(_facts, app)
        notice = _notice(request)
        body = _templates.get_template("admin/dashboard.html.j2").render(
            **facts, csrf=who.csrf, notice=notice, bearer=who.kind == "bearer"
        )
        return _html(body)

    async def live(request: Request) -> Response:
        who, refused = guard(request)
        if refused is not None:
            # The page's script reloads the whole page, which then shows the login form.
            return refused if refused.status_code == 404 else Response("", 401, SECURITY_HEADERS)
        facts = await run_in_threadpool(_facts, app)
        body = _templates.get_template("admin/live.html.j2").render(**facts, csrf=who.csrf)
        return _html(body)

    async def static(request: Request) -> Response:
        if _token(settings) is None:
            return _not_found()
        name = request.path_params["name"]
        if name not in STATIC:
            return _not_found()
        content = resources.files("worker.web").joinpath("static", name).read_bytes()
        return Response(content, media_type=STATIC[name], headers=ADMIN_HEADERS)

    async def login(request: Request) -> Response:
        token = _token(settings)
        if token is None:
            return _not_found()
        body = await _small_form(request)
        given = (body or {}).get("token", "")
        if not given or not _same(given, token):
            return _login_page("That is not the admin token.", 401)
        session = _serializer(token).dumps({"csrf": secrets.token_urlsafe(24)})
        response = RedirectResponse("/admin/", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            session,
            max_age=SESSION_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or settings.public_url.startswith("https:"),
        )
        return response

    async def logout(request: Request) -> Response:
        who, refused = guard(request)
        if refused is not None:
            return refused
        form = await _small_form(request)
        if not _csrf_ok(who, form):
            return _back("csrf")
        response = RedirectResponse("/admin/", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def replay(request: Request) -> Response:
        who, refused = guard(request)
        if refused is not None:
            return refused
        form = await _small_form(request)
        if not _csrf_ok(who, form):
            return _back("csrf")
        letter = request.path_params["id"]
        count = await run_in_threadpool(replay_dead_letters, app, dramatiq.get_broker(), letter)
        return _back("replayed" if count else "gone", id=letter)

    async def retry(request: Request) -> Response:
        who, refused = guard(request)
        if refused is not None:
            return refused
        form = await _small_form(request)
        if not _csrf_ok(who, form):
            return _back("csrf")
        record = request.path_params["id"]
        accepted, still = await run_in_threadpool(retry_quarantine, app, record, None)
        if accepted:
            return _back("retried", id=record)
        return _back("still" if still else "gone", id=record)

    async def to_dashboard(request: Request) -> Response:
        if _token(settings) is None:
            return _not_found()
        return RedirectResponse("/admin/", status_code=308, headers=SECURITY_HEADERS)

    return [
        Route("/admin", to_dashboard, methods=["GET"]),
        Route("/admin/", dashboard, methods=["GET"]),
        Route("/admin/live", live, methods=["GET"]),
        Route("/admin/static/{name}", static, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/logout", logout, methods=["POST"]),
        Route("/admin/dead-letters/{id:int}/replay", replay, methods=["POST"]),
        Route("/admin/quarantine/{id:int}/retry", retry, methods=["POST"]),
    ]


async def _small_form(request: Request) -> dict[str, str] | None:
    """The fields of a small url-encoded form; None for anything larger."""
    from worker.web.app import _read_body  # the app module imports this one

    body = await _read_body(request, LOGIN_FIELD_LIMIT)
    if body is None:
        return None
    fields = parse_qs(body.decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items() if values}


def _csrf_ok(who: Access, form: dict[str, str] | None) -> bool:
    if who.kind == "bearer":
        return True
    given = (form or {}).get("csrf", "")
    return bool(who.csrf) and bool(given) and _same(given, who.csrf)


def _back(notice: str, id: int | str = "") -> Response:
    """Back to the dashboard after a button, saying what happened (a GET shows, never acts)."""
    return RedirectResponse(
        f"/admin/?notice={notice}&id={id}", status_code=303, headers=SECURITY_HEADERS
    )


def _notice(request: Request) -> str | None:
    kind = request.query_params.get("notice", "")
    template = NOTICES.get(kind)
    if template is None:
        return None
    ident = request.query_params.get("id", "")
    return template.format(id=ident if ident.isdigit() else "?", reason="see the list below")
