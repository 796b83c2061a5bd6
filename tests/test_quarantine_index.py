"""One open quarantine entry per source and record, guaranteed by the database itself, so two
writers racing with the same bad record cannot list it twice."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from worker.store.db import Store
from worker.store.models import Quarantine


def test_a_second_open_entry_for_the_same_record_is_refused(database_url: str) -> None:
    store = Store(database_url)
    try:
        with store.session() as session:
            session.add(Quarantine(source="ebooks", record_key="id:7", reason="no e-mail", raw={}))
        with pytest.raises(IntegrityError), store.session() as session:
            session.add(Quarantine(source="ebooks", record_key="id:7", reason="no e-mail", raw={}))
        # once replayed, the same record may be quarantined again
        with store.session() as session:
            session.execute(
                Quarantine.__table__.update().values(status="replayed")  # type: ignore[attr-defined]
            )
            session.add(Quarantine(source="ebooks", record_key="id:7", reason="bad again", raw={}))
        with store.session() as session:
            total = session.scalar(select(func.count()).select_from(Quarantine))
        assert total == 2
    finally:
        store.close()
