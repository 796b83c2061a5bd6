"""Pooled PostgreSQL connections: one cut while idle in the pool (a server restart, a
firewall's idle timeout) is replaced before use, so the next lead's work does not fail."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from worker.store import db


def _backend_pid(store: db.Store) -> int:
    with store.transaction() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _cut(admin_url: str, pid: int) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_connection_cut_while_idle_is_replaced_before_use(
    postgres_url: str, postgres_admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = db.Store(postgres_url)
    try:
        first = _backend_pid(store)
        _cut(postgres_admin, first)
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # idle long enough to be pinged

        second = _backend_pid(store)

        assert second != first
    finally:
        store.close()


def test_a_connection_used_a_moment_ago_is_not_pinged(
    postgres_url: str, postgres_admin: str
) -> None:
    """The price of skipping the ping: a connection cut within the idle window fails its
    statement (the actor's retry runs the work again), and the pool replaces it."""
    store = db.Store(postgres_url)
    try:
        first = _backend_pid(store)
        _cut(postgres_admin, first)

        with pytest.raises(OperationalError):
            _backend_pid(store)
        assert _backend_pid(store) != first
    finally:
        store.close()
