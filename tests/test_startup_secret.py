"""With PostgreSQL or Redis configured, the processes that send or serve links refuse to start
without LEADWERK_ACCEPT_SECRET: the laptop default key is derived from the database URL, and
anyone who guesses that could sign accept links. The laptop default (SQLite, no Redis) stays."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.settings import Settings
from tests.conftest import ROOT
from worker.web.accept import link_secret, missing_secret

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/15"


def leadwerk(config_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", "--config", str(config_dir), *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["web"], {"LEADWERK_DATABASE_URL": POSTGRES}),
        (["worker"], {"LEADWERK_REDIS_URL": REDIS}),
        (["clock"], {"LEADWERK_REDIS_URL": REDIS, "LEADWERK_DATABASE_URL": POSTGRES}),
        (["run"], {"LEADWERK_REDIS_URL": REDIS}),
    ],
)
def test_a_shared_deployment_without_an_accept_secret_is_refused_with_how_to_set_it(
    config_dir: Path, command: list[str], env: dict[str, str]
) -> None:
    result = leadwerk(config_dir, *command, **env)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "LEADWERK_ACCEPT_SECRET is not set" in line
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in line


def test_the_laptop_default_needs_no_secret_and_signs_with_a_key_of_its_store(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    laptop = make_settings()
    other = make_settings(database_url=f"sqlite:///{tmp_path / 'other.db'}")

    assert missing_secret(laptop) is None
    assert link_secret(laptop) != link_secret(other)


def test_a_shared_deployment_with_a_secret_signs_with_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(database_url=POSTGRES, accept_secret="s3cret-from-the-environment")

    assert missing_secret(settings) is None
    assert link_secret(settings) == "s3cret-from-the-environment"
    assert "PostgreSQL" in (missing_secret(make_settings(database_url=POSTGRES)) or "")
