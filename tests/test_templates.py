"""Templates marketing ops can edit safely: `leadwerk rules check` finds what would break or
print nothing, and `leadwerk preview` shows what a rep would receive."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from config.loader import load_config
from config.settings import load_settings
from connectors.notify.email import build_email
from rules.routing import RouteDecision
from tests.conftest import EXAMPLE_CONFIG
from worker.commands.cli import app as cli
from worker.pipeline.notify import lead_facts, to_outbound
from worker.pipeline.templates import TEMPLATE_VARIABLES, check_templates
from worker.store.models import Assignment, Contact, Event, Message, Score
from worker.web.unsubscribe import verify_unsubscribe

EVA = {
    "contact": {
        "email": "eva@bigcorp.de",
        "first_name": "Eva",
        "last_name": "Müller",
        "company": "Bigcorp AG",
        "company_size": 5000,
        "country": "DE",
        "title": "Head of IT",
    },
    "events": [{"type": "form", "form": "demo-request"}],
}


def leadwerk(config_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", str(config_dir), *args])


def test_the_example_templates_pass_the_check() -> None:
    assert check_templates(EXAMPLE_CONFIG) == []


def test_rules_check_names_a_template_syntax_error_at_its_file_and_line(config_dir: Path) -> None:
    # Given a text template whose third line leaves a {{ open
    template = config_dir / "templates" / "new_lead.txt.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    lines[2] = "Your lead: {{ lead.name }"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = leadwerk(config_dir, "rules", "check")

    assert result.exit_code == 1
    assert re.search(r"templates/new_lead\.txt\.j2:3:1: unexpected '}'", result.output)
    assert "1 error(s)" in result.output


def test_rules_check_reports_unknown_variables_and_misspelt_fields_with_a_suggestion(
    config_dir: Path,
) -> None:
    # Given a subject with a typo'd variable and a typo'd field
    (config_dir / "templates" / "new_lead.subject.j2").write_text(
        "New lead: {{ leed.name }} at {{ lead.compnay }}\n", encoding="utf-8"
    )

    result = leadwerk(config_dir, "rules", "check")

    # Then both are errors at their column, each with the near name
    assert result.exit_code == 1
    assert re.search(
        r"new_lead\.subject\.j2:1:14: unknown variable 'leed' \(did you mean 'lead'\?\)",
        result.output,
    )
    assert re.search(
        r"new_lead\.subject\.j2:1:38: unknown field 'lead\.compnay' "
        r"\(did you mean 'lead\.company'\?\)",
        result.output,
    )
    assert "2 error(s)" in result.output


def test_rules_check_reports_template_errors_together_with_rule_errors(config_dir: Path) -> None:
    # Given a typo in a scoring rule and an unknown filter in a template
    scoring = config_dir / "scoring.yaml"
    scoring.write_text(
        scoring.read_text(encoding="utf-8").replace("company_size >= 200", "company_sise >= 200"),
        encoding="utf-8",
    )
    (config_dir / "templates" / "new_lead.subject.j2").write_text(
        "New lead: {{ lead.name | shout }}\n", encoding="utf-8"
    )

    result = leadwerk(config_dir, "rules", "check")

    # Then one round shows both
    assert result.exit_code == 1
    assert "company_sise" in result.output
    assert "No filter named 'shout'" in result.output
    assert "2 error(s)" in result.output


def test_a_new_lead_message_gets_exactly_the_documented_variables(config_dir: Path) -> None:
    config = load_config(load_settings(config_dir, env={}))
    contact = Contact(id=7, email="eva@bigcorp.de", fields=EVA["contact"], source="fair", score=95)
    assignment = Assignment(id=3, sla_policy="hot", due_at=datetime(2026, 11, 24, 9, tzinfo=UTC))
    decision = RouteDecision(
        rule="enterprise DACH", team="enterprise-dach", rep="lea", strategy=None, reason="..."
    )
    facts = lead_facts(
        config,
        contact,
        Event(type="form", attrs={"form": "demo-request"}),
        assignment,
        decision,
        Score(hits=[{"rule": "demo request", "kind": "engagement", "points": 50}]),
        "lea",
    )

    assert set(facts) == set(TEMPLATE_VARIABLES)
    for name, fields in TEMPLATE_VARIABLES.items():
        if fields is not None:
            assert set(facts[name]) == fields, name


def test_preview_shows_the_subject_text_and_html_a_rep_would_get(
    config_dir: Path, tmp_path: Path
) -> None:
    contact = tmp_path / "eva.json"
    contact.write_text(json.dumps(EVA), encoding="utf-8")
    # Given marketing ops changed the subject line
    (config_dir / "templates" / "new_lead.subject.j2").write_text(
        "Hot off the press: {{ lead.name }} ({{ score.total }})\n", encoding="utf-8"
    )

    # (on a Tuesday morning, when the enterprise team is at work)
    result = leadwerk(
        config_dir,
        *("preview", "new_lead", "--contact", str(contact), "--now", "2026-11-24T10:00:00+01:00"),
    )

    # Then the preview shows the new subject and both bodies, for the rep the rules pick
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] in ("To: jonas", "To: lea")  # enterprise DACH
    assert lines[1] == "Subject: Hot off the press: Eva Müller (95.0)"
    text = result.output.split("--- text ---")[1].split("--- html ---")[0]
    html = result.output.split("--- html ---")[1]
    assert "a new lead is yours: Eva Müller, Head of IT at Bigcorp AG" in text
    assert "demo request (+50)" in text
    assert "(hot SLA)" in text
    assert "<strong>Eva Müller</strong>" in html


def test_preview_says_when_the_rules_would_send_nothing(config_dir: Path, tmp_path: Path) -> None:
    contact = tmp_path / "student.json"
    contact.write_text(
        json.dumps({"contact": {"email": "felix@uni-hannover.de", "title": "Werkstudent"}}),
        encoding="utf-8",
    )

    result = leadwerk(config_dir, "preview", "new_lead.txt.j2", "--contact", str(contact))

    assert result.exit_code == 0, result.output
    assert "not an MQL" in result.output
    assert "To: anna" in result.output  # as if it had nobody to go to: the fallback manager


def test_preview_of_an_unknown_template_names_the_files_it_looked_for(
    config_dir: Path, tmp_path: Path
) -> None:
    contact = tmp_path / "eva.json"
    contact.write_text(json.dumps(EVA), encoding="utf-8")

    result = leadwerk(config_dir, "preview", "new_leed", "--contact", str(contact))

    assert result.exit_code == 2
    assert "no template named 'new_leed'" in result.output
    assert "new_leed.txt.j2" in result.output


# --- one-click unsubscribe -----------------------------------------------------------------


def outbox_message(purpose: str) -> Message:
    return Message(
        key=f"lead:42:{purpose}",
        contact_id=42,
        purpose=purpose,
        channel="email",
        recipient="eva@bigcorp.de",
        recipient_name="Eva Müller",
        subject="Your e-book",
        body_text="Thanks for reading.",
        body_html=None,
        blocks=None,
        message_id="<nurture-42@example.com>",
    )


def test_nurture_emails_carry_one_click_unsubscribe_headers(config_dir: Path) -> None:
    settings = load_settings(config_dir, env={}, public_url="https://leads.example.com")

    email = build_email(
        to_outbound(outbox_message("nurture:ebook-followup:1"), settings), settings.mail_from
    )

    # Then mailbox providers find an HTTPS link and the one-click marker (RFC 8058)
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(
        r"<(https://leads\.example\.com/unsubscribe/(\S+))>", email["List-Unsubscribe"]
    )
    assert link is not None
    # And the link names the contact, signed
    assert verify_unsubscribe(settings, link.group(2)) == 42


def test_a_rep_notification_is_not_a_mailing_list(config_dir: Path) -> None:
    settings = load_settings(config_dir, env={})

    email = build_email(to_outbound(outbox_message("new_lead"), settings), settings.mail_from)

    assert email["List-Unsubscribe"] is None
    assert email["List-Unsubscribe-Post"] is None


def test_rules_check_refuses_a_template_that_reaches_into_python(config_dir: Path) -> None:
    # Given a text template that tries to climb from a value to Python's classes
    template = config_dir / "templates" / "new_lead.txt.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    lines[1] = "{{ lead.__class__.__mro__ }} {{ ''.__class__ }}"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = leadwerk(config_dir, "rules", "check")

    assert result.exit_code == 1
    said = "is not available in a template: templates see only the facts of the message"
    for name, col in (("__class__", 9), ("__mro__", 19)):
        assert f"templates/new_lead.txt.j2:2:{col}: '{name}' {said}" in result.output
    assert "2 error(s)" in result.output  # one per name and line


def test_a_template_rendered_anyway_yields_nothing_from_python_internals(
    config_dir: Path, tmp_path: Path
) -> None:
    # Given templates edited after the check: one reads an internal, one calls through it
    folder = config_dir / "templates"
    (folder / "peek.txt.j2").write_text("[{{ ''.__class__ }}][{{ lead.__class__ }}]\n")
    (folder / "climb.txt.j2").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}\n", encoding="utf-8"
    )
    contact = tmp_path / "eva.json"
    contact.write_text(json.dumps(EVA), encoding="utf-8")

    peek = leadwerk(config_dir, "preview", "peek", "--contact", str(contact))
    climb = leadwerk(config_dir, "preview", "climb", "--contact", str(contact))

    # Then reading renders nothing, and calling is refused in words, with no traceback
    assert peek.exit_code == 0, peek.output
    assert "[][]" in peek.stdout
    assert climb.exit_code == 2
    assert "climb.txt.j2: access to attribute '__class__' of 'str' object is unsafe" in (
        climb.output
    )
    assert "Traceback" not in climb.output and "object at 0x" not in climb.output


def test_facts_read_as_attributes_as_keys_and_through_dict_methods(
    config_dir: Path, tmp_path: Path
) -> None:
    (config_dir / "templates" / "facts.txt.j2").write_text(
        "[{{ lead.name }}][{{ lead['company'] }}][{{ lead.nickname }}]"
        "[{{ lead.nickname.first }}][{{ lead.get('title') }}]"
        "[{{ lead.keys() | list | length }}][{{ lead.items is callable }}]\n",
        encoding="utf-8",
    )
    contact = tmp_path / "eva.json"
    contact.write_text(json.dumps(EVA), encoding="utf-8")

    shown = leadwerk(config_dir, "preview", "facts", "--contact", str(contact))

    assert shown.exit_code == 0, shown.output
    assert "[Eva Müller][Bigcorp AG][][][Head of IT][9][True]" in shown.stdout
