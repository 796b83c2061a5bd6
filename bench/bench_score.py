"""Benchmark: ``leadwerk score --json`` over 100k contacts, against a hand-written yardstick.

    python bench/bench_score.py [--rules broad|example] [--repeat N] [--contacts 100000]
                                [--seed 2026] [--keep DIR]

``--rules broad`` (the default) scores with ``bench/score_rules/``: a rule set as marketing ops
write it (case-insensitive title alternations, lists, custom number/string/bool fields from
fields.yaml, a domain pattern, ``is none`` checks, capped engagement with a 45-day half-life,
disqualify rules) over a CRM export of 1–8 events of varied types per contact over a year,
with missing fields and values typed as people type them. ``--rules example`` scores with
``config/`` over the earlier, simpler export. Every 1000th line cannot be scored.

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


def rule_config(folder: Path, rules: str) -> Path:
    """The config folder to score with: ``config/`` itself, or a copy of it with the broad
    rule set's scoring.yaml and fields.yaml (team, routing and SLA stay the example's)."""
    if rules == "example":
        return ROOT / "config"
    config = folder / "config"
    shutil.copytree(
        ROOT / "config", config, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py", "__*")
    )
    for name in ("scoring.yaml", "fields.yaml"):
        shutil.copy(ROOT / "bench" / "score_rules" / name, config / name)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--rules",
        choices=["broad", "example"],
        default="broad",
        help="bench/score_rules (the default) or config/ with its own, simpler data",
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
        make = generate_broad if args.rules == "broad" else generate
        events = make(data, args.contacts, args.seed)
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
