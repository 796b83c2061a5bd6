"""Engine, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import mask_url
from connectors.json_depth import parse

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision: migrations are named after their revision ("0017_alert_states.py")
# and chained in that order (tests/test_migrate_race.py checks it against Alembic's head).
HEAD = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))

log = logging.getLogger("leadwerk.store")


def make_engine(url: str) -> Engine:
    """An engine tuned for the job.

    SQLite ignores ``FOR UPDATE``; every transaction therefore starts with ``BEGIN IMMEDIATE``
    (one writer at a time, waiting up to 30 s) so that claim-by-update is atomic across
    threads and processes. WAL lets readers go on meanwhile.

    Statement parameters are left out of error messages (``hide_parameters``): they hold
    contacts' addresses and names, and errors end up in logs.
    """
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
            **_JSON_COLUMNS,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        hide_parameters=True,
        **_JSON_COLUMNS,
    )
    _ping_when_idle(engine)
    return engine


def _json_text(value: Any) -> str:
    """JSON columns written by orjson (a fifth of ``json.dumps``' time: contacts, events and
    scores each carry one); what it refuses (integers beyond 64 bits, NaN) as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


_JSON_COLUMNS: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": parse}

# A pooled connection idle for longer than this is pinged before use.
PING_AFTER_IDLE_S = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it has been idle for a while.

    ``pool_pre_ping`` pings at every checkout: a round trip to PostgreSQL for each of a new
    lead's two transactions and for each webhook. A connection busy a moment ago is alive;
    one that sat idle may have been cut (a server restart, a firewall's idle timeout). A failed
    ping makes the pool replace the connection and try again, as pre-ping does; a connection
    that dies within the idle window fails its statement, and the actor's retry runs it anew.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


# The PostgreSQL advisory lock that serialises migrations: any fixed 64-bit number that no
# other advisory lock in the database uses ("leadwerk" in ASCII).
MIGRATION_LOCK = 0x6C656164776572


class StoreUnavailable(Exception):
    """The store cannot be opened: one line naming it (password hidden) and the reason."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the store at {mask_url(url)}: {reason}")


def _reason(exc: BaseException) -> str:
    """The driver's own words, without the connection preamble and hints: ``database
    "nosuchdb" does not exist``, ``Connection refused``, ``unable to open database file``."""
    said = str(getattr(exc, "orig", None) or exc).strip()
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    first = next((line for line in lines if "FATAL:" in line), lines[0] if lines else said)
    first = first.split("FATAL:", 1)[-1]
    return first.rsplit(" failed: ", 1)[-1].strip()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision and return that revision (idempotent).

    Every process migrates at start, and several may start at once on an empty database:
    on PostgreSQL the migration holds an advisory lock (in its own transaction, released at
    commit), so the first process migrates and the others wait, then find the schema at its
    newest revision and do nothing. On SQLite the transaction begins with ``BEGIN
    IMMEDIATE`` (see :func:`make_engine`), which serialises the migrations in the same way.
    A store at :data:`HEAD` already is left alone without loading Alembic (a tenth of a
    second and 10 MB of every process's start), and an empty one gets the models' schema
    whole and is stamped at :data:`HEAD` (Alembic's recipe for a new database; the models
    and the migrations describe one schema: tests/test_migrate_race.py compares them).
    """
    if _revision(engine) == HEAD:
        return HEAD
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            _lock_migrations(connection)
        if not inspect(connection).get_table_names():
            _create_at_head(connection)
            return HEAD
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            _lock_migrations(connection)
        cfg.attributes["connection"] = connection
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:
            raise UnknownRevision(str(exc)) from None
        revision = MigrationContext.configure(connection).get_current_revision()
    return revision or "base"


class UnknownRevision(Exception):
    """The store's schema is at a revision this Leadwerk's migrations do not know."""


def _create_at_head(connection: Connection) -> None:
    """An empty store: every table as the models define it, at revision :data:`HEAD`."""
    from worker.store.models import Base

    Base.metadata.create_all(connection)
    version = Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(connection)
    connection.execute(version.insert().values(version_num=HEAD))


def _revision(engine: Engine) -> str | None:
    """The store's schema revision, None before the first migration."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.scalar(text("SELECT version_num FROM alembic_version"))


def _lock_migrations(connection: Connection) -> None:
    if connection.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}):
        return
    log.info("another process is migrating the store; waiting for it")
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


class Store:
    """The engine and a session factory; ``with store.session() as s:`` commits on success."""

    def __init__(self, url: str, run_migrations: bool = True) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise StoreUnavailable(
                url, f"not a sqlite:/// or postgresql:// URL Leadwerk can use ({exc})"
            ) from None
        except OSError as exc:  # the SQLite file's folder cannot be made
            raise StoreUnavailable(url, f"{exc.filename}: {exc.strerror}") from None
        #: The schema revision the store is at (when this process migrated it).
        self.revision: str | None = None
        if run_migrations:
            self.revision = self._migrated(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _migrated(self, url: str) -> str:
        try:
            return migrate(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            raise StoreUnavailable(url, _reason(exc)) from None
        except UnknownRevision as exc:
            self.engine.dispose()
            raise StoreUnavailable(
                url,
                f"its schema is at a revision this Leadwerk does not know ({exc}); "
                "was it migrated by a newer version?",
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction, committed on success: for the hot path
        (scoring and routing a new lead), which writes with prebuilt statements and needs
        no ORM session around them."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which each statement commits by itself: a write that is one
        statement needs no ``BEGIN`` and ``COMMIT`` around it (two round trips fewer)."""
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
