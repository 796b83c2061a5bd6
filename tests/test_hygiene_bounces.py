"""Bounces: DSNs of real mail servers read and classified by status code (RFC 3463), tied
to the contact and the message we sent, counted once, and the soft → hard state machine."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import Settings
from connectors.bounces.dsn import dsn_reports
from connectors.errors import RetriableError
from rules.hygiene import classify, next_state
from tests.hygiene_helpers import (
    DSN,
    HYGIENE_YAML,
    add_contact,
    address_state,
    cli,
    history,
    hygiene_app,
    maildir_with,
    sent_nurture,
)
from tests.servers.imap import ImapServer
from tests.terminal import on_terminal
from worker.commands.erasure import forget
from worker.pipeline.hygiene import import_bounce_sources, import_bounces, suppressed
from worker.pipeline.nurture import unsubscribe
from worker.runtime.app import App, init_app
from worker.store.models import AddressChange, AddressState, BounceEvent

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

CORPUS = {
    "postfix_user_unknown.eml": ("hard", "eva.mueller@bigcorp.de", "5.1.1"),
    "postfix_mailbox_full.eml": ("soft", "paul.schmidt@mittelstand-gmbh.de", "5.2.2"),
    "postfix_delivered.eml": ("delivered", "paul.schmidt@mittelstand-gmbh.de", "2.0.0"),
    "exim_user_unknown.eml": ("hard", "tom.becker@oldcorp.example", "5.1.1"),
    "exim_delayed.eml": ("soft", "lena.wolf@slowmail.example", "4.7.1"),
    "office365_recipient_not_found.eml": ("hard", "lisa.kraus@contoso.example", "5.1.10"),
    "office365_blocked_by_policy.eml": ("policy", "max.hofer@hotmail.example", "5.7.1"),
    "gmail_address_not_found.eml": ("hard", "jakob.lang.1987@gmail.com", "5.1.1"),
    "gmail_over_quota.eml": ("soft", "sophie.brandt@gmail.com", "4.2.2"),
    "qmail_no_mailbox.eml": ("hard", "jan.vogel@kleinfirma.example", "5.1.1"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_mail_servers_dsn_is_classified_by_its_status_code(name: str) -> None:
    kind, recipient, status = CORPUS[name]
    (report,) = dsn_reports((DSN / name).read_bytes(), "maildir", name)
    assert (report.kind, report.recipient, report.status) == (kind, recipient, status)


@pytest.mark.parametrize("name", sorted(set(CORPUS) - {"postfix_delivered.eml"}))
def test_each_dsn_names_the_message_we_sent(name: str) -> None:
    (report,) = dsn_reports((DSN / name).read_bytes(), "maildir", name)
    assert report.message_id is not None
    assert (
        report.message_id.startswith("<nurture-") and "@leadwerk.example.com>" in report.message_id
    )


def test_an_exim_generic_status_gives_way_to_the_code_in_its_smtp_reply() -> None:
    (report,) = dsn_reports((DSN / "exim_user_unknown.eml").read_bytes(), "maildir", "x")
    assert report.status == "5.1.1" and report.kind == "hard"


def test_a_mail_that_is_no_dsn_is_unparseable_and_keeps_its_file_name() -> None:
    (report,) = dsn_reports((DSN / "vacation_autoreply.eml").read_bytes(), "maildir", "v.eml")
    assert report.kind == "unparseable"
    assert report.file == "v.eml"
    assert "no delivery-status part" in (report.detail or "")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("5.1.1", "hard"),
        ("5.1.10", "hard"),
        ("5.2.1", "hard"),
        ("5.2.2", "soft"),
        ("4.4.1", "soft"),
        ("4.2.2", "soft"),
        ("5.7.1", "policy"),
        ("5.7.26", "policy"),
        ("5.0.0", "soft"),
        (None, "unparseable"),
    ],
)
def test_status_codes_classify_as_rfc_3463_says(status: str | None, kind: str) -> None:
    assert classify(status, "failed") == kind


def test_soft_bounces_in_a_row_turn_hard_and_a_delivery_in_between_resets_the_count() -> None:
    state, count = "ok", 0
    for _ in range(2):
        step = next_state(state, count, "soft", "4.2.2", 3)
        state, count = step.state, step.soft_in_row
    assert (state, count) == ("soft", 2)
    delivered = next_state(state, count, "delivered", "2.0.0", 3)
    assert (delivered.state, delivered.soft_in_row, delivered.cause) == ("ok", 0, "delivered")
    state, count = delivered.state, delivered.soft_in_row
    for _ in range(3):
        step = next_state(state, count, "soft", "4.2.2", 3)
        state, count = step.state, step.soft_in_row
    assert state == "hard"
    assert step.cause == "3 soft bounces in a row without a delivery (last 4.2.2)"


def test_a_policy_refusal_leaves_the_address_as_it_is() -> None:
    step = next_state("soft", 1, "policy", "5.7.1", 3)
    assert (step.state, step.soft_in_row, step.cause) == ("soft", 1, None)


# --- the store ------------------------------------------------------------------------------


@pytest.fixture
def app(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> Iterator[App]:
    with hygiene_app(config_dir, make_settings, database_url) as application:
        yield application


ARRIVED = datetime(2026, 6, 10, tzinfo=UTC)


def known_contacts(app: App) -> dict[str, int]:
    emails = [recipient for _, recipient, _ in CORPUS.values()]
    return {e: add_contact(app, e, "ebook-downloads", ARRIVED) for e in dict.fromkeys(emails)}


def test_a_maildir_import_counts_each_kind_and_moves_every_file_to_done(
    app: App, tmp_path: Path
) -> None:
    known_contacts(app)
    folder = maildir_with(tmp_path / "bounces", *CORPUS, "vacation_autoreply.eml")
    result = import_bounces(app.store, app.config, folder, NOW)
    assert result.as_dict() == {
        "read": 11,
        "hard": 5,
        "soft": 3,
        "policy": 1,
        "delivered": 1,
        "unmatched": 0,
        "duplicates": 0,
        "unparseable": 1,
        "unparseable_files": [
            {
                "file": "vacation_autoreply.eml",
                "reason": "no delivery-status part and no recipient in the text",
            }
        ],
    }
    assert list((folder / "new").iterdir()) == []
    assert sorted(p.name for p in (folder / "done").iterdir()) == sorted(
        [*CORPUS, "vacation_autoreply.eml"]
    )


def many_bounces(folder: Path, count: int) -> Path:
    """A Maildir of ``count`` bounce mails, the corpus over and over under names of their own."""
    names = list(CORPUS)
    maildir_with(folder)
    for n in range(count):
        name = names[n % len(names)]
        shutil.copy(DSN / name, folder / "new" / f"{n:04d}-{name}")
    return folder


def test_a_big_maildir_tells_its_progress_after_each_batch_and_shows_it_on_a_terminal(
    app: App, config_dir: Path, tmp_path: Path
) -> None:
    known_contacts(app)
    # Given 450 bounce mails waiting (the corpus over and over)
    folder = many_bounces(tmp_path / "bounces", 450)

    # When they are read, and 250 more by the command at a terminal
    told: list[int] = []
    result = import_bounces(app.store, app.config, folder, NOW, on_progress=told.append)
    more = many_bounces(tmp_path / "more", 250)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    env["LEADWERK_DATABASE_URL"] = app.settings.database_url
    command = [sys.executable, "-m", "worker", "--config", str(config_dir)]
    with (tmp_path / "stderr.txt").open("wb") as errors:
        code, shown = on_terminal(
            [*command, "hygiene", "import-bounces", str(more)], "stdout", errors, env
        )

    # Then the progress was told after each batch of 200 files, and the terminal showed a bar
    # over the files, then the summary
    assert result.read == 450 and told == [200, 400, 450]
    assert code == 0, (tmp_path / "stderr.txt").read_text()
    assert b"reading more" in shown and b"/250" in shown
    assert b"read 250, hard" in shown
    assert len(list((more / "done").iterdir())) == 250


def test_a_bounce_is_tied_to_the_outbox_message_it_names(app: App, tmp_path: Path) -> None:
    eva = add_contact(app, "eva.mueller@bigcorp.de", "ebook-downloads", ARRIVED)
    sent = sent_nurture(app, eva, NOW - timedelta(days=3), "<nurture-101.s2@leadwerk.example.com>")
    import_bounces(
        app.store, app.config, maildir_with(tmp_path / "b", "postfix_user_unknown.eml"), NOW
    )
    with app.store.session() as session:
        event = session.scalars(select(BounceEvent)).one()
    assert (event.contact_id, event.message_id, event.kind) == (eva, sent, "hard")


def test_the_same_dsn_imported_twice_counts_once(app: App, tmp_path: Path) -> None:
    known_contacts(app)
    folder = maildir_with(tmp_path / "bounces", "gmail_address_not_found.eml")
    first = import_bounces(app.store, app.config, folder, NOW)
    maildir_with(folder, "gmail_address_not_found.eml")  # the same file arrives again
    again = import_bounces(app.store, app.config, folder, NOW)
    assert (first.hard, first.duplicates) == (1, 0)
    assert (again.read, again.hard, again.duplicates) == (1, 0, 1)
    with app.store.session() as session:
        assert len(session.scalars(select(BounceEvent)).all()) == 1


def test_a_bounce_for_an_address_no_contact_has_is_counted_as_unmatched_and_kept(
    app: App, tmp_path: Path
) -> None:
    result = import_bounces(
        app.store, app.config, maildir_with(tmp_path / "b", "qmail_no_mailbox.eml"), NOW
    )
    assert (result.unmatched, result.hard) == (1, 0)
    with app.store.session() as session:
        event = session.scalars(select(BounceEvent)).one()
    assert (event.recipient, event.contact_id, event.kind) == (
        "jan.vogel@kleinfirma.example",
        None,
        "hard",
    )


def test_a_hard_bounce_suppresses_nurture_and_restore_reverses_it_with_history(
    app: App, tmp_path: Path, config_dir: Path
) -> None:
    eva = add_contact(app, "eva.mueller@bigcorp.de", "ebook-downloads", ARRIVED)
    import_bounces(
        app.store, app.config, maildir_with(tmp_path / "b", "postfix_user_unknown.eml"), NOW
    )
    with app.store.session() as session:
        assert suppressed(session, eva) == "hard bounce"

    restored = cli(app, config_dir, "hygiene", "restore", "Eva.Mueller@bigcorp.de")
    assert restored.exit_code == 0, restored.output
    assert "hard → ok: restored by" in restored.output
    with app.store.session() as session:
        assert suppressed(session, eva) is None
    assert [h[:2] for h in history(app, "eva.mueller@bigcorp.de")] == [
        ("ok", "hard"),
        ("hard", "ok"),
    ]
    assert history(app, "eva.mueller@bigcorp.de")[0][2] == "hard bounce 5.1.1 (maildir)"


def test_an_unsubscribed_contact_is_suppressed(app: App) -> None:
    anna = add_contact(app, "anna@example.org", "webinar", ARRIVED)
    with app.store.session() as session:
        assert suppressed(session, anna) is None
    unsubscribe(app.store, anna, ARRIVED)  # what the one-click link's POST does
    with app.store.session() as session:
        assert suppressed(session, anna) == "unsubscribed"


def test_three_soft_bounces_without_a_delivery_make_an_address_hard(
    app: App, tmp_path: Path
) -> None:
    add_contact(app, "paul.schmidt@mittelstand-gmbh.de", "ebook-downloads", ARRIVED)
    folder = maildir_with(tmp_path / "b")
    raw = (DSN / "postfix_mailbox_full.eml").read_bytes()
    for step in range(1, 4):  # three mailings, each bounced: mailbox full
        mailing = raw.replace(b"nurture-102.s1@", b"nurture-102.s%d@" % step)
        (folder / "new" / f"full-{step}.eml").write_bytes(mailing)
        import_bounces(app.store, app.config, folder, NOW + timedelta(days=step))
        assert address_state(app, "paul.schmidt@mittelstand-gmbh.de") == (
            "hard" if step == 3 else "soft"
        )
    assert history(app, "paul.schmidt@mittelstand-gmbh.de")[-1] == (
        "soft",
        "hard",
        "3 soft bounces in a row without a delivery (last 5.2.2) (maildir)",
    )


def test_import_bounces_prints_the_counts_and_the_unparseable_file(
    app: App, tmp_path: Path, config_dir: Path
) -> None:
    known_contacts(app)
    folder = maildir_with(tmp_path / "bounces", "gmail_over_quota.eml", "vacation_autoreply.eml")
    result = cli(app, config_dir, "hygiene", "import-bounces", str(folder), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["read"], out["soft"], out["unparseable"]) == (2, 1, 1)
    assert out["unparseable_files"][0]["file"] == "vacation_autoreply.eml"
    text = cli(app, config_dir, "hygiene", "import-bounces", str(folder))
    assert "read 0" in text.output


def test_dsns_in_an_imap_folder_are_read_once_and_flagged(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    corpus = [(DSN / n).read_bytes() for n in ("exim_user_unknown.eml", "vacation_autoreply.eml")]
    with ImapServer("bounces@leadwerk.example.com", "pa ss", corpus) as imap:
        (config_dir / "hygiene.yaml").write_text(
            HYGIENE_YAML
            + "bounce_sources:\n"
            + f"  - {{kind: imap, host: 127.0.0.1, port: {imap.port}, ssl: false,"
            + " user_env: BOUNCE_USER, password_env: BOUNCE_PASSWORD}\n"
        )
        env = {"BOUNCE_USER": "bounces@leadwerk.example.com", "BOUNCE_PASSWORD": "pa ss"}
        app = init_app(make_settings(database_url=database_url, env=env))
        try:
            add_contact(app, "tom.becker@oldcorp.example", "fair", ARRIVED)
            first = import_bounce_sources(app.store, app.config, NOW)
            again = import_bounce_sources(app.store, app.config, NOW)
        finally:
            app.close()
    assert (first.read, first.hard, len(first.unparseable_files)) == (2, 1, 1)
    assert first.unparseable_files[0]["file"] == "imap://127.0.0.1/INBOX/2"
    assert imap.flags == {1: {"\\Flagged"}, 2: {"\\Flagged"}}
    assert again.read == 0


def test_a_wrong_imap_password_is_a_passing_error_naming_the_host(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    with ImapServer("bounces", "right", []) as imap:
        (config_dir / "hygiene.yaml").write_text(
            HYGIENE_YAML
            + "bounce_sources:\n"
            + f"  - {{kind: imap, host: 127.0.0.1, port: {imap.port}, ssl: false,"
            + " user_env: BOUNCE_USER, password_env: BOUNCE_PASSWORD}\n"
        )
        env = {"BOUNCE_USER": "bounces", "BOUNCE_PASSWORD": "wrong"}
        app = init_app(make_settings(database_url=database_url, env=env))
        try:
            with pytest.raises(RetriableError, match=r"IMAP 127\.0\.0\.1") as raised:
                import_bounce_sources(app.store, app.config, NOW)
        finally:
            app.close()
    assert "wrong" not in str(raised.value)


def test_forgetting_a_person_erases_their_bounces_and_address_history(
    app: App, tmp_path: Path
) -> None:
    add_contact(app, "eva.mueller@bigcorp.de", "ebook-downloads", ARRIVED)
    folder = maildir_with(tmp_path / "b", "postfix_user_unknown.eml", "qmail_no_mailbox.eml")
    import_bounces(app.store, app.config, folder, NOW)
    forget(app, "eva.mueller@bigcorp.de")
    forget(app, "jan.vogel@kleinfirma.example")  # known only from an unmatched bounce
    with app.store.session() as session:
        assert session.scalars(select(BounceEvent)).all() == []
        assert session.scalars(select(AddressChange)).all() == []
        assert session.scalars(select(AddressState)).all() == []


def test_repeated_delay_notices_for_one_message_count_as_one_soft_bounce(
    app: App, tmp_path: Path
) -> None:
    add_contact(app, "lena.wolf@slowmail.example", "ebook-downloads", ARRIVED)
    folder = maildir_with(tmp_path / "b")
    raw = (DSN / "exim_delayed.eml").read_bytes()
    for hours in (24, 48, 72):  # Exim warns again while the message waits in its queue
        notice = raw.replace(b"delayed 24 hours", b"delayed %d hours" % hours)
        (folder / "new" / f"delay-{hours}.eml").write_bytes(notice)
    result = import_bounces(app.store, app.config, folder, NOW)
    assert result.soft == 3
    assert address_state(app, "lena.wolf@slowmail.example") == "soft"
    assert history(app, "lena.wolf@slowmail.example") == [
        ("ok", "soft", "soft bounce 4.7.1 (maildir)")
    ]
