"""Starting Leadwerk on an empty database: the release step (`leadwerk migrate`) and the
Procfile's processes started together all come up, with the schema migrated once; a store
that cannot be reached is named in one line, and nothing starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tests.process_helpers import Process, free_port, process_env, started, web_answers
from tests.redis_namespace import own_namespace
from worker.store.db import HEAD, MIGRATIONS, Store

ROUNDS = 5


def newest_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def revisions_recorded(postgres_url: str) -> list[str]:
    with psycopg.connect(postgres_url) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


@pytest.mark.parametrize("round_", range(1, ROUNDS + 1))
def test_web_worker_and_clock_started_together_on_an_empty_database_all_come_up(
    round_: int, config_dir: Path, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with own_namespace(redis_url) as namespace:
        env = process_env(
            config_dir,
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            redis_namespace=namespace,
            web_port=str(port),
        )
        # When the Procfile's three processes start at the same instant on an empty database
        with started(env, tmp_path, ("web",), ("worker",), ("clock",)) as processes:
            web, worker, clock = processes
            # Then the web process answers, and the worker and the clock say they started
            web.wait_for(web_answers(port), "answer on /healthz")
            worker.wait_for_line(" started with ")
            clock.wait_for_line("clock started")
            codes = [process.stop() for process in processes]
    # And none of them failed on the way
    for process in processes:
        assert "Traceback" not in process.output, process.output
    assert codes == [0, 0, 0]
    assert revisions_recorded(postgres_url) == [newest_revision()]


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*Process.command, "migrate"], env=env, capture_output=True, text=True, timeout=120
    )


def test_migrate_brings_an_empty_store_to_the_newest_revision_and_a_second_run_changes_nothing(
    config_dir: Path, postgres_url: str, tmp_path: Path
) -> None:
    env = process_env(config_dir, tmp_path, database_url=postgres_url)
    first = migrate(env)
    second = migrate(env)
    expected = f"the store at {postgres_url} is at schema revision {newest_revision()}\n"
    assert (first.returncode, first.stdout) == (0, expected), first.stderr
    assert (second.returncode, second.stdout) == (0, expected), second.stderr
    assert revisions_recorded(postgres_url) == [newest_revision()]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_three_migrations_started_at_once_all_succeed_and_migrate_once(
    store: str, config_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'leadwerk.db'}"
        if store == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    env = process_env(config_dir, tmp_path, database_url=url)
    with started(env, tmp_path, ("migrate",), ("migrate",), ("migrate",)) as processes:
        codes = [process.popen.wait(timeout=120) for process in processes]
    outputs = [process.output for process in processes]
    assert codes == [0, 0, 0], outputs
    assert all(f"is at schema revision {newest_revision()}" in out for out in outputs), outputs
    assert not any("Traceback" in out for out in outputs), outputs


@pytest.mark.parametrize("command", [("worker",), ("clock",), ("web",), ("migrate",)])
def test_a_process_on_a_database_that_does_not_exist_says_so_in_one_line_and_exits_2(
    command: tuple[str, ...],
    postgres_admin: str,
    redis_url: str,
    config_dir: Path,
    tmp_path: Path,
) -> None:
    missing = postgres_admin.rsplit("/", 1)[0] + "/nosuchdb"
    env = process_env(config_dir, tmp_path, database_url=missing, redis_url=redis_url)
    done = subprocess.run(
        [*Process.command, *command], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert (
        done.stderr == f'cannot reach the store at {missing}: database "nosuchdb" does not exist\n'
    )


def test_a_store_nobody_listens_on_is_named_with_the_reason_and_no_password(
    config_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"postgresql://leadwerk:s3cret@127.0.0.1:{port}/leadwerk"
    env = process_env(config_dir, tmp_path, database_url=url)
    done = migrate(env)
    assert done.returncode == 2
    assert done.stderr == (
        f"cannot reach the store at postgresql://leadwerk:***@127.0.0.1:{port}/leadwerk: "
        "Connection refused\n"
    )


@pytest.mark.parametrize("command", [("worker",), ("clock",), ("web",)])
def test_a_process_with_redis_unreachable_says_so_in_one_line_and_exits_2(
    command: tuple[str, ...], config_dir: Path, tmp_path: Path
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    env = process_env(
        config_dir, tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}", redis_url=url
    )
    done = subprocess.run(
        [*Process.command, *command], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"cannot reach Redis at redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}")
    assert "Connection refused" in line


def test_the_newest_migration_by_file_name_is_alembics_head() -> None:
    """Processes skip loading Alembic when the store is at :data:`HEAD`, which is read from
    the migrations' file names: a migration named out of turn would go unapplied."""
    assert newest_revision() == HEAD


def opened_in_a_new_process(url: str) -> list[str]:
    """The revision a process finds the store at, and whether it loaded Alembic."""
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from worker.store.db import Store; s = Store(sys.argv[1]); "
            "print(s.revision, 'alembic' in sys.modules)",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return opened.stdout.split()


def test_a_new_store_and_one_at_the_newest_revision_open_without_loading_alembic(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'leadwerk.db'}"
    assert opened_in_a_new_process(url) == [newest_revision(), "False"]  # made from nothing
    assert opened_in_a_new_process(url) == [newest_revision(), "False"]  # found at head


def schema(connection: Any) -> dict[str, Any]:
    """What a store's tables are made of, as the database reports it."""
    inspector = inspect(connection)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
            for c in inspector.get_columns(table)
        ]
        tables[table] = {
            "columns": sorted(columns),
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], str(f["options"]))
                for f in inspector.get_foreign_keys(table)
            ),
        }
        if connection.dialect.name == "postgresql":
            tables[table]["options"] = connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE relname = :t"), {"t": table}
            )
    return tables


def test_a_new_store_made_from_the_models_is_the_store_the_migrations_make(
    database_url: str, second_database_url: str
) -> None:
    """A new store gets the models' schema in one go; one that grew through every migration
    must end up the same, or a store's schema would depend on its age."""
    from alembic import command

    migrated = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with migrated.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    made = Store(second_database_url)
    try:
        with migrated.connect() as old, made.engine.connect() as new:
            assert schema(new) == schema(old)
            assert "nurture_enrolments" in schema(new)
    finally:
        made.close()
        migrated.dispose()
