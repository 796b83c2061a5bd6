"""Benchmark: a 100k-row German trade-fair export through ``import_file``, against raw parsing.

    python bench/bench_import.py [--rows 100000] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Generates a badge-scanner export as German Excel writes it (Windows-1252, ``;``, the headers
of the example config's ``messe-hannover-2026`` mapping, a few bad rows), then measures, each
in a fresh child process so that peak RSS is the phase's own:

* ``raw_parse``: the ``csv`` module reading the same file (decode + split, nothing else);
* ``sqlite`` / ``postgresql``: ``worker.pipeline.poll.import_file`` into an empty store
  (a new SQLite file; a new PostgreSQL database, dropped afterwards), the real path that
  ``leadwerk import`` takes, followed by a re-import that must find every row a duplicate.

Besides, ``stages`` times the import's own steps without a database: reading the export into
records (``parse``) and mapping + validating them (``validate``), in µs per row, in one
process. ``db_us_per_row`` under each store is the import's time per row beyond those two:
storing, less what the preparing processes' checks hid behind it (a file this large is
checked by a pool of processes while the importing process stores).

Prints one JSON object: rows/s, seconds, peak RSS (MiB) per phase and the import's rate as a
share of the raw parse rate (the target is at least 0.20).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEADERS = [
    "E-Mail",
    "Vorname",
    "Nachname",
    "Firma",
    "Position",
    "Telefon",
    "Land",
    "Mitarbeiter",
    "Bewertung",
    "Notiz",
]
FIRST = ["Jörg", "Jürgen", "Björn", "Käthe", "Sören", "Eva", "Lukas", "Marie", "Özlem", "Anna"]
LAST = ["Müller", "Schäfer", "Weiß", "Groß", "Köhler", "Bäcker", "Schmidt", "Gruber", "Öztürk"]
COMPANY = ["Maschinenbau", "Stahlwerk", "Kälte", "Präzision", "Fördertechnik", "Antriebe"]
FORM = ["GmbH", "AG", "KG", "GmbH & Co. KG", "SE"]
TITLE = ["Geschäftsführer", "Head of IT", "Einkaufsleiter", "Engineer", "Werkstudent", "CTO"]
COUNTRY = ["DE", "Deutschland", "AT", "Österreich", "CH", "Schweiz", "NL"]
PHONE = {"DE": "0511 {n}", "AT": "+43 1 {n}", "CH": "044 {n}", "NL": "+31 20 {n}"}
RATING = ["hot", "warm", "kalt"]
NOTES = ["Rückruf erbeten", "Will Angebot bis Q1", "", 'Sagte: "nächste Woche"', "Katalog"]


def generate(path: Path, rows: int, seed: int = 2026) -> int:
    """Write the export; every 500th row has an e-mail without ``@`` (quarantined)."""
    rng = random.Random(seed)
    with path.open("w", encoding="cp1252", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADERS)
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            company = f"{rng.choice(COMPANY)} {last} {rng.choice(FORM)}"
            domain = f"firma{n % 9973}.de"
            local = f"{first[0]}.{last}{n}".lower().replace("ö", "oe").replace("ü", "ue")
            local = local.replace("ä", "ae").replace("ß", "ss")
            email = f"{local}@{domain}" if n % 500 != 499 else f"{local}.{domain}"
            country = rng.choice(COUNTRY)
            code = {"Deutschland": "DE", "Österreich": "AT", "Schweiz": "CH"}.get(country, country)
            phone = PHONE[code].format(n=rng.randrange(1_000_000, 9_999_999))
            size = rng.choice(["12", "250", "1.200", "5.000", "40"])
            title, rating, notes = rng.choice(TITLE), rng.choice(RATING), rng.choice(NOTES)
            writer.writerow(
                [email, first, last, company, title, phone, country, size, rating, notes]
            )
    return rows


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def phase_raw(path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with path.open(encoding="cp1252", newline="") as stream:
        rows = sum(1 for _ in csv.reader(stream, delimiter=";")) - 1
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


def phase_stages(path: Path) -> dict[str, Any]:
    """Parse and validate as ``import_file`` does, timed apart, with no database."""
    from datetime import UTC, datetime

    from config.loader import load_config
    from config.settings import load_settings
    from connectors.sources.files import read_export
    from rules.contact import FieldError
    from worker.pipeline.ingest import preparer

    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
        # No store is opened: the URL only has to be a valid one.
        url = f"sqlite:///{Path(tmp) / 'unused.db'}"
        config = load_config(load_settings(config_dir, env={}, database_url=url))
    source = config.sources["messe-hannover-2026"]
    start = time.perf_counter()
    records = list(read_export(path))
    parsed = time.perf_counter()
    prepare = preparer(config, source, datetime.now(UTC))
    for record in records:
        with contextlib.suppress(FieldError):  # quarantined rows are timed all the same
            prepare(record)
    validated = time.perf_counter()
    rows = len(records)
    return {
        "rows": rows,
        "parse_us_per_row": round((parsed - start) / rows * 1e6, 1),
        "validate_us_per_row": round((validated - parsed) / rows * 1e6, 1),
        "parse_validate_rows_per_s": round(rows / (validated - start)),
    }


def phase_import(path: Path, database_url: str) -> dict[str, Any]:
    import logging

    from config.loader import load_config
    from config.settings import load_settings
    from worker.pipeline.poll import import_file
    from worker.store.db import Store

    logging.disable(logging.WARNING)  # a few hundred quarantine warnings are not the point
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
        settings = load_settings(config_dir, env={}, database_url=database_url)
        config = load_config(settings)
        store = Store(database_url)
        source = config.sources["messe-hannover-2026"]
        start = time.perf_counter()
        report = import_file(store, config, source, path)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = import_file(store, config, source, path)
        again_seconds = time.perf_counter() - start
        store.close()
    return {
        "rows": report.received,
        "accepted": report.accepted,
        "quarantined": report.quarantined,
        "seconds": round(seconds, 3),
        "rows_per_s": round(report.received / seconds),
        "reimport": {
            "duplicates": again.duplicates,
            "accepted": again.accepted,
            "seconds": round(again_seconds, 3),
            "rows_per_s": round(again.received / again_seconds),
        },
    }


def _child(phase: str, path: Path, url: str = "") -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its peak RSS is then its own."""
    command = [sys.executable, __file__, "--phase", phase, "--file", str(path), "--url", url]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _postgres_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"leadwerk_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{admin_url.rsplit('/', 1)[0]}/{name}"


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.phase:
        phases = {"raw": phase_raw, "stages": phase_stages}
        if args.phase in phases:
            result = phases[args.phase](args.file)
        else:
            result = phase_import(args.file, args.url)
        result["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "messe-export.csv"
        generate(export, args.rows)
        results: dict[str, Any] = {
            "rows": args.rows,
            "file_mib": round(export.stat().st_size / 2**20, 1),
            "raw_parse": _child("raw", export),
            "stages": _child("stages", export),
        }
        results["sqlite"] = _child("import", export, f"sqlite:///{Path(tmp) / 'bench.db'}")
        if not args.no_postgres:
            name, url = _postgres_database(args.postgres)
            try:
                results["postgresql"] = _child("import", export, url)
            finally:
                _drop_database(args.postgres, name)
    raw_rate = results["raw_parse"]["rows_per_s"]
    stages = results["stages"]
    for store in ("sqlite", "postgresql"):
        if store in results:
            results[store]["share_of_raw_parse"] = round(results[store]["rows_per_s"] / raw_rate, 3)
            import_us = 1e6 / results[store]["rows_per_s"]
            rest = import_us - stages["parse_us_per_row"] - stages["validate_us_per_row"]
            results[store]["db_us_per_row"] = round(rest, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
