"""The source seam: every kind of source yields raw records.

A source kind (the ``kind:`` of an entry in ``config/sources.yaml``) is ONE class derived from
:class:`PulledSource` (the clock polls it: :meth:`~PulledSource.fetch`), :class:`PushedSource`
(the sender posts to ``/hooks/<name>``: :meth:`~PushedSource.verify` and
:meth:`~PushedSource.receive`) or :class:`FileSource` (files dropped into a folder:
:meth:`~FileSource.read`), or from more than one when the vendor offers both (Typeform). The
class names its configuration model in ``config_model``; registering it in
:mod:`connectors.sources.registry` makes the kind known to ``rules check``, the clock, the
webhook receiver and the inboxes. Hooks other than the abstract methods are no-ops here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from config.types import Duration


@dataclass(frozen=True)
class RawRecord:
    """One record as a source delivered it, before mapping.

    ``data`` is the record as JSON-able data (a CSV row is a dict of header -> cell text).
    ``record_id`` is the source's own id where it has one (Typeform's token, an API id);
    without one, ingest derives the idempotency key from the normalised content.
    ``row`` is the spreadsheet row number of a file record (header = row 1).
    ``error`` marks a record that could not even be parsed; ingest quarantines it.
    """

    data: dict[str, Any]
    record_id: str | None = None
    row: int | None = None
    occurred_at: datetime | None = None
    error: str | None = None


@dataclass
class Page:
    """A batch of records plus the cursor to store once the batch is safely stored."""

    records: list[RawRecord]
    cursor: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SourceConfig(BaseModel):
    """The keys every source in ``config/sources.yaml`` has; each kind subclasses this.

    Secrets are never in the YAML: a kind names the environment variable (``token_env``,
    ``bearer_env``, ``secret_env``) and receives the environment as a mapping.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    map: dict[str, str] = Field(default_factory=dict)
    event: dict[str, Any] = Field(default_factory=dict)
    poll_every: Duration | None = None


class FileSourceConfig(SourceConfig):
    """The keys of a file kind: the inbox folder (relative to the config folder's parent)
    and how long a file must go unchanged before it is taken (it may still be copied in)."""

    path: str
    settle: Duration = timedelta(seconds=2)


class Source(ABC):
    """One configured source of some kind: ``config`` is its entry in ``sources.yaml``
    (validated by ``config_model``), ``env`` the environment its secrets are read from.

    Building a source does no I/O; a kind that needs a credential reads it when it first
    needs it, so that a pushed delivery to a kind that is also pulled never depends on the
    pull token.
    """

    kind: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = env

    def close(self) -> None:  # noqa: B027 (an optional hook, a no-op unless overridden)
        """Release connections. Optional."""


class PulledSource(Source):
    """A source the clock polls every ``poll_every``."""

    @abstractmethod
    def fetch(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        """Yield pages after ``cursor``; each page carries the cursor that follows it.

        Raises :class:`~connectors.errors.RetriableError` for a passing fault and
        :class:`~connectors.errors.FatalError` for one the admin must fix."""


class PushedSource(Source):
    """A source whose sender posts signed deliveries to ``POST /hooks/<name>``."""

    @property
    def secret_env(self) -> str | None:
        """The environment variable holding the secret deliveries are signed with; a kind's
        config names it ``secret_env``."""
        return getattr(self.config, "secret_env", None)

    @property
    def max_body_bytes(self) -> int | None:
        """The largest body this source accepts; None for the ``max_body_bytes`` setting."""
        return None

    @abstractmethod
    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Raise :class:`~connectors.errors.SignatureError` unless the raw ``body`` is signed
        with ``secret`` (:class:`~connectors.errors.BodyTooLargeError` when it is too large).
        ``headers`` are looked up without regard to case; ``now`` is the receiving time."""

    @abstractmethod
    def receive(self, payload: dict[str, Any]) -> RawRecord:
        """The record of a verified delivery's JSON object.

        Raises :class:`~connectors.errors.IgnoredDelivery` for a delivery that carries no
        record (answered 200, nothing stored) and :class:`~connectors.errors.SkippableError`
        for one that should carry a record but does not (quarantined under ``field``)."""


class FileSource(Source):
    """A folder that export files are dropped into; each file is taken once, whole."""

    config: FileSourceConfig
    suffixes: ClassVar[frozenset[str]] = frozenset()
    """The file name endings (lower case, with the dot) this kind reads; others stay."""

    @abstractmethod
    def read(self, path: Path) -> Iterator[RawRecord]:
        """The records of one file; a bad row comes out as a record with ``error`` set.
        A file that cannot be read to its end raises
        :class:`~connectors.sources.files.ExportError` before the first record."""

    def folder(self, root: Path) -> Path:
        """The inbox folder; a relative ``path`` is taken from ``root``."""
        folder = Path(self.config.path)
        return folder if folder.is_absolute() else root / folder

    def waiting_files(self, folder: Path) -> Iterator[Path]:
        """Files waiting in the inbox folder (not in done/ or failed/), oldest first."""
        if not folder.is_dir():
            return
        files = [
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in self.suffixes and not p.name.startswith(".")
        ]
        yield from sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def unsettled_for(self, path: Path) -> float:
        """Seconds until ``path`` has gone ``settle`` without a change (0 when it has)."""
        changed = path.stat().st_mtime
        return max(0.0, changed + self.config.settle.total_seconds() - time.time())
