"""The yardstick for ``leadwerk score``: a rule set hand-written as plain Python.

    python bench/yardstick_score.py FILE --now ISO8601 [--rules broad|outside|example] > out

What a developer would write without Leadwerk: the rules of ``bench/score_rules/scoring.yaml``
(``--rules broad``, the default), of ``bench/score_rules_outside/scoring.yaml`` (``--rules
outside``) or of ``config/scoring.yaml`` (``--rules example``), with
``routing.yaml`` and ``sla.yaml``, as ``if`` statements over the same JSON Lines, with the same
output shape (score, fit, engagement, mql, disqualified, hits, route, sla, ruleset). Simplified
where hand-written code usually is: e-mail checked for an ``@``, no phone normalisation, the
rep drawn from the e-mail's CRC, SLA due times on the wall clock instead of business hours.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

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
    total = fit + engagement
    mql = disqualified is None and total >= 60 and fit >= 15
    routed = route_and_sla(email, country, size, total, events, now) if mql else (None, None)
    return outcome(fit, engagement, hits, disqualified, mql, routed, RULESET)


# The broad rule set (bench/score_rules/scoring.yaml).
BROAD_FREE_MAIL = FREE_MAIL | {"freenet.de", "posteo.de"}
BROAD_COMPETITORS = frozenset({"rival-gmbh.de", "konkurrenz.de", "other-leads.com"})
TARGET_INDUSTRIES = frozenset(
    ["Maschinenbau", "Automotive", "Chemie", "Elektrotechnik", "Logistik", "Medizintechnik"]
)
SENIOR = re.compile(
    r"(?i)head|director|vp|vice president|chief|cto|ceo|cio|leiter|leitung|geschäftsführ"
    r"|inhaber|owner|prokurist"
)
TECHNICAL = re.compile(r"(?i)engineer|ingenieur|konstruk|techni|entwickl|developer")
BROAD_STUDENT = re.compile(r"(?i)student|praktikant|werkstudent|azubi|trainee|auszubildend")
DACH_DOMAIN = re.compile(r"\.(de|at|ch)$")
AGENCY = re.compile(r"(^|\.)(agentur|marketing-agency)\.")
PRICING = re.compile(r"/(preise|pricing)")
BROAD_HALF_LIFE = 45 * 86400.0
YES = frozenset({"true", "yes", "ja", "y", "j", "1", "x"})
# (name, points, cap) of each engagement rule, in the rule set's order.
BROAD_ENGAGEMENT = [
    ("demo request", 50.0, None),
    ("newsletter form", 5.0, 10.0),
    ("pricing page", 8.0, 24.0),
    ("web visit", 1.0, 10.0),
    ("webinar attended", 15.0, 30.0),
    ("e-book download", 10.0, 30.0),
    ("e-mail click", 3.0, 15.0),
    ("hot at the fair", 40.0, None),
    ("warm at the fair", 15.0, None),
]
BROAD_RULESET = {"version": "bench-broad-1", "hash": "handwritten"}


def text(value: Any) -> str | None:
    """Trimmed text; empty counts as missing."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def yes(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    value = str(value).strip().lower()
    return None if not value else value in YES


def score_broad(
    contact: dict[str, Any], events: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    email = str(contact.get("email") or "").strip().lower()
    if "@" not in email:
        return {"error": "email: not a valid e-mail address", "field": "email"}
    domain = email.rpartition("@")[2]
    size = number(contact.get("company_size"))
    budget = number(contact.get("budget"))
    title = text(contact.get("title"))
    country = text(contact.get("country")) or ""
    country = country.upper() if len(country) == 2 else COUNTRY_NAMES.get(country.lower(), country)
    segment = text(contact.get("segment"))
    hits: list[dict[str, Any]] = []

    fit = 0.0

    def add(name: str, points: float) -> None:
        nonlocal fit
        fit += points
        hits.append({"rule": name, "kind": "fit", "points": points})

    if title and SENIOR.search(title):
        add("senior title", 20.0)
    if title and TECHNICAL.search(title):
        add("technical title", 5.0)
    if size is not None and size >= 1000:
        add("enterprise", 20.0)
    if size is not None and 100 <= size < 1000:
        add("mid-sized", 10.0)
    if country in DACH:
        add("DACH", 10.0)
    if text(contact.get("industry")) in TARGET_INDUSTRIES:
        add("target industry", 10.0)
    if budget is not None and budget >= 25000:
        add("budget confirmed", 15.0)
    if segment in ("enterprise", "key account"):
        add("enterprise segment", 5.0)
    if yes(contact.get("newsletter")):
        add("newsletter subscriber", 5.0)
    free_mail = domain in BROAD_FREE_MAIL
    if DACH_DOMAIN.search(domain) and not free_mail:
        add("company domain in DACH", 5.0)
    if title is None:
        add("no title", -10.0)
    if size is None and budget is None:
        add("size unknown", -5.0)
    if free_mail:
        add("free-mail address", -25.0)

    totals = [0.0] * len(BROAD_ENGAGEMENT)
    counts = [0] * len(BROAD_ENGAGEMENT)
    for event in events:
        kind = event.get("type")
        matched = []
        if kind == "form":
            form = event.get("form")
            if form in ("demo-request", "contact-sales"):
                matched.append(0)
            elif form == "newsletter":
                matched.append(1)
        elif kind == "web":
            url = event.get("url")
            if isinstance(url, str) and PRICING.search(url):
                matched.append(2)
            matched.append(3)
        elif kind == "webinar":
            if event.get("campaign") is not None:
                matched.append(4)
        elif kind == "ebook":
            matched.append(5)
        elif kind == "email":
            matched.append(6)
        elif kind == "tradefair":
            rating = event.get("rating")
            if rating == "hot":
                matched.append(7)
            elif rating == "warm":
                matched.append(8)
        if not matched:
            continue
        at = when(event.get("at"))
        weight = (
            1.0 if at is None else 0.5 ** (max((now - at).total_seconds(), 0.0) / BROAD_HALF_LIFE)
        )
        for index in matched:
            totals[index] += BROAD_ENGAGEMENT[index][1] * weight
            counts[index] += 1
    engagement = capped_engagement(BROAD_ENGAGEMENT, totals, counts, hits)

    disqualified = None
    if domain in BROAD_COMPETITORS:
        disqualified = "competitor"
    elif title and BROAD_STUDENT.search(title):
        disqualified = "student"
    elif yes(contact.get("partner")):
        disqualified = "partner"
    elif AGENCY.search(domain):
        disqualified = "agency"
    total_score = fit + engagement
    mql = disqualified is None and total_score >= 65 and fit >= 10
    routed = route_and_sla(email, country, size, total_score, events, now) if mql else (None, None)
    return outcome(fit, engagement, hits, disqualified, mql, routed, BROAD_RULESET)


# The outside rule set (bench/score_rules_outside/scoring.yaml); its lists are read from that
# file, as a developer would keep them where marketing edits them.
OUTSIDE_RULES = Path(__file__).resolve().parent / "score_rules_outside" / "scoring.yaml"
C_LEVEL = re.compile(r"(?i)\b(ceo|cfo|cto|cio|cmo|coo|cro|cso)\b|chief|founder|owner|president")
VP_DIRECTOR = re.compile(r"(?i)\bvp\b|svp|evp|vice president|director|head of")
MANAGER = re.compile(r"(?i)manager|\blead\b|principal|supervisor")
REVENUE_TEAM = re.compile(
    r"(?i)marketing|revenue|growth|demand gen|sales op|revops|crm|salesforce|hubspot"
)
OUTSIDE_STUDENT = re.compile(
    r"(?i)student|intern\b|internship|trainee|phd candidate|graduate assistant"
)
ACADEMIC = re.compile(r"\.edu$|\.ac\.[a-z]{2}$")
ROLE_ADDRESS = re.compile(r"^(info|sales|admin|noreply|no-reply|test)@")
PRICING_PAGE = re.compile(r"(?i)/(pricing|plans|quote)")
DOCS_PAGE = re.compile(r"(?i)/docs/|/api/|/integrations")
CONTENT = re.compile(r"(?i)whitepaper|e-?book|report|guide|case.study")
DEMO_FORMS = frozenset({"demo", "free-trial", "contact-sales", "talk-to-sales"})
OUTSIDE_HALF_LIFE = 45 * 86400.0
OUTSIDE_COUNTRY_NAMES = {
    **COUNTRY_NAMES,
    "usa": "US",
    "united states": "US",
    "united kingdom": "GB",
}
NO = frozenset({"false", "no", "nein", "n", "0"})
NUMBER_JUNK = re.compile(r"[\s\u00a0'’]")
THOUSANDS_DOT = re.compile(r"-?\d{1,3}(\.\d{3})+")
THOUSANDS_COMMA = re.compile(r"-?\d{1,3}(,\d{3})+")
GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
# (name, points, cap) of each engagement rule, in the rule set's order.
OUTSIDE_ENGAGEMENT = [
    ("demo or trial request", 40.0, None),
    ("meeting booked", 30.0, None),
    ("pricing page", 6.0, 18.0),
    ("docs reader", 2.0, 8.0),
    ("page view", 1.0, 6.0),
    ("e-mail click", 4.0, 16.0),
    ("e-mail open", 1.0, 5.0),
    ("webinar attended", 12.0, 24.0),
    ("webinar registered", 3.0, 6.0),
    ("content download", 8.0, 24.0),
    ("intent signal", 5.0, 10.0),
    ("unsubscribed", -15.0, None),
]
OUTSIDE_RULESET = {"version": "outside-1", "hash": "handwritten"}


class OutsideLists:
    """The named lists of the outside rule set, loaded once."""

    def __init__(self) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with OUTSIDE_RULES.open(encoding="utf-8") as file:
            lists = yaml.load(file, Loader=loader)["lists"]
        self.targets = frozenset(lists["target_accounts"])
        self.personal = frozenset(lists["personal_email"])
        self.competitors = frozenset(lists["competitors"])
        self.icp = frozenset(lists["icp_industries"])
        self.low_fit = frozenset(lists["low_fit_industries"])
        self.paid = frozenset(lists["paid_sources"])
        self.countries = frozenset(lists["target_countries"])
        self.intent = frozenset(lists["intent_sources"])


def amount(value: Any) -> float | None:
    """A number as CRM exports write it: ``12,500,000``, ``2.500.000``, ``1,5``, ``5000+``.
    Raises ValueError for text that is no number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return value
    value = NUMBER_JUNK.sub("", str(value)).rstrip("+")
    if not value:
        return None
    if THOUSANDS_DOT.fullmatch(value):
        value = value.replace(".", "")
    elif THOUSANDS_COMMA.fullmatch(value):
        value = value.replace(",", "")
    else:
        value = value.replace(",", ".")
    return float(value)


def flag(value: Any) -> bool | None:
    """A yes/no field; raises ValueError for anything else."""
    if value is None or isinstance(value, bool):
        return value
    value = str(value).strip().lower()
    if not value:
        return None
    if value in YES:
        return True
    if value in NO:
        return False
    raise ValueError(f"expected yes/no, got {value!r}")


def tag_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def day(value: Any) -> datetime | None:
    """ISO 8601 or ``31.10.2026``; naive means UTC."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    try:
        return when(value)
    except ValueError:
        found = GERMAN_DATE.fullmatch(value)
        if not found:
            raise
        return datetime(int(found[3]), int(found[2]), int(found[1]), tzinfo=UTC)


def score_outside(
    contact: dict[str, Any], events: list[dict[str, Any]], now: datetime, lists: OutsideLists
) -> dict[str, Any]:
    email = str(contact.get("email") or "").strip().lower()
    if "@" not in email:
        return {"error": "email: not a valid e-mail address", "field": "email"}
    domain = email.rpartition("@")[2]
    revenue = amount(contact.get("annual_revenue"))
    employees = amount(contact.get("employees"))
    title = text(contact.get("job_title"))
    industry = text(contact.get("industry"))
    source = text(contact.get("lead_source"))
    country = text(contact.get("country")) or ""
    if len(country) == 2 and country.isalpha():
        country = country.upper()
    else:
        country = OUTSIDE_COUNTRY_NAMES.get(country.lower(), country)
    customer = flag(contact.get("is_customer"))
    created = day(contact.get("created_at"))
    hits: list[dict[str, Any]] = []

    fit = 0.0

    def add(name: str, points: float) -> None:
        nonlocal fit
        fit += points
        hits.append({"rule": name, "kind": "fit", "points": points})

    if title:
        if C_LEVEL.search(title):
            add("c-level", 25.0)
        if VP_DIRECTOR.search(title):
            add("vp or director", 18.0)
        if MANAGER.search(title):
            add("manager", 8.0)
        if REVENUE_TEAM.search(title):
            add("revenue team", 7.0)
    if industry in lists.icp:
        add("ideal industry", 12.0)
    if industry in lists.low_fit:
        add("poor-fit industry", -15.0)
    if revenue is not None and revenue >= 10_000_000:
        add("revenue over 10M", 15.0)
    if revenue is not None and 1_000_000 <= revenue < 10_000_000:
        add("revenue 1M to 10M", 8.0)
    if employees is not None and employees >= 200:
        add("200+ employees", 10.0)
    if employees is not None and employees < 10:
        add("under 10 employees", -10.0)
    if revenue is None and employees is None:
        add("size unknown", -5.0)
    if title is None:
        add("no job title", -8.0)
    if domain in lists.targets:
        add("target account", 20.0)
    if source in lists.paid:
        add("paid source", 5.0)
    if source in ("Referral", "Partner Referral"):
        add("referral", 10.0)
    personal = domain in lists.personal
    if country in lists.countries and not personal:
        add("target country", 5.0)
    if personal:
        add("personal e-mail", -20.0)
    if created is not None and (now - created).total_seconds() / 86400.0 <= 30:
        add("signed up recently", 5.0)
    if "hot-account" in tag_list(contact.get("tags")):
        add("flagged hot", 5.0)

    totals = [0.0] * len(OUTSIDE_ENGAGEMENT)
    counts = [0] * len(OUTSIDE_ENGAGEMENT)
    for event in events:
        kind = event.get("type")
        matched = []
        if kind == "form_submit":
            if event.get("form") in DEMO_FORMS:
                matched.append(0)
        elif kind == "meeting":
            matched.append(1)
        elif kind == "page_view":
            url = event.get("url")
            if isinstance(url, str):
                if PRICING_PAGE.search(url):
                    matched.append(2)
                if DOCS_PAGE.search(url):
                    matched.append(3)
            matched.append(4)
        elif kind == "email_click":
            matched.append(5)
        elif kind == "email_open":
            matched.append(6)
        elif kind == "webinar":
            rating = event.get("rating")
            if rating == "attended":
                matched.append(7)
            elif rating is None:
                matched.append(8)
        elif kind == "content":
            asset = event.get("asset")
            if isinstance(asset, str) and CONTENT.search(asset):
                matched.append(9)
        elif kind == "unsubscribe":
            matched.append(11)
        if event.get("source") in lists.intent:
            matched.append(10)
        if not matched:
            continue
        at = when(event.get("at"))
        weight = (
            1.0 if at is None else 0.5 ** (max((now - at).total_seconds(), 0.0) / OUTSIDE_HALF_LIFE)
        )
        for index in matched:
            totals[index] += OUTSIDE_ENGAGEMENT[index][1] * weight
            counts[index] += 1
    engagement = capped_engagement(OUTSIDE_ENGAGEMENT, totals, counts, hits)

    disqualified = None
    if domain in lists.competitors:
        disqualified = "competitor"
    elif (title and OUTSIDE_STUDENT.search(title)) or ACADEMIC.search(domain):
        disqualified = "student"
    elif customer:
        disqualified = "existing customer"
    elif ROLE_ADDRESS.search(email):
        disqualified = "role address"
    elif source == "Purchased List":
        disqualified = "purchased list"
    total_score = fit + engagement
    mql = disqualified is None and total_score >= 70 and fit >= 20 and engagement >= 10
    routed = route_and_sla(email, country, None, total_score, events, now) if mql else (None, None)
    return outcome(fit, engagement, hits, disqualified, mql, routed, OUTSIDE_RULESET)


def capped_engagement(
    table: list[tuple[str, float, float | None]],
    totals: list[float],
    counts: list[int],
    hits: list[dict[str, Any]],
) -> float:
    """The engagement rules' decayed totals, each capped, added up; a hit for each that
    matched an event."""
    engagement = 0.0
    for (name, _points, cap), total, count in zip(table, totals, counts, strict=True):
        if count:
            if cap is not None:
                total = min(cap, total)
            engagement += total
            hits.append(
                {"rule": name, "kind": "engagement", "points": round(total, 1), "events": count}
            )
    return engagement


def outcome(
    fit: float,
    engagement: float,
    hits: list[dict[str, Any]],
    disqualified: str | None,
    mql: bool,
    routed: tuple[Any, Any],
    ruleset: str,
) -> dict[str, Any]:
    """One output line, as `leadwerk score --json` writes it."""
    if disqualified:
        hits.append({"rule": disqualified, "kind": "disqualify", "points": 0.0})
    route, sla = routed
    return {
        "score": round(fit + engagement, 1) + 0.0,
        "fit": round(fit, 1) + 0.0,
        "engagement": round(engagement, 1) + 0.0,
        "mql": mql,
        "disqualified": disqualified,
        "hits": hits,
        "route": route,
        "sla": sla,
        "ruleset": ruleset,
    }


def route_and_sla(
    email: str,
    country: str,
    size: float | None,
    total: float,
    events: list[dict[str, Any]],
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """config/routing.yaml and sla.yaml, simplified (see the module's docstring)."""
    seed = zlib.crc32(email.encode())
    if country in DACH and size is not None and size >= 1000:
        rule, team, rep = "enterprise DACH", "enterprise-dach", ENTERPRISE[seed % 2]
    else:
        rule, team, rep = "everyone else", "inside-sales", INSIDE[seed % 4]
    route = {"rule": rule, "team": team, "rep": rep, "reason": f"rule '{rule}'", "skipped": []}
    last = events[-1] if events else {}
    hot_policy = total >= 90 or last.get("form") == "demo-request"
    due = now + (timedelta(minutes=5) if hot_policy else timedelta(hours=4))
    return route, {"policy": "hot" if hot_policy else "standard", "due": due.isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--now", required=True)
    parser.add_argument("--rules", choices=["broad", "outside", "example"], default="broad")
    args = parser.parse_args()
    rules = score_broad if args.rules == "broad" else score
    if args.rules == "outside":
        rules = functools.partial(score_outside, lists=OutsideLists())
    now = when(args.now)
    assert now is not None
    out = sys.stdout
    with open(args.file, encoding="utf-8") as lines:
        for number_, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                result = rules(item["contact"], item.get("events") or [], now)
            except (ValueError, KeyError, TypeError) as exc:
                result = {"error": str(exc)}
            result = {"line": number_, **result}
            out.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
