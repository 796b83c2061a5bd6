"""Benchmark: list hygiene on a million contacts in PostgreSQL, and DSNs read from a Maildir.

    python bench/bench_hygiene.py [--contacts 1000000] [--dsns 10000]
                                  [--postgres postgresql://postgres@127.0.0.1:5432/test]

Builds a fresh database (dropped afterwards) with ``--contacts`` contacts of one source spread
over 24 monthly lists (``newsletter/YYYY-MM``), each with the event of its arrival; a third
engaged again within the last year. The last month's lists were mailed (100k nurture e-mails)
and bounced (3k hard, 1k soft). Then measures, each three times with the flags reset in
between (the median counts):

* ``sweep``: the daily sweep as the clock runs it: ``sweep_stale`` (one set-based UPDATE that
  flags contacts without engagement for 540 days and clears those that engaged) and
  ``check_lists`` (every list's figures and status);
* ``plain_update``: one plain ``UPDATE contacts SET stale_since = now WHERE id = ANY(ids)``
  marking the same rows, ids known beforehand: the floor any stale detection stands on.

``ratio`` is sweep / plain_update (the target is at most 2). Last, ``--dsns`` DSN files (the
test corpus' Postfix, Exim, Office 365, Gmail and qmail formats, each with its own recipient,
half of them known contacts) are written to a Maildir and imported with ``import_bounces``:
files/s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
CORPUS = [
    "postfix_user_unknown.eml",
    "postfix_mailbox_full.eml",
    "exim_user_unknown.eml",
    "office365_recipient_not_found.eml",
    "gmail_address_not_found.eml",
    "qmail_no_mailbox.eml",
]
ORIGINAL_RECIPIENT = {
    "postfix_user_unknown.eml": "eva.mueller@bigcorp.de",
    "postfix_mailbox_full.eml": "paul.schmidt@mittelstand-gmbh.de",
    "exim_user_unknown.eml": "tom.becker@oldcorp.example",
    "office365_recipient_not_found.eml": "lisa.kraus@contoso.example",
    "gmail_address_not_found.eml": "jakob.lang.1987@gmail.com",
    "qmail_no_mailbox.eml": "jan.vogel@kleinfirma.example",
}


def _copy(conn: Any, table: str, columns: str, rows: Any) -> None:
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load(url: str, contacts: int) -> None:
    import psycopg

    per_month = contacts // 24
    months = [(NOW.year * 12 + NOW.month - 2 - m) for m in range(24)]  # the last 24 full months
    with psycopg.connect(url.replace("postgresql://", "postgresql://", 1)) as conn:

        def contact_rows() -> Any:
            for i in range(1, contacts + 1):
                index = min((i - 1) // per_month, 23)
                ym = months[index]
                arrived = datetime(ym // 12, ym % 12 + 1, 1 + i % 27, 9, tzinfo=UTC)
                yield (
                    i,
                    f"p{i}@firma{i % 5000}.example",
                    f"firma{i % 5000}.example",
                    "{}",
                    "newsletter",
                    "lead",
                    arrived,
                    arrived,
                )

        _copy(
            conn,
            "contacts",
            "id, email, email_domain, fields, source, stage, created_at, updated_at",
            contact_rows(),
        )

        def event_rows() -> Any:
            n = 0
            for i in range(1, contacts + 1):
                index = min((i - 1) // per_month, 23)
                ym = months[index]
                arrived = datetime(ym // 12, ym % 12 + 1, 1 + i % 27, 9, tzinfo=UTC)
                n += 1
                yield (
                    n,
                    i,
                    "newsletter",
                    f"k{n}",
                    "form",
                    "{}",
                    "{}",
                    arrived,
                    arrived,
                    "processed",
                    0,
                )
                if i % 3 == 0:
                    again = NOW - timedelta(days=i % 360)
                    n += 1
                    yield (
                        n,
                        i,
                        "newsletter",
                        f"k{n}",
                        "webinar",
                        "{}",
                        "{}",
                        again,
                        again,
                        "processed",
                        0,
                    )

        _copy(
            conn,
            "events",
            "id, contact_id, source, record_key, type, attrs, raw, "
            "occurred_at, received_at, status, attempts",
            event_rows(),
        )
        mailed = range(1, min(100_000, contacts) + 1)
        _copy(
            conn,
            "messages",
            "id, key, contact_id, purpose, channel, recipient, "
            "recipient_name, subject, body_text, message_id, status, attempts, sent_at, "
            "resent_after_crash, created_at",
            (
                (
                    i,
                    f"nurture:{i}",
                    i,
                    "nurture:newsletter:1",
                    "email",
                    f"p{i}@x",
                    "",
                    "",
                    "",
                    f"<n{i}@leadwerk.example.com>",
                    "sent",
                    1,
                    NOW - timedelta(days=3),
                    0,
                    NOW - timedelta(days=3),
                )
                for i in mailed
            ),
        )
        _copy(
            conn,
            "bounce_events",
            "id, key, origin, kind, status_code, recipient, contact_id, occurred_at, received_at",
            (
                (
                    i,
                    f"b{i}",
                    "bench",
                    "hard" if i <= 3000 else "soft",
                    "5.1.1",
                    f"p{i}@x",
                    1 + (i * 25) % len(mailed),
                    NOW - timedelta(days=2),
                    NOW - timedelta(days=2),
                )
                for i in range(1, 4001)
            ),
        )
        for table in ("contacts", "events", "messages", "bounce_events"):
            conn.execute(
                f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 1) FROM {table}))"
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def reset(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE contacts SET stale_since = NULL WHERE stale_since IS NOT NULL")
        conn.execute("VACUUM ANALYZE contacts")


def measure(url: str, config: Any) -> dict[str, Any]:
    import psycopg

    from worker.pipeline.hygiene import check_lists, sweep_stale
    from worker.store.db import Store

    store = Store(url)
    sweeps, plains, flagged = [], [], 0
    for _ in range(3):
        reset(url)
        start = time.perf_counter()
        flagged = sweep_stale(store, config, NOW)
        figures = check_lists(store, config, NOW)
        sweeps.append(time.perf_counter() - start)
        with psycopg.connect(url) as conn:
            ids = [
                r[0] for r in conn.execute("SELECT id FROM contacts WHERE stale_since IS NOT NULL")
            ]
        reset(url)
        with psycopg.connect(url) as conn:
            start = time.perf_counter()
            conn.execute("UPDATE contacts SET stale_since = %s WHERE id = ANY(%s)", (NOW, ids))
            conn.commit()
            plains.append(time.perf_counter() - start)
    store.close()
    sweep, plain = statistics.median(sweeps), statistics.median(plains)
    return {
        "stale_flagged": flagged,
        "lists": len(figures),
        "sweep_s": round(sweep, 3),
        "plain_update_s": round(plain, 3),
        "ratio": round(sweep / plain, 2),
    }


def dsn_import(url: str, config: Any, count: int) -> dict[str, Any]:
    from worker.pipeline.hygiene import import_bounces
    from worker.store.db import Store

    corpus = {n: (ROOT / "tests" / "data" / "dsn" / n).read_bytes() for n in CORPUS}
    with tempfile.TemporaryDirectory() as folder:
        maildir = Path(folder)
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir()
        for i in range(count):
            name = CORPUS[i % len(CORPUS)]
            recipient = (
                f"p{i * 2 + 1}@firma{(i * 2 + 1) % 5000}.example"
                if i % 2
                else f"gone{i}@nowhere.example"
            )
            raw = corpus[name].replace(ORIGINAL_RECIPIENT[name].encode(), recipient.encode())
            (maildir / "new" / f"{1796000000 + i}.M{i}P1.bench").write_bytes(raw)
        store = Store(url)
        start = time.perf_counter()
        result = import_bounces(store, config, maildir, NOW)
        seconds = time.perf_counter() - start
        store.close()
    return {
        "files": result.read,
        "seconds": round(seconds, 2),
        "files_per_s": round(result.read / seconds),
        "hard": result.hard,
        "soft": result.soft,
        "unmatched": result.unmatched,
    }


def main() -> None:
    import logging

    import psycopg

    logging.disable(logging.WARNING)

    from config.loader import load_config
    from config.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--dsns", type=int, default=10_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    name = f"leadwerk_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.postgres.rsplit('/', 1)[0]}/{name}"
    try:
        from worker.store.db import Store

        Store(url).close()  # the schema, migrated
        config = load_config(load_settings(ROOT / "config", env={}, database_url=url))
        start = time.perf_counter()
        load(url, args.contacts)
        loaded = time.perf_counter() - start
        out = {
            "contacts": args.contacts,
            "monthly_lists": 24,
            "load_s": round(loaded, 1),
            "daily_sweep": measure(url, config),
            "dsn_import": dsn_import(url, config, args.dsns),
        }
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out))


if __name__ == "__main__":
    main()
