"""The file outbox: what reps would receive, written to a folder."""

from __future__ import annotations

import dataclasses
import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest

from connectors.errors import FatalError
from connectors.notify.base import OutboundMessage
from connectors.notify.outbox import FileOutboxNotifier
from connectors.notify.slack import lead_card_blocks

MAIL_FROM = "Leadwerk <leads@example.com>"

EMAIL = OutboundMessage(
    key="lead-42:assign:1",
    channel="email",
    to_address="joerg.mueller@example.com",
    to_name="Jörg Müller",
    subject="Neuer Lead: Anna Schäfer 🚀",
    text="Neuer Lead für dich: Anna Schäfer, ACME GmbH.",
    html="<p>Anna Schäfer, ACME GmbH</p>",
    message_id="<lead-42.assign.1@leadwerk.example.com>",
)

SLACK = OutboundMessage(
    key="lead-42:assign:1",
    channel="slack",
    to_address="U024BE7LH",
    to_name="Jörg Müller",
    subject="New lead",
    text="New lead: Anna Schäfer, ACME GmbH",
    blocks=lead_card_blocks(
        title="New lead: Anna Schäfer",
        fields=[("Company", "ACME GmbH")],
        reasons=["Visited pricing"],
        due_text=None,
        accept_url=None,
        accept_value="lead-42",
    ),
)


def read_eml(path: Path) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(path.read_bytes(), policy=policy.default))


def test_an_email_is_written_as_an_eml_file_a_mail_client_can_open(tmp_path: Path) -> None:
    result = FileOutboxNotifier(tmp_path, MAIL_FROM).send(EMAIL)

    assert [path.name for path in tmp_path.iterdir()] == ["lead-42_assign_1.eml"]
    assert result.remote_id == "lead-42_assign_1.eml"
    message = read_eml(tmp_path / "lead-42_assign_1.eml")
    assert str(message["From"]) == "Leadwerk <leads@example.com>"
    assert str(message["To"]) == "Jörg Müller <joerg.mueller@example.com>"
    assert message["Subject"] == "Neuer Lead: Anna Schäfer 🚀"
    assert message["Message-ID"] == "<lead-42.assign.1@leadwerk.example.com>"
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert "Anna Schäfer, ACME GmbH" in html.get_content()


def test_an_eml_file_is_seven_bit_with_crlf_line_ends_as_smtp_sends_it(tmp_path: Path) -> None:
    FileOutboxNotifier(tmp_path, MAIL_FROM).send(EMAIL)

    raw = (tmp_path / "lead-42_assign_1.eml").read_bytes()
    assert raw.isascii()
    assert raw.count(b"\n") == raw.count(b"\r") == raw.count(b"\r\n")
    text = read_eml(tmp_path / "lead-42_assign_1.eml").get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == f"{EMAIL.text}\n"


def test_a_slack_message_is_written_as_the_json_chat_post_message_would_get(
    tmp_path: Path,
) -> None:
    FileOutboxNotifier(tmp_path, MAIL_FROM).send(SLACK)

    written = (tmp_path / "lead-42_assign_1.json").read_text(encoding="utf-8")
    assert json.loads(written) == {
        "channel": "U024BE7LH",
        "text": "New lead: Anna Schäfer, ACME GmbH",
        "blocks": SLACK.blocks,
    }
    assert "Anna Schäfer" in written  # readable, not \u-escaped
    assert written.startswith('{\n  "channel"')


def test_sending_the_same_key_again_overwrites_the_same_file(tmp_path: Path) -> None:
    outbox = FileOutboxNotifier(tmp_path, MAIL_FROM)

    outbox.send(EMAIL)
    outbox.send(EMAIL)
    outbox.send(SLACK)
    outbox.send(SLACK)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "lead-42_assign_1.eml",
        "lead-42_assign_1.json",
    ]


def test_a_key_cannot_reach_outside_the_outbox_folder(tmp_path: Path) -> None:
    outbox_dir = tmp_path / "outbox"

    FileOutboxNotifier(outbox_dir, MAIL_FROM).send(
        dataclasses.replace(SLACK, key="../../etc/passwd")
    )

    assert [path.name for path in tmp_path.iterdir()] == ["outbox"]
    assert [path.name for path in outbox_dir.iterdir()] == [".._.._etc_passwd.json"]


def test_a_channel_the_outbox_does_not_know_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="sms"):
        FileOutboxNotifier(tmp_path, MAIL_FROM).send(dataclasses.replace(SLACK, channel="sms"))


def test_an_outbox_folder_removed_between_messages_is_made_again(tmp_path: Path) -> None:
    outbox_dir = tmp_path / "var" / "outbox"
    outbox = FileOutboxNotifier(outbox_dir, MAIL_FROM)
    outbox.send(EMAIL)
    for path in outbox_dir.iterdir():  # an operator clears the outbox, folders and all
        path.unlink()
    outbox_dir.rmdir()
    outbox_dir.parent.rmdir()

    outbox.send(SLACK)

    assert [path.name for path in outbox_dir.iterdir()] == ["lead-42_assign_1.json"]


def test_an_outbox_that_is_not_a_folder_is_fatal_and_says_where(tmp_path: Path) -> None:
    taken = tmp_path / "outbox"
    taken.write_text("a file where the folder should be")
    with pytest.raises(FatalError, match=f"cannot write to the outbox folder {taken}"):
        FileOutboxNotifier(taken, MAIL_FROM).send(EMAIL)
