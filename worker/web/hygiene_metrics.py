"""The figures of ``leadwerk hygiene report`` on ``/metrics``, read from the store at scrape
time like the outbox's: one gauge family per figure, labelled by list, and the status as
``leadwerk_list_status{list, status}`` = 1 for the status the list is in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from rules.hygiene import LIST_SEVERITY
from worker.pipeline.hygiene import list_figures
from worker.runtime.app import App

log = logging.getLogger("leadwerk.metrics")

FIGURES = (
    ("size", "Contacts on the list"),
    ("age_months", "Months since the list's contacts arrived (mean for a source)"),
    ("expected_bad", "Share expected to have gone bad: 1 - (1 - decay)^months"),
    ("sent", "Nurture e-mails sent to the list in the window"),
    ("hard", "Hard bounces in the window"),
    ("soft", "Soft bounces in the window"),
    ("policy", "Refusals by policy (5.7.x) in the window"),
    ("bounce_rate", "Hard bounces per e-mail sent in the window"),
    ("stale", "Contacts without engagement for stale.no_engagement_for"),
    ("cold", "1 when the list was not mailed for longer than touch_every"),
)


class ListCollector(Collector):
    def __init__(self, app: App) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        try:
            figures = list_figures(self._app.store, self._app.config, datetime.now(UTC))
        except SQLAlchemyError as exc:
            log.warning("metrics: lists not read: %s", type(exc).__name__)
            return
        for name, help_text in FIGURES:
            family = GaugeMetricFamily(f"leadwerk_list_{name}", help_text, labels=["list"])
            for figure in figures:
                family.add_metric([figure.name], float(getattr(figure, name)))
            yield family
        status = GaugeMetricFamily(
            "leadwerk_list_status", "1 for the list's status", labels=["list", "status"]
        )
        for figure in figures:
            for value in LIST_SEVERITY:
                status.add_metric([figure.name, value], 1.0 if figure.status == value else 0.0)
        yield status
