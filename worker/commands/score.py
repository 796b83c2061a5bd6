"""``leadwerk score``: JSON Lines in, one result per line out, in input order."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from multiprocessing.pool import AsyncResult
from typing import Any, TextIO

from config.loader import Config
from connectors.json_depth import parse, too_deep
from rules.contact import FieldError
from rules.routing import RouteDecision
from rules.scoring import Hit, ScoreResult, r1
from worker.commands.evaluate import assess


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
        item = parse(line)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc.msg} at column {exc.colno}"}
    except RecursionError:  # nested deeper than the parser goes: no contact looks like that
        return {"error": too_deep(line)}
    if not isinstance(item, dict) or not isinstance(item.get("contact"), dict):
        return {"error": 'expected an object like {"contact": {...}, "events": [...]}'}
    events = item.get("events") or []
    if not isinstance(events, list) or not _all_objects(events):
        return {"error": "events must be a list of objects"}
    account = item.get("account") if isinstance(item.get("account"), dict) else None
    try:
        return assess(config, item["contact"], events, now, account)
    except FieldError as exc:
        return {"error": str(exc), "field": exc.field}


def _all_objects(events: list[Any]) -> bool:
    """Whether every item is a JSON object: as ``all(isinstance(e, dict) for e in events)``,
    with the classes of a line's events looked at together (a parser gives plain dicts)."""
    classes = set(map(type, events))
    return classes <= _DICT or all(isinstance(e, dict) for e in events)


_DICT = frozenset({dict})


def score_stream(
    config: Config,
    lines: Iterable[str],
    out: TextIO,
    now: datetime,
    *,
    as_json: bool,
    explain: bool,
    jobs: int = 1,
) -> int:
    """Score every line and write the results in input order; ``jobs`` > 1 scores chunks of
    lines in that many forked processes (where the platform can fork). Returns how many lines
    were refused (not JSON, no contact, a field that cannot be read)."""
    numbered = enumerate(lines, start=1)
    refused = 0
    with _few_collections():
        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            return _score_forked(config, numbered, out, now, as_json, explain, jobs)
        if not _regular_file(lines):
            for number, line in numbered:
                if line.strip():
                    text = _render(config, number, line, now, as_json, explain)
                    refused += _refused(text, as_json)
                    out.write(text)
            return refused
        # Read from a file, nobody waits for each line's answer: results go out a few hundred
        # at a time (fewer writes when stdout is unbuffered), in the same order and bytes.
        pending: list[str] = []
        try:
            for number, line in numbered:
                if line.strip():
                    text = _render(config, number, line, now, as_json, explain)
                    refused += _refused(text, as_json)
                    pending.append(text)
                    if len(pending) >= _BATCH:
                        out.write("".join(pending))
                        pending.clear()
        finally:
            if pending:
                out.write("".join(pending))
    return refused


def _refused(text: str, as_json: bool) -> int:
    """1 when ``text``, one line's output, is a refusal: an error object (a result always
    starts with its score) or the human ``line N: error:``."""
    if as_json:
        return 1 if text.startswith('{"error"') else 0
    return 1 if ": error: " in text.partition("\n")[0] else 0


_BATCH = 256


def _regular_file(lines: Iterable[str]) -> bool:
    """Whether ``lines`` is an open regular file (not a pipe, a terminal or a list)."""
    fileno = getattr(lines, "fileno", None)
    if fileno is None:
        return False
    try:
        return stat.S_ISREG(os.fstat(fileno()).st_mode)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Scoring makes and drops a few dicts per line and keeps nothing: the cyclic collector
    need not keep walking the loaded rules (frozen for the while) nor run every few hundred
    allocations. Nothing of the output depends on it."""
    threshold = gc.get_threshold()
    gc.freeze()
    if threshold[0]:  # 0: automatic collection is off, and stays off
        gc.set_threshold(max(threshold[0], _GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


_GC_THRESHOLD = 20_000


def _render(
    config: Config, number: int, line: str, now: datetime, as_json: bool, explain: bool
) -> str:
    if as_json:
        assessed = _assess_line(config, line, now)
        if isinstance(assessed, dict):
            return _dumps({**assessed, "line": number}) + "\n"
        return _json_line(config, *assessed, number)
    return _human(config, number, _assess_line(config, line, now), explain) + "\n"


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
    directly: the parts that are the same on many lines (a fit rule's hit, the ruleset) are
    encoded once."""
    mql = "true" if result.mql is True else "false" if result.mql is False else _dumps(result.mql)
    hits = ",".join([_hit_json(hit) for hit in result.hits])
    if route:
        skipped = ",".join(
            [
                f'{{"rep":{_value(skip.name)},"reason":{_value(skip.reason)}}}'
                for skip in route.skipped
            ]
        )
        fallback = ",".join([_value(name) for name in route.fallback])
        route_json = (
            f'{{"rule":{_value(route.rule)},"team":{_value(route.team)},'
            f'"rep":{_value(route.rep)},"reason":{_value(route.reason)},"skipped":[{skipped}],'
            f'"fallback":[{fallback}]}}'
        )
    else:
        route_json = "null"
    if sla is None:
        sla_json = "null"
    elif tuple(sla) == ("policy", "due"):
        sla_json = f'{{"policy":{_value(sla["policy"])},"due":{_value(sla["due"])}}}'
    else:
        sla_json = _dumps(sla)
    line = int.__repr__(number) if number.__class__ is int else _dumps(number)
    return (
        f'{{"score":{_rounded(result.score)},"fit":{_rounded(result.fit)},'
        f'"engagement":{_rounded(result.engagement)},"mql":{mql},'
        f'"disqualified":{_value(result.disqualified)},"hits":[{hits}],"route":{route_json},'
        f'"sla":{sla_json}{_ruleset_json(config)}{line}}}\n'
    )


def _rounded(value: Any) -> str:
    """``r1(value)`` as JSON. Figures rounded to one decimal are few: each one's text is
    looked up rather than written anew."""
    if value.__class__ is float and -_INFINITY < value < _INFINITY:
        rounded = round(value, 1) + 0.0  # r1: round() leaves a whole number as it is
        text = _decimals.get(rounded)
        if text is None:
            if len(_decimals) > 4096:
                _decimals.clear()
            text = _decimals[rounded] = float.__repr__(rounded)
        return text
    return _dumps(r1(value))


# The JSON of a number rounded to one decimal (never ``-0.0``: ``+ 0.0`` above).
_decimals: dict[float, str] = {}


def _value(value: Any) -> str:
    if value.__class__ is str:
        return _string(value)
    if value is None:
        return "null"
    if value.__class__ is int:
        return int.__repr__(value)
    return _dumps(value)


def _hit_json(hit: Hit) -> str:
    """``hit.as_dict()`` as JSON; a hit that is the same object as before (the scoring reuses
    the hits of fit and disqualify rules) is encoded once. An engagement hit, new on every
    line, takes the shortest path."""
    if hit.kind == "engagement":
        events = hit.events
        count = int.__repr__(events) if events.__class__ is int else _value(events)
        return f'{_hit_prefix(hit.rule, hit.kind)}{_rounded(hit.points)},"events":{count}}}'
    cached = _hits.get(id(hit))
    if cached is not None and cached[0] is hit:
        return cached[1]
    text = f"{_hit_prefix(hit.rule, hit.kind)}{_rounded(hit.points)}}}"
    if len(_hits) > 4096:
        _hits.clear()
    _hits[id(hit)] = (hit, text)
    return text


_hits: dict[int, tuple[Hit, str]] = {}
_hit_prefixes: dict[tuple[str, str], str] = {}


def _hit_prefix(rule: Any, kind: Any) -> str:
    """``{"rule":...,"kind":...,"points":`` of a hit, encoded once per rule."""
    if rule.__class__ is not str or kind.__class__ is not str:
        return '{"rule":' + _dumps(rule) + ',"kind":' + _dumps(kind) + ',"points":'
    key = (rule, kind)
    prefix = _hit_prefixes.get(key)
    if prefix is None:
        if len(_hit_prefixes) > 4096:
            _hit_prefixes.clear()
        prefix = _hit_prefixes[key] = f'{{"rule":{_string(rule)},"kind":{_string(kind)},"points":'
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
) -> int:
    """Chunks go to a pool of forked scorers; results are written in input order, and only
    a few chunks per process are in flight, so a million lines from a pipe never pile up.
    Returns how many lines were refused."""
    _forked.update(config=config, now=now, as_json=as_json, explain=explain)
    pending: deque[AsyncResult[tuple[str, int]]] = deque()
    refused = 0
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        while True:
            chunk = list(itertools.islice(numbered, _CHUNK))
            if chunk:
                pending.append(pool.apply_async(_score_chunk, (chunk,)))
            while pending and (len(pending) > 2 * jobs or not chunk):
                text, bad = pending.popleft().get()
                out.write(text)
                refused += bad
            if not chunk:
                break
    _forked.clear()
    return refused


def _score_chunk(chunk: list[tuple[int, str]]) -> tuple[str, int]:
    state = _forked
    texts = [
        _render(state["config"], number, line, state["now"], state["as_json"], state["explain"])
        for number, line in chunk
        if line.strip()
    ]
    return "".join(texts), sum(_refused(text, state["as_json"]) for text in texts)


def _human(
    config: Config,
    number: int,
    assessed: dict[str, Any] | tuple[ScoreResult, RouteDecision | None, dict[str, Any] | None],
    explain: bool,
) -> str:
    if isinstance(assessed, dict):
        return f"line {number}: error: {assessed['error']}"
    outcome, route, sla = assessed
    result = outcome.summary()
    verdict = "MQL" if result["mql"] else "not an MQL"
    if result["disqualified"]:
        verdict = f"disqualified ({result['disqualified']})"
    text = (
        f"line {number}: score {result['score']} (fit {result['fit']}, engagement "
        f"{result['engagement']}): {verdict}"
    )
    if route:
        whom = route.rep or "fallback " + (", ".join(route.fallback) or "(nobody)")
        text += f" → {whom}" + (f" in {route.team}" if route.team else "")
    if sla:
        text += f", SLA {sla['policy']} due {sla['due']}"
    if explain:
        for hit in result["hits"]:
            text += f"\n    {hit['kind']:<11} {hit['rule']}: {hit['points']:+g}"
        if not outcome.mql and not outcome.disqualified:
            text += f"\n    not an MQL: {short_of(config, outcome)}"
        if route:
            text += f"\n    route: {route.reason}"
            for skip in route.skipped:
                text += f"\n      skipped {skip.name}: {skip.reason}"
    return text


def short_of(config: Config, result: ScoreResult) -> str:
    """How far a contact that is not disqualified is from being an MQL: ``12.5 points short
    of 60`` and each unmet minimum of ``requires``, on the unrounded figures."""
    ruleset = config.ruleset
    parts: list[str] = []
    if result.score < ruleset.threshold:
        gap = r1(ruleset.threshold - result.score)
        points = f"{gap:g} points" if gap else "less than 0.1 points"
        parts.append(f"{points} short of {ruleset.threshold:g}")
    for name, minimum in ruleset.requires.items():
        value = getattr(result, name)
        if value < minimum:
            parts.append(f"requires {name} >= {minimum:g}, has {r1(value):g}")
    return "; ".join(parts) or "every condition holds"
