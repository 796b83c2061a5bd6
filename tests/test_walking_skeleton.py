"""A fair export becomes scored, routed leads in the reps' inboxes, on real parts:
Redis as the broker, a real SMTP server, SQLite and PostgreSQL as the store."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.pipeline_helpers import running
from tests.redis_namespace import own_namespace
from tests.servers.smtp import SmtpServer
from worker.pipeline.actors import route_lead, score_lead, send_message
from worker.pipeline.poll import import_file
from worker.store.models import Assignment, Contact, Event, Message, Quarantine

HEADER = [
    "E-Mail",
    "Vorname",
    "Nachname",
    "Firma",
    "Position",
    "Telefon",
    "Land",
    "Mitarbeiter",
    "Bewertung",
    "Notiz",
]
ROWS = [
    [
        "eva.mueller@bigcorp.de",
        "Eva",
        "Müller",
        "Bigcorp AG",
        "Head of IT",
        "0511 123456",
        "DE",
        "5.000",
        "hot",
        "",
    ],
    [
        "j.schmidt@mb-nord.de",
        "Jörg",
        "Schmidt",
        "MB Nord",
        "Geschäftsführer",
        "",
        "DE",
        "250",
        "hot",
        "",
    ],
    [
        "l.gruber@alpenwerk.at",
        "Lukas",
        "Gruber",
        "Alpenwerk",
        "Einkaufsleiter",
        "",
        "AT",
        "1200",
        "hot",
        "",
    ],
    [
        "m.weiss@kleinteil.de",
        "Marie",
        "Weiß",
        "Kleinteil KG",
        "Engineer",
        "",
        "DE",
        "40",
        "warm",
        "",
    ],
    ["felix@uni-hannover.de", "Felix", "Neumann", "Uni", "Werkstudent", "", "DE", "", "hot", ""],
    ["kein-at-zeichen.example.de", "Paul", "Wagner", "Wagner", "CTO", "", "DE", "80", "hot", ""],
    [
        "p.meier@helvetic-tools.ch",
        "Peter",
        "Meier",
        "Helvetic Tools",
        "VP Sales",
        "",
        "CH",
        "800",
        "hot",
        "",
    ],
]
ALWAYS_OPEN_TEAM = """
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet, sophie]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas: {name: Jonas Weber, email: jonas@example.com}
  lea: {name: Lea Hoffmann, email: lea@example.com}
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
  sophie: {name: Sophie Becker, email: sophie@example.com}
"""


def write_export(path: Path) -> Path:
    """A German Excel export: Windows-1252, semicolons, CRLF."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(ROWS)
    path.write_bytes(buffer.getvalue().encode("cp1252"))
    return path


@pytest.fixture
def team_always_open(config_dir: Path) -> Path:
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    return config_dir


def test_a_fair_export_becomes_one_email_per_mql_for_the_rep_it_was_routed_to(
    team_always_open: Path, make_settings, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    # Given a fair export, Redis as the broker and a real SMTP server
    export = write_export(tmp_path / "messe.csv")
    with SmtpServer() as smtp, own_namespace(redis_url) as namespace:
        settings = make_settings(
            redis_url=redis_url,
            redis_namespace=namespace,
            smtp_url=smtp.url,
            database_url=database_url,
        )
        with running(settings) as leadwerk:
            # When the export is imported and the worker drains the queues
            config = leadwerk.app.config
            report = import_file(
                leadwerk.app.store, config, config.sources["messe-hannover-2026"], export
            )
            leadwerk.drain()
            mails = smtp.wait_for(4)

    # Then every row is accounted for: 6 accepted, the bad address quarantined at its row
    assert (report.received, report.accepted, report.quarantined) == (7, 6, 1)
    assert [(p.row, p.field) for p in report.problems] == [(7, "email")]
    # And each MQL reached exactly one rep, by e-mail, naming the lead, its score and why
    by_rep = Counter(mail.rcpt_tos[0] for mail in mails)
    assert len(mails) == 4
    assert by_rep["jonas@example.com"] == by_rep["lea@example.com"] == 1  # round robin
    assert by_rep["mehmet@example.com"] + by_rep["sophie@example.com"] == 2
    subjects = sorted(str(mail.message["Subject"]) for mail in mails)
    assert subjects == sorted(
        [
            "New lead: Eva Müller (Bigcorp AG) · score 85.0 · standard",
            "New lead: Jörg Schmidt (MB Nord) · score 85.0 · standard",
            "New lead: Lukas Gruber (Alpenwerk) · score 85.0 · standard",
            "New lead: Peter Meier (Helvetic Tools) · score 85.0 · standard",
        ]
    )
    eva = next(m for m in mails if "Eva" in str(m.message["Subject"]))
    text = eva.message.get_body(("plain",)).get_content()
    assert "hot at the fair (+40)" in text and "large company (+20)" in text
    assert "rule 'enterprise DACH'" in text


def test_the_same_work_delivered_twice_sends_one_email(
    team_always_open: Path, make_settings, redis_url: str, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "messe.csv")
    with SmtpServer() as smtp, own_namespace(redis_url) as namespace:
        settings = make_settings(redis_url=redis_url, redis_namespace=namespace, smtp_url=smtp.url)
        with running(settings) as leadwerk:
            app = leadwerk.app
            import_file(app.store, app.config, app.config.sources["messe-hannover-2026"], export)
            leadwerk.drain()
            smtp.wait_for(4)
            with app.store.session() as session:
                events = list(session.scalars(select(Event.id)))
                contacts = list(session.scalars(select(Contact.id)))
                messages = list(session.scalars(select(Message.id)))
            # When every message of every step is delivered again (a redelivery after a crash)
            for event_id in events:
                score_lead.send(event_id)
            for contact_id in contacts:
                route_lead.send(contact_id)
            for message_id in messages:
                send_message.send(message_id)
                send_message.send(message_id)
            leadwerk.drain()
            with app.store.session() as session:
                assignments = session.scalar(select(func.count()).select_from(Assignment))
    # Then nothing is sent or assigned twice
    assert len(smtp.messages) == 4
    assert assignments == 4


def test_importing_the_same_export_again_adds_nothing(
    make_settings, database_url: str, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "messe.csv")
    settings = make_settings(database_url=database_url)
    with running(settings) as leadwerk:
        app = leadwerk.app
        source = app.config.sources["messe-hannover-2026"]
        first = import_file(app.store, app.config, source, export)
        second = import_file(app.store, app.config, source, export)
        with app.store.session() as session:
            events = session.scalar(select(func.count()).select_from(Event))
            quarantined = session.scalar(select(func.count()).select_from(Quarantine))
    assert (first.accepted, second.accepted, second.duplicates) == (6, 0, 6)
    assert events == 6
    # the bad row is reported each time it is seen, but listed in quarantine once
    assert (first.quarantined, second.quarantined) == (1, 1)
    assert quarantined == 1
