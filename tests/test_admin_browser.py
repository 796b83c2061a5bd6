"""The dashboard in a real browser: Debian's chromium, headless, driven through chromedriver.
Screenshots go to the test's ``artifacts/`` folder (its path is printed on failure)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from config.settings import Settings
from tests.admin_helpers import ADMIN_TOKEN, known_state, mail_team
from tests.conftest import CI
from tests.pipeline_helpers import running
from tests.web_links import mail_to
from worker.runtime.app import App
from worker.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# As STACK.md says for root in a container: no sandbox, and nothing that calls home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
PHONE = (412, 915)
WAIT = 30  # seconds a page may take to show what a step expects, on a busy machine


def _missing(what: str) -> None:
    if CI:
        pytest.fail(f"{what} (CI=true: .ci/run installs chromium and chromium-driver)")
    pytest.skip(what)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _missing(
            "no /usr/bin/chromium and /usr/bin/chromedriver: apt-get install chromium "
            "chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={PHONE[0]},{PHONE[1]}")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def serving(app: App) -> Iterator[str]:
    """The web app on a free port of 127.0.0.1, in a thread; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the web app did not start"
        threading.Event().wait(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    return folder


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_an_admin_logs_in_reads_the_figures_and_replays_a_dead_letter(
    browser: Any,
    artifacts: Path,
    make_settings: Callable[..., Settings],
    config_dir: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mail_team(config_dir)
    settings = make_settings(env={"LEADWERK_ADMIN_TOKEN": ADMIN_TOKEN})
    with running(settings) as leadwerk, serving(leadwerk.app) as base:
        state = known_state(leadwerk.app, datetime.now(UTC))
        wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)

        # Without the token: the login form, nothing of the figures
        browser.get(f"{base}/admin/")
        browser.save_screenshot(str(artifacts / "1-login.png"))
        assert "Dead letters" not in browser.page_source
        browser.find_element(By.NAME, "token").send_keys("a wrong guess")
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait.until(lambda d: "not the admin token" in d.page_source)

        # With it: the dashboard and the figures of the known state
        browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait.until(lambda d: d.find_elements(By.ID, "live"))
        browser.save_screenshot(str(artifacts / "2-dashboard.png"))
        assert text_of(browser, "mqls-day") == str(state.mqls)
        assert text_of(browser, "dead-letters") == "1"
        assert text_of(browser, "quarantined") == "1"
        assert text_of(browser, "health") == "unhealthy"  # the dead-letter alert holds
        assert "550 5.1.1 mailbox unavailable" in browser.page_source
        # Readable on a phone: nothing wider than the screen
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        # An MQL opens to show why it is one and where it went
        mql = browser.find_element(By.CSS_SELECTOR, "details.mql summary")
        mql.click()
        assert "Rules hit:" in browser.find_element(By.CSS_SELECTOR, "details.mql").text

        # Replay the dead letter: the message goes out and the page shows it done
        row = browser.find_element(
            By.CSS_SELECTOR, f'[data-dead-letter="{state.dead_letter}"] button'
        )
        row.click()
        wait.until(lambda d: f"Dead letter {state.dead_letter} replayed" in d.page_source)
        leadwerk.drain()
        # the page refreshes itself: the dead letter is gone and the e-mail counted sent
        wait.until(lambda d: text_of(d, "dead-letters") == "0")
        wait.until(lambda d: text_of(d, "health") == "healthy")
        browser.save_screenshot(str(artifacts / "3-replayed.png"))
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-dead-letter]")
        assert "No open dead letters." in browser.page_source

        # Signing out ends the session
        browser.find_element(By.CSS_SELECTOR, "header form button").click()
        wait.until(lambda d: d.find_elements(By.NAME, "token"))
    assert len(list(artifacts.glob("*.png"))) == 3
    assert len(mail_to(settings.outbox_dir, "@example.com")) == state.sent + 1


def test_without_an_admin_token_set_the_browser_finds_no_dashboard(
    browser: Any, make_settings: Callable[..., Settings], artifacts: Path
) -> None:
    with running(make_settings()) as leadwerk, serving(leadwerk.app) as base:
        browser.get(f"{base}/admin/")
        browser.save_screenshot(str(artifacts / "not-found.png"))
        status = browser.execute_script(
            "return performance.getEntriesByType('navigation')[0].responseStatus"
        )
    assert status == 404
    assert "Not Found" in browser.page_source
