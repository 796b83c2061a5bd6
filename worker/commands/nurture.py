"""``leadwerk nurture plan``: what nurture would do with each given contact, touching nothing.

Input is JSON Lines as ``leadwerk score`` takes them, plus ``"active": [{"sequence": ...,
"channel": ...}]`` for the enrolments a contact already has; the output is one JSON object a
line, in input order: ``sequence``, ``channel``, ``refused`` and the dated ``steps``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from config.loader import Config
from rules.contact import FieldError, coerce_bool, normalise_contact
from rules.nurture import Active, NurtureRules, plan_contact
from rules.scoring import contact_view, score_view
from worker.pipeline.nurture import NURTURE_FLAGS, nurture_rules

__all__ = ["describe", "nurture_rules", "plan_line"]


def plan_line(config: Config, rules: NurtureRules, line: str, now: datetime) -> dict[str, Any]:
    """One input line's plan; a line that cannot be read yields ``error``."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc.msg} at column {exc.colno}"}
    if not isinstance(item, dict) or not isinstance(item.get("contact"), dict):
        return {"error": 'expected an object like {"contact": {...}, "events": [...]}'}
    events = item.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return {"error": "events must be a list of objects"}
    try:
        active = _active(item.get("active") or [])
        view = _view(config, item["contact"], events, now)
    except (FieldError, ValueError) as exc:
        return {"error": str(exc)}
    return plan_contact(rules, view, events, active, now).as_dict()


def describe(plan: Mapping[str, Any]) -> str:
    """A plan as a line or a few for a person."""
    if "error" in plan:
        return f"refused line: {plan['error']}"
    if plan["sequence"] is None:
        return "no sequence matches"
    head = f"{plan['sequence']} ({plan['channel']})"
    if plan["refused"]:
        return f"{head}: refused, {plan['refused']}"
    steps = [f"  {s['n']}. {s['at']}  {s.get('template') or s.get('task')}" for s in plan["steps"]]
    return "\n".join([f"{head}, times in {plan['timezone']}:", *steps])


def _active(items: Any) -> list[Active]:
    if not isinstance(items, list) or not all(
        isinstance(a, dict) and isinstance(a.get("sequence"), str) for a in items
    ):
        raise ValueError('active must be a list like [{"sequence": "...", "channel": "email"}]')
    return [Active(a["sequence"], str(a.get("channel") or "")) for a in items]


def _view(
    config: Config, raw: Mapping[str, Any], events: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """The contact as nurture's expressions read it: scored, with its nurture flags."""
    contact = normalise_contact(raw, config.custom_fields)
    view = contact_view(contact)
    result, _ = score_view(config.ruleset, view, events, now)
    view.update(score=result.score, fit=result.fit, engagement=result.engagement, mql=result.mql)
    for flag in NURTURE_FLAGS:
        view[flag] = bool(coerce_bool(flag, raw.get(flag)))
    return view
