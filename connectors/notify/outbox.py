"""The file outbox: messages written to a folder instead of sent.

It is the notifier when neither SMTP nor Slack is configured, so a first run shows exactly what
reps would receive: an e-mail becomes ``<key>.eml`` (open it in any mail client), a Slack
message becomes ``<key>.json`` (the body ``chat.postMessage`` would get). The file name comes
from the outbox key, so sending the same message again overwrites the same file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from connectors.errors import FatalError
from connectors.notify.base import Notifier, OutboundMessage, SendResult
from connectors.notify.email import render_email
from connectors.notify.slack import chat_post_message_body

_SUFFIXES = {"email": ".eml", "slack": ".json"}


def safe_key(key: str) -> str:
    """``key`` as a file name: every character outside ``[A-Za-z0-9._-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) or "_"


class FileOutboxNotifier(Notifier):
    """Writes each message to ``directory``, whichever channel it names."""

    channel = "outbox"

    def __init__(self, directory: Path, mail_from: str) -> None:
        self._directory = directory
        self._mail_from = mail_from

    def send(self, message: OutboundMessage) -> SendResult:
        path = self.path_for(message)
        if message.channel == "email":
            content = render_email(message, self._mail_from).raw
        else:
            body = chat_post_message_body(message)
            content = (json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        try:
            self._write(path, content)
        except OSError as exc:
            raise FatalError(
                f"cannot write to the outbox folder {self._directory}: {exc.strerror}; "
                "check outbox_dir (LEADWERK_OUTBOX_DIR)"
            ) from exc
        return SendResult(remote_id=path.name)

    def path_for(self, message: OutboundMessage) -> Path:
        """Where ``message`` is (or would be) written."""
        suffix = _SUFFIXES.get(message.channel)
        if suffix is None:
            raise FatalError(f"the file outbox cannot write channel {message.channel!r}")
        return self._directory / f"{safe_key(message.key)}{suffix}"

    def _write(self, path: Path, content: bytes) -> None:
        """Write through a temporary file and rename, so a reader never sees half a message.
        The folder is made when it is missing (the first message, or removed meanwhile), not
        asked for before every message."""
        try:
            handle, temporary = tempfile.mkstemp(dir=self._directory, prefix=".", suffix=".part")
        except FileNotFoundError:
            self._directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self._directory, prefix=".", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
