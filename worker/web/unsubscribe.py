"""One-click unsubscribe for nurture e-mails (RFC 8058).

Mailbox providers require bulk mail to carry ``List-Unsubscribe`` with an HTTPS link and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the provider then POSTs to the link when
the reader clicks "unsubscribe". The link holds a signed contact id. It never expires: a reader
may unsubscribe from a mail that is months old.

Only nurture mail carries the headers: a notification to a rep is not a mailing list.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

from config.settings import Settings
from worker.web.accept import link_secret

NURTURE = "nurture"


class UnsubscribeLinkError(ValueError):
    """The link was tampered with."""


def is_nurture(purpose: str) -> bool:
    """``nurture`` or ``nurture:<sequence>:<step>``."""
    return purpose == NURTURE or purpose.startswith(f"{NURTURE}:")


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(link_secret(settings), salt="leadwerk.unsubscribe")


def unsubscribe_url(settings: Settings, contact_id: int) -> str:
    token = _serializer(settings).dumps({"c": contact_id})
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


def verify_unsubscribe(settings: Settings, token: str) -> int:
    """The contact id in a link made by :func:`unsubscribe_url`."""
    try:
        data = _serializer(settings).loads(token)
    except BadSignature:
        raise UnsubscribeLinkError("this unsubscribe link is not valid") from None
    return int(data["c"])


def list_unsubscribe_headers(settings: Settings, contact_id: int) -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(settings, contact_id)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
