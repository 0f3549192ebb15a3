"""The task database's schema as alembic revisions, and `ensure_schema`, which every TaskStore
calls on opening to create the database or bring it up to the newest revision.

The revisions are in `versions/`: `0001` is the schema as of commit c1fae76 (orch_tasks,
orch_sessions, orch_allocation, then made with `create_all`), `0002` adds orch_holds, `0003`
the project states, their log and the task's delivery columns, `0004` the task's heartbeat
(`heartbeat_at`), `0005` the provider accounts' pauses (`orch_providers`), `0006` the
channels' ledger (`orch_channel_events`), `0007` the change sets (`orch_changes`). To change the
schema, add a revision there (copy the newest file, set
`down_revision` to its id) and set HEAD to the new id; the tests check that HEAD is the
scripts' head and that the tables the code queries match the migrated database. The version is
kept in a table of our own, `orch_alembic_version`, so the task tables can share a PostgreSQL
database with Dagster's storage, whose `alembic_version` belongs to Dagster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

VERSION_TABLE = "orch_alembic_version"
#: The newest revision in `versions/`; a database whose version table says this needs nothing.
HEAD = "0007"
#: The revision a database made by `create_all` (before migrations) is stamped with, by the
#: newest table it has: the tables came in this order and were never changed.
LEGACY_REVISIONS = (("orch_holds", "0002"), ("orch_tasks", "0001"))
#: How long a process waits for another to finish creating or upgrading a SQLite database.
LOCK_TIMEOUT_S = 300.0
#: The PostgreSQL advisory lock (one per database) held while the schema is created or upgraded.
PG_LOCK_KEY = 0x6F7263685F746B73  # "orch_tks"

SCRIPT_DIR = Path(__file__).resolve().parent


class SchemaError(Exception):
    """The task database cannot be brought to the schema this code needs; the message says
    why and what to do."""


def ensure_schema(engine: sa.Engine) -> None:
    """Create the task tables in the database `engine` reaches, or upgrade them in place.

    At the newest revision this costs one query and loads nothing of alembic: a TaskStore is
    opened on every sensor tick. Otherwise the work is done once, under a lock (a lock file
    beside a SQLite file, an advisory lock on PostgreSQL), however many processes open a new
    or old database at the same moment, as the daemon, its run workers and the CLI do.
    """
    if _recorded_versions(engine) == [HEAD]:
        return
    with _schema_lock(engine), _migration_connection(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Released when the transaction ends, after the new version is committed.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        _upgrade(connection, _describe(engine))


def _recorded_versions(engine: sa.Engine) -> list[str] | None:
    """The revisions in the version table; None when there is no version table yet."""
    with engine.connect() as connection:
        try:
            rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return None  # no such table: a new database, or one made before migrations
        return list(rows.scalars())


def _upgrade(connection: sa.Connection, where: str) -> None:
    """Bring the database to HEAD inside the caller's transaction and lock."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    # Read again under the lock: another process may have done the work meanwhile.
    heads = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_heads()
    if heads == (HEAD,):
        return
    config = _config(connection)
    script = ScriptDirectory.from_config(config)
    unknown = [head for head in heads if not _known(script, head)]
    if unknown:
        raise SchemaError(
            f"the task database {where} is at schema revision {', '.join(unknown)}, which this "
            f"version of orchestration does not know (its newest is {HEAD}): a newer version "
            "upgraded it. Run that version, or point ORCH_TASKS_DB_URL at another database."
        )
    if not heads:
        tables = set(sa.inspect(connection).get_table_names())
        if "orch_tasks" in tables:
            _adopt(connection, tables, script, config)
    command.upgrade(config, "head")


def _adopt(
    connection: sa.Connection, tables: set[str], script: ScriptDirectory, config: Config
) -> None:
    """Stamp a database made by `create_all`, before there were migrations, with the revision
    its tables match, so the upgrade starts from there and keeps every row."""
    from alembic import command
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    if "orch_allocation" not in tables:
        # The old code made this table only when the allocation overrides were first used.
        initial = script.get_revision("0001")
        assert initial is not None and initial.module is not None
        initial.module.create_allocation(Operations(MigrationContext.configure(connection)))
    revision = next(rev for table, rev in LEGACY_REVISIONS if table in tables)
    command.stamp(config, revision)


def _known(script: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _config(connection: sa.Connection) -> Config:
    """An alembic config for the scripts in this package, run on `connection` (see env.py)."""
    from alembic.config import Config

    config = Config()
    config.attributes["connection"] = connection
    # Config values go through configparser interpolation, where `%` is special.
    config.set_main_option("script_location", str(SCRIPT_DIR).replace("%", "%%"))
    return config


@contextmanager
def _schema_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold off other processes creating or upgrading a SQLite file beside this one.

    PostgreSQL takes its advisory lock inside the migration's transaction instead; an in-memory
    SQLite database is this process's alone; other servers go without.
    """
    path = _sqlite_file(engine)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock_path = f"{path}.schema.lock"
    try:
        with FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout as exc:
        raise SchemaError(
            f"waited {LOCK_TIMEOUT_S:.0f} s for another process to finish creating or "
            f"upgrading the task database {path} (it holds {lock_path}); look for a stuck "
            "`orch` or Dagster process and stop it, then try again"
        ) from exc


@contextmanager
def _migration_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that takes the DDL too, so a migration cut short leaves
    the database as it was.

    PostgreSQL's DDL is transactional as it is. Python's sqlite3 commits each DDL statement on
    its own unless the transaction is begun explicitly, so a SQLite file gets a connection of
    its own that does that (SQLAlchemy's documented recipe), with BEGIN IMMEDIATE taking the
    write lock at once.
    """
    path = _sqlite_file(engine)
    if path is None:
        with engine.begin() as connection:
            yield connection
        return
    own = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)

    @sa.event.listens_for(own, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing by itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @sa.event.listens_for(own, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with own.begin() as connection:
            yield connection
    finally:
        own.dispose()


def _sqlite_file(engine: sa.Engine) -> str | None:
    """The file of a SQLite database; None for another server or an in-memory database."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return str(Path(database).resolve())


def _describe(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
