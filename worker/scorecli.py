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
from rules.routing import RouteDecision
from rules.scoring import ScoreResult, r1
from worker.evaluate import assess


def score_line(config: Config, line: str, now: datetime) -> dict[str, Any]:
    """One input line's result; a line that cannot be scored yields ``error`` and no score."""
    assessed = _assess_line(config, line, now)
    if isinstance(assessed, dict):
        return assessed
    result, route, sla = assessed
    out = result.summary()
    out["route"] = route.as_dict() if route else None
    out["sla"] = sla
    out["ruleset"] = {"version": config.ruleset.version, "hash": config.ruleset.hash}
    return out


def _assess_line(
    config: Config, line: str, now: datetime
) -> dict[str, Any] | tuple[ScoreResult, RouteDecision | None, dict[str, Any] | None]:
    """(score, route, sla) of one line, or the result of a line that cannot be scored."""
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
        return assess(config, item["contact"], events, now, account)
    except FieldError as exc:
        return {"error": str(exc), "field": exc.field}


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
    if as_json:
        assessed = _assess_line(config, line, now)
        if isinstance(assessed, dict):
            return _dumps({**assessed, "line": number}) + "\n"
        return _json_line(config, *assessed, number)
    return _human(number, score_line(config, line, now), explain) + "\n"


# ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` without a new encoder per call.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_string = json.encoder.encode_basestring  # what that encoder writes for a str
_INFINITY = float("inf")


def _json_line(
    config: Config,
    result: ScoreResult,
    route: RouteDecision | None,
    sla: dict[str, Any] | None,
    number: int,
) -> str:
    """The bytes ``_dumps({**score_line(...), "line": number}) + "\\n"`` gives, written
    directly: the parts that are the same on every line (a hit's rule and kind, the ruleset)
    are encoded once."""
    parts = [
        '{"score":',
        _float(r1(result.score)),
        ',"fit":',
        _float(r1(result.fit)),
        ',"engagement":',
        _float(r1(result.engagement)),
        ',"mql":true' if result.mql is True else ',"mql":' + _dumps(result.mql),
        ',"disqualified":',
        _value(result.disqualified),
        ',"hits":[',
    ]
    first = True
    for hit in result.hits:
        if not first:
            parts.append(",")
        first = False
        parts.append(_hit_prefix(hit.rule, hit.kind))
        parts.append(_float(r1(hit.points)))
        if hit.kind == "engagement":
            parts.append(',"events":')
            parts.append(_value(hit.events))
        parts.append("}")
    parts.append('],"route":')
    if route:
        parts += (
            '{"rule":',
            _value(route.rule),
            ',"team":',
            _value(route.team),
            ',"rep":',
            _value(route.rep),
            ',"reason":',
            _value(route.reason),
            ',"skipped":[',
        )
        first = True
        for skip in route.skipped:
            if not first:
                parts.append(",")
            first = False
            parts += ('{"rep":', _value(skip.name), ',"reason":', _value(skip.reason), "}")
        parts.append("]}")
    else:
        parts.append("null")
    parts.append(',"sla":')
    if sla is None:
        parts.append("null")
    elif len(sla) == 2 and "policy" in sla and "due" in sla:
        parts += ('{"policy":', _value(sla["policy"]), ',"due":', _value(sla["due"]), "}")
    else:
        parts.append(_dumps(sla))
    parts.append(_ruleset_json(config))
    parts.append(f"{number}}}\n" if number.__class__ is int else f"{_dumps(number)}}}\n")
    return "".join(parts)


def _float(value: Any) -> str:
    if value.__class__ is float and -_INFINITY < value < _INFINITY:
        return float.__repr__(value)
    return _dumps(value)


def _value(value: Any) -> str:
    if value.__class__ is str:
        return _string(value)
    if value is None:
        return "null"
    if value.__class__ is int:
        return int.__repr__(value)
    return _dumps(value)


_hit_prefixes: dict[tuple[Any, Any], str] = {}


def _hit_prefix(rule: Any, kind: Any) -> str:
    key = (rule, kind)
    prefix = _hit_prefixes.get(key)
    if prefix is None or key.__class__ is not tuple:
        if len(_hit_prefixes) > 4096:
            _hit_prefixes.clear()
        prefix = '{"rule":' + _dumps(rule) + ',"kind":' + _dumps(kind) + ',"points":'
        _hit_prefixes[key] = prefix
    return prefix


_rulesets: dict[int, tuple[Any, str]] = {}


def _ruleset_json(config: Config) -> str:
    """``,"ruleset":{...},"line":`` for this config's ruleset, encoded once."""
    ruleset = config.ruleset
    cached = _rulesets.get(id(ruleset))
    if cached is None or cached[0] is not ruleset:
        if len(_rulesets) > 8:
            _rulesets.clear()
        text = _dumps({"version": ruleset.version, "hash": ruleset.hash})
        cached = _rulesets[id(ruleset)] = (ruleset, f',"ruleset":{text},"line":')
    return cached[1]


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
