"""Shared fixtures: real services when reachable; skipped with the reason off CI, failing
under CI (``CI=true``), where a missing service is a broken machine, not a skip."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("LEADWERK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LEADWERK_TEST_REDIS", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("LEADWERK_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _missing(service: str, error: Exception) -> None:
    message = f"No connection to {service}: {error}"
    if CI:
        pytest.fail(message + " (CI=true: services must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    import psycopg

    url = PG_ADMIN_URL
    try:
        with psycopg.connect(url.replace("postgresql://", "postgresql://", 1), connect_timeout=3):
            pass
    except Exception as exc:  # any failure to reach the server means: not here
        _missing("PostgreSQL on 127.0.0.1:5432", exc)
    return url


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with _postgres_database(postgres_admin) as url:
        yield url


@contextmanager
def _postgres_database(postgres_admin: str) -> Iterator[str]:
    import psycopg

    name = f"leadwerk_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
        client.ping()
    except Exception as exc:
        _missing("Redis on 127.0.0.1:6379", exc)
    yield REDIS_URL


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """RabbitMQ's default virtual host, with Leadwerk's queues emptied before and after the
    test (a deployment owns its virtual host; the tests share this one, one at a time)."""
    from worker.runtime.rabbitmq import rabbitmq_connection

    try:
        rabbitmq_connection(RABBITMQ_URL).close()
    except Exception as exc:
        _missing("RabbitMQ on 127.0.0.1:5672", exc)
    _delete_leadwerk_queues(RABBITMQ_URL)
    yield RABBITMQ_URL
    _delete_leadwerk_queues(RABBITMQ_URL)


def _delete_leadwerk_queues(url: str) -> None:
    from dramatiq.common import dq_name, xq_name

    from worker.runtime.broker import QUEUES
    from worker.runtime.rabbitmq import rabbitmq_connection

    connection = rabbitmq_connection(url)
    try:
        channel = connection.channel()
        for queue in QUEUES:
            for name in (queue, dq_name(queue), xq_name(queue)):
                channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leadwerk.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def second_database_url(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Another empty store of the same kind as ``database_url``, for a test that compares
    two ways of doing one thing."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    with _postgres_database(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the example config, free to edit in a test."""
    target = tmp_path / "project" / "config"
    shutil.copytree(EXAMPLE_CONFIG, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


@pytest.fixture
def make_settings(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """Settings for the example config; ``env=`` sets variables for the rest of the test
    (the secrets that YAML files name are read from the environment when used)."""

    def make(**overrides: Any) -> Settings:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
        for name, value in overrides.pop("env", {}).items():
            env[name] = value
            if not name.startswith("LEADWERK_"):
                monkeypatch.setenv(name, value)
        overrides.setdefault("database_url", f"sqlite:///{tmp_path / 'leadwerk.db'}")
        overrides.setdefault("outbox_dir", tmp_path / "outbox")
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("LEADWERK_")}
        try:
            settings = load_settings(config_dir, env=env, **overrides)
        finally:
            os.environ.update(saved)
        return settings

    return make


@pytest.fixture(scope="session")
def bottlecrm(postgres_admin: str) -> Iterator[Any]:
    """A real BottleCRM on 127.0.0.1 with an organisation of its own (tests/servers/bottlecrm.py):
    skipped with the reason where it cannot run, failing under CI=true."""
    from tests.crm_harness import start_bottlecrm

    crm = start_bottlecrm(postgres_admin)
    yield crm
    crm.stop()
