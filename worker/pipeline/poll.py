"""Pull sources and file inboxes: records in, cursor advanced in the same transaction."""

from __future__ import annotations

import difflib
import logging
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text

from config.loader import Config
from config.settings import EnvSecrets
from connectors.errors import ConnectorError, FatalError
from connectors.sources.base import PulledSource, SourceConfig
from connectors.sources.files import ExportError, TableRecords, file_sha256
from connectors.sources.mapping import RecordMapper
from connectors.sources.registry import file_source, is_pulled, pulled_source
from worker.pipeline.ingest import IngestReport, ingest_records, record_mapper
from worker.pipeline.prepare import PoolUse, pool_size
from worker.store.db import Store
from worker.store.models import SourceFile, SourceState

log = logging.getLogger("leadwerk.poll")

# Rows per transaction of a file import. Row keys are hashes, so each row of a batch lands on
# another page of the key index; larger batches write each page fewer times (SQLite, 100k rows:
# 500 → 88 µs per row stored, 2,000 → 77, 5,000 → 75). A batch holds SQLite's write lock
# (and on PostgreSQL its contacts' row locks) for about 0.15 s: webhooks wait no longer.
_FILE_BATCH = 2000
# After a file of this many new leads, PostgreSQL's statistics of the tables it grew are
# renewed at once (ANALYZE, as its manual advises after a bulk load), before the workers
# route them: autovacuum does it a minute later at best, and never where it is off. Until
# then the planner takes a company's few contacts for many, and routing's count of the
# company's open leads scans every assignment instead: 49 ms a lead at 11,000 assignments.
ANALYZE_FROM = 1000


def _state(session: object, name: str) -> SourceState:
    state = session.get(SourceState, name)  # type: ignore[attr-defined]
    if state is None:
        state = SourceState(
            source=name, consecutive_failures=0, runs=0, failures=0, records_total=0
        )
        session.add(state)  # type: ignore[attr-defined]
    return state


def record_health(store: Store, name: str, now: datetime, error: str | None, records: int) -> None:
    with store.session() as session:
        state = _state(session, name)
        state.last_run_at = now
        state.runs += 1
        state.records_total += records
        if error is None:
            state.last_success_at = now
            state.consecutive_failures = 0
            state.last_error = None
        else:
            state.failures += 1
            state.consecutive_failures += 1
            state.last_error = error[:2000]


# Records of a page stored per transaction.
PAGE_BATCH = 500


def poll_source(
    store: Store, config: Config, name: str, now: datetime | None = None
) -> IngestReport:
    """One poll: every page after the stored cursor; each page and its cursor in one
    transaction, so a crash between pages repeats at most that page (and keys make it harmless)."""
    now = now or datetime.now(UTC)
    source_cfg = config.sources[name]
    total = IngestReport(name)
    if not is_pulled(source_cfg):
        return total
    with store.session() as session:
        state = session.get(SourceState, name)
        cursor = dict(state.cursor) if state and state.cursor else None
    source: PulledSource | None = None
    try:
        source = pulled_source(source_cfg, EnvSecrets())  # a missing token fails too
        assert source is not None
        for page in source.fetch(cursor):

            def save_cursor(session: object, page_cursor: object = page.cursor) -> None:
                _state(session, name).cursor = page_cursor  # type: ignore[assignment]

            # A big page goes in batches (memory stays flat); only the last one stores the
            # page's cursor, so a crash partway repeats the page, whose stored records are
            # then known by their keys.
            report = ingest_records(
                store,
                config,
                source_cfg,
                page.records,
                now=now,
                on_last_batch=save_cursor,
                batch_size=PAGE_BATCH,
            )
            _add(total, report)
    except ConnectorError as exc:
        record_health(store, name, now, f"{type(exc).__name__}: {exc}", total.received)
        if isinstance(exc, FatalError):
            log.error("source %s stopped: %s", name, exc)
        raise
    finally:
        if source is not None:
            source.close()
    record_health(store, name, now, None, total.received)
    return total


def _add(total: IngestReport, report: IngestReport) -> None:
    total.received += report.received
    total.accepted += report.accepted
    total.duplicates += report.duplicates
    total.quarantined += report.quarantined
    total.problems.extend(report.problems)
    total.event_ids.extend(report.event_ids)


def import_file(
    store: Store,
    config: Config,
    source_cfg: SourceConfig,
    path: Path,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
    pool_use: PoolUse | None = None,
) -> IngestReport:
    """``leadwerk import`` and the inboxes: one export file through the source's mapping.

    A file is taken in whole or not at all. :func:`read_export` reads it to its end before
    the first record, so an export that breaks partway (a quote never closed, a damaged
    sheet) raises :class:`ExportError` with nothing taken in, rather than leaving the rows
    above the break in the pipeline and the rest nowhere. (A crash during the import itself
    leaves the batches stored so far; the file stays where it is and the next run adds only
    the rest, as every row is known by its key.)
    """
    now = now or datetime.now(UTC)
    source = file_source(source_cfg, EnvSecrets())
    if source is None:
        raise ValueError(f"source '{source_cfg.name}' is a {source_cfg.kind} source; no files")
    mapper = record_mapper(config, source_cfg)
    try:
        records = source.read(path)
        if isinstance(records, TableRecords):  # a vCard has no header to check
            check_header(records, mapper, path.name)
    except ExportError as exc:
        raise ExportError(f"{exc}; nothing from this file was taken in") from exc
    report = ingest_records(
        store,
        config,
        source_cfg,
        records,
        now=now,
        file=path.name,
        batch_size=_FILE_BATCH,
        on_progress=on_progress,
        # Files are the bulk of what comes in (a fair's scans, a CRM export): prepared on
        # every core (100,000 rows: 20 s → 14 s on SQLite, 24 s → 16 s on PostgreSQL).
        processes=pool_size(),
        pool_use=pool_use,
    )
    report.file = path.name
    with store.session() as session:
        sha = file_sha256(path)
        if session.get(SourceFile, sha) is None:
            session.add(
                SourceFile(
                    sha256=sha,
                    source=source_cfg.name,
                    filename=path.name,
                    received=report.received,
                    accepted=report.accepted,
                    duplicates=report.duplicates,
                    quarantined=report.quarantined,
                    processed_at=now,
                )
            )
    record_health(store, source_cfg.name, now, None, report.received)
    if report.accepted >= ANALYZE_FROM and store.dialect == "postgresql":
        with store.autocommit() as connection:
            connection.execute(text("ANALYZE contacts, events"))
    return report


def check_header(records: TableRecords, mapper: RecordMapper, name: str) -> None:
    """Raise :class:`ExportError` when a column that ``map:`` names is not in the header:
    every row would lose that field (all of them quarantined, for the e-mail), so the file
    is refused whole, with a guess among the header's unmapped columns."""
    missing = mapper.missing_columns(records.header)
    if not missing:
        return
    mapped = {column.strip().casefold() for _, column in mapper.columns()}
    free = {c.casefold(): c for c in records.header if c.strip().casefold() not in mapped}
    problems = []
    for field_name, column in missing:
        guess = difflib.get_close_matches(column.strip().casefold(), list(free), n=1)
        hint = f" (did you mean '{free[guess[0]]}'?)" if guess else ""
        problems.append(f"no column '{column}' (mapped to {field_name}){hint}")
    raise ExportError(
        f"{name}: header row {records.header_row}: {'; '.join(problems)}; rename the column "
        "in the file or change map: in sources.yaml"
    )


def import_inboxes(
    store: Store, config: Config, now: datetime | None = None, wait: bool = False
) -> list[IngestReport]:
    """Every file waiting in the folder of a file source (``tradefair_files``), once by
    content hash, then moved to ``done/``, or to ``failed/`` when it cannot be read to its end
    (its report then has ``error`` set and nothing of it was taken in).

    A file that changed less than its source's ``settle`` ago is still being written and is
    left for a later look; with ``wait`` (``run --once``, which looks only once) the look
    waits for it to settle, so a file copied in just before is taken."""
    reports = []
    for source in config.sources.values():
        inbox = file_source(source, EnvSecrets())
        if inbox is None:
            continue
        folder = inbox.folder(config.directory.parent)
        for path in inbox.waiting_files(folder):
            left = inbox.unsettled_for(path)
            if left and wait:
                time.sleep(min(left, inbox.config.settle.total_seconds()))
                left = inbox.unsettled_for(path)
            if left:
                log.info(
                    "%s: %s is still being written; it is taken once it has not changed for %s",
                    source.name,
                    path.name,
                    inbox.config.settle,
                )
                continue
            sha = file_sha256(path)
            with store.session() as session:
                seen = session.scalars(select(SourceFile).where(SourceFile.sha256 == sha)).first()
            if seen is not None:
                _move(path, folder / "done")
                continue
            try:
                reports.append(import_file(store, config, source, path, now))
            except ExportError as exc:
                log.error("%s: %s; moved to failed/", source.name, exc)
                record_health(store, source.name, now or datetime.now(UTC), str(exc), 0)
                reports.append(IngestReport(source.name, file=path.name, error=str(exc)))
                _move(path, folder / "failed")
                continue
            _move(path, folder / "done")
    return reports


def _move(path: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}-{datetime.now(UTC):%Y%m%d%H%M%S}{path.suffix}"
    shutil.move(str(path), target)
