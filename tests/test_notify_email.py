"""E-mail notifications through a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import unquote
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import FatalError, RetriableError, UndeliverableError
from connectors.notify.base import OutboundMessage
from connectors.notify.email import SmtpNotifier, build_email, mask_address, render_email
from tests.servers.smtp import SmtpServer

MAIL_FROM = "Leadwerk <leads@example.com>"
PASSWORD = "correct horse battery staple"

LEAD_MESSAGE = OutboundMessage(
    key="lead-42:assign:1",
    channel="email",
    to_address="joerg.mueller@example.com",
    to_name="Jörg Müller",
    subject="Neuer Lead: Größe über 500 Mitarbeiter 🚀",
    text="Neuer Lead für dich: Anna Schäfer, ACME GmbH.",
    html="<p>Neuer Lead für dich:</p><ul><li>Anna Schäfer</li><li>ACME GmbH</li></ul>",
    message_id="<lead-42.assign.1@leadwerk.example.com>",
)


def lead_message(**changes: object) -> OutboundMessage:
    return dataclasses.replace(LEAD_MESSAGE, **changes)  # type: ignore[arg-type]


def parts(message: EmailMessage) -> dict[str, str]:
    """Content type -> decoded text of each leaf part."""
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


def as_read(raw: bytes) -> EmailMessage:
    """``raw`` as a mail client reads it."""
    return cast(EmailMessage, message_from_bytes(raw, policy=policy.default))


def wire_lines(raw: bytes) -> list[bytes]:
    """The lines of ``raw``; fails on a line break other than CRLF."""
    lines = raw.split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    return lines


def display_name(raw: bytes) -> str:
    """The To display name as a mail client shows it: encoded-words decoded as RFC 2047 says
    (the folding space between two of them dropped), a quoted name unquoted."""
    to = message_from_bytes(raw)["To"].replace("\r\n", "")
    name, _, _ = to.rpartition(" <")
    if name.startswith('"'):
        return unquote(name)
    return str(make_header(decode_header(name)))


def as_lines(text: str) -> str:
    """``text`` with every line ending a newline, as a body part holds it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound, so no one else takes it, but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_lead_email_arrives_with_the_sender_recipient_and_subject_intact(
    smtp: SmtpServer,
) -> None:
    SmtpNotifier(smtp.url, MAIL_FROM).send(LEAD_MESSAGE)

    [mail] = smtp.wait_for(1)
    assert mail.mail_from == "leads@example.com"
    assert mail.rcpt_tos == ["joerg.mueller@example.com"]
    assert mail.message["From"].addresses == (Address("Leadwerk", "leads", "example.com"),)
    assert mail.message["To"].addresses == (Address("Jörg Müller", "joerg.mueller", "example.com"),)
    assert mail.message["Subject"] == "Neuer Lead: Größe über 500 Mitarbeiter 🚀"
    assert mail.message["Date"].datetime is not None


def test_headers_travel_as_ascii_so_any_server_accepts_them(smtp: SmtpServer) -> None:
    SmtpNotifier(smtp.url, MAIL_FROM).send(LEAD_MESSAGE)

    [mail] = smtp.wait_for(1)
    header_block = mail.raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert b"=?utf-8?" in header_block


def test_the_message_id_is_the_one_given_and_is_what_send_returns(smtp: SmtpServer) -> None:
    result = SmtpNotifier(smtp.url, MAIL_FROM).send(LEAD_MESSAGE)

    [mail] = smtp.wait_for(1)
    assert mail.message["Message-ID"] == "<lead-42.assign.1@leadwerk.example.com>"
    assert result.remote_id == "<lead-42.assign.1@leadwerk.example.com>"


def test_without_a_message_id_one_is_made_on_the_senders_domain(smtp: SmtpServer) -> None:
    result = SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(message_id=None))

    [mail] = smtp.wait_for(1)
    assert mail.message["Message-ID"].endswith("@example.com>")
    assert result.remote_id == mail.message["Message-ID"]


def test_the_email_has_a_text_part_and_an_html_part_with_the_leads_fields(
    smtp: SmtpServer,
) -> None:
    SmtpNotifier(smtp.url, MAIL_FROM).send(LEAD_MESSAGE)

    [mail] = smtp.wait_for(1)
    assert mail.message.get_content_type() == "multipart/alternative"
    texts = parts(mail.message)
    assert set(texts) == {"text/plain", "text/html"}
    assert "Anna Schäfer, ACME GmbH" in texts["text/plain"]
    assert "<li>Anna Schäfer</li>" in texts["text/html"]
    assert "<li>ACME GmbH</li>" in texts["text/html"]


def test_an_email_without_html_is_plain_text_only() -> None:
    email_message = build_email(lead_message(html=None), MAIL_FROM)

    assert email_message.get_content_type() == "text/plain"
    assert "Anna Schäfer" in email_message.get_content()


def test_reply_to_and_unsubscribe_headers_are_carried_over(smtp: SmtpServer) -> None:
    headers = {
        "Reply-To": "Sales Desk <sales@example.com>",
        "List-Unsubscribe": "<https://leadwerk.example.com/unsubscribe/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(headers=headers))

    [mail] = smtp.wait_for(1)
    assert mail.message["Reply-To"].addresses == (Address("Sales Desk", "sales", "example.com"),)
    assert mail.message["List-Unsubscribe"] == "<https://leadwerk.example.com/unsubscribe/abc>"
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_line_break_in_lead_data_cannot_add_headers() -> None:
    email_message = build_email(
        lead_message(subject="Hello\r\nBcc: everyone@example.com", to_name="Eve\nX-Evil: 1"),
        MAIL_FROM,
    )

    assert email_message["Subject"] == "Hello Bcc: everyone@example.com"
    assert email_message["Bcc"] is None
    assert email_message["X-Evil"] is None


def test_extra_headers_cannot_replace_the_derived_ones() -> None:
    with pytest.raises(ValueError, match="Subject"):
        build_email(lead_message(headers={"Subject": "other"}), MAIL_FROM)


def test_starttls_with_login_sends_over_tls_as_the_configured_user() -> None:
    with SmtpServer(starttls=True, auth=("leadwerk", PASSWORD)) as server:
        assert server.url.startswith("smtp+starttls://leadwerk@")
        notifier = SmtpNotifier(
            server.url, MAIL_FROM, password=PASSWORD, ssl_context=server.client_ssl_context()
        )
        notifier.send(LEAD_MESSAGE)

        [mail] = server.wait_for(1)
    assert mail.tls
    assert mail.login == "leadwerk"
    assert mail.message["Subject"] == LEAD_MESSAGE.subject


def test_smtps_sends_over_implicit_tls_as_the_configured_user() -> None:
    with SmtpServer(implicit_tls=True, auth=("leadwerk", PASSWORD)) as server:
        assert server.url.startswith("smtps://leadwerk@")
        notifier = SmtpNotifier(
            server.url, MAIL_FROM, password=PASSWORD, ssl_context=server.client_ssl_context()
        )
        notifier.send(LEAD_MESSAGE)

        [mail] = server.wait_for(1)
    assert mail.tls
    assert mail.login == "leadwerk"


def test_a_wrong_password_is_fatal_and_says_which_setting_to_fix() -> None:
    with SmtpServer(starttls=True, auth=("leadwerk", PASSWORD)) as server:
        notifier = SmtpNotifier(
            server.url, MAIL_FROM, password="wrong", ssl_context=server.client_ssl_context()
        )
        with pytest.raises(FatalError, match="LEADWERK_SMTP_PASSWORD") as caught:
            notifier.send(LEAD_MESSAGE)
        assert server.messages == []
    assert not isinstance(caught.value, UndeliverableError)
    assert "535" in str(caught.value)


def test_a_server_certificate_that_is_not_trusted_is_fatal() -> None:
    with SmtpServer(starttls=True) as server:
        # No ssl_context: the system trust store does not know the test CA.
        with pytest.raises(FatalError, match="not trusted"):
            SmtpNotifier(server.url, MAIL_FROM).send(LEAD_MESSAGE)
        assert server.messages == []


def test_smtps_against_a_server_without_tls_is_fatal_and_points_at_the_scheme(
    smtp: SmtpServer,
) -> None:
    smtps_url = smtp.url.replace("smtp://", "smtps://")
    notifier = SmtpNotifier(smtps_url, MAIL_FROM, ssl_context=smtp.client_ssl_context())

    with pytest.raises(FatalError, match="scheme"):
        notifier.send(LEAD_MESSAGE)


def test_a_refused_recipient_is_undeliverable_and_the_error_masks_the_address() -> None:
    with SmtpServer(reject_rcpt={"joerg.mueller@example.com"}) as server:
        with pytest.raises(UndeliverableError) as caught:
            SmtpNotifier(server.url, MAIL_FROM).send(LEAD_MESSAGE)
        assert server.messages == []
    message = str(caught.value)
    assert "550" in message
    assert "j***@example.com" in message
    assert "joerg.mueller@example.com" not in message


def test_a_temporary_failure_is_retriable_and_the_next_attempt_gets_through() -> None:
    with SmtpServer(fail_next=1) as server:
        notifier = SmtpNotifier(server.url, MAIL_FROM)
        with pytest.raises(RetriableError, match="451"):
            notifier.send(LEAD_MESSAGE)

        notifier.send(LEAD_MESSAGE)

        [mail] = server.wait_for(1)
    assert mail.message["Message-ID"] == LEAD_MESSAGE.message_id


def test_a_server_that_is_down_is_retriable(closed_port: int) -> None:
    notifier = SmtpNotifier(f"smtp://127.0.0.1:{closed_port}", MAIL_FROM, timeout=2.0)

    with pytest.raises(RetriableError, match="unreachable"):
        notifier.send(LEAD_MESSAGE)


def test_messages_in_a_row_share_one_logged_in_connection() -> None:
    with SmtpServer(starttls=True, auth=("leadwerk", PASSWORD)) as server:
        notifier = SmtpNotifier(
            server.url, MAIL_FROM, password=PASSWORD, ssl_context=server.client_ssl_context()
        )
        for number in range(3):
            notifier.send(lead_message(message_id=f"<lead-{number}@leadwerk.example.com>"))
        mails = server.wait_for(3)
        notifier.close()
    assert [m.message["Message-ID"] for m in mails] == [
        f"<lead-{number}@leadwerk.example.com>" for number in range(3)
    ]
    assert len({mail.peer for mail in mails}) == 1
    assert all(mail.tls and mail.login == "leadwerk" for mail in mails)


def test_a_connection_the_server_has_closed_is_replaced_before_anything_is_sent() -> None:
    with SmtpServer(idle_timeout=0.3) as server:
        notifier = SmtpNotifier(server.url, MAIL_FROM)
        notifier.send(lead_message(message_id="<first@leadwerk.example.com>"))
        server.wait_for(1)
        time.sleep(0.8)  # the server hangs up on the idle connection

        notifier.send(lead_message(message_id="<second@leadwerk.example.com>"))

        first, second = server.wait_for(2)
        notifier.close()
    assert second.message["Message-ID"] == "<second@leadwerk.example.com>"
    assert first.peer != second.peer


def test_a_connection_idle_past_the_limit_is_not_used_again(smtp: SmtpServer) -> None:
    notifier = SmtpNotifier(smtp.url, MAIL_FROM)
    notifier.IDLE_LIMIT = 0.05
    notifier.send(LEAD_MESSAGE)
    time.sleep(0.2)
    notifier.send(LEAD_MESSAGE)
    first, second = smtp.wait_for(2)
    notifier.close()
    assert first.peer != second.peer


def test_each_thread_sends_over_its_own_connection(smtp: SmtpServer) -> None:
    notifier = SmtpNotifier(smtp.url, MAIL_FROM)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: notifier.send(LEAD_MESSAGE), range(40)))
    mails = smtp.wait_for(40)
    notifier.close()
    assert len(mails) == 40
    assert 1 <= len({mail.peer for mail in mails}) <= 4


@pytest.mark.parametrize(
    ("smtp_url", "password", "complaint"),
    [
        ("http://mail.example.com", None, "scheme"),
        ("mail.example.com:25", None, "scheme"),
        ("smtp+starttls://leadwerk:secret@mail.example.com", None, "LEADWERK_SMTP_PASSWORD"),
        ("smtp+starttls://leadwerk@mail.example.com", None, "LEADWERK_SMTP_PASSWORD"),
        ("smtp://leadwerk@mail.example.com", PASSWORD, "unencrypted"),
        ("smtp://", None, "no host"),
    ],
)
def test_an_unusable_smtp_url_is_fatal_before_anything_is_sent(
    smtp_url: str, password: str | None, complaint: str
) -> None:
    with pytest.raises(FatalError, match=complaint):
        SmtpNotifier(smtp_url, MAIL_FROM, password=password)


def test_an_unusable_sender_address_is_fatal_and_masked() -> None:
    with pytest.raises(FatalError, match="mail_from") as caught:
        SmtpNotifier("smtp://mail.example.com", "Leadwerk <jane.doe@>")
    assert "jane.doe" not in str(caught.value)


def test_mask_address_keeps_the_first_letter_and_the_domain() -> None:
    assert mask_address("jane.doe@example.com") == "j***@example.com"
    assert mask_address("no address here") == "***"


def test_a_long_non_ascii_subject_and_name_are_folded_and_arrive_intact(smtp: SmtpServer) -> None:
    subject = "Neuer Lead: Größe über 500 Mitarbeiter 🚀, Jörg Müller bittet um Rückruf " * 3
    name = "Jörg Müller Vertrieb Deutschland Österreich Schweiz und Liechtenstein Großkunden"
    SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(subject=subject, to_name=name))

    [mail] = smtp.wait_for(1)
    assert mail.message["Subject"] == subject.strip()
    assert mail.message["To"].addresses == (Address(name, "joerg.mueller", "example.com"),)
    header_block = mail.raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert all(len(line) <= 78 for line in wire_lines(header_block))


def test_a_name_longer_than_one_encoded_word_reads_back_whole() -> None:
    # One run of non-ASCII words too long for one RFC 2047 encoded-word: mail clients join
    # adjacent encoded-words without the folding space between them (RFC 2047, 6.2).
    name = "Prof. Dr. Jörg-Ülrich Müller-Lüdenscheidt, Geschäftsführer Vertrieb DACH"
    raw = render_email(lead_message(to_name=name), MAIL_FROM).raw

    assert display_name(raw) == name
    assert all(len(line) <= 78 for line in wire_lines(raw))


def test_a_display_name_with_commas_or_quotes_stays_one_name() -> None:
    name = 'Smith, John "JS" (Sales)'
    message = as_read(render_email(lead_message(to_name=name), MAIL_FROM).raw)

    assert message["To"].addresses == (Address(name, "joerg.mueller", "example.com"),)


def test_a_subject_that_looks_encoded_is_shown_as_typed() -> None:
    message = as_read(render_email(lead_message(subject="=?utf-8?b?SGk=?= there"), MAIL_FROM).raw)

    assert message["Subject"] == "=?utf-8?b?SGk=?= there"


def test_bodies_travel_as_seven_bit_quoted_printable_with_crlf_lines(smtp: SmtpServer) -> None:
    text = "Größe: 500\r\n.\rtrailing space \nx" + "ü" * 100 + "\n" + "=" * 90 + "\n\tend"
    html = "<p>" + "Schäfer " * 40 + "</p>"
    SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(text=text, html=html))

    [mail] = smtp.wait_for(1)
    assert mail.raw.isascii()
    assert all(len(line) <= 78 for line in wire_lines(mail.raw))
    texts = {kind: content.replace("\r\n", "\n") for kind, content in parts(mail.message).items()}
    assert texts == {"text/plain": as_lines(text), "text/html": as_lines(html)}
    for part in mail.message.walk():
        if not part.is_multipart():
            assert part["Content-Transfer-Encoding"] == "quoted-printable"
            assert part.get_content_charset() == "utf-8"


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(max_size=200),
    to_name=st.text(max_size=100),
    text=st.text(max_size=300),
    html=st.none() | st.text(max_size=300),
)
def test_any_lead_data_reaches_the_reader_as_written(
    subject: str, to_name: str, text: str, html: str | None
) -> None:
    raw = render_email(
        lead_message(subject=subject, to_name=to_name, text=text, html=html), MAIL_FROM
    ).raw

    assert raw.isascii()
    assert all(len(line) <= 78 for line in wire_lines(raw))
    message = as_read(raw)
    assert message["Subject"] == " ".join(subject.split())
    assert display_name(raw) == " ".join(to_name.split())
    bodies = {kind: content.replace("\r\n", "\n") for kind, content in parts(message).items()}
    expected = {"text/plain": text} if html is None else {"text/plain": text, "text/html": html}
    assert bodies == {kind: as_lines(body) for kind, body in expected.items()}


def test_a_long_unsubscribe_link_goes_out_as_it_is(smtp: SmtpServer) -> None:
    link = "<https://leads.example.com/unsubscribe/eyJjIjo0Mn0.Qk2yR7pX0cVw8sLmT3nB5dHf1gJ>"
    headers = {"List-Unsubscribe": link, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(headers=headers))

    [mail] = smtp.wait_for(1)
    # Mailbox providers read the link from the raw header: no encoded-words.
    assert f"\r\nList-Unsubscribe: {link}\r\n".encode() in mail.raw
    assert mail.message["List-Unsubscribe"] == link


def test_a_reply_to_with_a_non_ascii_name_is_encoded_as_an_address() -> None:
    headers = {"Reply-To": "Jörg Müller <sales@example.com>"}
    raw = render_email(lead_message(headers=headers), MAIL_FROM).raw

    assert raw.isascii()
    reply_to = as_read(raw)["Reply-To"]
    assert reply_to.addresses == (Address("Jörg Müller", "sales", "example.com"),)


def test_an_extra_header_name_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a header name"):
        render_email(lead_message(headers={"X-Lead\r\nBcc": "all@example.com"}), MAIL_FROM)


def test_a_recipient_on_an_internationalised_domain_gets_the_ascii_form(smtp: SmtpServer) -> None:
    SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(to_address="info@müller-bau.de"))

    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["info@xn--mller-bau-q9a.de"]
    assert mail.message["To"].addresses[0].addr_spec == "info@xn--mller-bau-q9a.de"


@pytest.mark.parametrize(
    "to_address",
    ["joerg.mueller@", "jörg.müller@example.com", "joerg mueller@example.com", "joerg@[1.2.3"],
)
def test_an_unusable_recipient_is_undeliverable_before_anything_is_sent(
    smtp: SmtpServer, to_address: str
) -> None:
    with pytest.raises(UndeliverableError) as caught:
        SmtpNotifier(smtp.url, MAIL_FROM).send(lead_message(to_address=to_address))

    assert to_address not in str(caught.value)
    assert smtp.messages == []
