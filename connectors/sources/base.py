"""The source seam: every kind of source yields raw records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


class Source:
    """A pull source. Subclasses implement :meth:`fetch`; the hooks are no-ops."""

    kind: str = ""

    def fetch(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        """Yield pages after ``cursor``; each page carries the cursor that follows it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. Optional."""


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
