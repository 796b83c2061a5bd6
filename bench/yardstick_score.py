"""The yardstick for ``leadwerk score``: the example rule set hand-written as plain Python.

    python bench/yardstick_score.py FILE --now ISO8601 > results.jsonl

What a developer would write without Leadwerk: the rules of ``config/scoring.yaml``,
``routing.yaml`` and ``sla.yaml`` as ``if`` statements over the same JSON Lines, with the same
output shape (score, fit, engagement, mql, disqualified, hits, route, sla, ruleset). Simplified
where hand-written code usually is: e-mail checked for an ``@``, no phone normalisation, the
rep drawn from the e-mail's CRC, SLA due times on the wall clock instead of business hours.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

FREE_MAIL = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "web.de",
        "gmx.de",
        "gmx.net",
        "t-online.de",
        "yahoo.com",
        "outlook.com",
        "hotmail.com",
    ]
)
COMPETITORS = frozenset({"rival-gmbh.de"})
DACH = frozenset({"DE", "AT", "CH"})
COUNTRY_NAMES = {"deutschland": "DE", "germany": "DE", "österreich": "AT", "schweiz": "CH"}
DECISION_MAKER = re.compile(r"(?i)head|director|vp|chief|leiter|geschäftsführer")
STUDENT = re.compile(r"(?i)student|praktikant|werkstudent")
HALF_LIFE = 30 * 86400.0
ENTERPRISE = ["jonas", "lea"]
INSIDE = ["mehmet", "mehmet", "sophie", "tom"]  # mehmet has weight 2
RULESET = {"version": "3", "hash": "handwritten"}


def number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(str(value).replace(".", "").replace(",", "."))
    except ValueError:
        return None


def when(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def score(contact: dict[str, Any], events: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    email = str(contact.get("email") or "").strip()
    if "@" not in email:
        return {"error": "email: not a valid e-mail address", "field": "email"}
    domain = email.rpartition("@")[2].lower()
    size = number(contact.get("company_size"))
    title = contact.get("title") or ""
    country = str(contact.get("country") or "").strip()
    country = country.upper() if len(country) == 2 else COUNTRY_NAMES.get(country.lower(), country)
    hits: list[dict[str, Any]] = []

    fit = 0.0
    if size is not None and size >= 200:
        fit += 20
        hits.append({"rule": "large company", "kind": "fit", "points": 20.0})
    if DECISION_MAKER.search(title):
        fit += 15
        hits.append({"rule": "decision maker", "kind": "fit", "points": 15.0})
    if country in DACH:
        fit += 10
        hits.append({"rule": "DACH", "kind": "fit", "points": 10.0})
    if domain in FREE_MAIL:
        fit -= 30
        hits.append({"rule": "free-mail address", "kind": "fit", "points": -30.0})

    demo = ebook = hot = 0.0
    n_demo = n_ebook = n_hot = 0
    for event in events:
        at = when(event.get("at"))
        weight = 1.0 if at is None else 0.5 ** (max((now - at).total_seconds(), 0) / HALF_LIFE)
        kind = event.get("type")
        if kind == "form" and event.get("form") == "demo-request":
            demo += 50 * weight
            n_demo += 1
        elif kind == "ebook":
            ebook += 10 * weight
            n_ebook += 1
        elif kind == "tradefair" and event.get("rating") == "hot":
            hot += 40 * weight
            n_hot += 1
    ebook = min(ebook, 30.0)
    for name, points, count in (
        ("demo request", demo, n_demo),
        ("e-book download", ebook, n_ebook),
        ("hot at the fair", hot, n_hot),
    ):
        if count:
            hits.append(
                {"rule": name, "kind": "engagement", "points": round(points, 1), "events": count}
            )
    engagement = demo + ebook + hot

    disqualified = None
    if domain in COMPETITORS:
        disqualified = "competitor"
    elif STUDENT.search(title):
        disqualified = "student"
    if disqualified:
        hits.append({"rule": disqualified, "kind": "disqualify", "points": 0.0})

    total = fit + engagement
    mql = disqualified is None and total >= 60 and fit >= 15
    route = sla = None
    if mql:
        seed = zlib.crc32(email.encode())
        if country in DACH and size is not None and size >= 1000:
            rule, team, rep = "enterprise DACH", "enterprise-dach", ENTERPRISE[seed % 2]
        else:
            rule, team, rep = "everyone else", "inside-sales", INSIDE[seed % 4]
        route = {"rule": rule, "team": team, "rep": rep, "reason": f"rule '{rule}'", "skipped": []}
        last = events[-1] if events else {}
        hot_policy = total >= 90 or last.get("form") == "demo-request"
        due = now + (timedelta(minutes=5) if hot_policy else timedelta(hours=4))
        sla = {"policy": "hot" if hot_policy else "standard", "due": due.isoformat()}
    return {
        "score": round(total, 1) + 0.0,
        "fit": round(fit, 1) + 0.0,
        "engagement": round(engagement, 1) + 0.0,
        "mql": mql,
        "disqualified": disqualified,
        "hits": hits,
        "route": route,
        "sla": sla,
        "ruleset": RULESET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--now", required=True)
    args = parser.parse_args()
    now = when(args.now)
    assert now is not None
    out = sys.stdout
    with open(args.file, encoding="utf-8") as lines:
        for number_, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                result = score(item["contact"], item.get("events") or [], now)
            except (ValueError, KeyError, TypeError) as exc:
                result = {"error": str(exc)}
            result = {"line": number_, **result}
            out.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
