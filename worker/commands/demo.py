"""``leadwerk run --demo``: generated sample leads through the example config's sources."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from connectors.sources.base import RawRecord
from worker.pipeline.ingest import IngestReport, ingest_records
from worker.runtime.app import App

FIRST = ["Eva", "Jörg", "Anna", "Mehmet", "Sophie", "Lukas", "Marie", "Felix", "Lena", "Paul"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann"]
COMPANIES = [
    ("Bigcorp AG", "bigcorp.de", 5000, "DE"),
    ("Alpenwerk GmbH", "alpenwerk.at", 1200, "AT"),
    ("Maschinenbau Nord", "mb-nord.de", 250, "DE"),
    ("Kleinteil KG", "kleinteil.de", 40, "DE"),
    ("Helvetic Tools", "helvetic-tools.ch", 800, "CH"),
    ("Example Ltd", "example.co.uk", 300, "GB"),
]
TITLES = ["Head of IT", "Einkaufsleiter", "Geschäftsführer", "Engineer", "Werkstudent", "CTO"]


def demo_records(count: int, seed: int = 7) -> list[tuple[str, RawRecord]]:
    """(source kind, record) pairs: fair scans, e-book downloads and demo requests."""
    rng = random.Random(seed)
    out = []
    now = datetime.now(UTC)
    for index in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company, domain, size, country = rng.choice(COMPANIES)
        email = f"{first.lower()}.{last.lower()}{index}@{domain}".replace("ü", "ue").replace(
            "ö", "oe"
        )
        title = rng.choice(TITLES)
        kind = ("tradefair", "ebook", "form")[index % 3]
        data = {
            "email": email,
            "first_name": first,
            "last_name": last,
            "company": company,
            "company_size": size,
            "country": country,
            "title": title,
        }
        if kind == "tradefair":
            data["rating"] = rng.choice(["hot", "warm", "cold"])
        elif kind == "ebook":
            data["asset"] = "industrie-4-0-guide"
        else:
            data["form"] = "demo-request"
        at = now - timedelta(hours=rng.randint(0, 72))
        out.append((kind, RawRecord(data=data, record_id=f"demo-{seed}-{index}", occurred_at=at)))
    return out


def feed_demo(app: App, count: int) -> IngestReport:
    """Sample leads as if three sources had delivered them (the config's own mapping is not
    needed: demo records carry contact field names)."""
    from connectors.sources.base import SourceConfig

    total = IngestReport("demo")
    for kind, record in demo_records(count):
        source = SourceConfig(
            name=f"demo-{kind}",
            kind="demo",
            event={
                "type": kind,
                **{k: f"$.{k}" for k in ("rating", "asset", "form") if k in record.data},
            },
        )
        report = ingest_records(app.store, app.config, source, [record])
        total.received += report.received
        total.accepted += report.accepted
        total.quarantined += report.quarantined
    return total
