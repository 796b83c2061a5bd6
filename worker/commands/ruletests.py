"""``leadwerk rules test``: marketing ops' own cases in ``config/tests/*.yaml``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from config.loader import Config, RuleTest
from rules.contact import FieldError
from rules.scoring import r1
from worker.commands.evaluate import evaluate


def check_case(config: Config, test: RuleTest, now: datetime) -> list[str]:
    """The differences between what the case expects and what the rules give."""
    case = test.case
    at = case.now or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        result, route, sla, _ = evaluate(config, case.contact, case.events, at, case.account)
    except FieldError as exc:
        return [f"the contact cannot be scored: {exc}"]
    expect = case.expect
    diffs: list[str] = []

    def compare(name: str, wanted: Any, got: Any) -> None:
        if wanted is not None and wanted != got:
            diffs.append(f"{name}: expected {wanted!r}, got {got!r}")

    compare("mql", expect.mql, result.mql)
    compare("score", None if expect.score is None else r1(expect.score), r1(result.score))
    compare("fit", None if expect.fit is None else r1(expect.fit), r1(result.fit))
    compare(
        "engagement",
        None if expect.engagement is None else r1(expect.engagement),
        r1(result.engagement),
    )
    if isinstance(expect.disqualified, bool):
        compare("disqualified", expect.disqualified, result.disqualified is not None)
    else:
        compare("disqualified", expect.disqualified, result.disqualified)
    if expect.route is not None:
        for key in ("rule", "team", "rep"):
            compare(
                f"route.{key}", getattr(expect.route, key), getattr(route, key) if route else None
            )
    route_failed = any(diff.startswith("route.") for diff in diffs)
    compare("sla", expect.sla, sla["policy"] if sla else None)
    if diffs:
        hits = ", ".join(f"{h.rule} {h.points:+g}" for h in result.hits) or "none"
        diffs.append(f"rule hits: {hits}")
    if route_failed and route is not None:
        diffs.append(f"route: {route.reason}")
        diffs += [f"  skipped {skip.name}: {skip.reason}" for skip in route.skipped]
    return diffs


def run_rule_tests(
    config: Config, echo: Callable[[str], None], now: datetime | None = None
) -> tuple[int, int]:
    """Run every case at ``now`` (a case's own ``now:`` wins; default: the clock); returns
    (passed, failed)."""
    passed = failed = 0
    now = now or datetime.now(UTC)
    for test in config.tests:
        diffs = check_case(config, test, now)
        if diffs:
            failed += 1
            echo(f"FAIL {test.file}:{test.line}: {test.case.name}")
            for line in diffs:
                echo(f"    {line}")
        else:
            passed += 1
            echo(f"PASS {test.case.name}")
    return passed, failed
