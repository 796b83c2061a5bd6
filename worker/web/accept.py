"""Signed, expiring accept links: the rep clicks, the SLA clock stops."""

from __future__ import annotations

import functools
import hashlib
import logging

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from config.settings import Settings

log = logging.getLogger("leadwerk.accept")

ACCEPT_LINK_MAX_AGE = 7 * 24 * 3600


class AcceptLinkError(ValueError):
    """The link was tampered with or has expired."""


def link_secret(settings: Settings) -> str:
    """The key that signs accept and unsubscribe links: ``LEADWERK_ACCEPT_SECRET``, else an
    embedded default for a laptop, stable per store."""
    if settings.accept_secret:
        return settings.accept_secret.get_secret_value()
    return hashlib.sha256(f"leadwerk-dev:{settings.database_url}".encode()).hexdigest()


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return _serializer_for(link_secret(settings))


@functools.lru_cache(maxsize=4)
def _serializer_for(secret: str) -> URLSafeTimedSerializer:
    """Built once per secret: every new lead's message signs a link (speed to lead)."""
    return URLSafeTimedSerializer(secret, salt="leadwerk.accept")


def sign_accept(settings: Settings, assignment_id: int) -> str:
    return _serializer(settings).dumps({"a": assignment_id})


def verify_accept(settings: Settings, token: str, max_age: int = ACCEPT_LINK_MAX_AGE) -> int:
    try:
        data = _serializer(settings).loads(token, max_age=max_age)
    except SignatureExpired:
        raise AcceptLinkError(
            "this accept link has expired; use `leadwerk accept` instead"
        ) from None
    except BadSignature:
        raise AcceptLinkError("this accept link is not valid") from None
    return int(data["a"])
