"""Erasure on request: after `leadwerk forget`, nothing of the person is left in the store."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import String, cast, func, select

from tests.pipeline_helpers import running
from tests.test_walking_skeleton import write_export
from worker.commands.erasure import forget
from worker.pipeline.poll import import_file
from worker.store.models import Assignment, Contact, Event, Message, Quarantine, Score


def test_forget_erases_the_contact_its_events_messages_and_outbox_copies(
    make_settings, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url=database_url)
    with running(settings) as leadwerk:
        app = leadwerk.app
        import_file(
            app.store,
            app.config,
            app.config.sources["messe-hannover-2026"],
            write_export(tmp_path / "messe.csv"),
        )
        leadwerk.drain()
        with app.store.session() as session:
            eva = session.scalars(select(Contact).where(Contact.email.like("eva%"))).one()
            others = session.scalar(select(func.count()).select_from(Contact)) - 1
        outbox = Path(settings.outbox_dir)
        assert list(outbox.glob(f"lead_{eva.id}_*"))

        erased = forget(app, "Eva.Mueller@BIGCORP.de")

        with app.store.session() as session:
            left = {
                model.__name__: session.scalar(
                    select(func.count()).select_from(model).where(model.contact_id == eva.id)
                )
                for model in (Event, Score, Assignment, Message)
            }
            contacts = session.scalar(select(func.count()).select_from(Contact))
            dump = " ".join(
                session.scalars(select(cast(Event.raw, String))).all()
                + session.scalars(select(cast(Quarantine.raw, String))).all()
            )
    assert erased.contacts == 1 and erased.events == 1 and erased.messages == 1
    assert left == {"Event": 0, "Score": 0, "Assignment": 0, "Message": 0}
    assert contacts == others
    assert "eva.mueller" not in dump.lower()
    assert not list(outbox.glob(f"lead_{eva.id}_*"))


def test_forget_also_removes_quarantined_records_with_the_address(
    make_settings, tmp_path: Path
) -> None:
    with running(make_settings()) as leadwerk:
        app = leadwerk.app
        with app.store.session() as session:
            session.add(
                Quarantine(
                    source="ebooks",
                    reason="no first name",
                    field="first_name",
                    raw=json.loads('{"email": "ghost@example.com"}'),
                )
            )
        erased = forget(app, "ghost@example.com")
        with app.store.session() as session:
            remaining = session.scalar(select(func.count()).select_from(Quarantine))
    assert (erased.contacts, erased.quarantined, remaining) == (0, 1, 0)
