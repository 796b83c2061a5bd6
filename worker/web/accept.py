"""Signed links in the messages Leadwerk sends: accept a lead, give it to a rep.

A link is ``<public_url>/<kind>/<token>``; the token is a signed ``{"k": kind, "p": ref, ...}``
(``ref``: what the link acts on, such as an assignment's random ``public_id``, never a
sequential row id) that expires. :func:`sign` and :func:`verify` serve every kind, and a
kind's token is refused as another kind's. Unsubscribe links keep their own format, which
never expires (``worker/web/unsubscribe.py``), signed with the same key. Opening a link (GET) only
shows a page; acting takes a POST (``worker/web/links.py``), so the mail scanners that open
every link in an e-mail never accept or unsubscribe anything.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer

from config.settings import Settings

ACCEPT = "accept"
ASSIGN = "assign"
UNSUBSCRIBE = "unsubscribe"

ACCEPT_LINK_MAX_AGE = 7 * 24 * 3600

SECRET_HINT = (
    "set LEADWERK_ACCEPT_SECRET (the key that signs accept and unsubscribe links) in the "
    "environment of every Leadwerk process; generate one with: "
    'python -c "import secrets; print(secrets.token_urlsafe(32))"'
)


class LinkError(ValueError):
    """The link was tampered with, has expired, or is of another kind."""


@dataclass(frozen=True)
class Link:
    """What a verified token says: its kind, what it acts on, and who it was sent to."""

    kind: str
    ref: str
    reader: str | None = None


def _plain(secret: Any) -> str | None:
    """A secret setting as text, whether it is held as text or as a pydantic ``SecretStr``."""
    reveal = getattr(secret, "get_secret_value", None)
    return reveal() if reveal is not None else secret


def shared_deployment(settings: Settings) -> bool:
    """PostgreSQL or Redis: processes on several hosts, links that must not be forgeable."""
    return bool(settings.redis_url) or settings.sqlite_path is None


def missing_secret(settings: Settings) -> str | None:
    """Why a process must not start with these settings, or None. A shared deployment needs
    ``LEADWERK_ACCEPT_SECRET``: the laptop default key is derived from the database URL,
    which anyone who can guess it could sign links with."""
    if shared_deployment(settings) and not _plain(settings.accept_secret):
        backing = "Redis" if settings.redis_url else "PostgreSQL"
        return f"LEADWERK_ACCEPT_SECRET is not set but {backing} is configured: {SECRET_HINT}"
    return None


def link_secret(settings: Settings) -> str:
    """The key that signs links: ``LEADWERK_ACCEPT_SECRET``, else (a laptop over SQLite, see
    :func:`missing_secret`) a default, stable per store."""
    secret = _plain(settings.accept_secret)
    if secret:
        return secret
    return hashlib.sha256(f"leadwerk-dev:{settings.database_url}".encode()).hexdigest()


class _LinkSerializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe timed serializer without its try at compressing each payload:
    a link's payload (a kind, an id, a rep's name) never gets shorter by it, so the token is
    the one the try would have made, and the try's compressor (a quarter of a megabyte set
    up per link) was 4 % of a worker's CPU. Compressed tokens still load."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


@functools.lru_cache(maxsize=4)
def _serializer_for(secret: str) -> URLSafeTimedSerializer:
    """Built once per secret: every new lead's message signs a link (speed to lead)."""
    return _LinkSerializer(secret, salt="leadwerk.links")


def sign(settings: Settings, kind: str, ref: str, reader: str | None = None) -> str:
    """A token for a ``kind`` link acting on ``ref``, sent to ``reader`` (a rep of
    team.yaml: the person the action is recorded for)."""
    data: dict[str, str] = {"k": kind, "p": ref}
    if reader:
        data["r"] = reader
    return _serializer_for(link_secret(settings)).dumps(data)


def verify(settings: Settings, kind: str, token: str, max_age: int | None = None) -> Link:
    """The link a token stands for; :class:`LinkError` when it is not a valid ``kind`` link
    or is older than ``max_age`` seconds."""
    try:
        data = _serializer_for(link_secret(settings)).loads(token, max_age=max_age)
    except SignatureExpired:
        raise LinkError(f"this {kind} link has expired") from None
    except BadSignature:
        raise LinkError(f"this {kind} link is not valid") from None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("p"), str):
        raise LinkError(f"this {kind} link is not valid")
    reader = data.get("r")
    return Link(kind, data["p"], reader if isinstance(reader, str) else None)


def link_url(settings: Settings, kind: str, ref: str, reader: str | None = None) -> str:
    return f"{settings.public_url.rstrip('/')}/{kind}/{sign(settings, kind, ref, reader)}"


def sign_accept(settings: Settings, public_id: str, reader: str | None = None) -> str:
    return sign(settings, ACCEPT, public_id, reader)


def verify_accept(settings: Settings, token: str, max_age: int = ACCEPT_LINK_MAX_AGE) -> Link:
    try:
        return verify(settings, ACCEPT, token, max_age)
    except LinkError as exc:
        if "expired" in str(exc):
            raise LinkError(f"{exc}; use `leadwerk accept` instead") from None
        raise
