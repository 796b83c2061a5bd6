"""What ``leadwerk import`` tells the person who ran it: rows, then MQLs, routed and
notified, and whether processing happened here, was waited for, or goes on in the workers;
and what ``leadwerk quarantine list | retry`` say about a refused row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import Result

from tests.lead_helpers import restore_logging  # noqa: F401
from tests.redis_namespace import own_namespace
from tests.source_helpers import FAIR, FAIR_SOURCE, leadwerk, write_sources
from tests.test_digest import fair_export
from tests.test_walking_skeleton import ALWAYS_OPEN_TEAM, write_export

LEADWERK = Path(sys.executable).with_name("leadwerk")


@pytest.fixture
def project(config_dir: Path) -> Path:
    write_sources(config_dir, FAIR_SOURCE)
    (config_dir / "team.yaml").write_text(ALWAYS_OPEN_TEAM, encoding="utf-8")
    return config_dir


def import_(config_dir: Path, export: Path, env: dict[str, str], *options: str) -> Result:
    return leadwerk(config_dir, "import", str(export), "--source", FAIR, *options, env=env)


@contextmanager
def worker_process(config_dir: Path, env: dict[str, str]) -> Iterator[None]:
    """``leadwerk worker`` as its own process, as a deployment runs it."""
    process = subprocess.Popen(
        [str(LEADWERK), "--config", str(config_dir), "worker"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_without_redis_the_import_processes_here_and_says_so(
    project: Path, tmp_path: Path, database_url: str
) -> None:
    env = {"LEADWERK_DATABASE_URL": database_url, "LEADWERK_ACCEPT_SECRET": "import-summary-key"}
    export = write_export(tmp_path / "messe.csv")

    result = import_(project, export, env)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "messe.csv: received 7, accepted 6, duplicates 0, quarantined 1"
    assert lines[1].startswith("  row 7: email: ")
    # 4 of the 6 leads are MQLs; each is routed, and its rep told (into the file outbox)
    assert lines[2] == "MQLs 4, routed 4, notified 4"
    assert lines[3] == "processed here: all 6 new leads accounted for"


def test_json_output_is_one_object_with_the_outcome_and_no_progress_bar(
    project: Path, tmp_path: Path
) -> None:
    env = {"LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}"}
    export = write_export(tmp_path / "messe.csv")

    result = import_(project, export, env, "--json")

    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    summary = json.loads(line)
    assert {k: summary[k] for k in ("accepted", "mqls", "routed", "notified", "pending")} == {
        "accepted": 6,
        "mqls": 4,
        "routed": 4,
        "notified": 4,
        "pending": 0,
    }
    assert (summary["processing"], summary["complete"]) == ("here", True)


def test_with_redis_the_import_hands_the_leads_to_the_workers_and_says_they_go_on(
    project: Path, tmp_path: Path, redis_url: str
) -> None:
    export = write_export(tmp_path / "messe.csv")
    with own_namespace(redis_url) as namespace:
        env = {
            "LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}",
            "LEADWERK_REDIS_URL": redis_url,
            "LEADWERK_REDIS_NAMESPACE": namespace,
        }
        # No worker is running: nothing is processed yet
        handed_on = import_(project, export, env)
        waited_in_vain = import_(project, export, env, "--wait", "--timeout", "1s")

    assert handed_on.exit_code == 0, handed_on.output
    assert handed_on.stdout.splitlines()[-2:] == [
        "MQLs 0, routed 0, notified 0",
        "handed on: 6 of 6 new leads still waiting; the workers go on with them "
        "(leadwerk status shows the queues)",
    ]
    # A second import of the same file adds no leads, so there is nothing to wait for
    assert waited_in_vain.exit_code == 0, waited_in_vain.output
    assert "waited: all 0 new leads accounted for" in waited_in_vain.stdout


def test_wait_gives_up_after_its_timeout_and_says_the_workers_go_on(
    project: Path, tmp_path: Path, redis_url: str
) -> None:
    export = write_export(tmp_path / "messe.csv")
    with own_namespace(redis_url) as namespace:
        env = {
            "LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}",
            "LEADWERK_REDIS_URL": redis_url,
            "LEADWERK_REDIS_NAMESPACE": namespace,
        }
        result = import_(project, export, env, "--wait", "--timeout", "1s")

    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        "gave up waiting after 1s: 6 of 6 new leads still waiting; the workers go on with "
        "them (leadwerk status shows the queues)"
    )


def test_wait_returns_once_the_workers_have_accounted_for_every_lead(
    project: Path, tmp_path: Path, redis_url: str
) -> None:
    export = write_export(tmp_path / "messe.csv")
    with own_namespace(redis_url) as namespace:
        env = {
            "LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}",
            "LEADWERK_REDIS_URL": redis_url,
            "LEADWERK_REDIS_NAMESPACE": namespace,
            "LEADWERK_OUTBOX_DIR": str(tmp_path / "outbox"),
            "LEADWERK_ACCEPT_SECRET": "import-summary-test-secret",  # Redis: links need a key
        }
        with worker_process(project, env):
            result = import_(project, export, env, "--wait", "--timeout", "2m")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("MQLs 4, routed 4, notified ")
    assert lines[-1] == "waited: all 6 new leads accounted for"


def test_quarantine_list_names_file_row_and_time_and_retry_says_why_it_is_still_refused(
    project: Path, tmp_path: Path
) -> None:
    env = {"LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}"}
    import_(project, write_export(tmp_path / "messe.csv"), env)

    listed = leadwerk(project, "quarantine", "list", env=env)
    retried = leadwerk(project, "quarantine", "retry", env=env)
    retried_one = leadwerk(project, "quarantine", "retry", "999", env=env)

    [entry, total] = listed.stdout.splitlines()
    assert total == "1 quarantined record(s)"
    assert "messe.csv row 7 (messe-hannover-2026, " in entry
    assert " UTC): email: " in entry and "not a valid e-mail address" in entry
    assert "record None" not in listed.stdout
    assert retried.exit_code == 0
    assert "still refused: messe.csv row 7 (messe-hannover-2026, " in retried.stdout
    assert "not a valid e-mail address" in retried.stdout
    assert retried.stdout.splitlines()[-1] == "0 record(s) taken in, 1 still quarantined"
    assert retried_one.exit_code == 1
    assert "no open quarantined record 999" in retried_one.stderr


def test_leads_waiting_in_a_digest_are_counted_apart_from_those_notified(
    project: Path, tmp_path: Path
) -> None:
    env = {
        "LEADWERK_DATABASE_URL": f"sqlite:///{tmp_path / 'leads.db'}",
        "LEADWERK_DIGEST_AFTER": "5",
        "LEADWERK_DIGEST_WINDOW": "1h",
    }

    result = import_(project, fair_export(tmp_path / "messe.csv"), env)

    assert result.exit_code == 0, result.output
    # 50 leads for two reps: 5 each told one by one, the other 40 in the reps' digests
    assert result.stdout.splitlines()[-2:] == [
        "MQLs 50, routed 50, notified 10, 40 to be told in a digest at the end of its window",
        "processed here: all 50 new leads accounted for",
    ]
