"""``leadwerk score``: JSON Lines in, one result per line out, in input order."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from multiprocessing.pool import AsyncResult
from typing import Any, TextIO

from config.loader import Config
from rules.contact import FieldError
from worker.evaluate import assess


def score_line(config: Config, line: str, now: datetime) -> dict[str, Any]:
    """One input line's result; a line that cannot be scored yields ``error`` and no score."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc.msg} at column {exc.colno}"}
    if not isinstance(item, dict) or not isinstance(item.get("contact"), dict):
        return {"error": 'expected an object like {"contact": {...}, "events": [...]}'}
    events = item.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return {"error": "events must be a list of objects"}
    account = item.get("account") if isinstance(item.get("account"), dict) else None
    try:
        result, route, sla = assess(config, item["contact"], events, now, account)
    except FieldError as exc:
        return {"error": str(exc), "field": exc.field}
    out = result.summary()
    out["route"] = route.as_dict() if route else None
    out["sla"] = sla
    out["ruleset"] = {"version": config.ruleset.version, "hash": config.ruleset.hash}
    return out


def score_stream(
    config: Config,
    lines: Iterable[str],
    out: TextIO,
    now: datetime,
    *,
    as_json: bool,
    explain: bool,
    jobs: int = 1,
) -> None:
    """Score every line and write the results in input order; ``jobs`` > 1 scores chunks of
    lines in that many forked processes (where the platform can fork)."""
    numbered = enumerate(lines, start=1)
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        _score_forked(config, numbered, out, now, as_json, explain, jobs)
        return
    for number, line in numbered:
        if line.strip():
            out.write(_render(config, number, line, now, as_json, explain))


def _render(
    config: Config, number: int, line: str, now: datetime, as_json: bool, explain: bool
) -> str:
    result = score_line(config, line, now)
    if as_json:
        result = {**result, "line": number}
        return json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n"
    return _human(number, result, explain) + "\n"


# What forked scorers inherit: the compiled rules cannot be pickled, but a fork shares them.
_forked: dict[str, Any] = {}
_CHUNK = 1000


def _score_forked(
    config: Config,
    numbered: Iterator[tuple[int, str]],
    out: TextIO,
    now: datetime,
    as_json: bool,
    explain: bool,
    jobs: int,
) -> None:
    """Chunks go to a pool of forked scorers; results are written in input order, and only
    a few chunks per process are in flight, so a million lines from a pipe never pile up."""
    _forked.update(config=config, now=now, as_json=as_json, explain=explain)
    pending: deque[AsyncResult[str]] = deque()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        while True:
            chunk = list(itertools.islice(numbered, _CHUNK))
            if chunk:
                pending.append(pool.apply_async(_score_chunk, (chunk,)))
            while pending and (len(pending) > 2 * jobs or not chunk):
                out.write(pending.popleft().get())
            if not chunk:
                break
    _forked.clear()


def _score_chunk(chunk: list[tuple[int, str]]) -> str:
    state = _forked
    return "".join(
        _render(state["config"], number, line, state["now"], state["as_json"], state["explain"])
        for number, line in chunk
        if line.strip()
    )


def _human(number: int, result: dict[str, Any], explain: bool) -> str:
    if "error" in result:
        return f"line {number}: error: {result['error']}"
    verdict = "MQL" if result["mql"] else "not an MQL"
    if result["disqualified"]:
        verdict = f"disqualified ({result['disqualified']})"
    text = (
        f"line {number}: score {result['score']} (fit {result['fit']}, engagement "
        f"{result['engagement']}): {verdict}"
    )
    route = result.get("route")
    if route:
        text += f" → {route['rep'] or 'fallback'}" + (
            f" in {route['team']}" if route["team"] else ""
        )
    if result.get("sla"):
        text += f", SLA {result['sla']['policy']} due {result['sla']['due']}"
    if explain:
        for hit in result["hits"]:
            text += f"\n    {hit['kind']:<11} {hit['rule']}: {hit['points']:+g}"
        if route:
            text += f"\n    route: {route['reason']}"
            for skip in route["skipped"]:
                text += f"\n      skipped {skip['rep']}: {skip['reason']}"
    return text
