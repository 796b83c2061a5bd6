"""The SLA clock: timers in the store, fired once, stopped by accepting; breaches escalate
and reassign. Real SQLite and PostgreSQL, a real SMTP server; fixed times, no sleeping."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import Settings
from tests.pipeline_helpers import running
from tests.servers.smtp import SmtpServer
from tests.sla_helpers import add_mql, write_config
from worker.commands.operations import accept_lead
from worker.commands.status import collect_status
from worker.pipeline.notify import send_message
from worker.pipeline.route import route_contact
from worker.pipeline.sla import Fired, due_timers, enqueue_due_timers, fire_timer
from worker.runtime.app import App, init_app
from worker.store.models import Assignment, Message, SlaTimer

# A Monday morning, when everybody in the always-open team is at work.
T = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)

JONAS_ONLY_IN_HANOVER = """
teams:
  enterprise-dach: {manager: anna, members: [jonas]}
  inside-sales: {manager: anna, members: [mehmet]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas:
    name: Jonas Weber
    email: jonas@example.com
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-17:00"}
    holidays: DE-NI
  mehmet: {name: Mehmet Yilmaz, email: mehmet@example.com}
"""


def timers_of(app: App, assignment_id: int) -> dict[str, datetime]:
    with app.store.session() as session:
        rows = session.scalars(select(SlaTimer).where(SlaTimer.assignment_id == assignment_id))
        return {t.kind: t.fire_at for t in rows}


def assignments_of(app: App, contact_id: int) -> list[Assignment]:
    with app.store.session() as session:
        return list(
            session.scalars(
                select(Assignment)
                .where(Assignment.contact_id == contact_id)
                .order_by(Assignment.id)
            )
        )


def messages(app: App, purpose: str) -> list[Message]:
    with app.store.session() as session:
        return list(
            session.scalars(select(Message).where(Message.purpose == purpose).order_by(Message.id))
        )


def timer_id(app: App, assignment_id: int, kind: str) -> int:
    with app.store.session() as session:
        found = session.scalar(
            select(SlaTimer.id).where(
                SlaTimer.assignment_id == assignment_id, SlaTimer.kind == kind
            )
        )
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("arrives", "remind_50", "remind_80", "due"),
    [
        # Thursday 16:00 CET before Easter: one working hour left that day, then Good Friday,
        # the weekend (with the switch to summer time) and Easter Monday are closed.
        (
            datetime(2027, 3, 25, 15, 0, tzinfo=UTC),
            datetime(2027, 3, 30, 7, 0, tzinfo=UTC),  # Tuesday 09:00 CEST
            datetime(2027, 3, 30, 8, 12, tzinfo=UTC),  # Tuesday 10:12 CEST
            datetime(2027, 3, 30, 9, 0, tzinfo=UTC),  # Tuesday 11:00 CEST
        ),
        # Thursday 15:00 CET: half the budget is used up at closing time, so the first
        # reminder waits for Tuesday's opening rather than reach an empty office.
        (
            datetime(2027, 3, 25, 14, 0, tzinfo=UTC),
            datetime(2027, 3, 30, 6, 0, tzinfo=UTC),  # Tuesday 08:00 CEST
            datetime(2027, 3, 30, 7, 12, tzinfo=UTC),  # Tuesday 09:12 CEST
            datetime(2027, 3, 30, 8, 0, tzinfo=UTC),  # Tuesday 10:00 CEST
        ),
    ],
    ids=["16:00", "15:00"],
)
def test_business_hours_timers_skip_the_easter_holidays_and_the_weekend(
    config_dir: Path,
    make_settings: Callable[..., Settings],
    arrives: datetime,
    remind_50: datetime,
    remind_80: datetime,
    due: datetime,
) -> None:
    # Given Jonas in Hanover (08:00-17:00, Lower Saxony's holidays) and a 4h business-hours SLA
    write_config(config_dir, team=JONAS_ONLY_IN_HANOVER)
    app = init_app(make_settings())
    contact = add_mql(app.store, 1, arrives, form="contact")

    # When the lead is routed on the Thursday before Easter
    route_contact(app.store, app.config, contact, arrives)

    # Then its reminders and breach fall in Jonas' working time after Easter Monday
    [assignment] = assignments_of(app, contact)
    assert (assignment.rep, assignment.sla_policy) == ("jonas", "standard")
    assert timers_of(app, assignment.id) == {
        "remind:50": remind_50,
        "remind:80": remind_80,
        "breach": due,
    }
    assert assignment.due_at == due
    app.close()


def test_calendar_clock_timers_run_on_the_wall_clock(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    write_config(config_dir)
    app = init_app(make_settings())
    saturday_night = datetime(2026, 11, 21, 22, 0, tzinfo=UTC)
    contact = add_mql(app.store, 1, saturday_night)

    route_contact(app.store, app.config, contact, saturday_night)

    [assignment] = assignments_of(app, contact)
    assert assignment.sla_policy == "hot"
    assert timers_of(app, assignment.id) == {
        "remind:50": saturday_night + timedelta(minutes=2, seconds=30),
        "remind:80": saturday_night + timedelta(minutes=4),
        "breach": saturday_night + timedelta(minutes=5),
    }
    app.close()


def test_a_reminder_reaches_the_rep_once_with_the_due_time(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    write_config(config_dir)
    with SmtpServer() as smtp:
        app = init_app(make_settings(smtp_url=smtp.url))
        contact = add_mql(app.store, 1, T)
        route_contact(app.store, app.config, contact, T)
        [assignment] = assignments_of(app, contact)
        reminder = timer_id(app, assignment.id, "remind:50")

        # Not yet due at two minutes; due at 2.5 minutes; a second firing does nothing
        early = fire_timer(app.store, app.config, reminder, T + timedelta(minutes=2))
        fired = fire_timer(app.store, app.config, reminder, T + timedelta(minutes=3))
        again = fire_timer(app.store, app.config, reminder, T + timedelta(minutes=3))
        for message_id in fired.message_ids:
            send_message(app, message_id, lambda: T + timedelta(minutes=3))
        [mail] = smtp.wait_for(1)
        app.close()

    assert (early.fired, fired.fired, again.fired) == (False, True, False)
    assert mail.rcpt_tos == [f"{assignment.rep}@example.com"]
    # (stripped: Python's e-mail folding puts a long subject on a continuation line)
    assert str(mail.message["Subject"]).strip() == (
        "Reminder: lead Eva Lead1 (Company 1 AG) is due at Mon 16 Nov 2026, 10:05 CET"
    )
    body = mail.message.get_content()
    assert "50% of the time to respond" in body
    assert "/accept/" in body
    [message] = messages(app, "sla_reminder")
    assert message.key == f"lead:{contact}:assignment:{assignment.id}:remind:50:{assignment.rep}"


def test_a_reminder_that_comes_after_the_due_time_is_not_sent(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    # A clock that was down: the breach speaks for itself, a late "reminder" would confuse
    write_config(config_dir)
    app = init_app(make_settings())
    contact = add_mql(app.store, 1, T)
    route_contact(app.store, app.config, contact, T)
    [assignment] = assignments_of(app, contact)

    late = fire_timer(
        app.store, app.config, timer_id(app, assignment.id, "remind:80"), T + timedelta(hours=1)
    )

    assert late.fired and late.message_ids == []
    assert late.outcome == "not sent: the lead was already past due"
    app.close()


def test_two_clocks_firing_the_same_due_timers_at_once_send_each_reminder_once(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    # Given 30 hot leads with 60 reminders due at 4.5 minutes (the breaches are not yet due)
    write_config(config_dir)
    app = init_app(make_settings(database_url=database_url))
    contacts = [add_mql(app.store, n, T) for n in range(30)]
    for contact in contacts:
        route_contact(app.store, app.config, contact, T)
    now = T + timedelta(minutes=4, seconds=30)
    due = due_timers(app.store, now)
    assert len(due) == 60

    # When two clock passes fire all of them in parallel threads, as if each clock had
    # enqueued every timer (the doorbell rang twice)
    start = threading.Barrier(2)
    results: list[list[Fired]] = [[], []]
    errors: list[BaseException] = []

    def clock_pass(index: int) -> None:
        start.wait()
        try:
            for timer in due:
                results[index].append(fire_timer(app.store, app.config, timer, now))
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=clock_pass, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every timer fired exactly once, and each rep has one reminder per lead and share
    assert errors == []
    fired = Counter(r.timer_id for pass_ in results for r in pass_ if r.fired)
    assert sorted(fired) == sorted(due) and set(fired.values()) == {1}
    reminders = messages(app, "sla_reminder")
    assert len(reminders) == 60
    assert len({m.key for m in reminders}) == 60
    with app.store.session() as session:
        unfired = session.scalars(select(SlaTimer.kind).where(SlaTimer.fired_at.is_(None))).all()
    assert Counter(unfired) == {"breach": 30}
    app.close()


def test_accepting_stops_the_clock(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    write_config(config_dir)
    app = init_app(make_settings(database_url=database_url))
    contact = add_mql(app.store, 1, T)
    route_contact(app.store, app.config, contact, T)

    # When the rep accepts after a minute
    assert accept_lead(app, str(contact), now=T + timedelta(minutes=1)) is not None

    # Then an hour later nothing is due, and firing the timers anyway does nothing
    later = T + timedelta(hours=1)
    assert collect_status(app, now=later)["sla"]["timers_due"] == 0
    assert due_timers(app.store, later) == []
    with app.store.session() as session:
        closed = session.scalars(select(SlaTimer)).all()
    assert {t.outcome for t in closed} == {"not fired: the lead was accepted"}
    ids = [t.id for t in closed]
    outcomes = [fire_timer(app.store, app.config, i, later) for i in ids]
    assert [o.fired for o in outcomes] == [False, False, False]
    assert {o.outcome for o in outcomes} == {"not fired: the lead was accepted"}
    assert messages(app, "sla_reminder") == [] and messages(app, "sla_escalation") == []
    [after] = assignments_of(app, contact)
    assert after.status == "accepted"
    app.close()


def test_a_breach_escalates_to_the_manager_and_reassigns_with_a_new_clock(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    write_config(config_dir)
    with SmtpServer() as smtp:
        app = init_app(make_settings(database_url=database_url, smtp_url=smtp.url))
        contact = add_mql(app.store, 1, T)
        route_contact(app.store, app.config, contact, T)
        [first] = assignments_of(app, contact)
        other = {"jonas": "lea", "lea": "jonas"}[first.rep or ""]

        # When the first rep lets the 5 minutes pass
        breach_at = T + timedelta(minutes=5)
        fired = fire_timer(app.store, app.config, timer_id(app, first.id, "breach"), breach_at)
        for message_id in fired.message_ids:
            send_message(app, message_id, lambda: breach_at)
        mails = {m.rcpt_tos[0]: m for m in smtp.wait_for(2)}

        # Then the first assignment is kept as history, closed as reassigned
        old, new = assignments_of(app, contact)
        assert (old.id, old.rep, old.status, old.rule) == (
            first.id,
            first.rep,
            "reassigned",
            "enterprise DACH",
        )
        assert old.accepted_at is None and old.due_at == breach_at
        # and the other rep has the lead with a new 5-minute clock
        assert (new.rep, new.status, new.sla_policy) == (other, "open", "hot")
        assert new.due_at == breach_at + timedelta(minutes=5)
        assert new.reason.startswith(f"reassigned after {first.rep} let the hot SLA pass")
        assert {"rep": first.rep, "reason": "let the SLA on this lead pass"} in new.skipped
        assert timers_of(app, new.id)["breach"] == breach_at + timedelta(minutes=5)
        assert fired.outcome == f"escalated to anna; reassigned to {other}"
        # and Anna, their manager, and the new rep were told
        escalation = mails["anna@example.com"].message
        assert (
            str(escalation["Subject"])
            .strip()
            .startswith("SLA breached: lead Eva Lead1 (Company 1 AG)")
        )
        assert f"reassigned to {app.config.team.reps[other].name}" in escalation.get_content()
        new_lead = str(mails[f"{other}@example.com"].message["Subject"]).strip()
        assert new_lead.startswith("New lead: Eva Lead1")

        # When the second rep lets it pass too, nobody is left: it stays, Anna hears of it
        second = fire_timer(
            app.store,
            app.config,
            timer_id(app, new.id, "breach"),
            breach_at + timedelta(minutes=5),
        )
        assert second.outcome == (
            "escalated to anna; not reassigned: "
            "jonas let the SLA on this lead pass; lea let the SLA on this lead pass"
        )
        assert [a.status for a in assignments_of(app, contact)] == ["reassigned", "open"]
        app.close()


def test_the_clock_enqueues_due_timers_and_a_worker_fires_them(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    # Given a hot lead routed at T, and a clock that comes back ten minutes later
    write_config(config_dir)
    with running(make_settings()) as leadwerk:
        app = leadwerk.app
        contact = add_mql(app.store, 1, T)
        route_contact(app.store, app.config, contact, T)

        # When its SLA job runs and the worker drains the queues
        assert enqueue_due_timers(app.store, T + timedelta(minutes=10)) == 3
        assert enqueue_due_timers(app.store, T + timedelta(minutes=10)) == 0  # already rung
        leadwerk.drain()

        # Then the breach was escalated and the lead went to the other rep; the late
        # reminders were not sent
        statuses = [a.status for a in assignments_of(app, contact)]
        assert statuses == ["reassigned", "open"]
        assert [m.status for m in messages(app, "sla_escalation")] == ["sent"]
        assert messages(app, "sla_reminder") == []
