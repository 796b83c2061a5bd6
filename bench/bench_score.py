"""Benchmark: ``leadwerk score --json`` over 100k contacts, against a hand-written yardstick.

    python bench/bench_score.py [--rules broad|outside|example] [--repeat N] [--contacts 100000]
                                [--seed 2026] [--keep DIR]

``--rules broad`` (the default) scores with ``bench/score_rules/``: a rule set as marketing ops
write it (case-insensitive title alternations, lists, custom number/string/bool fields from
fields.yaml, a domain pattern, ``is none`` checks, capped engagement with a 45-day half-life,
disqualify rules) over a CRM export of 1–8 events of varied types per contact over a year,
with missing fields and values typed as people type them. ``--rules outside`` scores with
``bench/score_rules_outside/``, a rule set deliberately shaped unlike that one: other custom
fields (``annual_revenue``, ``employees``, ``job_title``, ``lead_source``, a bool and a list),
lists of hundreds of domains and industries, ``days_since``, a minimum of engagement, over an
English-language SaaS export of 1–12 events of a dozen types, with extra unknown fields.
``--rules example`` scores with ``config/`` over the earlier, simpler export. Every 1000th
line cannot be scored (and a few more in the outside export: revenue written as ``n/a``).

Times whole processes over the same file with the same ``--now``, each a fresh child so that
its peak RSS is its own, ``--repeat`` times interleaved (medians reported):

* ``leadwerk``: ``python -m worker --config CONFIG score FILE --json``, in one process and
  again with ``--jobs`` one per CPU (peak RSS: its largest process);
* ``yardstick``: ``bench/yardstick_score.py``, the same rules written as plain Python.

Prints one JSON object: contacts/s, wall and CPU seconds and peak RSS (MiB) for each, the
ratios of wall times to the yardstick's (the target is at most 2.0; on a busy machine the CPU
ratio is the steadier figure) and how often Leadwerk and the yardstick agree on score, fit,
engagement, MQL, disqualification and hits; exits non-zero unless they agree on every line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FIRST = ["Jörg", "Eva", "Lukas", "Marie", "Özlem", "Anna", "Tom", "Sophie", "Mehmet", "Lea"]
LAST = ["Müller", "Schäfer", "Weiß", "Groß", "Köhler", "Schmidt", "Gruber", "Öztürk", "Meyer"]
COMPANY = ["Maschinenbau", "Stahlwerk", "Kälte", "Präzision", "Fördertechnik", "Antriebe"]
DOMAINS = ["bigcorp.de", "mb-nord.de", "alpenwerk.at", "helvetic-tools.ch", "kleinteil.de"]
FREE = ["gmail.com", "gmx.de", "web.de", "outlook.com"]
TITLE = [
    "Geschäftsführer",
    "Head of IT",
    "Einkaufsleiter",
    "Engineer",
    "Werkstudent",
    "CTO",
    "VP Sales",
    "Buyer",
    "",
]
COUNTRY = ["DE", "DE", "DE", "AT", "CH", "NL", "FR", "US", "de", "Deutschland"]
PHONE = {"DE": "0511 {n}", "AT": "+43 1 {n}", "CH": "044 {n}", "NL": "+31 20 {n}"}
SIZE: list[Any] = [40, 120, 250, 800, 1200, 5000, "5.000", "250", None]
SPELLED_OUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
EVENTS = [
    {"type": "form", "form": "demo-request"},
    {"type": "form", "form": "contact"},
    {"type": "ebook", "asset": "guide-a"},
    {"type": "ebook", "asset": "guide-b"},
    {"type": "tradefair", "rating": "hot", "fair": "Hannover Messe 2026"},
    {"type": "tradefair", "rating": "warm", "fair": "Hannover Messe 2026"},
    {"type": "webinar", "campaign": "q4"},
]


def generate(path: Path, contacts: int, seed: int = 2026) -> int:
    """Write the JSON Lines; every 1000th line cannot be scored. Returns the event count."""
    rng = random.Random(seed)
    events_total = 0
    with path.open("w", encoding="utf-8") as out:
        for i in range(contacts):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            roll = rng.random()
            domain = (
                "rival-gmbh.de"
                if roll < 0.01
                else rng.choice(FREE)
                if roll < 0.15
                else f"{i % 9000}.{rng.choice(DOMAINS)}"
            )
            # Addresses spell umlauts out, as German mail providers require; a few do not.
            local = first.lower() if i % 500 == 0 else first.lower().translate(SPELLED_OUT)
            email = f"{local}.{i}@{domain}"
            if i % 1000 == 999:
                email = f"{first.lower()}.{i}-at-{domain}"
            country = rng.choice(COUNTRY)
            contact: dict[str, Any] = {
                "email": email,
                "first_name": first,
                "last_name": last,
                "company": f"{rng.choice(COMPANY)} {last} GmbH",
                "title": rng.choice(TITLE),
                "country": country,
            }
            size = rng.choice(SIZE)
            if size is not None:
                contact["company_size"] = size
            template = PHONE.get(country.upper()[:2])
            if template and rng.random() < 0.6:
                contact["phone"] = template.format(n=rng.randint(100000, 9999999))
            events = []
            for _ in range(rng.randint(1, 8)):
                at = NOW - timedelta(seconds=rng.randint(0, 120 * 86400))
                events.append({**rng.choice(EVENTS), "at": at.isoformat()})
            events.sort(key=lambda e: e["at"])
            events_total += len(events)
            out.write(json.dumps({"contact": contact, "events": events}, ensure_ascii=False))
            out.write("\n")
    return events_total


# The broad rule set's data (bench/score_rules): what a CRM export holds after a year of
# campaigns. Titles as people write them, in German and English, some in capitals.
BROAD_TITLE = [
    "Geschäftsführer",
    "GESCHÄFTSFÜHRERIN",
    "Head of IT",
    "Leiter Einkauf",
    "Leitung Konstruktion",
    "Einkaufsleiter",
    "VP Engineering",
    "Chief Digital Officer",
    "CTO",
    "Inhaber",
    "Prokurist",
    "Entwicklungsingenieur",
    "Software Developer",
    "Techniker",
    "Sachbearbeiter Einkauf",
    "Buyer",
    "Assistenz der Geschäftsleitung",
    "Werkstudent Marketing",
    "Praktikantin",
    "Auszubildender Industriekaufmann",
    "Marketing Manager",
    "",
]
BROAD_DOMAINS = [*DOMAINS, "fertigung-sued.de", "werkzeug.at", "logistik-ost.com", "kunde.nl"]
BROAD_FREE = [*FREE, "t-online.de", "freenet.de", "posteo.de", "yahoo.com"]
RIVALS = ["rival-gmbh.de", "konkurrenz.de", "other-leads.com"]
AGENCIES = ["agentur.de", "kreativ.agentur.de", "marketing-agency.com"]
INDUSTRY: list[Any] = [
    "Maschinenbau",
    "Automotive",
    "Chemie",
    "Elektrotechnik",
    "Logistik",
    "Medizintechnik",
    "Handel",
    "Bau",
    "maschinenbau",
    None,
]
BUDGET: list[Any] = [5000, 20000, 25000, 80000, "50.000", "12.500", "", None, None]
SEGMENT: list[Any] = ["enterprise", "key account", "mid-market", "smb", None, None]
NEWSLETTER: list[Any] = [True, False, "ja", "nein", "yes", None, None]
BROAD_EVENTS = [
    {"type": "form", "form": "demo-request"},
    {"type": "form", "form": "contact-sales"},
    {"type": "form", "form": "newsletter"},
    {"type": "form", "form": "contact"},
    {"type": "web", "url": "https://leadwerk.example/preise"},
    {"type": "web", "url": "https://leadwerk.example/en/pricing?plan=pro"},
    {"type": "web", "url": "https://leadwerk.example/blog/messe-2026"},
    {"type": "web", "url": "https://leadwerk.example/"},
    {"type": "webinar", "campaign": "q4-webinar"},
    {"type": "webinar"},
    {"type": "ebook", "asset": "guide-a"},
    {"type": "ebook", "asset": "whitepaper-industrie-4"},
    {"type": "email", "campaign": "newsletter-11"},
    {"type": "email", "campaign": "nurture-3"},
    {"type": "tradefair", "rating": "hot", "fair": "Hannover Messe 2026"},
    {"type": "tradefair", "rating": "warm", "fair": "Hannover Messe 2026"},
    {"type": "tradefair", "rating": "cold", "fair": "EMO 2026"},
]


def generate_broad(path: Path, contacts: int, seed: int = 2026) -> int:
    """The broad rule set's JSON Lines: 1–8 events of varied types over a year (a few without
    a time), missing fields, custom fields as people type them, free-mail, competitor and
    agency addresses; every 1000th line cannot be scored. Returns the event count."""
    rng = random.Random(seed)
    events_total = 0
    with path.open("w", encoding="utf-8") as out:
        for i in range(contacts):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            roll = rng.random()
            if roll < 0.02:
                domain = rng.choice(RIVALS)
            elif roll < 0.04:
                domain = rng.choice(AGENCIES)
            elif roll < 0.22:
                domain = rng.choice(BROAD_FREE)
            else:
                domain = f"firma{i % 12000}.{rng.choice(BROAD_DOMAINS)}"
            local = first.lower() if i % 500 == 0 else first.lower().translate(SPELLED_OUT)
            email = f"{local}.{last.lower().translate(SPELLED_OUT)}{i}@{domain}"
            if i % 1000 == 999:
                email = f"{local}.{i}-at-{domain}"
            contact: dict[str, Any] = {"email": email, "first_name": first, "last_name": last}
            if rng.random() < 0.9:
                contact["company"] = f"{rng.choice(COMPANY)} {last} GmbH"
            title = rng.choice(BROAD_TITLE)
            if title or rng.random() < 0.5:  # an empty title is sent as "" or left out
                contact["title"] = title
            country = rng.choice(COUNTRY)
            if rng.random() < 0.95:
                contact["country"] = country
            for key, values in (
                ("company_size", SIZE),
                ("industry", INDUSTRY),
                ("budget", BUDGET),
                ("segment", SEGMENT),
                ("newsletter", NEWSLETTER),
            ):
                value = rng.choice(values)
                if value is not None:
                    contact[key] = value
            if rng.random() < 0.01:
                contact["partner"] = True
            template = PHONE.get(country.upper()[:2])
            if template and rng.random() < 0.6:
                contact["phone"] = template.format(n=rng.randint(100000, 9999999))
            events = []
            for _ in range(rng.randint(1, 8)):
                event: dict[str, Any] = dict(rng.choice(BROAD_EVENTS))
                if rng.random() < 0.98:
                    at = NOW - timedelta(seconds=rng.randint(0, 365 * 86400))
                    event["at"] = at.isoformat()
                events.append(event)
            events.sort(key=lambda e: e.get("at", ""))
            events_total += len(events)
            out.write(json.dumps({"contact": contact, "events": events}, ensure_ascii=False))
            out.write("\n")
    return events_total


# The outside rule set's data (bench/score_rules_outside): an English-language SaaS CRM export
# with its own field names, extra fields no rule reads, and values as several tools write them.
OUTSIDE_RULES = ROOT / "bench" / "score_rules_outside"
OUTSIDE_FIRST = ["James", "Mary", "Priya", "Chen", "Olivia", "Mohammed", "Sofia", "Liam", "Aisha"]
OUTSIDE_LAST = ["Smith", "Johnson", "Patel", "Nguyen", "García", "O'Brien", "Kowalski", "Kim"]
UNACCENTED = str.maketrans({"í": "i"})
JOB_TITLES = [
    "CEO",
    "Co-Founder & CEO",
    "Chief Revenue Officer",
    "cfo",
    "Founder",
    "President",
    "Vice President of Sales",
    "VP Marketing",
    "SVP, Revenue Operations",
    "Director of Demand Gen",
    "director, it",
    "Head of Growth",
    "HEAD OF SALES OPERATIONS",
    "Marketing Manager",
    "Senior Product Manager",
    "Team Lead, Customer Success",
    "Principal Engineer",
    "Salesforce Administrator",
    "HubSpot Specialist",
    "Software Engineer",
    "Data Analyst",
    "Account Executive",
    "Internal Communications Specialist",
    "International Sales Director",
    "Office Manager",
    "Marketing Intern",
    "Summer Internship",
    "Graduate Student",
    "PhD Candidate",
    "Trainee Developer",
    "Owner",
    "Directeur Général",
    "  sales ops lead  ",
    "Consultant",
    "",
]
OTHER_INDUSTRIES = ["Software", "software", "IT", "Tech", "Healthcare", "Finance", "Other Services"]
REVENUE: list[Any] = [
    250_000,
    900_000,
    1_200_000,
    4_500_000,
    9_999_999.5,
    12_000_000,
    85_000_000,
    "12,500,000",
    "2.500.000",
    "750000",
    " 3 000 000 ",
    "1,5",
    "",
    None,
    None,
    None,
]
EMPLOYEES: list[Any] = [
    3,
    8,
    25,
    120,
    199,
    250,
    1000,
    5000,
    "250",
    "1,000",
    "5000+",
    12.0,
    "",
    None,
    None,
]
LEAD_SOURCE: list[Any] = [
    "Google Ads",
    "google ads",
    "LinkedIn Ads",
    "Organic Search",
    "Referral",
    "Partner Referral",
    "Webinar",
    "Trade Show",
    "Content Syndication",
    "Direct",
    "Purchased List",
    "",
    None,
]
OUTSIDE_COUNTRY: list[Any] = [
    "US",
    "us",
    "USA",
    "United States",
    " US ",
    "GB",
    "United Kingdom",
    "UK",
    "CA",
    "Canada",
    "DE",
    "Germany",
    "AU",
    "IN",
    "BR",
    "",
    None,
]
# Yes or no as tools write it; one contact in twenty is a customer already.
IS_CUSTOMER: list[Any] = [*[False, "no", "No", 0, None, None] * 6, "yes", True, 1]
TAGS: list[Any] = [["hot-account", "q4"], ["nurture"], "hot-account, webinar", "nurture", [], ""]
UNIVERSITIES = ["stateuniversity.edu", "mit.edu", "cam.ac.uk", "ucl.ac.uk", "unimelb.edu.au"]
OUTSIDE_EVENTS: list[dict[str, Any]] = [
    {"type": "page_view", "url": "https://acme.example/pricing"},
    {"type": "page_view", "url": "https://acme.example/Plans?utm_source=google"},
    {"type": "page_view", "url": "https://acme.example/docs/getting-started"},
    {"type": "page_view", "url": "https://acme.example/integrations/salesforce"},
    {"type": "page_view", "url": "https://acme.example/blog/lead-scoring-101"},
    {"type": "page_view", "url": "https://acme.example/"},
    {"type": "page_view"},
    {"type": "Page_View", "url": "https://acme.example/pricing"},
    {"type": "page_view", "source": "g2", "url": "https://www.g2.com/products/acme/reviews"},
    {"type": "email_open", "campaign": "nurture-1"},
    {"type": "email_open", "campaign": "newsletter-nov"},
    {"type": "email_click", "campaign": "newsletter-nov", "url": "https://acme.example/blog/x"},
    {"type": "form_submit", "form": "demo"},
    {"type": "form_submit", "form": "free-trial"},
    {"type": "form_submit", "form": "newsletter"},
    {"type": "form_submit", "form": "Contact-Sales"},
    {"type": "webinar", "campaign": "webinar-q4", "rating": "attended"},
    {"type": "webinar", "campaign": "webinar-q4", "rating": "no-show"},
    {"type": "webinar", "campaign": "webinar-q3"},
    {"type": "content", "asset": "Whitepaper: Scoring at Scale"},
    {"type": "content", "asset": "ebook-revops"},
    {"type": "content", "asset": "Case Study ACME"},
    {"type": "content", "asset": "product-sheet"},
    {"type": "meeting", "source": "calendly"},
    {"type": "intent", "source": "g2", "topic": "lead scoring"},
    {"type": "intent", "source": "bombora", "score": 71},
    {"type": "chat", "source": "intercom"},
    {"type": "unsubscribe", "campaign": "newsletter-nov"},
    {"source": "hubspot", "note": "no type"},
]
# How often each of OUTSIDE_EVENTS occurs: page views and e-mail opens most of all.
OUTSIDE_EVENT_WEIGHTS = [8, 3, 3, 2, 6, 6, 1, 1, 1, 10, 8, 5, 1, 1, 2, 1, 2, 1, 1, 2, 2, 1, 1]
OUTSIDE_EVENT_WEIGHTS += [1, 1, 1, 1, 1, 1]


def generate_outside(path: Path, contacts: int, seed: int = 2026) -> int:
    """The outside rule set's JSON Lines: 1–12 events of a dozen types (unsorted, a few without
    a time or in the future, times in several spellings), domains from its lists, custom fields
    as tools export them, unknown extra fields; every 1000th line has no valid e-mail and
    revenue written as ``n/a`` makes a few more unscorable. Returns the event count."""
    lists = yaml.safe_load((OUTSIDE_RULES / "scoring.yaml").read_text(encoding="utf-8"))["lists"]
    targets, personal = lists["target_accounts"], lists["personal_email"]
    competitors, icp = lists["competitors"], lists["icp_industries"]
    low = lists["low_fit_industries"]
    rng = random.Random(seed)
    events_total = 0
    with path.open("w", encoding="utf-8") as out:
        for i in range(contacts):
            first, last = rng.choice(OUTSIDE_FIRST), rng.choice(OUTSIDE_LAST)
            roll = rng.random()
            if roll < 0.02:
                domain = rng.choice(competitors)
            elif roll < 0.04:
                domain = rng.choice(UNIVERSITIES)
            elif roll < 0.22:
                domain = "gmail.com" if rng.random() < 0.4 else rng.choice(personal)
            elif roll < 0.37:
                domain = rng.choice(targets)
            else:
                domain = f"company{i % 15000}.{rng.choice(['com', 'io', 'co.uk', 'de', 'net'])}"
            if rng.random() < 0.01:  # a role address, as forms collect them
                local = rng.choice(["info", "sales", "noreply", "test"])
            else:  # accents spelled out, as most mail providers require; a few keep them
                local = f"{first}.{last}{i}".lower().replace("'", "")
                local = local if i % 500 == 0 else local.translate(UNACCENTED)
            email = f"{local}@{domain}"
            if rng.random() < 0.1:  # as some forms keep it: capitals, spaces around
                email = f" {email.title()} " if rng.random() < 0.3 else email.title()
            if i % 1000 == 999:
                email = email.replace("@", " at ")
            contact: dict[str, Any] = {"email": email}
            if rng.random() < 0.9:
                contact["first_name"], contact["last_name"] = first, last
            if rng.random() < 0.85:
                contact["company"] = f"{domain.split('.')[0].title()} Inc."
            if rng.random() < 0.92:
                contact["job_title"] = rng.choice(JOB_TITLES)
            industry = rng.random()
            if industry < 0.6:
                name = rng.choice(icp)
                contact["industry"] = name if rng.random() < 0.9 else name.lower()
            elif industry < 0.7:
                contact["industry"] = rng.choice(low)
            elif industry < 0.85:
                contact["industry"] = rng.choice(OTHER_INDUSTRIES)
            revenue = "n/a" if rng.random() < 0.002 else rng.choice(REVENUE)
            for key, value in (
                ("annual_revenue", revenue),
                ("employees", rng.choice(EMPLOYEES)),
                ("lead_source", rng.choice(LEAD_SOURCE)),
                ("country", rng.choice(OUTSIDE_COUNTRY)),
                ("is_customer", rng.choice(IS_CUSTOMER)),
            ):
                if value is not None:
                    contact[key] = value
            if rng.random() < 0.3:
                contact["tags"] = rng.choice(TAGS)
            if rng.random() < 0.7:
                created = NOW - timedelta(days=rng.uniform(0, 400))
                spellings = [created.isoformat(), created.date().isoformat()]
                spellings += [created.strftime("%d.%m.%Y"), created.strftime("%Y-%m-%dT%H:%M:%SZ")]
                contact["created_at"] = rng.choice(spellings)
            # Fields no rule reads, as CRM exports carry them.
            contact["hubspot_id"] = 1_000_000 + i
            if rng.random() < 0.5:
                contact["utm_campaign"] = rng.choice(["q4-abm", "brand", "retargeting", None])
            if rng.random() < 0.3:
                contact["address"] = {"city": "Austin", "zip": "78701", "state": "TX"}
            if rng.random() < 0.4:
                contact["phone"] = f"+1 512 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
            if rng.random() < 0.1:
                contact["notes"] = "Met at SaaStr; wants a call after budget planning. " * 3
            events = []
            kinds = rng.choices(OUTSIDE_EVENTS, OUTSIDE_EVENT_WEIGHTS, k=rng.randint(1, 12))
            for kind in kinds:
                event: dict[str, Any] = dict(kind)
                timing = rng.random()
                if timing < 0.02:
                    event["at"] = None
                elif timing < 0.03:
                    event["at"] = (NOW + timedelta(minutes=rng.randint(1, 600))).isoformat()
                elif timing < 0.99:
                    at = NOW - timedelta(seconds=rng.randint(0, 365 * 86400))
                    if timing < 0.3:
                        event["at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    elif timing < 0.4:
                        event["at"] = at.astimezone(timezone(timedelta(hours=-6))).isoformat()
                    else:
                        event["at"] = at.isoformat()
                events.append(event)
            events_total += len(events)
            out.write(json.dumps({"contact": contact, "events": events}, ensure_ascii=False))
            out.write("\n")
    return events_total


def timed(command: list[str], output: Path, refused: bool = False) -> dict[str, float]:
    """Run one child to completion: its wall time, and from ``wait4`` its CPU time and peak
    RSS (both counting the processes it forked). ``refused``: exit code 1 is expected, as
    ``leadwerk score`` gives it when a line was refused."""
    with output.open("wb") as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, cwd=ROOT)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in ((0, 1) if refused else (0,)):
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


# What the yardstick computes as Leadwerk does; route and SLA it only approximates.
COMPARED = ("score", "fit", "engagement", "mql", "disqualified", "hits")


def agreement(a: Path, b: Path) -> dict[str, Any]:
    """Share of lines where both agree on each of COMPARED (and on which lines are errors)."""
    same = dict.fromkeys(("error", *COMPARED), 0)
    lines = 0
    with a.open(encoding="utf-8") as left, b.open(encoding="utf-8") as right:
        for x_line, y_line in zip(left, right, strict=True):
            x, y = json.loads(x_line), json.loads(y_line)
            lines += 1
            for key in COMPARED:
                same[key] += x.get(key) == y.get(key)
            same["error"] += ("error" in x) == ("error" in y)
    shares: dict[str, Any] = {f"same_{key}": count / lines for key, count in same.items()}
    return {"lines": lines, **shares, "every_line": all(c == lines for c in same.values())}


# Each rule set: its folder of scoring.yaml and fields.yaml (None: config/ itself) and its data.
RULE_SETS = {
    "broad": (ROOT / "bench" / "score_rules", generate_broad),
    "outside": (OUTSIDE_RULES, generate_outside),
    "example": (None, generate),
}


def rule_config(folder: Path, rules: str) -> Path:
    """The config folder to score with: ``config/`` itself, or a copy of it with the rule
    set's scoring.yaml and fields.yaml (team, routing and SLA stay the example's)."""
    rules_folder = RULE_SETS[rules][0]
    if rules_folder is None:
        return ROOT / "config"
    config = folder / "config"
    shutil.copytree(
        ROOT / "config", config, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py", "__*")
    )
    for name in ("scoring.yaml", "fields.yaml"):
        shutil.copy(rules_folder / name, config / name)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--rules",
        choices=list(RULE_SETS),
        default="broad",
        help="bench/score_rules (the default), bench/score_rules_outside, or config/ with its "
        "own, simpler data",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs of each, interleaved; medians reported."
    )
    parser.add_argument("--keep", type=Path, help="Keep the input and outputs in this folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadwerk-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "contacts.jsonl"
        events = RULE_SETS[args.rules][1](data, args.contacts, args.seed)
        now = NOW.isoformat()
        yardstick_command = [
            sys.executable,
            str(ROOT / "bench" / "yardstick_score.py"),
            str(data),
            "--now",
            now,
            "--rules",
            args.rules,
        ]
        config = str(rule_config(folder, args.rules))
        command = [sys.executable, "-m", "worker", "--config", config, "score", str(data)]
        jobs = os.cpu_count() or 1
        runs: dict[str, list[dict[str, float]]] = {"yardstick": [], "leadwerk": [], "jobs": []}
        for _ in range(args.repeat):  # interleaved, so that a busy spell hits all alike
            runs["yardstick"].append(timed(yardstick_command, folder / "yardstick.jsonl"))
            runs["leadwerk"].append(
                timed([*command, "--json", "--now", now], folder / "leadwerk.jsonl", refused=True)
            )
            runs["jobs"].append(
                timed(
                    [*command, "--json", "--now", now, "--jobs", str(jobs)],
                    folder / "parallel.jsonl",
                    refused=True,
                )
            )
        yardstick, leadwerk, parallel = (_median(runs[key]) for key in runs)
        agree = agreement(folder / "leadwerk.jsonl", folder / "yardstick.jsonl")
        same = (folder / "leadwerk.jsonl").read_bytes() == (folder / "parallel.jsonl").read_bytes()
    result = {
        "rules": args.rules,
        "contacts": args.contacts,
        "events": events,
        "seed": args.seed,
        "runs": args.repeat,
        "leadwerk": _rates(leadwerk, args.contacts),
        f"leadwerk_jobs_{jobs}": _rates(parallel, args.contacts),
        "yardstick": _rates(yardstick, args.contacts),
        "ratio": round(leadwerk["seconds"] / yardstick["seconds"], 2),
        f"ratio_jobs_{jobs}": round(parallel["seconds"] / yardstick["seconds"], 2),
        "cpu_ratio": round(leadwerk["cpu_seconds"] / yardstick["cpu_seconds"], 2),
        "ratios_per_run": [
            round(x["seconds"] / y["seconds"], 2)
            for x, y in zip(runs["leadwerk"], runs["yardstick"], strict=True)
        ],
        "target_ratio": 2.0,
        "parallel_output_identical": same,
        "agreement": agree,
    }
    print(json.dumps(result, indent=2))
    if not (same and agree["every_line"]):
        raise SystemExit("Leadwerk and the yardstick disagree (see agreement)")


def _median(measured: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs."""
    return {key: statistics.median(run[key] for run in measured) for key in measured[0]}


def _rates(measured: dict[str, float], contacts: int) -> dict[str, float]:
    return {
        "contacts_per_s": round(contacts / measured["seconds"]),
        "wall_s": round(measured["seconds"], 2),
        "cpu_s": round(measured["cpu_seconds"], 2),
        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
    }


if __name__ == "__main__":
    main()
