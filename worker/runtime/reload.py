"""Hot reload: a changed rule set takes effect in a running process without a restart.

A thread watches ``config/``; on a change (or on SIGHUP) the whole directory is loaded and
compiled again. Only a rule set that loads without a single error replaces the one in use,
in one assignment (``worker.runtime.app.set_config``): work in flight finishes on the old rules,
the next piece of work sees the new ones. A broken change is refused and the old rules keep running,
loudly: an error log with every located error, as ``leadwerk rules check`` would print them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchfiles import Change, watch

from config.errors import ConfigErrors
from config.loader import Config, load_config
from worker.runtime.app import App, set_config
from worker.runtime.processes import record_reload

log = logging.getLogger("leadwerk.reload")


def _config_file(change: Change, path: str) -> bool:
    """Only the YAML files count; editors' swap and backup files do not."""
    name = Path(path).name
    return name.endswith((".yaml", ".yml")) and not name.startswith((".", "#", "~"))


_listeners: list[Callable[[Config], None]] = []
_listeners_lock = threading.Lock()


def on_reload(listener: Callable[[Config], None]) -> Callable[[], None]:
    """Call ``listener`` with each config swapped in by a reload (the clock re-registers its
    poll jobs); returns the function that stops it."""
    with _listeners_lock:
        _listeners.append(listener)

    def forget() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return forget


WATCH_START_TIMEOUT = 5.0  # seconds
READY_POLL_MS = 250


class ConfigReloader:
    """Reloads ``app.settings.config_dir`` on file changes and on SIGHUP."""

    def __init__(self, app: App, debounce_ms: int = 500) -> None:
        self.app = app
        self.debounce_ms = debounce_ms
        self.reloads = 0
        self.refusals = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_hup: Any = None

    def reload(self, why: str) -> bool:
        """Load the config again; swap it in if it loads, else keep the old one and say why."""
        with self._lock:
            old = self.app.config
            try:
                config = load_config(self.app.settings)
            except ConfigErrors as exc:
                record_reload(self.app, "refused", old, len(exc.issues), str(exc.issues[0]))
                log.error(
                    "config change refused (%s); still running rules v%s (%s). %d error(s):\n%s",
                    why,
                    old.ruleset.version,
                    old.hash,
                    len(exc.issues),
                    exc.render(),
                )
                # Counted once said, here and below: whoever waits on a count finds the log.
                self.refusals += 1
                return False
            except OSError as exc:
                record_reload(self.app, "refused", old, 1, str(exc))
                log.error(
                    "config change refused (%s): %s; still running rules v%s (%s)",
                    why,
                    exc,
                    old.ruleset.version,
                    old.hash,
                )
                self.refusals += 1
                return False
            set_config(config)
            record_reload(self.app, "loaded", config)
            with _listeners_lock:
                listeners = list(_listeners)
            for listener in listeners:
                try:
                    listener(config)
                except Exception:  # the new rules are in; one listener failing changes that not
                    log.exception("applying the reloaded config failed in %s", listener)
            log.info(
                "config reloaded (%s): rules v%s (%s) → v%s (%s)",
                why,
                old.ruleset.version,
                old.hash,
                config.ruleset.version,
                config.hash,
            )
            self.reloads += 1
            return True

    def start(self, watch_files: bool = True) -> ConfigReloader:
        """Watch the directory in a daemon thread; reload on SIGHUP when in the main thread.

        Returns once the directory is watched, so that a change saved right after start is
        never missed (or after a few seconds, if the watcher cannot start: it logs why)."""
        if watch_files:
            logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we log what matters
            self._thread = threading.Thread(target=self._watch, name="leadwerk-reload", daemon=True)
            self._thread.start()
            self._watching.wait(timeout=WATCH_START_TIMEOUT)
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_hup)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        # Not in the handler itself: loading may take a while and takes a lock.
        threading.Thread(target=self.reload, args=("SIGHUP",), daemon=True).start()

    def _watch(self) -> None:
        directory = self.app.settings.config_dir
        log.info("watching %s for rule changes", directory)
        try:
            for changes in watch(
                directory,
                watch_filter=_config_file,
                debounce=self.debounce_ms,
                stop_event=self._stop,
                raise_interrupt=False,
                # An empty set now and then says the watcher is up (see start).
                rust_timeout=READY_POLL_MS,
                yield_on_timeout=True,
            ):
                self._watching.set()
                if not changes:
                    continue
                names = sorted({Path(path).name for _change, path in changes})
                self.reload(f"changed: {', '.join(names)}")
        except Exception:  # the watcher must never take the process down
            log.exception("watching %s stopped; SIGHUP still reloads", directory)


def start_reloader(app: App) -> ConfigReloader:
    """For long-running processes (``run``, ``worker``, ``clock``, ``web``)."""
    return ConfigReloader(app).start()
