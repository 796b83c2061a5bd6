"""A store with contacts on dated lists and the nurture e-mails they were sent, for the
hygiene tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from click.testing import Result
from sqlalchemy import select

from config.settings import Settings
from tests.source_helpers import leadwerk
from worker.runtime.app import App, init_app
from worker.store.models import AddressChange, AddressState, Contact, Event, Message

DSN = Path(__file__).parent / "data" / "dsn"

HYGIENE_YAML = """\
bounces: {soft_to_hard_after: 3}
stale:
  no_engagement_for: 540d
  expected_decay_per_month: 2.1%
lists:
  warn_bounce_rate: 2%
  suspend_bounce_rate: 5%
  window: 30d
  touch_every: 60d
  check_every: 1d
  owner: anna
"""


@contextmanager
def hygiene_app(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str, **env: str
) -> Iterator[App]:
    (config_dir / "hygiene.yaml").write_text(HYGIENE_YAML)
    app = init_app(make_settings(database_url=database_url, env=env))
    try:
        yield app
    finally:
        app.close()


def cli(app: App, config_dir: Path, *args: str) -> Result:
    """A ``leadwerk`` command against the test's store."""
    env = {
        "LEADWERK_DATABASE_URL": app.settings.database_url,
        "LEADWERK_OUTBOX_DIR": str(app.settings.outbox_dir),
    }
    return leadwerk(config_dir, *args, env=env)


def add_contact(
    app: App, email: str, source: str, arrived: datetime, engaged: datetime | None = None
) -> int:
    """A contact that arrived from ``source`` at ``arrived`` (with its first event then),
    and, if given, engaged again at ``engaged``."""
    with app.store.session() as session:
        contact = Contact(
            email=email,
            email_domain=email.rpartition("@")[2],
            fields={"email": email},
            source=source,
            created_at=arrived,
            updated_at=arrived,
        )
        session.add(contact)
        session.flush()
        for index, at in enumerate(a for a in (arrived, engaged) if a is not None):
            session.add(
                Event(
                    contact_id=contact.id,
                    source=source,
                    record_key=f"{email}:{index}",
                    type="form",
                    occurred_at=at,
                    status="processed",
                )
            )
        return contact.id


def sent_nurture(
    app: App, contact_id: int, at: datetime, message_id: str | None = None, step: int = 1
) -> int:
    """A nurture e-mail to the contact, sent at ``at``."""
    with app.store.session() as session:
        contact = session.get(Contact, contact_id)
        assert contact is not None
        message = Message(
            key=f"nurture:{contact_id}:ebook:{step}:{at.isoformat()}",
            contact_id=contact_id,
            purpose="nurture:ebook:1",
            channel="email",
            recipient=contact.email,
            message_id=message_id or f"<nurture-{contact_id}.s{step}.{at:%s}@leadwerk.example.com>",
            status="sent",
            sent_at=at,
            created_at=at,
        )
        session.add(message)
        session.flush()
        return message.id


def address_state(app: App, email: str) -> str:
    with app.store.session() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == email))
        state = session.get(AddressState, contact_id)
        return state.state if state else "ok"


def history(app: App, email: str) -> list[tuple[str, str, str]]:
    with app.store.session() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == email))
        rows = session.scalars(
            select(AddressChange)
            .where(AddressChange.contact_id == contact_id)
            .order_by(AddressChange.id)
        )
        return [(r.from_state, r.to_state, r.cause) for r in rows]


def maildir_with(folder: Path, *names: str) -> Path:
    """A Maildir holding copies of the named corpus files in ``new/``."""
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DSN / name, folder / "new" / name)
    return folder
