"""`leadwerk rules diff`: stored history replayed under the rules as they are and under the
ones they replace — who gains or loses MQL status, and where routing changes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from config.loader import load_config
from config.settings import Settings
from tests.lead_helpers import fair_row, restore_logging, take_in  # noqa: F401
from worker.commands.cli import app
from worker.store.db import Store

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
NOW = (T0 + timedelta(hours=1)).isoformat()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def change_rules(config_dir: Path) -> None:
    """The rule change under review: bigger companies only, fair heat worth less, warm fair
    contacts worth more, enterprise only from 10,000 staff."""
    scoring = config_dir / "scoring.yaml"
    edit(scoring, "version: 3 ", "version: 4 ")
    edit(scoring, "when: company_size >= 200", "when: company_size >= 1000")
    edit(
        scoring,
        '    when: event.type == "tradefair" and event.rating == "hot"\n    points: 40\n',
        '    when: event.type == "tradefair" and event.rating == "hot"\n    points: 30\n'
        "  - name: warm at the fair\n"
        '    when: event.type == "tradefair" and event.rating == "warm"\n'
        "    points: 50\n",
    )
    edit(config_dir / "routing.yaml", "company_size >= 1000", "company_size >= 10000")


@pytest.fixture
def history(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    """A store filled through ingest and scoring with the example rules (v3)."""
    settings = make_settings(database_url=database_url)
    config = load_config(settings)
    store = Store(settings.database_url)
    try:
        recent = [
            fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT", at=T0),
            fair_row("j.schmidt@mb-nord.de", size=250, title="Geschäftsführer", at=T0),
            fair_row("m.weiss@kleinteil.de", size=40, title="Head of Procurement", rating="warm"),
            fair_row("felix@uni-hannover.de", title="Werkstudent", rating="warm", at=T0),
        ]
        old = [fair_row("old.hand@alpenwerk.at", size=1200, title="Leiter Einkauf", country="AT")]
        take_in(store, config, old, T0 - timedelta(days=60))
        take_in(store, config, recent, T0)
    finally:
        store.close()
    return settings


def diff(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(
        app,
        ["--config", str(settings.config_dir), "rules", "diff", "--now", NOW, *args],
        env={"LEADWERK_DATABASE_URL": settings.database_url},
    )
    return result


def test_a_rule_change_is_replayed_over_the_stored_leads(history: Settings) -> None:
    # Given: the example rules kept aside, and the change under review in config/
    old = history.config_dir.parent / "old-rules"
    shutil.copytree(history.config_dir, old)
    change_rules(history.config_dir)
    # When: the leads received in the last 30 days are replayed under both
    result = diff(history, "--against", str(old), "--since", "30d", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # Then: the summary comes first and counts what changed
    assert next(iter(report)) == "summary"
    assert report["summary"] == {
        "contacts_compared": 4,  # the lead from 60 days ago is outside the window
        "gain_mql": 1,
        "lose_mql": 1,
        "route_changes": 1,
        "policy_changes": 0,
        "mean_score_shift": 15.0,  # (-10 - 30 + 50 + 50) / 4
        "contacts_changed": 4,
    }
    assert (report["old"]["version"], report["new"]["version"]) == (3, 4)
    by_email = {c["email"]: c for c in report["contacts"]}
    # a warm fair contact with some fit becomes an MQL
    weiss = by_email["m***@kleinteil.de"]
    assert weiss["mql_change"] == "gain"
    assert (weiss["old"]["score"], weiss["new"]["score"]) == (25.0, 75.0)
    assert weiss["by_rule"] == {"warm at the fair": 50.0}
    assert weiss["new"]["route"] == {"rule": "everyone else", "team": "inside-sales"}
    # a mid-sized firm loses its size points and fair heat, and its MQL status
    schmidt = by_email["j***@mb-nord.de"]
    assert schmidt["mql_change"] == "lose"
    assert schmidt["by_rule"] == {"large company": -20.0, "hot at the fair": -10.0}
    assert (schmidt["old"]["mql"], schmidt["new"]["mql"]) == (True, False)
    # a big company stays an MQL but leaves the enterprise team
    eva = by_email["e***@bigcorp.de"]
    assert eva["mql_change"] is None and eva["route_changed"] is True
    assert eva["old"]["route"] == {"rule": "enterprise DACH", "team": "enterprise-dach"}
    assert eva["new"]["route"] == {"rule": "everyone else", "team": "inside-sales"}
    assert eva["score_shift"] == -10.0
    # a student gains points but stays disqualified under both
    felix = by_email["f***@uni-hannover.de"]
    assert felix["old"]["disqualified"] == felix["new"]["disqualified"] == "student"
    assert felix["mql_change"] is None
    # gains first, then losses, then route changes
    assert [c["email"] for c in report["contacts"][:3]] == [
        "m***@kleinteil.de",
        "j***@mb-nord.de",
        "e***@bigcorp.de",
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_report_reads_summary_first_then_each_contact_masked(history: Settings) -> None:
    old = history.config_dir.parent / "old-rules"
    shutil.copytree(history.config_dir, old)
    change_rules(history.config_dir)
    result = diff(history, "--against", str(old))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("rules v4 (")
    assert "all stored events" in lines[0]
    # the lead from 60 days ago: 10 points less, decayed to 2.5
    assert lines[1] == (
        "contacts compared: 5, gain MQL: 1, lose MQL: 1, route changes: 1, "
        "SLA policy changes: 0, mean score shift: +11.5"
    )
    assert "m***@kleinteil.de: score 25.0 → 75.0 (+50.0), MQL no → yes" in lines
    block = lines[lines.index("j***@mb-nord.de: score 85.0 → 55.0 (-30.0), MQL yes → no") :]
    assert block[1:4] == [
        "    large company: -20.0",
        "    hot at the fair: -10.0",
        "    route: everyone else (inside-sales) → -",
    ]
    assert "eva.mueller" not in result.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_rules_to_compare_against_can_be_a_git_ref(history: Settings) -> None:
    # Given: the project under git with the example rules committed, then changed
    project = history.config_dir.parent

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=Ops", "-c", "user.email=ops@example.com", *args],
            cwd=project,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", "config")
    git("commit", "-q", "-m", "rules v3")
    change_rules(history.config_dir)
    # When / Then: HEAD holds the old rules
    result = diff(history, "--against", "HEAD", "--since", "30d", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert (summary["gain_mql"], summary["lose_mql"], summary["route_changes"]) == (1, 1, 1)
    # and a ref that does not exist is a usage error that says so
    bad = diff(history, "--against", "no-such-branch")
    assert bad.exit_code == 2
    assert "'no-such-branch' is neither a directory nor a git ref" in bad.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_change_of_sla_policy_is_counted_and_listed_even_when_no_route_changes(
    history: Settings,
) -> None:
    # Given: the two stored MQLs (hot at the fair, 85 points) are on the 4h standard SLA; the
    # change makes every hot fair contact a 5-minute lead
    old = history.config_dir.parent / "old-rules"
    shutil.copytree(history.config_dir, old)
    edit(history.config_dir / "sla.yaml", "when: score >= 90 or", "when: score >= 80 or")
    # When
    result = diff(history, "--against", str(old))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # Then: no route changes, but two SLA policy changes, each shown
    assert lines[1].startswith(
        "contacts compared: 5, gain MQL: 0, lose MQL: 0, route changes: 0, SLA policy changes: 2,"
    )
    block = lines[lines.index("e***@bigcorp.de: score 85.0 → 85.0 (+0.0), MQL yes → yes") :]
    assert block[1] == "    SLA: standard (4h) → hot (5m)"
    report = json.loads(diff(history, "--against", str(old), "--json").stdout)
    assert report["summary"]["policy_changes"] == 2
    changed = {c["email"]: c for c in report["contacts"]}
    assert changed["j***@mb-nord.de"]["new"]["sla"] == {"policy": "hot", "respond_within": "5m"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_empty_store_is_said_plainly(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    Store(settings.database_url).close()
    result = diff(settings, "--against", str(settings.config_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "the store holds no contacts to replay"
    recent = diff(settings, "--against", str(settings.config_dir), "--since", "30d")
    assert recent.stdout.splitlines()[-1] == (
        "the store holds no contacts with events in the last 30d"
    )
