"""Several workers routing MQLs of the same team at the same moment, against PostgreSQL:
no rep goes over capacity, no turn is handed out twice, and the lifetime counters agree with
the assignments actually made."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from config.settings import Settings
from tests.sla_helpers import SLA, add_mql, write_config
from worker.pipeline.route import route_contact
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, RepCounter

T = datetime(2026, 11, 17, 10, 0, tzinfo=UTC)
THREADS = 8


def team(capacity: str = "") -> str:
    reps = "\n".join(
        f"  {rep}: {{name: {rep.title()}, email: {rep}@example.com{capacity}}}"
        for rep in ("jonas", "lea", "sophie")
    )
    return f"""
teams:
  enterprise-dach: {{manager: anna, members: [jonas, lea, sophie]}}
  inside-sales: {{manager: anna, members: [mehmet]}}
reps:
  anna: {{name: Anna Schulz, email: anna@example.com}}
  mehmet: {{name: Mehmet Yilmaz, email: mehmet@example.com}}
{reps}
"""


def route_in_parallel(app: App, contacts: list[int]) -> list[BaseException]:
    """Route every contact, spread over THREADS threads that start at the same moment."""
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(share: list[int]) -> None:
        start.wait()
        try:
            for contact in share:
                route_contact(app.store, app.config, contact, T)
        except BaseException as exc:  # shown by the callers' assertions
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(contacts[i::THREADS],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def counts(app: App) -> tuple[Counter[str | None], dict[str, int]]:
    with app.store.session() as session:
        made = Counter(session.scalars(select(Assignment.rep)).all())
        counters = {
            c.rep: c.assigned_total
            for c in session.scalars(select(RepCounter).where(RepCounter.team == "enterprise-dach"))
        }
    return made, counters


def test_parallel_round_robin_hands_each_turn_once(
    config_dir: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    write_config(config_dir, team=team(), sla=SLA)
    app = init_app(make_settings(database_url=postgres_url))
    contacts = [add_mql(app.store, n, T) for n in range(40)]

    errors = route_in_parallel(app, contacts)

    assert errors == []
    made, counters = counts(app)
    assert sum(made.values()) == 40 and None not in made
    assert max(made.values()) - min(made.values()) <= 1
    assert counters == {"jonas": made["jonas"], "lea": made["lea"], "sophie": made["sophie"]}
    app.close()


def test_parallel_routing_never_puts_a_rep_over_capacity(
    config_dir: Path, make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    write_config(config_dir, team=team(capacity=", capacity: {per_day: 5}"), sla=SLA)
    app = init_app(make_settings(database_url=postgres_url))
    contacts = [add_mql(app.store, n, T) for n in range(24)]

    errors = route_in_parallel(app, contacts)

    # 15 leads fill the three reps' capacity; the other 9 go to the fallback manager
    assert errors == []
    made, counters = counts(app)
    assert made == {"jonas": 5, "lea": 5, "sophie": 5, None: 9}
    assert counters == {"jonas": 5, "lea": 5, "sophie": 5}
    app.close()
