"""From a raw record to what ingest stores: mapped, validated, normalised, keyed.

Pure CPU work, no store: the e-mail and phone checks alone cost about 60 µs a record, the
largest share of a big import. A large input is therefore prepared in batches by a pool of
processes, one per core, while the importing process stores the batches already prepared
(:func:`prepared_batches`); the results, and their order, are those of preparing one record
after the other. This module imports only what preparing needs, so that the pool's processes
start light.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import orjson

from connectors.sources.base import RawRecord
from connectors.sources.mapping import RecordMapper
from rules.contact import (
    FieldError,
    FieldType,
    bound_event,
    coerce_datetime,
    mask_phone,
    normalise_contact,
)

log = logging.getLogger("leadwerk.ingest")

# An input of at least this many records is prepared by the pool (smaller ones are done
# before a pool would have started: the first pool process is ready after about 0.25 s).
PARALLEL_FROM = 4000


@dataclass
class Prepared:
    key: str
    contact: dict[str, Any]
    event: dict[str, Any]
    occurred_at: datetime
    raw: Any  # the record's data, storable as JSON (the contact and event are too)
    # (field, why) for each value dropped from the contact; the lead is taken in without it.
    dropped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    """A record that cannot be taken in: the field at fault and why (quarantined)."""

    field: str
    reason: str


# Dates and dataclasses as ``str()`` writes them (what ``json.dumps(default=str)`` gives).
_AS_TEXT = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def json_safe(value: Any) -> Any:
    """The value as storable JSON: non-JSON types as text (``str()``, as ``json.dumps``'
    ``default=str`` gives them), and NUL characters removed (PostgreSQL refuses them in text
    and JSONB, and no lead needs one)."""
    try:
        text = orjson.dumps(value, default=str, option=_AS_TEXT)
    except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits, a deep value
        return _without_nul(json.loads(json.dumps(value, default=str, ensure_ascii=False)))
    safe = orjson.loads(text)
    return _without_nul(safe) if b"\\u0000" in text else safe


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def record_key(record: RawRecord, contact: dict[str, Any], event: dict[str, Any]) -> str:
    if record.record_id:
        return f"id:{record.record_id}"[:200]
    canonical = json.dumps({"c": contact, "e": event}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Preparer:
    """A source's mapping with the contact fields and the time of an ingest: prepares its
    records. Picklable, so that the pool's processes receive it once."""

    mapper: RecordMapper
    custom_fields: Mapping[str, FieldType]
    now: datetime

    def __call__(self, record: RawRecord) -> Prepared:
        """Map and normalise one record; raises :class:`FieldError` for a bad one."""
        if record.error:
            raise FieldError("record", record.error)
        raw_contact, event = self.mapper(record)
        contact = json_safe(normalise_contact(raw_contact, self.custom_fields))
        at = coerce_datetime("event.at", event.pop("at", None)) or record.occurred_at or self.now
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        event = json_safe(bound_event(event))
        key = record_key(record, contact, event)
        raw = json_safe(record.data)
        return Prepared(key, contact, event, at, raw, _dropped(raw_contact, contact))

    def batch(self, records: list[RawRecord]) -> list[Prepared | Refused]:
        """Each record prepared, or refused with its field and reason."""
        results: list[Prepared | Refused] = []
        for record in records:
            try:
                results.append(self(record))
            except FieldError as exc:
                results.append(Refused(exc.field, str(exc).split(": ", 1)[-1]))
        return results


def _dropped(raw: dict[str, Any], contact: dict[str, Any]) -> list[tuple[str, str]]:
    """Values given but not kept: a phone cell that holds no number (``bitte nicht
    anrufen``). The value is masked: the reason goes to logs and summaries."""
    phone = raw.get("phone")
    if "phone" in contact or phone is None or not str(phone).strip():
        return []
    return [("phone", f"not a phone number ({mask_phone(str(phone).strip())}); left out")]


# The preparer of the pool process this runs in (set once by its initializer).
_POOL_PREPARER: Preparer | None = None


def _start_pool_process(preparer: Preparer) -> None:
    global _POOL_PREPARER
    _POOL_PREPARER = preparer


def _prepare_in_pool(records: list[RawRecord]) -> tuple[int, list[Prepared | Refused]]:
    assert _POOL_PREPARER is not None
    return os.getpid(), _POOL_PREPARER.batch(records)


def pool_size() -> int:
    """Processes for a large input: one per core this process may run on; none on one core
    (the importing process then prepares, as the pool would only add its start-up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores if cores and cores > 1 else 0


@dataclass
class PreparedBatch:
    records: list[RawRecord]
    results: list[Prepared | Refused]
    last: bool  # no batch follows


@dataclass
class PoolUse:
    """Which processes prepared the batches of one input (the caller's own pid when none
    did), for a caller that checks the pool did its part (the tests)."""

    pids: set[int] = field(default_factory=set)


def prepared_batches(
    records: Iterable[RawRecord],
    batch_size: int,
    preparer: Preparer,
    processes: int = 0,
    use: PoolUse | None = None,
) -> Iterator[PreparedBatch]:
    """The records in batches of ``batch_size``, each prepared, in input order.

    With ``processes`` (2 or more; :func:`pool_size` is the machine's) and from
    :data:`PARALLEL_FROM` records on, batches are prepared by that many pool processes, a
    few batches ahead of the one the caller is storing, so memory stays bounded.

    The pool's processes come from a fork server: a process forked from this one could
    inherit a lock that another thread (a progress bar, a worker thread) held at that moment.
    Like every multiprocessing start method but fork, it runs a main script again in each
    process unless the script guards its work with ``if __name__ == "__main__"`` (Leadwerk's
    own entry points do); without the guard the pool breaks at once. When the pool breaks (a
    process killed, too), this process prepares the batches from there on, with a warning."""
    use = use if use is not None else PoolUse()
    source = iter(records)
    ahead = list(islice(source, PARALLEL_FROM))
    batches = _with_last(_chunks(chain(ahead, source), batch_size))
    if len(ahead) < PARALLEL_FROM or processes < 2:
        for chunk, last in batches:
            use.pids.add(os.getpid())
            yield PreparedBatch(chunk, preparer.batch(chunk), last)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_pool_process, initargs=(preparer,)
    )
    window: deque[tuple[list[RawRecord], bool, Future[Any] | None]] = deque()
    broken = False
    try:
        while True:
            while len(window) < 2 * processes:
                following = next(batches, None)
                if following is None:
                    break
                chunk, last = following
                future = None
                if not broken:
                    try:
                        future = pool.submit(_prepare_in_pool, chunk)
                    except BrokenProcessPool:
                        broken = _broke()
                window.append((chunk, last, future))
            if not window:
                return
            chunk, last, future = window.popleft()
            done: tuple[int, list[Prepared | Refused]] | None = None
            if future is not None:
                try:
                    done = future.result()
                except BrokenProcessPool:
                    broken = broken or _broke()
            pid, results = done or (os.getpid(), preparer.batch(chunk))
            use.pids.add(pid)
            yield PreparedBatch(chunk, results, last)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _broke() -> bool:
    log.warning("the processes preparing records stopped; going on here")
    return True


def _chunks(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    while chunk := list(islice(records, size)):
        yield chunk


def _with_last(batches: Iterator[list[RawRecord]]) -> Iterator[tuple[list[RawRecord], bool]]:
    """Each batch with whether it is the last (one batch read ahead)."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        yield current, following is None
        current = following
