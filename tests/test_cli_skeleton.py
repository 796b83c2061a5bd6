"""The commands a newcomer runs, as real processes on a fresh project folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

SAMPLE = ROOT / "sample" / "messe-hannover-2026.csv"


def leadwerk(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project(config_dir: Path) -> Path:
    root = config_dir.parent
    (root / "inbox" / "tradefair").mkdir(parents=True)
    shutil.copy(SAMPLE, root / "inbox" / "tradefair" / SAMPLE.name)
    return root


def test_run_once_imports_the_inbox_and_accounts_for_every_lead(project: Path) -> None:
    result = leadwerk("run", "--once", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "imported messe-hannover-2026: 8 rows, 7 new, 0 known, 1 quarantined" in result.stdout
    assert "accounted for 7 leads: 7 processed, 0 dead-lettered, 0 pending" in result.stdout
    outbox = sorted(p.name for p in (project / "var" / "outbox").iterdir())
    assert len(outbox) == 4  # four MQLs, one notification each
    assert (project / "inbox" / "tradefair" / "done" / SAMPLE.name).exists()
    assert "eva.mueller@bigcorp.de" not in result.stdout + result.stderr  # masked in output


def test_status_reports_leads_quarantine_and_sources_as_json(project: Path) -> None:
    leadwerk("run", "--once", cwd=project)
    result = leadwerk("status", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["leads"]["processed"] == 7
    assert status["quarantine"] == 1
    assert status["dead_letters"] == 0
    assert status["broker"] == {"mode": "single-process"}
    last = status["sources"]["messe-hannover-2026"]["last_success_at"]
    assert last is not None and "T" in last  # ISO 8601
    datetime.fromisoformat(status["at"])


def test_the_config_directory_can_be_named_from_anywhere(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_env = leadwerk(
        "rules", "check", cwd=elsewhere, env={"LEADWERK_CONFIG_DIR": str(project / "config")}
    )
    by_option = leadwerk("--config", str(project / "config"), "rules", "check", cwd=elsewhere)
    assert by_env.returncode == 0 and by_env.stdout.startswith("config ok")
    assert by_option.returncode == 0 and by_option.stdout.startswith("config ok")
    missing = leadwerk("rules", "check", cwd=elsewhere)
    assert missing.returncode == 2
    assert "no config directory at" in missing.stderr


def test_worker_and_clock_without_redis_say_what_they_need(project: Path) -> None:
    for command in ("worker", "clock"):
        result = leadwerk(command, cwd=project)
        assert result.returncode == 2
        assert "LEADWERK_REDIS_URL" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_web_answers_healthz_on_the_port_the_platform_gives(project: Path) -> None:
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "web"],
        cwd=project,
        env={**clean, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(10)


def test_run_demo_feeds_sample_leads_through_the_whole_flow(project: Path) -> None:
    result = leadwerk("run", "--once", "--demo", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "demo: 12 sample leads fed" in result.stdout
    assert "accounted for 19 leads: 19 processed" in result.stdout


def test_init_writes_a_config_that_checks_clean(tmp_path: Path) -> None:
    result = leadwerk("init", str(tmp_path / "new"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check = leadwerk("--config", str(tmp_path / "new" / "config"), "rules", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout
