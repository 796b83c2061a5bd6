"""E-mail addresses are read the same whether the quick path for plain addresses or the full
validator decides: the quick path is only a shortcut, never a second opinion."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.contact import FieldError, normalise_email


def full_validator(text: str) -> str | None:
    """What the validator alone makes of an address (``None``: not an address), lower-cased
    as Leadwerk keys contacts."""
    try:
        result = validate_email(text.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


def leadwerk(text: str) -> str | None:
    try:
        return normalise_email(text)
    except FieldError:
        return None


LOCAL = st.text(alphabet="abcXYZ019._%+-!#äé\"' ", min_size=0, max_size=70)
LABEL = st.one_of(
    st.text(alphabet="abcXYZ019-", min_size=0, max_size=66),
    st.sampled_from(["xn--mller-kva", "xn--bad", "ab--cd", "localhost", "local", "test", "arpa"]),
)
TLD = st.sampled_from(["de", "com", "DE", "a", "123", "local", "test", "invalid", "onion", ""])
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=0, max_size=4), TLD
)


@settings(max_examples=600, deadline=None)
@given(local=LOCAL, domain=DOMAIN)
def test_the_quick_path_agrees_with_the_full_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert leadwerk(address) == full_validator(address)


PLAIN_LABEL = st.text(alphabet="abcxyz0189", min_size=1, max_size=64)


@settings(max_examples=600, deadline=None)
@given(local=LOCAL, label=PLAIN_LABEL, rest=DOMAIN)
def test_a_plain_first_label_is_judged_by_the_rest_of_the_domain_as_the_validator_judges(
    local: str, label: str, rest: str
) -> None:
    """The validator runs once per rest of the domain (``a.de`` stands for ``firma4711.de``):
    every plain first label in front of any rest reads as the validator reads it."""
    for address in (f"{local}@{label}.{rest}", f"eva@{label}.{rest}", f"eva@{label}.a.{rest}"):
        assert leadwerk(address) == full_validator(address)


@pytest.mark.parametrize(
    "address",
    [
        "Eva.Mueller@BigCorp.DE",
        "postmaster@bigcorp.de",
        "eva@xn--mller-kva.de",
        "eva@mail.local",
        "a" * 65 + "@bigcorp.de",
        "eva@" + "a" * 250 + ".de",
        "eva..m@bigcorp.de",
        ".eva@bigcorp.de",
        "eva@-bigcorp.de",
        "eva@bigcorp",
        "eva@1.2",
        " eva@bigcorp.de ",
        "özlem@bigcorp.de",
        "eva@firma4711.de",
        "eva@4711.de",
        "eva@firma.123",
        "eva@firma.local",
        "eva@localhost.de",
        "eva@firma.xn--mller-kva",
        "eva@1.xn--4dbc.com",
        "eva@" + "a" * 63 + ".de",
        "eva@" + "a" * 64 + ".de",
        "eva@" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".de",
    ],
)
def test_addresses_at_the_edges_read_as_the_validator_reads_them(address: str) -> None:
    assert leadwerk(address) == full_validator(address)


def test_a_plain_address_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Eva.Mueller@BigCorp.DE ") == "eva.mueller@bigcorp.de"
