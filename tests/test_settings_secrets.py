"""Secrets stay secret: the settings show `**********` for them wherever they are printed,
carry no copy of the environment, and a whole run with every secret set logs none of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.errors import ConfigErrors
from config.settings import env_secret, load_settings
from tests.conftest import ROOT
from tests.servers.slack import SlackApiServer
from tests.servers.smtp import SmtpServer

SLACK_TOKEN = "xoxb-4f1e-secret-slack-token"
SECRETS = {
    "LEADWERK_SLACK_TOKEN": SLACK_TOKEN,
    "LEADWERK_SMTP_PASSWORD": "smtp-pa55word-9c1d",
    "LEADWERK_SLACK_SIGNING_SECRET": "signing-secret-77ab",
    "LEADWERK_ACCEPT_SECRET": "accept-secret-0e3f",
}
HOOK_SECRET = "ebook-hook-secret-51c2"  # named in sources.yaml: secret_env: EBOOK_HOOK_SECRET
DB_PASSWORD = "db-pa55-8d2e"


def test_printed_or_dumped_settings_show_no_secret(config_dir: Path) -> None:
    env = {
        **SECRETS,
        "EBOOK_HOOK_SECRET": HOOK_SECRET,
        "LEADWERK_DATABASE_URL": f"postgresql://leadwerk:{DB_PASSWORD}@127.0.0.1:5432/leads",
    }
    settings = load_settings(config_dir, env=env)

    shown = [repr(settings), str(settings), settings.model_dump_json()]
    for text in shown:
        for secret in [*SECRETS.values(), HOOK_SECRET, DB_PASSWORD]:
            assert secret not in text
    # the settings hold their own values, not the environment they came from
    held = repr(vars(settings)) + repr(settings.__pydantic_private__)
    assert HOOK_SECRET not in held
    assert "postgresql://leadwerk:***@127.0.0.1:5432/leads" in repr(settings)
    # and yet each secret is there for the code that uses it
    assert settings.slack_token is not None
    assert settings.slack_token.get_secret_value() == SLACK_TOKEN
    assert settings.database_url.endswith(f":{DB_PASSWORD}@127.0.0.1:5432/leads")


def test_a_secret_that_yaml_names_is_read_when_used_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBOOK_HOOK_SECRET", raising=False)
    assert env_secret("EBOOK_HOOK_SECRET") is None
    monkeypatch.setenv("EBOOK_HOOK_SECRET", HOOK_SECRET)
    assert env_secret("EBOOK_HOOK_SECRET") == HOOK_SECRET  # set after start, seen at once
    monkeypatch.setenv("EBOOK_HOOK_SECRET", "")
    assert env_secret("EBOOK_HOOK_SECRET") is None  # empty is not a secret


def test_a_secret_written_into_leadwerk_yaml_is_refused(config_dir: Path) -> None:
    settings_file = config_dir / "leadwerk.yaml"
    settings_file.write_text(
        settings_file.read_text(encoding="utf-8") + "slack_token: xoxb-in-a-file\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as raised:
        load_settings(config_dir, env={})
    [issue] = raised.value.issues
    assert issue.message == (
        "'slack_token' is a secret: set LEADWERK_SLACK_TOKEN in the environment, never in a file"
    )


def test_a_whole_run_with_every_secret_set_logs_none_of_them(config_dir: Path) -> None:
    project = config_dir.parent
    (project / "inbox" / "tradefair").mkdir(parents=True)
    sample = ROOT / "sample" / "messe-hannover-2026.csv"
    shutil.copy(sample, project / "inbox" / "tradefair" / sample.name)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    with SmtpServer() as smtp, SlackApiServer(token=SLACK_TOKEN) as slack:
        env = {
            **clean,
            **SECRETS,
            "EBOOK_HOOK_SECRET": HOOK_SECRET,
            "LEADWERK_SMTP_URL": smtp.url,
            "LEADWERK_SLACK_BASE_URL": slack.base_url,
            "LEADWERK_LOG_LEVEL": "DEBUG",
        }
        done = subprocess.run(
            [sys.executable, "-m", "worker", "--config", "config", "run", "--once"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        sent = len(smtp.messages) + len(slack.calls)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sent == 4  # the four MQLs of the fair file reached their reps with these secrets
    logged = done.stdout + done.stderr
    assert "DEBUG" in logged or "debug" in logged
    for secret in [*SECRETS.values(), HOOK_SECRET]:
        assert secret not in logged
