"""Alerts: written in alerts.yaml, checked by the clock, sent once when they start and once
when they clear, whichever clock is leading; `leadwerk alerts` and `leadwerk status` say which
hold."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from typer.testing import CliRunner

from config.settings import Settings
from rules.alerts import ALERT_METRICS, AlertState, next_state
from rules.expr import Context, ExprErrors, Origin, Schema, compile_expr
from tests.admin_helpers import mail_team
from tests.pipeline_helpers import running
from tests.redis_namespace import own_namespace
from tests.web_links import mail_to, send_all
from worker.commands.cli import app as cli
from worker.commands.overview import overview
from worker.runtime.alerts import check_alerts
from worker.runtime.app import App
from worker.runtime.clock import lease_key, start_clock
from worker.store.models import DeadLetter, ListState, Message

ALERTS = Schema(ALERT_METRICS)


def alert_when(text: str) -> Callable[..., bool]:
    return compile_expr(text, ALERTS, Origin("alerts.yaml", 4, 30))


def holds(text: str, **metrics: object) -> bool:
    return alert_when(text)(Context(metrics))


def test_durations_and_percentages_compare_as_written() -> None:
    assert holds("queue_age > 5m", queue_age=301)
    assert not holds("queue_age > 5m", queue_age=300)
    assert holds("queue_age >= 1.5h", queue_age=5400)
    assert holds("sla_breach_rate_1h > 20%", sla_breach_rate_1h=0.25)
    assert not holds("sla_breach_rate_1h > 20%", sla_breach_rate_1h=0.2)
    assert holds('list_status == "suspended" or dead_letters > 0', list_status="ok", dead_letters=2)
    # a figure nobody reports (no worker yet) makes no alert fire
    assert not holds("worker_silence > 2m", worker_silence=None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "queue_age > 300",
            "4:42: cannot compare 'queue_age' (duration) with 300 (number); "
            "write a duration with its unit, like 90s, 5m or 4h",
        ),
        (
            "sla_breach_rate_1h > 0.2",
            "4:51: cannot compare 'sla_breach_rate_1h' (percent) with "
            "0.2 (number); write a share as a percentage, like 20%",
        ),
        ("dead_letters > 5m", "4:45: cannot compare 'dead_letters' (number) with 5m (duration)"),
        ("queue_ag > 5m", "4:30: unknown field 'queue_ag' (did you mean 'queue_age'?)"),
    ],
)
def test_a_figure_compared_with_the_wrong_kind_of_value_is_a_located_error(
    text: str, message: str
) -> None:
    with pytest.raises(ExprErrors) as caught:
        alert_when(text)
    assert str(caught.value) == f"alerts.yaml:{message}"


def test_an_alert_speaks_when_it_starts_and_when_it_clears_and_never_in_between() -> None:
    state, said = AlertState(), []
    for condition in (False, True, True, True, False, False, True, False):
        change = next_state(state, condition)
        state = change.state
        said.append((change.say, state.episode) if change.say else None)
    assert [s for s in said if s] == [("fired", 1), ("resolved", 1), ("fired", 2), ("resolved", 2)]


def test_rules_check_locates_every_mistake_in_alerts_yaml(config_dir: Path) -> None:
    (config_dir / "alerts.yaml").write_text(
        "notify: [ana]\n"
        "alerts:\n"
        "  - {name: queue stuck, when: queue_age > 5}\n"
        "  - {name: lost, when: dead_letters > 0, notify: [jonas, bob]}\n"
        "  - {name: rate, when: sla_breach_rate_1h > 20%, every: 1m}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["--config", str(config_dir), "rules", "check"])
    assert result.exit_code == 1
    located = sorted(
        line.split("alerts.yaml:", 1)[1]
        for line in result.output.splitlines()
        if "alerts.yaml:" in line
    )
    assert located == [
        "1:10: unknown rep 'ana' (did you mean 'anna'?)",
        "3:43: cannot compare 'queue_age' (duration) with 5 (number); write a duration with "
        "its unit, like 90s, 5m or 4h",
        "4:58: unknown rep 'bob' (describe it under reps: in team.yaml)",
        "5:50: unknown key 'every'; allowed: name, notify, when",
    ]


def test_the_example_alerts_load_and_tell_anna(make_settings: Callable[..., Settings]) -> None:
    from config.loader import load_config

    config = load_config(make_settings())
    assert [a.name for a in config.alerts] == [
        "queue stuck",
        "dead letters",
        "source failing",
        "SLA breaches",
        "bounces",
    ]
    assert all(a.notify == ["anna"] for a in config.alerts)


def dead_letter(app: App) -> int:
    with app.store.session() as session:
        letter = DeadLetter(actor="send_message", args=[999], error="UndeliverableError: 550")
        session.add(letter)
        session.flush()
        return letter.id


def resolve(app: App, letter: int) -> None:
    with app.store.session() as session:
        row = session.get(DeadLetter, letter)
        assert row is not None
        row.status = "replayed"


def alert_messages(app: App) -> list[tuple[str, str]]:
    with app.store.session() as session:
        return [
            (m.purpose, m.subject)
            for m in session.scalars(
                select(Message).where(Message.purpose.like("alert_%")).order_by(Message.id)
            )
        ]


def test_an_alert_fires_once_and_resolves_once_across_a_clock_failover(
    make_settings: Callable[..., Settings],
    config_dir: Path,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    mail_team(config_dir)
    with own_namespace(redis_url) as namespace:
        settings = make_settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            inbox_dir=tmp_path / "inbox",
        )
        with running(settings) as leadwerk:
            app = leadwerk.app
            # Given two clocks on one Redis: the first leads, the second stands by
            first = start_clock(app, background=True)
            second = start_clock(app, background=True)
            try:
                check_on_first = first.get_job("alerts").func
                check_on_second = second.get_job("alerts").func
                # When a dead letter appears, the leader's check fires the alert once
                letter = dead_letter(app)
                for check in (check_on_first, check_on_second, check_on_first):
                    check()
                assert alert_messages(app) == [("alert_fired", "[Leadwerk] ALERT: dead letters")]
                # And the leader dies: its lease runs out, the other clock takes over
                lease = redis.Redis.from_url(redis_url)
                first_leader = lease.get(lease_key(app))
                first.shutdown(wait=True)
                lease.pexpire(lease_key(app), 1)
                deadline = time.monotonic() + 30
                while lease.get(lease_key(app)) in (None, first_leader):
                    assert time.monotonic() < deadline, "the second clock never took over"
                    time.sleep(0.2)
                # (the second clock learns it leads at its next renewal, within a second)
                time.sleep(1.5)
                # Then the new leader does not announce the same trouble again
                check_on_second()
                assert len(alert_messages(app)) == 1
                # And once the dead letter is dealt with, it says so once
                resolve(app, letter)
                check_on_second()
                check_on_second()
                assert alert_messages(app) == [
                    ("alert_fired", "[Leadwerk] ALERT: dead letters"),
                    ("alert_resolved", "[Leadwerk] resolved: dead letters"),
                ]
            finally:
                for clock in (first, second):
                    if clock.running:
                        clock.shutdown(wait=True)
        # Anna (notify: [anna]) received exactly these two e-mails
        with running(make_settings(database_url=database_url)) as again:
            send_all(again.app, datetime.now(UTC))
    mails = mail_to(settings.outbox_dir, "anna@example.com")
    assert [m["Subject"] for m in mails] == [
        "[Leadwerk] ALERT: dead letters",
        "[Leadwerk] resolved: dead letters",
    ]
    assert "dead_letters > 0 holds (dead_letters = 1)" in mails[0].get_content()


def test_a_new_episode_is_announced_again(
    make_settings: Callable[..., Settings], config_dir: Path, database_url: str
) -> None:
    mail_team(config_dir)
    with running(make_settings(database_url=database_url)) as leadwerk:
        app = leadwerk.app
        now = datetime.now(UTC)
        first = dead_letter(app)
        check_alerts(app, now)
        resolve(app, first)
        check_alerts(app, now)
        dead_letter(app)
        check_alerts(app, now)
        check_alerts(app, now)
        with app.store.session() as session:
            keys = list(session.scalars(select(Message.key).order_by(Message.id)))
    assert keys == [
        "alert:dead letters:1:fired:anna",
        "alert:dead letters:1:resolved:anna",
        "alert:dead letters:2:fired:anna",
    ]


def test_status_and_alerts_say_which_alert_holds_and_status_exits_1_meanwhile(
    make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    settings = make_settings()
    env = {"LEADWERK_DATABASE_URL": settings.database_url}
    args = ["--config", str(config_dir)]
    with running(settings) as leadwerk:
        healthy = CliRunner().invoke(cli, [*args, "status"], env=env)
        assert healthy.exit_code == 0, healthy.output
        assert healthy.output.rstrip().endswith("health: ok")
        dead_letter(leadwerk.app)
        check_alerts(leadwerk.app, datetime.now(UTC))
    unhealthy = CliRunner().invoke(cli, [*args, "status"], env=env)
    assert unhealthy.exit_code == 1
    assert "alert dead letters: FIRING (dead_letters > 0)" in unhealthy.output
    as_json = CliRunner().invoke(cli, [*args, "status", "--json"], env=env)
    data = json.loads(as_json.output)
    assert data["healthy"] is False and data["dead_letters"] == 1
    listed = CliRunner().invoke(cli, [*args, "alerts", "--json"], env=env)
    assert listed.exit_code == 0
    alerts = {a["name"]: a for a in json.loads(listed.output)}
    assert alerts["dead letters"]["firing"] is True and alerts["dead letters"]["episode"] == 1
    assert alerts["queue stuck"]["firing"] is False
    text = CliRunner().invoke(cli, [*args, "alerts"], env=env).output
    assert "FIRING  dead letters: dead_letters > 0 (holds now)" in text


def test_a_rep_on_slack_reads_the_alert_in_slack(
    make_settings: Callable[..., Settings], config_dir: Path
) -> None:
    # Given Jonas, who is told on Slack (example team.yaml), hears about dead letters
    (config_dir / "alerts.yaml").write_text(
        "notify: [jonas]\nalerts:\n  - {name: dead letters, when: dead_letters > 0}\n",
        encoding="utf-8",
    )
    settings = make_settings()
    with running(settings) as leadwerk:
        now = datetime.now(UTC)
        dead_letter(leadwerk.app)
        check_alerts(leadwerk.app, now)
        send_all(leadwerk.app, now)
    [posted] = [json.loads(p.read_text()) for p in settings.outbox_dir.glob("*.json")]
    assert posted["channel"] == "U024BE7LH"
    assert posted["text"].startswith("*[Leadwerk] ALERT: dead letters*\n")
    assert "dead_letters > 0 holds (dead_letters = 1)" in posted["text"]


def test_a_suspended_list_fires_the_bounces_alert_and_shows_on_the_dashboard(
    make_settings: Callable[..., Settings], config_dir: Path, database_url: str
) -> None:
    mail_team(config_dir)
    with running(make_settings(database_url=database_url)) as leadwerk:
        app = leadwerk.app
        now = datetime.now(UTC)
        # Given list hygiene suspended the webinar list for bouncing too much
        with app.store.session() as session:
            session.add(ListState(name="webinar", status="suspended", changed_at=now))
        check_alerts(app, now)
        facts = overview(app, now)
        with app.store.session() as session:
            keys = list(session.scalars(select(Message.key).order_by(Message.id)))
    # Then the example alert `bounces` (list_status == "suspended") is told once, and the
    # dashboard's facts list the list with its status
    assert keys == ["alert:bounces:1:fired:anna"]
    assert facts["lists"] == {"webinar": "suspended"}
    assert "alert 'bounces' holds" in facts["problems"]
