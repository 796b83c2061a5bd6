"""Contact fields: the standard set, their types, and normalisation of incoming values.

Pure: used by ingest (records from sources) and by ``leadwerk score`` (JSON Lines), so a
contact is read the same way whichever door it came through.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)

from rules.expr import FieldType

STANDARD_FIELDS: dict[str, FieldType] = {
    "email": FieldType.STRING,
    "first_name": FieldType.STRING,
    "last_name": FieldType.STRING,
    "company": FieldType.STRING,
    "company_size": FieldType.NUMBER,
    "title": FieldType.STRING,
    "country": FieldType.STRING,
    "phone": FieldType.STRING,
    "city": FieldType.STRING,
    "industry": FieldType.STRING,
    "source": FieldType.STRING,
    "created_at": FieldType.DATETIME,
}
DERIVED_FIELDS: dict[str, FieldType] = {"email_domain": FieldType.STRING}
SCORE_FIELDS: dict[str, FieldType] = {
    "score": FieldType.NUMBER,
    "fit": FieldType.NUMBER,
    "engagement": FieldType.NUMBER,
    "mql": FieldType.BOOL,
}
NURTURE_FIELDS: dict[str, FieldType] = {
    "replied": FieldType.BOOL,
    "unsubscribed": FieldType.BOOL,
    "bounced": FieldType.BOOL,
    "stale": FieldType.BOOL,
}
EVENT_FIELDS: dict[str, FieldType] = {
    "event.type": FieldType.STRING,
    "event.source": FieldType.STRING,
    "event.at": FieldType.DATETIME,
    "event.form": FieldType.STRING,
    "event.asset": FieldType.STRING,
    "event.fair": FieldType.STRING,
    "event.rating": FieldType.STRING,
    "event.notes": FieldType.STRING,
    "event.campaign": FieldType.STRING,
    "event.url": FieldType.STRING,
}
ACCOUNT_FIELDS: dict[str, FieldType] = {
    "account.owner": FieldType.STRING,
    "account.open_leads": FieldType.NUMBER,
}
TYPE_NAMES: dict[str, FieldType] = {
    "string": FieldType.STRING,
    "number": FieldType.NUMBER,
    "bool": FieldType.BOOL,
    "date": FieldType.DATETIME,
    "datetime": FieldType.DATETIME,
    "list": FieldType.LIST,
}

# Country names as fair exports write them; ISO codes are what rules compare against.
_COUNTRY_NAMES = {
    "deutschland": "DE",
    "germany": "DE",
    "österreich": "AT",
    "oesterreich": "AT",
    "austria": "AT",
    "schweiz": "CH",
    "switzerland": "CH",
    "suisse": "CH",
    "niederlande": "NL",
    "netherlands": "NL",
    "frankreich": "FR",
    "france": "FR",
    "italien": "IT",
    "italy": "IT",
    "polen": "PL",
    "poland": "PL",
    "vereinigtes königreich": "GB",
    "united kingdom": "GB",
    "usa": "US",
    "united states": "US",
}


class FieldError(ValueError):
    """A value that cannot be read as its field's type; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# The longest text taken per field, in characters. Names, company, title and the other short
# fields hold no real value longer than this, and they end up in subject lines, Slack cards
# and CRM fields: a longer one is refused (its record quarantined, naming the field), never
# cut, since a cut name or address is a wrong one. Free text (``event.notes``, fields no rule
# declares) is cut at FREE_TEXT_MAX with a mark instead: the lead still flows, and the full
# text stays in the event's stored raw record.
SHORT_TEXT_MAX = 256
FREE_TEXT_MAX = 10_000
TEXT_LIMITS: dict[str, int] = {
    "email": EMAIL_MAX_LENGTH,  # 254, RFC 5321 with its errata
    "phone": 64,
    **dict.fromkeys(
        ("first_name", "last_name", "company", "title", "country", "city", "industry", "source"),
        SHORT_TEXT_MAX,
    ),
    "event.type": 50,  # stored in a column of this width
    "event.url": 2048,
    **dict.fromkeys(
        ("event.source", "event.form", "event.asset", "event.fair", "event.rating"),
        SHORT_TEXT_MAX,
    ),
    "event.campaign": SHORT_TEXT_MAX,
}


def check_length(field: str, value: str) -> None:
    """Raise :class:`FieldError` when ``value`` is longer than ``field`` may be."""
    limit = TEXT_LIMITS[field]
    if len(value) > limit:
        raise FieldError(field, f"{len(value):,} characters long; at most {limit:,} are taken")


def cut_free_text(value: str) -> str:
    """Free text cut at FREE_TEXT_MAX characters, marked so that a reader sees it was cut."""
    if len(value) <= FREE_TEXT_MAX:
        return value
    return f"{value[:FREE_TEXT_MAX]} [… {len(value) - FREE_TEXT_MAX:,} more characters]"


def bound_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's text values checked against :data:`TEXT_LIMITS` (``event.type`` 50,
    ``event.url`` 2048, the other named ones 256), the rest cut as free text."""
    bounded: dict[str, Any] = {}
    for name, value in event.items():
        if isinstance(value, str):
            if f"event.{name}" in TEXT_LIMITS:
                check_length(f"event.{name}", value)
            else:
                value = cut_free_text(value)
        bounded[name] = value
    return bounded


def normalise_email(value: Any) -> str:
    """Trimmed, syntax-checked (no DNS) and lower-cased: one person is one contact however the
    address was typed (``Eva@Firma.de`` and ``eva@firma.de`` reach the same mailbox)."""
    text = value.strip() if value.__class__ is str else "" if value is None else str(value).strip()
    if not text:
        raise FieldError("email", "no e-mail address")
    if len(text) > EMAIL_MAX_LENGTH:
        check_length("email", text)  # raises: longer than an address can be
    simple = _SIMPLE_EMAIL.fullmatch(text)
    if simple is not None:
        local, domain = simple.groups()
        domain = domain.lower()
        if len(local) <= LOCAL_PART_MAX_LENGTH and _valid_plain_domain(domain):
            return f"{local.lower()}@{domain}"
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise FieldError("email", f"not a valid e-mail address ({exc})") from None
    return result.normalized.lower()


# The common case, checked without the full validator: a plain ASCII dot-atom local part and
# an ASCII domain. The domain's verdict comes from the validator, once per top-level domain
# where the domain is a plain label in front of it (see _valid_plain_domain); anything
# unusual (quotes, Unicode, IDNA, reserved names, odd lengths) takes the full path.
_SIMPLE_EMAIL = re.compile(r"([A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@([A-Za-z0-9.-]+)")


# Well inside the validator's limits (253 for the domain, 254 for ``x@domain``).
_SHORT_DOMAIN = 200
_PLAIN_LABEL = re.compile(r"[a-z0-9]{1,63}")


@functools.lru_cache(maxsize=65536)
def _valid_plain_domain(domain: str) -> bool:
    """Whether the validator accepts ``x@domain`` and keeps the domain as it is.

    A plain first label (``firma4711`` in ``firma4711.de``, as exports have thousands of) is
    judged by the rest of the domain alone: the validator accepts ``x@firma4711.de`` as it is
    exactly when it accepts ``x@a.de`` as it is. Lower-case letters and digits are left alone
    by its Unicode mapping and pass its character, hyphen, Punycode and label checks; the
    top-level domain, IDNA (``result.domain`` would differ) and the special-use suffixes
    (``.local``) lie in the rest; so only the lengths and a special-use name as a whole are
    left to look at. The validator then runs once per top-level domain, not once per domain.
    """
    label, dot, rest = domain.partition(".")
    if (
        dot
        and len(domain) <= _SHORT_DOMAIN
        and _PLAIN_LABEL.fullmatch(label) is not None
        and domain not in SPECIAL_USE_DOMAIN_NAMES
    ):
        return _validator_keeps(f"a.{rest}")
    return _validator_keeps(domain)


@functools.lru_cache(maxsize=4096)
def _validator_keeps(domain: str) -> bool:
    """Whether the validator accepts ``x@domain`` and gives the domain back unchanged."""
    try:
        result = validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return False
    return result.domain == domain


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def normalise_country(value: Any) -> str | None:
    """ISO 3166 alpha-2 where recognisable (``de`` → ``DE``, ``Deutschland`` → ``DE``)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    check_length("country", text)
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return _COUNTRY_NAMES.get(text.lower(), text)


def normalise_phone(value: Any, country: str | None) -> str | None:
    """E.164 when phonenumbers can parse it with the contact's country; a number it cannot
    place (no country, no ``+``) as written; None for text that is no phone number at all
    (``bitte nicht anrufen``), which no rep could dial."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    check_length("phone", text)
    e164 = _e164(text, country if country and len(country) == 2 else None)
    if e164 is not None:
        return e164
    return text if _LOCAL_NUMBER.fullmatch(text) and _digits(text) >= 6 else None


# A number as written locally: digits with the usual separators, an optional extension.
_LOCAL_NUMBER = re.compile(
    r"\+?[\d\s()./\-\u2013]+(?:\s*(?:ext\.?|x|dw\.?|durchwahl)\s*\d+)?", re.I
)


def _digits(text: str) -> int:
    return sum(char.isdigit() for char in text)


@functools.lru_cache(maxsize=16384)
def _e164(text: str, region: str | None) -> str | None:
    """The number in E.164, or None where phonenumbers cannot make it one. Cached: a fair's
    export repeats its switchboard numbers, and parsing is most of reading a contact."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_NUMBER_JUNK = re.compile(r"[\s\u00a0'’]")
_THOUSANDS_DOT = re.compile(r"-?\d{1,3}(\.\d{3})+")  # 5.000, 1.250.000
_THOUSANDS_COMMA = re.compile(r"-?\d{1,3}(,\d{3})+")  # 5,000, 1,250,000


def coerce_number(field: str, value: Any) -> float | int | None:
    """Numbers as people type them: ``5000``, ``5.000`` (German thousands), ``1,5``, ``200+``."""
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise FieldError(field, f"expected a number, got {value!r}")
        return None
    if isinstance(value, int | float):
        return value
    text = _NUMBER_JUNK.sub("", str(value)).rstrip("+")
    if not text:
        return None
    if _THOUSANDS_DOT.fullmatch(text):
        text = text.replace(".", "")
    elif _THOUSANDS_COMMA.fullmatch(text):
        text = text.replace(",", "")
    else:
        text = text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        raise FieldError(field, f"expected a number, got {str(value)[:40]!r}") from None
    return int(number) if number.is_integer() else number


_TRUE = {"true", "yes", "ja", "y", "j", "1", "x"}
_FALSE = {"false", "no", "nein", "n", "0", ""}


def coerce_bool(field: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FieldError(field, f"expected yes/no, got {str(value)[:40]!r}")


def coerce_datetime(field: str, value: Any) -> datetime | None:
    if value.__class__ is str and value:  # the usual ISO 8601 text, without the checks below
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        match = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text)
        if not match:
            raise FieldError(field, f"expected a date, got {text[:40]!r}") from None
        day, month, year = (int(g) for g in match.groups())
        parsed = datetime(year, month, day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def coerce(field: str, value: Any, ftype: FieldType) -> Any:
    """One value read as its declared type; empty text counts as missing."""
    if isinstance(value, str) and not value.strip():
        return None
    if ftype is FieldType.NUMBER:
        return coerce_number(field, value)
    if ftype is FieldType.BOOL:
        return coerce_bool(field, value)
    if ftype is FieldType.DATETIME:
        return coerce_datetime(field, value)
    if ftype is FieldType.LIST:
        if isinstance(value, list):
            return [str(v) for v in value]
        return [part.strip() for part in str(value).split(",") if part.strip()]
    if ftype is FieldType.STRING and value is not None and not isinstance(value, str):
        return str(value)
    return value.strip() if isinstance(value, str) else value


def normalise_contact(
    raw: Mapping[str, Any], custom_fields: Mapping[str, FieldType]
) -> dict[str, Any]:
    """A contact as rules see it: typed values, normalised e-mail, country and phone.

    Raises :class:`FieldError` naming the first field that cannot be read or that is longer
    than :data:`TEXT_LIMITS` allows. Unknown keys are kept (they stay visible in the stored
    record), their text cut as free text; so is the text of custom fields.
    """
    contact: dict[str, Any] = {}
    standard, limits = STANDARD_FIELDS, TEXT_LIMITS
    for key, value in raw.items():
        if key in _NORMALISED_APART:
            continue
        # The type from {**STANDARD_FIELDS, **custom_fields}, without merging them each time.
        ftype = custom_fields[key] if key in custom_fields else standard.get(key)
        if ftype is FieldType.STRING and value.__class__ is str:
            value = value.strip() or None  # what coerce gives, without the calls
        elif ftype is FieldType.NUMBER and (value.__class__ is int or value.__class__ is float):
            pass  # what coerce gives: the number as it is
        elif ftype:
            value = coerce(key, value, ftype)
        if value.__class__ is str:
            limit = limits.get(key, FREE_TEXT_MAX)
            if len(value) > limit:
                if key in limits:
                    check_length(key, value)  # raises: too long for its field
                value = cut_free_text(value)
        if value is not None:  # missing values are left out
            contact[key] = value
    contact["email"] = normalise_email(raw.get("email"))
    country = normalise_country(raw.get("country"))
    if country is not None:
        contact["country"] = country
    phone = normalise_phone(raw.get("phone"), country)
    if phone is not None:
        contact["phone"] = phone
    return contact


_NORMALISED_APART = frozenset({"email", "phone", "country"})


def mask_email(email: str | None) -> str:
    """``eva.mueller@bigcorp.de`` → ``e***@bigcorp.de``: for logs and reports."""
    if not email or "@" not in email:
        return "***"
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


# An address inside free text (a server reply, a database error's detail). The parts are
# bounded in length so that a long run of text without an ``@`` is scanned in linear time.
_EMAIL_IN_TEXT = re.compile(r"[^\s<>@\"',;:()\[\]=]{1,64}@[^\s<>@\"',;:()\[\]=]{1,255}")


def mask_emails_in(text: str) -> str:
    """Every e-mail address in ``text`` masked as :func:`mask_email` does."""
    if "@" not in text:
        return text
    return _EMAIL_IN_TEXT.sub(_masked, text)


def _masked(found: re.Match[str]) -> str:
    """One address masked; one masked already (``***@host``, as a URL's hidden password
    reads) stays as it is."""
    text = found.group()
    return text if not text.partition("@")[0].strip("*") else mask_email(text)


def mask_phone(phone: str | None) -> str:
    if not phone:
        return "***"
    digits = str(phone)
    return f"{digits[:3]}***{digits[-2:]}" if len(digits) > 6 else "***"
