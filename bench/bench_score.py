"""Benchmark: ``leadwerk score --json`` over 100k contacts, against a hand-written yardstick.

    python bench/bench_score.py [--contacts 100000] [--seed 2026] [--keep DIR]

Generates a CRM export as JSON Lines (deterministic seed): 100k contacts with 1–8 events each,
German and other companies, free-mail and competitor addresses (a few with umlauts), phone
numbers as people type them, a few lines that cannot be scored. Then times two whole
processes over the same file with the same ``--now``, each a fresh child so that its peak RSS
is its own:

* ``leadwerk``: ``python -m worker --config config score FILE --json`` with the example rules,
  in one process and again with ``--jobs`` one per CPU (peak RSS: its largest process);
* ``yardstick``: ``bench/yardstick_score.py``, the same rules written as plain Python.

Prints one JSON object: contacts/s, wall and CPU seconds and peak RSS (MiB) for each, the
ratios of wall times to the yardstick's (the target is at most 2.0; on a busy machine the CPU
ratio is the steadier figure) and how often Leadwerk and the yardstick agree on score and MQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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


def agreement(a: Path, b: Path) -> dict[str, float]:
    """Share of lines where both give the same rounded score and MQL verdict."""
    same_score = same_mql = lines = 0
    with a.open(encoding="utf-8") as left, b.open(encoding="utf-8") as right:
        for x_line, y_line in zip(left, right, strict=True):
            x, y = json.loads(x_line), json.loads(y_line)
            lines += 1
            same_score += x.get("score") == y.get("score")
            same_mql += x.get("mql") == y.get("mql")
    return {"lines": lines, "same_score": same_score / lines, "same_mql": same_mql / lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", type=Path, help="Keep the input and outputs in this folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadwerk-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "contacts.jsonl"
        events = generate(data, args.contacts, args.seed)
        now = NOW.isoformat()
        yardstick = timed(
            [sys.executable, str(ROOT / "bench" / "yardstick_score.py"), str(data), "--now", now],
            folder / "yardstick.jsonl",
        )
        config = str(ROOT / "config")
        command = [sys.executable, "-m", "worker", "--config", config, "score", str(data)]
        leadwerk = timed(
            [*command, "--json", "--now", now], folder / "leadwerk.jsonl", refused=True
        )
        jobs = os.cpu_count() or 1
        parallel = timed(
            [*command, "--json", "--now", now, "--jobs", str(jobs)],
            folder / "parallel.jsonl",
            refused=True,
        )
        agree = agreement(folder / "leadwerk.jsonl", folder / "yardstick.jsonl")
        same = (folder / "leadwerk.jsonl").read_bytes() == (folder / "parallel.jsonl").read_bytes()
    result = {
        "contacts": args.contacts,
        "events": events,
        "seed": args.seed,
        "leadwerk": _rates(leadwerk, args.contacts),
        f"leadwerk_jobs_{jobs}": _rates(parallel, args.contacts),
        "yardstick": _rates(yardstick, args.contacts),
        "ratio": round(leadwerk["seconds"] / yardstick["seconds"], 2),
        f"ratio_jobs_{jobs}": round(parallel["seconds"] / yardstick["seconds"], 2),
        "cpu_ratio": round(leadwerk["cpu_seconds"] / yardstick["cpu_seconds"], 2),
        "target_ratio": 2.0,
        "parallel_output_identical": same,
        "agreement": agree,
    }
    print(json.dumps(result, indent=2))


def _rates(measured: dict[str, float], contacts: int) -> dict[str, float]:
    return {
        "contacts_per_s": round(contacts / measured["seconds"]),
        "wall_s": round(measured["seconds"], 2),
        "cpu_s": round(measured["cpu_seconds"], 2),
        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
    }


if __name__ == "__main__":
    main()
