"""``tradefair_files``: exports of badge-scanner apps dropped into a folder.

A file is taken in once, known by its content hash, then moved to ``done/`` (or ``failed/``
when the whole file is unreadable). Unsorted exports have no watermark: records are deduplicated
by their content key at ingest.

A file is taken only once it has stopped changing for ``settle`` (2 s unless set): an export
still being copied in (a large file over a network share, a sync client) would otherwise be
read half-written, moved to ``done/``, and the rows written after that would be lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from connectors.sources.base import FileSource, FileSourceConfig, RawRecord
from connectors.sources.files import read_export

EXPORT_SUFFIXES = frozenset({".csv", ".txt", ".tsv", ".xlsx", ".vcf", ".vcard"})


class TradefairFilesConfig(FileSourceConfig):
    kind: Literal["tradefair_files"]


class TradefairFilesSource(FileSource):
    """CSV, XLSX and vCard exports, read by :func:`~connectors.sources.files.read_export`."""

    kind = "tradefair_files"
    config_model = TradefairFilesConfig
    suffixes = EXPORT_SUFFIXES

    def read(self, path: Path) -> Iterator[RawRecord]:
        return read_export(path)
