"""Configuration mistakes in words: every one located (`file:line:col` or the env var's name),
said plainly, and stopping what it would break, the same way on every command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.settings import Settings
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.test_rules_check import check, edit, located
from worker.runtime.app import get_app
from worker.runtime.reload import ConfigReloader


def leadwerk(config_dir: Path, *args: str, env: dict[str, str] | None = None):
    """The real command in a fresh process, run from the project folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", "--config", "config", *args],
        capture_output=True,
        text=True,
        cwd=config_dir.parent,
        env={**clean, **(env or {})},
        timeout=120,
    )


# --- team references resolve or fail ------------------------------------------------------


def test_a_fallback_naming_nobody_in_the_team_is_an_error_not_a_lead_sent_to_nobody(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir / "routing.yaml", "fallback: {notify: [anna]}", "fallback: {notify: [klaus]}")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert out == (
        located(
            config_dir,
            "routing.yaml",
            "klaus",
            "unknown rep 'klaus' (describe it under reps: in team.yaml)",
        )
        + "\n1 error(s)\n"
    )


def test_a_team_member_or_manager_not_described_is_an_error_with_the_near_name(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(
        config_dir / "team.yaml",
        "inside-sales: {manager: anna, members: [mehmet, sophie, tom]}",
        "inside-sales: {manager: anah, members: [mehmet, sophie, tom, klaus]}",
    )
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert (
        located(config_dir, "team.yaml", "anah", "unknown rep 'anah' (did you mean 'anna'?)") in out
    )
    assert (
        located(
            config_dir,
            "team.yaml",
            "klaus",
            "unknown rep 'klaus' (describe it under reps: in team.yaml)",
        )
        in out
    )
    assert out.rstrip().endswith("2 error(s)")


def test_the_processes_refuse_to_start_on_rules_that_name_an_unknown_rep(
    config_dir: Path,
) -> None:
    edit(config_dir / "routing.yaml", "fallback: {notify: [anna]}", "fallback: {notify: [klaus]}")
    done = leadwerk(config_dir, "run", "--once")
    assert done.returncode == 2
    assert "config/routing.yaml:" in done.stderr
    assert "unknown rep 'klaus'" in done.stderr
    assert "Traceback" not in done.stderr


def test_hot_reload_refuses_rules_that_name_an_unknown_rep(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="leadwerk.reload")
    with running(make_settings()) as lw:
        before = get_app().config
        reloader = ConfigReloader(lw.app)
        edit(config_dir / "team.yaml", "members: [jonas, lea]", "members: [jonas, lea, klaus]")
        assert reloader.reload("a test") is False
        assert get_app().config is before
        refusal = [r for r in caplog.records if r.levelno == logging.ERROR][-1].getMessage()
        assert "unknown rep 'klaus'" in refusal


# --- numbers are numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "old", "new", "needle", "message"),
    [
        (
            "scoring.yaml",
            "threshold: 60",
            'threshold: "60"',
            '60"',
            'mql.threshold: a number, not the text "60" (write it without quotes)',
        ),
        (
            "scoring.yaml",
            "    points: 15\n",
            '    points: "15"\n',
            '15"',
            'fit.1.points: a number, not the text "15" (write it without quotes)',
        ),
        (
            "team.yaml",
            "capacity: {per_day: 20}",
            'capacity: {per_day: "20"}',
            '20"',
            "reps.jonas.capacity.per_day: a whole number, "
            'not the text "20" (write it without quotes)',
        ),
    ],
)
def test_a_quoted_number_is_a_located_error_not_a_number(
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    old: str,
    new: str,
    needle: str,
    message: str,
) -> None:
    edit(config_dir / name, old, new)
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert out == located(config_dir, name, needle, message) + "\n1 error(s)\n"


def test_true_where_a_number_belongs_says_so(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir / "team.yaml", "weight: 2 ", "weight: true ")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert "reps.jonas.weight: a number, not true" in out


# --- YAML mistakes in words ----------------------------------------------------------------


def test_a_line_indented_out_of_step_is_named_with_its_line_and_a_caret(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir / "routing.yaml", "    strategy: weighted", "   strategy: weighted")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert out == (
        located(
            config_dir,
            "routing.yaml",
            "strategy: weighted",
            "check the indentation of line 11: it lines up with no key above it (the block "
            "starting at line 2, column 3); keys of one mapping start in the same column",
        )
        + "\n1 error(s)\n"
    )


def test_a_colon_inside_an_unquoted_value_says_to_quote_it(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir / "routing.yaml", "  - name: everyone else", "  - name: everyone: else")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("config/routing.yaml:9:19: check line 9 and the one above it: ")
    assert "put a value holding ': ' in quotes" in first
    assert "Traceback" not in out and "mapping values are not allowed" not in out


def test_a_tab_used_for_indentation_is_named(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir / "routing.yaml", "    strategy: weighted", "\tstrategy: weighted")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert "config/routing.yaml:11:1: line 11 holds a tab; YAML indents with spaces only" in out


# --- the environment -----------------------------------------------------------------------


def test_a_mistyped_leadwerk_variable_is_a_warning_with_the_name_meant_on_every_command(
    config_dir: Path,
) -> None:
    typo = {"LEADWERK_SMTP_ULR": "smtp://127.0.0.1:25"}
    warning = (
        "warning: LEADWERK_SMTP_ULR is not a Leadwerk setting and is ignored; "
        "did you mean LEADWERK_SMTP_URL?"
    )
    checked = leadwerk(config_dir, "rules", "check", env=typo)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert warning in checked.stderr.splitlines()
    status = leadwerk(config_dir, "status", env=typo)
    assert status.returncode == 0, status.stderr
    assert warning in status.stderr.splitlines()
    # said once, also by a command that checks the link key before it starts the pipeline
    ran = leadwerk(config_dir, "run", "--once", env=typo)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines().count(warning) == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "LEADWERK_SMTP_URL",
            "http://mail.example.com",
            "use smtp://, smtp+starttls:// or smtps://",
        ),
        ("LEADWERK_SMTP_URL", "smtp://mail.example.com:99999", "a number from 1 to 65535"),
        ("LEADWERK_SMTP_URL", "smtp://:25", "names no host"),
        (
            "LEADWERK_SMTP_URL",
            "smtp+starttls://leadwerk@mail.example.com:587",
            "names a user but LEADWERK_SMTP_PASSWORD is not set",
        ),
        ("LEADWERK_DATABASE_URL", "mysql://db/leads", "expected sqlite:///PATH or postgresql://"),
        ("LEADWERK_DATABASE_URL", "postgresql:///leads", "names no host"),
        ("LEADWERK_REDIS_URL", "redis://:6379/0", "names no host"),
    ],
)
def test_a_malformed_url_stops_rules_check_and_status_alike_naming_the_variable(
    config_dir: Path, variable: str, value: str, expected: str
) -> None:
    checked = leadwerk(config_dir, "rules", "check", env={variable: value})
    status = leadwerk(config_dir, "status", env={variable: value})
    assert (checked.returncode, status.returncode) == (1, 2)
    for done in (checked, status):
        assert done.stderr.startswith(f"{variable}: ")
        assert expected in done.stderr.splitlines()[0]
        assert "Traceback" not in done.stderr


def test_a_store_that_cannot_be_reached_is_one_line_in_words_with_the_password_masked(
    config_dir: Path, postgres_admin: str
) -> None:
    url = postgres_admin.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    url = url.rsplit("/", 1)[0] + "/nosuchdb"
    # status is a health probe: a store it cannot reach is ill health (1); the others cannot
    # run on that database_url at all (2)
    for command, code in ((("status",), 1), (("dlq", "list"), 2), (("forget", "e@x.com"), 2)):
        done = leadwerk(config_dir, *command, env={"LEADWERK_DATABASE_URL": url})
        assert done.returncode == code, command
        masked = url.replace(":s3cret@", ":***@")
        assert done.stderr == (
            f'cannot reach the store at {masked}: database "nosuchdb" does not exist\n'
        )
