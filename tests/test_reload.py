"""Hot reload: a changed rule set takes effect in a running Leadwerk without a restart; a
broken change is refused, loudly, and the old rules keep running."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row, restore_logging  # noqa: F401
from tests.pipeline_helpers import Running, running
from worker.pipeline.ingest import ingest_records
from worker.runtime.app import get_app
from worker.runtime.reload import ConfigReloader
from worker.store.models import Score


def wait_until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def leadwerk(make_settings: Callable[..., Settings]) -> Iterator[Running]:
    with running(make_settings()) as lw:
        yield lw


@pytest.fixture
def reloader(leadwerk: Running) -> Iterator[ConfigReloader]:
    watcher = ConfigReloader(leadwerk.app, debounce_ms=100).start()
    yield watcher
    watcher.stop()


def test_a_valid_change_takes_effect_without_a_restart(
    leadwerk: Running, reloader: ConfigReloader, config_dir: Path
) -> None:
    # Given: a running Leadwerk on rules v3
    before = get_app().config
    assert before.ruleset.version == 3
    # When: marketing ops raise the value of a hot fair contact and bump the version
    scoring = config_dir / "scoring.yaml"
    edit(scoring, "version: 3 ", "version: 4 ")
    edit(
        scoring,
        '    when: event.type == "tradefair" and event.rating == "hot"\n    points: 40\n',
        '    when: event.type == "tradefair" and event.rating == "hot"\n    points: 45\n',
    )
    wait_until(lambda: get_app().config.hash != before.hash, "the new rules to load")
    # Then: the next lead is scored with the new rules, and the score says which ones
    config = get_app().config
    assert config.ruleset.version == 4
    row = fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT", rating="hot")
    ingest_records(leadwerk.app.store, config, config.sources[FAIR], [row])
    leadwerk.drain()
    with leadwerk.app.store.session() as session:
        stored = session.scalars(select(Score)).one()
    assert round(stored.score, 1) == 90.0  # fit 45 + the new 45 for the fair (scored just now)
    assert (stored.ruleset_version, stored.ruleset_hash) == ("4", config.hash)


def test_a_broken_change_is_refused_loudly_and_the_old_rules_keep_running(
    leadwerk: Running,
    reloader: ConfigReloader,
    config_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="leadwerk.reload")
    before = get_app().config
    # When: a rule file with two mistakes is saved
    scoring = config_dir / "scoring.yaml"
    good = scoring.read_text(encoding="utf-8")
    bad = good.replace("when: company_size >= 200", "when: compnay_size >= 200")
    scoring.write_text(bad.replace("    points: 15\n", "    pionts: 15\n", 1), encoding="utf-8")
    wait_until(lambda: reloader.refusals > 0, "the change to be refused")
    # Then: the rules in use are the same object as before
    assert get_app().config is before
    # and the error log says what is wrong and where
    refusal = [r for r in caplog.records if r.levelno == logging.ERROR][-1]
    text = refusal.getMessage()
    assert "config change refused" in text and "still running rules v3" in text
    assert "scoring.yaml:9:11: unknown field 'compnay_size' (did you mean 'company_size'?)" in text
    assert "scoring.yaml:13:5: unknown key 'pionts' (did you mean 'points'?)" in text
    # When: the mistakes are fixed, the fixed rules load
    scoring.write_text(good, encoding="utf-8")
    wait_until(lambda: reloader.reloads > 0, "the fixed rules to load")
    assert get_app().config is not before
    assert get_app().config.hash == before.hash


def test_sighup_reloads_the_rules(leadwerk: Running, config_dir: Path) -> None:
    # Given: a Leadwerk that does not watch files but listens for SIGHUP
    watcher = ConfigReloader(leadwerk.app).start(watch_files=False)
    try:
        before = get_app().config
        edit(config_dir / "scoring.yaml", "threshold: 60", "threshold: 70")
        # When: the admin sends SIGHUP
        os.kill(os.getpid(), signal.SIGHUP)
        # Then: the new threshold is in use
        wait_until(lambda: get_app().config is not before, "SIGHUP to reload the rules")
        assert get_app().config.ruleset.threshold == 70
    finally:
        watcher.stop()
    assert signal.getsignal(signal.SIGHUP) is not watcher._on_hup
