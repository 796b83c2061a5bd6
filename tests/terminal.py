"""A command run as a person at a terminal sees it: one of its outputs is a pseudo-terminal,
read as the command writes (so that writing to it never blocks), the other goes to a file."""

from __future__ import annotations

import os
import pty
import subprocess
import threading
from typing import IO


def on_terminal(
    command: list[str],
    terminal: str,
    other: IO[bytes],
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, bytes]:
    """Run ``command`` with its ``terminal`` output ("stdout" or "stderr") on a terminal and
    the other one into ``other``; its exit code and what the terminal showed."""
    reader_end, command_end = pty.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(reader_end, 65536)
            except OSError:  # the command's end is closed: all has been read
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    outputs = {"stdout": other, "stderr": other, terminal: command_end}
    try:
        done = subprocess.run(command, env=env, timeout=timeout, **outputs)  # type: ignore[call-overload]
    finally:
        os.close(command_end)
        reader.join(timeout=10)
        os.close(reader_end)
    return done.returncode, bytes(shown)
