"""What a process loads to start: libraries' optional extras that Leadwerk never uses stay
unloaded (each cost every start), and stay importable for anyone who wants them."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.optional import hidden
from tests.conftest import ROOT

SAMPLE = ROOT / "sample" / "messe-hannover-2026.csv"
EXTRAS = ("rich", "trio", "holidays")


def test_a_run_without_holidays_loads_no_extras(config_dir: Path) -> None:
    """The example project's run, its reps' calendars and nurture without public holidays,
    started as the ``leadwerk`` command starts."""
    team = config_dir / "team.yaml"
    team.write_text(re.sub(r"(?m)^\s*holidays:.*\n", "", team.read_text()))
    (config_dir / "nurture.yaml").unlink()  # its send windows keep the contacts' holidays
    inbox = config_dir.parent / "inbox" / "tradefair"
    inbox.mkdir(parents=True)
    shutil.copy(SAMPLE, inbox / SAMPLE.name)
    script = (
        "import atexit, sys\n"
        "def loaded():\n"
        f"    found = [name for name in {EXTRAS!r} if sys.modules.get(name) is not None]\n"
        "    print('extras loaded:', *found, file=sys.stderr)\n"
        "    import gc\n"
        "    print('collector on:', gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr)\n"
        "atexit.register(loaded)\n"
        "from worker.__main__ import main  # the `leadwerk` command's entry\n"
        "sys.argv = ['leadwerk', 'run', '--once']\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=config_dir.parent,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accounted for 7 leads: 7 processed" in done.stdout
    # The collector, paused while the process started, runs again, start-up kept out of it.
    assert done.stderr.splitlines()[-2:] == ["extras loaded:", "collector on: True True"]


def test_a_hidden_module_fails_to_import_inside_only() -> None:
    name = "colorsys"  # any module this test run has not loaded
    sys.modules.pop(name, None)
    with hidden(name, "json"), pytest.raises(ImportError):
        importlib.import_module(name)
    assert importlib.import_module(name).__name__ == name
    with hidden("json"):  # loaded already: left as it is
        assert importlib.import_module("json").dumps([]) == "[]"
