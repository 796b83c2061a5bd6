"""``leadwerk score``: JSON Lines in, one result per line out, in input order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

from config.loader import Config
from rules.contact import FieldError
from worker.evaluate import evaluate


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
        result, route, sla, _contact = evaluate(config, item["contact"], events, now, account)
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
) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        result = score_line(config, line, now)
        if as_json:
            result = {"line": number, **result}
            out.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            out.write(_human(number, result, explain) + "\n")


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
