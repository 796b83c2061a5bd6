"""``tradefair_files``: exports of badge-scanner apps dropped into a folder.

A file is taken in once, known by its content hash, then moved to ``done/`` (or ``failed/``
when the whole file is unreadable). Unsorted exports have no watermark: records are deduplicated
by their content key at ingest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from connectors.sources.base import SourceConfig

EXPORT_SUFFIXES = {".csv", ".txt", ".tsv", ".xlsx", ".vcf", ".vcard"}


class TradefairFilesConfig(SourceConfig):
    kind: Literal["tradefair_files"]
    path: str


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
