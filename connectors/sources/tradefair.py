"""``tradefair_files``: exports of badge-scanner apps dropped into a folder.

A file is taken in once, known by its content hash, then moved to ``done/`` (or ``failed/``
when the whole file is unreadable). Unsorted exports have no watermark: records are deduplicated
by their content key at ingest.

A file is taken only once it has stopped changing for ``settle`` (2 s unless set): an export
still being copied in (a large file over a network share, a sync client) would otherwise be
read half-written, moved to ``done/``, and the rows written after that would be lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

from config.types import Duration
from connectors.sources.base import SourceConfig

EXPORT_SUFFIXES = {".csv", ".txt", ".tsv", ".xlsx", ".vcf", ".vcard"}


class TradefairFilesConfig(SourceConfig):
    kind: Literal["tradefair_files"]
    path: str
    settle: Duration = timedelta(seconds=2)


def waiting_files(folder: Path) -> Iterator[Path]:
    """Export files waiting in the inbox folder (not in done/ or failed/), oldest first."""
    if not folder.is_dir():
        return
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in EXPORT_SUFFIXES and not p.name.startswith(".")
    ]
    yield from sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def unsettled_for(path: Path, settle: timedelta) -> float:
    """Seconds until ``path`` has gone ``settle`` without a change (0 when it has)."""
    changed = path.stat().st_mtime
    return max(0.0, changed + settle.total_seconds() - time.time())
