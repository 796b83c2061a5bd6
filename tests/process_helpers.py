"""Leadwerk processes as an operator starts them: real subprocesses of ``leadwerk ...`` with
the environment a Procfile platform gives them, their output kept in a file to read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_env(config_dir: Path, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment without the caller's ``LEADWERK_*`` settings, plus the given ones
    (``database_url="..."`` becomes ``LEADWERK_DATABASE_URL``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    env.update(
        LEADWERK_CONFIG_DIR=str(config_dir),
        LEADWERK_OUTBOX_DIR=str(tmp_path / "outbox"),
        LEADWERK_LOG_LEVEL="INFO",
        # A shared deployment (Redis, PostgreSQL) refuses to start without a link key
        LEADWERK_ACCEPT_SECRET="process-tests-link-key",
    )
    env.update({f"LEADWERK_{key.upper()}": value for key, value in settings.items()})
    return env


class Process:
    """One ``leadwerk`` command running in the background, its output going to a file."""

    command = (sys.executable, "-m", "worker")

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.args = args
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*self.command, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise AssertionError(f"{' '.join(self.args)} exited before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{' '.join(self.args)}: no {what} in {timeout} s:\n{self.output}"
                )
            time.sleep(0.2)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda: text in self.output, repr(text), timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the process to end; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{' '.join(self.args)} did not stop on {sig.name}") from None


def web_answers(port: int) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return answers


@contextmanager
def started(
    env: dict[str, str], tmp_path: Path, *commands: tuple[str, ...]
) -> Iterator[list[Process]]:
    """The commands started one right after the other; any still running are killed at the end.
    Each writes a log of its own, two of the same command too."""
    processes = [
        Process(env, tmp_path / f"{n}-{'-'.join(args)}.log", *args)
        for n, args in enumerate(commands, 1)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait()
