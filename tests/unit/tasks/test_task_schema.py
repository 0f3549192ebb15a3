"""The task database's schema under alembic: a new database goes straight to the newest revision,
one made before migrations (by the code at c1fae76 or just before this change) is upgraded in
place with every row kept, several processes opening a new database at once create it once, and
the tables the code queries match what the revisions make. On SQLite files and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestration.allocation.control import AllocationOverrides, allocation_table
from orchestration.allocation.providers import providers_table
from orchestration.changes.sets import changes_table
from orchestration.channels.log import events_table
from orchestration.control.store import log_table, states_table
from orchestration.tasks import migrations
from orchestration.tasks.migrations import HEAD, VERSION_TABLE, SchemaError
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore, tasks_table

DATA = Path(__file__).parent / "data"
#: Made by the code at c1fae76: orch_tasks, orch_sessions, orch_allocation, with rows.
C1FAE76_SQLITE = DATA / "tasks_c1fae76.sqlite.sql"
C1FAE76_POSTGRES = DATA / "tasks_c1fae76.postgresql.sql"
#: Made by the code just before migrations: the same plus orch_holds.
C187550_SQLITE = DATA / "tasks_c187550.sqlite.sql"
#: The finished task in the c1fae76 fixtures (the other one is queued after it).
C1FAE76_TASK = {"sqlite": "tmx1aef7tcyin", "postgresql": "tmx1aefbjemrh"}
TABLES = (
    "orch_tasks",
    "orch_sessions",
    "orch_allocation",
    "orch_holds",
    "orch_project_states",
    "orch_project_state_log",
    "orch_providers",
    "orch_channel_events",
    "orch_changes",
)
state_tables = (states_table, log_table)
OPENERS = 5
ROUNDS = 3
#: fork: the children need nothing but the store module, already imported (spawn re-imports all).
START_METHOD = "fork"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def load_sqlite(path: Path, fixture: Path) -> str:
    connection = sqlite3.connect(path)
    connection.executescript(fixture.read_text())
    connection.close()
    return sqlite_url(path)


def load_postgres(url: str, fixture: Path) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(fixture.read_text())
    engine.dispose()


def contents(url: str) -> dict[str, Any]:
    """Every row of every table, the version table included, in a stable order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            names = sa.inspect(connection).get_table_names()
            return {
                name: sorted(
                    tuple(str(value) for value in row)
                    for row in connection.execute(sa.text(f'SELECT * FROM "{name}"'))
                )
                for name in names
            }
    finally:
        engine.dispose()


def schema(url: str) -> dict[str, Any]:
    """The tables' columns, keys and indexes as the database reports them."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            name: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
                ],
                "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                ),
            }
            for name in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


def sqlite_ddl(path: Path) -> list[tuple[str, str]]:
    """The statements SQLite keeps for the file's tables and indexes: any change shows."""
    connection = sqlite3.connect(path)
    try:
        return sorted(connection.execute("SELECT name, sql FROM sqlite_master WHERE sql NOT NULL"))
    finally:
        connection.close()


def kept_rows(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """`after`'s rows of the tables in `before`, cut to the columns those had (later revisions
    add columns at the end)."""
    return {
        name: [row[: len(old)] for row, old in zip(after[name], rows, strict=True)]
        for name, rows in before.items()
    }


def versions(url: str) -> list[str]:
    return [row[0] for row in contents(url)[VERSION_TABLE]]


def without_version(data: dict[str, Any]) -> dict[str, Any]:
    return {name: rows for name, rows in data.items() if name != VERSION_TABLE}


# --- upgrading a database made before migrations ---------------------------------------------


def test_database_from_c1fae76_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    url = load_sqlite(path, C1FAE76_SQLITE)
    before = contents(url)
    assert VERSION_TABLE not in before and "orch_holds" not in before

    store = TaskStore(url)
    try:
        after = contents(url)
        assert versions(url) == [HEAD]
        assert kept_rows(after, before) == before  # every row kept
        assert after["orch_holds"] == []
        task = store.require(C1FAE76_TASK["sqlite"])
        assert task.status is TaskStatus.SUCCEEDED and task.extra == {"files_changed": 2}
        assert store.last_session("alpha", "codex") == "sess-1"
        assert AllocationOverrides(store).all() == {"slots": 3}
        store.hold("profile:codex", "fp", "quota", task.id)  # the new table works
        assert store.holding("profile:codex", "fp") == "quota"
    finally:
        store.dispose()

    ddl, data = sqlite_ddl(path), contents(url)
    TaskStore(url).dispose()
    assert (sqlite_ddl(path), contents(url)) == (ddl, data)  # a second open changes nothing


def test_database_from_just_before_migrations_is_stamped_then_upgraded(tmp_path: Path) -> None:
    """The code before migrations already made orch_holds with create_all: the database is
    stamped at 0002 and upgraded from there, every row kept."""
    path = tmp_path / "tasks.db"
    url = load_sqlite(path, C187550_SQLITE)
    before = contents(url)
    ddl = dict(sqlite_ddl(path))

    TaskStore(url).dispose()

    assert versions(url) == [HEAD]
    after = without_version(contents(url))
    assert kept_rows(after, before) == before
    assert {"orch_project_states", "orch_project_state_log"} <= set(after)
    unchanged = {name: sql for name, sql in sqlite_ddl(path) if name in ddl}
    assert {n: s for n, s in unchanged.items() if n != "orch_tasks"} == {
        n: s for n, s in ddl.items() if n != "orch_tasks"
    }


def test_old_database_without_allocation_table_gets_one(tmp_path: Path) -> None:
    """The old code made orch_allocation only when the overrides were first used."""
    path = tmp_path / "tasks.db"
    url = load_sqlite(path, C1FAE76_SQLITE)
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE orch_allocation")
    store = TaskStore(url)
    try:
        assert versions(url) == [HEAD]
        AllocationOverrides(store).set({"slots": 2})
        assert AllocationOverrides(store).all() == {"slots": 2}
    finally:
        store.dispose()


def test_upgraded_and_new_databases_have_the_same_schema(tmp_path: Path) -> None:
    old = load_sqlite(tmp_path / "old.db", C1FAE76_SQLITE)
    new = sqlite_url(tmp_path / "new.db")
    for url in (old, new):
        TaskStore(url).dispose()
    assert schema(old) == schema(new)


# --- a new database ----------------------------------------------------------------------------


def test_new_database_is_made_at_head(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "tasks.db")
    store = TaskStore(url)
    try:
        assert versions(url) == [HEAD]
        assert set(TABLES) <= set(contents(url))
        assert store.add("alpha", "first") is not None
    finally:
        store.dispose()


def differences_from_the_code(url: str) -> list[Any]:
    """What alembic's autogenerate finds between the tables the code queries and the database
    the revisions made at `url`: a column added to a definition without a revision, say."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    declared = sa.MetaData()
    for table in (
        *tasks_table.metadata.tables.values(),
        allocation_table,
        *state_tables,
        providers_table,
        events_table,
        changes_table,
    ):
        table.to_metadata(declared)
    store = TaskStore(url)
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            return compare_metadata(context, declared)
    finally:
        store.dispose()


def test_the_code_queries_the_tables_the_revisions_make(tmp_path: Path) -> None:
    assert differences_from_the_code(sqlite_url(tmp_path / "tasks.db")) == []


def test_head_is_the_newest_revision() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations.SCRIPT_DIR))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [HEAD]
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain[-1] == "0001"  # one line of revisions, from the c1fae76 schema


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "tasks.db")
    TaskStore(url).dispose()
    with sqlite3.connect(tmp_path / "tasks.db") as connection:
        connection.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0099'")
    with pytest.raises(SchemaError, match=r"revision 0099, which this version .* does not know"):
        TaskStore(url)


def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    """Revision 0002 cannot make orch_holds over a table of that name: nothing of 0001 stays."""
    path = tmp_path / "tasks.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orch_holds (something TEXT)")
    with pytest.raises(sa.exc.OperationalError, match="orch_holds already exists"):
        TaskStore(sqlite_url(path))
    assert [name for name, _ in sqlite_ddl(path)] == ["orch_holds"]


# --- many processes at once ----------------------------------------------------------------------


def _open(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        TaskStore(url).dispose()
        results.put("ok")
    except Exception as exc:  # reported by the caller's assertion
        results.put(f"{type(exc).__name__}: {exc}")


def open_at_once(url: str) -> list[str]:
    """OPENERS processes open the same database at the same moment; what each ran into."""
    context = multiprocessing.get_context(START_METHOD)
    barrier = context.Barrier(OPENERS)
    results = context.Queue()
    workers = [context.Process(target=_open, args=(url, barrier, results)) for _ in range(OPENERS)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    return outcomes


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_opening_a_new_database_at_once_create_it_once(
    tmp_path: Path, round_: int
) -> None:
    path = tmp_path / "tasks.db"
    url = sqlite_url(path)
    assert open_at_once(url) == ["ok"] * OPENERS
    assert versions(url) == [HEAD]  # stamped once: a second creation would fail or add a row
    assert set(TABLES) <= set(contents(url))


def test_processes_opening_an_old_database_at_once_upgrade_it_once(tmp_path: Path) -> None:
    url = load_sqlite(tmp_path / "tasks.db", C1FAE76_SQLITE)
    before = contents(url)
    assert open_at_once(url) == ["ok"] * OPENERS
    assert versions(url) == [HEAD]
    assert kept_rows(contents(url), before) == before


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_database_from_c1fae76_is_upgraded_in_place_on_postgres(postgres_url: str) -> None:
    load_postgres(postgres_url, C1FAE76_POSTGRES)
    # Dagster's own version table, as when its storage shares the database: left alone.
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);"
            "INSERT INTO alembic_version VALUES ('5771160a95ad')"
        )
    engine.dispose()
    before = contents(postgres_url)

    store = TaskStore(postgres_url)
    try:
        after = contents(postgres_url)
        assert versions(postgres_url) == [HEAD]
        assert kept_rows(after, before) == before
        assert after["orch_holds"] == []
        task = store.require(C1FAE76_TASK["postgresql"])
        assert task.status is TaskStatus.SUCCEEDED and task.created_at.tzinfo is not None
        assert store.last_session("alpha", "codex") == "sess-1"
        assert AllocationOverrides(store).all() == {"slots": 3}
    finally:
        store.dispose()

    shape, data = schema(postgres_url), contents(postgres_url)
    TaskStore(postgres_url).dispose()
    assert (schema(postgres_url), contents(postgres_url)) == (shape, data)


@pytest.mark.postgres
def test_processes_opening_a_new_postgres_database_at_once(postgres_url: str) -> None:
    assert open_at_once(postgres_url) == ["ok"] * OPENERS
    assert versions(postgres_url) == [HEAD]
    assert set(TABLES) <= set(contents(postgres_url))


@pytest.mark.postgres
def test_upgraded_and_new_postgres_databases_have_the_same_schema(postgres_url: str) -> None:
    load_postgres(postgres_url, C1FAE76_POSTGRES)
    TaskStore(postgres_url).dispose()
    upgraded = schema(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        for table in (*TABLES, VERSION_TABLE):
            connection.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()
    TaskStore(postgres_url).dispose()
    assert schema(postgres_url) == upgraded


@pytest.mark.postgres
def test_the_code_queries_the_tables_the_revisions_make_on_postgres(postgres_url: str) -> None:
    assert differences_from_the_code(postgres_url) == []
