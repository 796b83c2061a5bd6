"""The fast path of a new lead: scored, routed and its messages claimed in one transaction,
then sent at once; and what happens when a part of it fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import func, select

from config.settings import Settings
from tests.lead_helpers import FAIR, fair_row, restore_logging  # noqa: F401
from tests.servers.smtp import SmtpServer
from worker.pipeline import actors
from worker.pipeline.ingest import ingest_records
from worker.pipeline.lead import score_and_route
from worker.pipeline.sweep import find_pending
from worker.runtime.app import App, init_app
from worker.runtime.broker import setup_broker
from worker.store.models import Assignment, Contact, Event, Message, RepCounter, Score, SlaTimer

HOT_LEAD = fair_row("eva.mueller@bigcorp.de", size=5000, title="Head of IT")


@dataclass
class Leadwerk:
    app: App
    smtp: SmtpServer


@pytest.fixture
def lw(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Leadwerk]:
    """Leadwerk with the in-process broker but no worker: what the actors queue stays queued,
    so a test sees exactly what the fast path did itself."""
    with SmtpServer() as smtp:
        settings = make_settings(database_url=database_url, smtp_url=smtp.url)
        app = init_app(settings)
        broker = setup_broker(settings)
        try:
            yield Leadwerk(app, smtp)
        finally:
            broker.close()
            app.close()


def take_in(app: App) -> int:
    report = ingest_records(app.store, app.config, app.config.sources[FAIR], [HOT_LEAD])
    [event_id] = report.event_ids
    return event_id


def queued(actor_name: str) -> list[list[object]]:
    """The arguments of the messages for ``actor_name`` waiting in the in-process broker."""
    broker = actors.route_lead.broker
    found = []
    for queue in broker.queues.values():  # type: ignore[attr-defined]
        for data in list(queue.queue):
            message = dramatiq.Message.decode(data)
            if message.actor_name == actor_name:
                found.append(list(message.args))
    return found


def test_a_new_mql_is_scored_routed_and_told_in_one_go(lw: Leadwerk) -> None:
    app, smtp = lw.app, lw.smtp
    event_id = take_in(app)

    actors.score_lead.fn(event_id)

    [mail] = smtp.wait_for(1)
    with app.store.session() as session:
        contact = session.scalars(select(Contact)).one()
        assignment = session.scalars(select(Assignment)).one()
        message = session.scalars(select(Message)).one()
        event = session.get(Event, event_id)
        assert event is not None and event.status == "processed"
    assert contact.stage == "mql" and contact.owner == assignment.rep
    # Claimed once, when it was written; sent once; the assignment knows the rep was told.
    assert (message.status, message.attempts) == ("sent", 1)
    assert assignment.notified_at is not None
    assert mail.message["Message-ID"] == message.message_id


def test_a_second_lead_from_a_company_goes_to_the_rep_who_owns_it(lw: Leadwerk) -> None:
    app = lw.app
    colleague = fair_row("jan.schmidt@bigcorp.de", size=5000, title="CIO")
    tuesday_morning = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # the team is at work
    score_and_route(app.store, app.config, take_in(app), tuesday_morning)
    report = ingest_records(app.store, app.config, app.config.sources[FAIR], [colleague])

    # Round robin would hand the enterprise team's next lead to the other rep.
    score_and_route(app.store, app.config, report.event_ids[0], tuesday_morning)

    with app.store.session() as session:
        first, second = session.scalars(select(Assignment).order_by(Assignment.id)).all()
    assert first.rule == "enterprise DACH" and first.rep is not None
    assert second.rule == "account owner" and second.rep == first.rep


def test_the_rep_s_sla_clock_starts_in_the_same_transaction(lw: Leadwerk) -> None:
    app = lw.app
    tuesday_morning = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # the team is at work

    score_and_route(app.store, app.config, take_in(app), tuesday_morning)

    with app.store.session() as session:
        assignment = session.scalars(select(Assignment)).one()
        timers = session.scalars(select(SlaTimer).order_by(SlaTimer.fire_at)).all()
        [counter] = session.scalars(select(RepCounter).where(RepCounter.rep == assignment.rep))
    # The "standard" policy: an answer within 4 business hours, else the breach escalates.
    assert assignment.sla_policy == "standard"
    assert assignment.due_at == tuesday_morning + timedelta(hours=4)
    assert [(t.assignment_id, t.kind, t.fire_at) for t in timers] == [
        (assignment.id, "breach", assignment.due_at)
    ]
    assert (counter.assigned_total, counter.last_assigned_at) == (1, tuesday_morning)


def test_a_lead_whose_routing_fails_is_still_scored_and_routing_is_retried_on_its_own(
    lw: Leadwerk, config_dir: Path
) -> None:
    app, smtp = lw.app, lw.smtp
    # Given: marketing ops saved a template that fails when it is rendered
    template = config_dir / "templates" / "new_lead.txt.j2"
    working = template.read_text(encoding="utf-8")
    template.write_text("{% set broken = lead.id / 0 %}" + working, encoding="utf-8")
    event_id = take_in(app)

    # When: the worker takes the new event
    actors.score_lead.fn(event_id)

    # Then: the score is kept, nobody is assigned yet, and routing waits on its own queue
    with app.store.session() as session:
        contact = session.scalars(select(Contact)).one()
        scores = session.scalar(select(func.count()).select_from(Score))
        event = session.get(Event, event_id)
        assert event is not None and event.status == "processed"
        assert session.scalar(select(func.count()).select_from(Assignment)) == 0
    assert contact.stage == "mql" and scores == 1
    assert queued("route_lead") == [[contact.id]]

    # When: the template is mended and the queued retry runs
    template.write_text(working, encoding="utf-8")
    actors.route_lead.fn(contact.id)

    # Then: the rep is told, once
    smtp.wait_for(1)
    with app.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 1
        assert session.scalars(select(Message.status)).all() == ["sent"]


def test_a_crash_after_the_commit_but_before_sending_is_recovered_after_the_lease(
    lw: Leadwerk,
) -> None:
    app, smtp = lw.app, lw.smtp
    event_id = take_in(app)
    now = datetime.now(UTC)
    # The transaction commits the claimed message, then the process dies before sending.
    [claimed] = score_and_route(app.store, app.config, event_id, now)
    assert claimed.status == "sending"
    assert find_pending(app.store, now + timedelta(seconds=1)).messages == []

    # After the send lease the sweep takes it back, counted as a possible duplicate.
    pending = find_pending(app.store, now + timedelta(minutes=3))
    assert pending.messages == [claimed.id] and pending.recovered == 1
    actors.send_message.fn(claimed.id)

    [mail] = smtp.wait_for(1)
    with app.store.session() as session:
        message = session.get(Message, claimed.id)
        assert message is not None
    assert (message.status, message.resent_after_crash) == ("sent", 1)
    assert mail.message["Message-ID"] == message.message_id


def test_a_score_lead_redelivered_after_the_fast_path_sends_nothing_more(lw: Leadwerk) -> None:
    app, smtp = lw.app, lw.smtp
    event_id = take_in(app)
    actors.score_lead.fn(event_id)
    smtp.wait_for(1)

    actors.score_lead.fn(event_id)

    with app.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1
        assert session.scalar(select(func.count()).select_from(Assignment)) == 1
    assert len(smtp.messages) == 1


def test_a_lead_no_rep_can_take_goes_to_every_fallback_manager_at_once(
    make_settings: Callable[..., Settings], config_dir: Path, database_url: str
) -> None:
    (config_dir / "routing.yaml").write_text(
        "rules:\n"
        "  - name: nobody today\n"
        '    when: country == "XX"\n'
        "    team: inside-sales\n"
        "    strategy: round_robin\n"
        "fallback: {notify: [anna, jonas]}\n",
        encoding="utf-8",
    )
    with SmtpServer() as smtp:
        settings = make_settings(database_url=database_url, smtp_url=smtp.url)
        app = init_app(settings)
        broker = setup_broker(settings)
        try:
            actors.score_lead.fn(take_in(app))

            mails = smtp.wait_for(2)
            with app.store.session() as session:
                assignment = session.scalars(select(Assignment)).one()
                messages = session.scalars(select(Message).order_by(Message.rep)).all()
                counted = session.scalar(select(func.count()).select_from(RepCounter))
                timers = session.scalar(select(func.count()).select_from(SlaTimer))
        finally:
            broker.close()
            app.close()
    reps = app.config.team.reps
    assert assignment.rep is None and assignment.status == "open"
    assert [(m.rep, m.purpose, m.status) for m in messages] == [
        ("anna", "unassigned_lead", "sent"),
        ("jonas", "unassigned_lead", "sent"),
    ]
    assert sorted(mail.rcpt_tos[0] for mail in mails) == sorted(
        [reps["anna"].email, reps["jonas"].email]
    )
    # Nobody's turn was used up and no rep's SLA clock runs.
    assert (counted, timers) == (0, 0)
