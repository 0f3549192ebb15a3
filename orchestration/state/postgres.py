"""The seam to PostgreSQL for backups: one database named by a SQLAlchemy URL, dumped with
`pg_dump -Fc`, restored with `pg_restore`, and the few statements a backup needs (is there a
table, make or drop a scratch database, empty a database).

`pg_dump` takes one MVCC snapshot of the whole database, so a dump is consistent while the
daemon and runs go on writing. Passwords reach the tools through PGPASSWORD, never argv.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestration.process import ExecutableNotFoundError, run_process

#: How long one pg_dump or pg_restore may take.
TOOL_TIMEOUT_S = 6 * 3600.0
#: The database connected to for CREATE / DROP DATABASE.
MAINTENANCE_DATABASES = ("postgres", "template1")
#: Variables of this process the PostgreSQL tools see (connection defaults, TLS, .pgpass).
PASSED_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR", "LANG")
SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


class PostgresError(Exception):
    """A PostgreSQL tool or statement failed; the message says which, on what, and why."""


@dataclass(frozen=True)
class PgDatabase:
    """One database on a PostgreSQL server, as a SQLAlchemy URL names it."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    drivername: str = "postgresql+psycopg2"
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> PgDatabase:
        parsed = sa.engine.make_url(url)
        if not parsed.drivername.startswith("postgresql"):
            raise PostgresError(f"{parsed.render_as_string()} is not a PostgreSQL URL")
        if not parsed.database:
            raise PostgresError(f"{parsed.render_as_string()} names no database")
        drivername = parsed.drivername
        if drivername == "postgresql":
            drivername = "postgresql+psycopg2"  # psycopg 3 is not installed (deploy/dagster.yaml)
        query = tuple(sorted((str(k), str(v)) for k, v in parsed.query.items()))
        return cls(
            host=parsed.host or "localhost",
            port=int(parsed.port or 5432),
            user=parsed.username or os.environ.get("PGUSER") or "postgres",
            password=parsed.password if parsed.password is not None else None,
            database=parsed.database,
            drivername=drivername,
            query=query,
        )

    def url(self) -> str:
        """The SQLAlchemy URL, password included (for connecting, never for showing)."""
        made = sa.engine.URL.create(
            self.drivername,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            query=dict(self.query),
        )
        return made.render_as_string(hide_password=False)

    def named(self, database: str) -> PgDatabase:
        """Another database on the same server, reached the same way."""
        return replace(self, database=database)

    def same_database(self, other: PgDatabase) -> bool:
        return (self.host, self.port, self.database) == (other.host, other.port, other.database)

    def describe(self) -> str:
        return f"database {self.database!r} on {self.host}:{self.port} (as {self.user})"

    def to_dict(self) -> dict[str, Any]:
        """What a manifest records: where, never the password."""
        return {"host": self.host, "port": self.port, "user": self.user, "database": self.database}


def dump(database: PgDatabase, target: Path) -> None:
    """`pg_dump -Fc --no-owner` of the whole database to `target`."""
    _tool(
        database,
        ["pg_dump", "--format=custom", "--no-owner", f"--file={target}", database.database],
        f"dump {database.describe()} to {target}",
    )


def restore(database: PgDatabase, source: Path) -> None:
    """`pg_restore` of the dump `source` into the (empty) database."""
    _tool(
        database,
        [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            f"--dbname={database.database}",
            str(source),
        ],
        f"restore {source} into {database.describe()}",
    )


def table_count(database: PgDatabase) -> int:
    """How many tables the database has outside the system schemas."""
    query = sa.text(
        f"SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN {SYSTEM_SCHEMAS}"
    )
    with _connection(database, "count its tables") as connection:
        return int(connection.execute(query).scalar() or 0)


def empty_database(database: PgDatabase) -> None:
    """Drop every schema of the database (with what is in it) and make `public` again."""
    with _connection(database, "empty it") as connection:
        schemas = connection.execute(
            sa.text(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                f"AND nspname NOT IN {SYSTEM_SCHEMAS}"
            )
        ).scalars()
        quote = connection.dialect.identifier_preparer.quote
        for schema in list(schemas):
            connection.execute(sa.text(f"DROP SCHEMA {quote(schema)} CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))


def create_database(database: PgDatabase) -> None:
    with _maintenance(database, "create it") as connection:
        quote = connection.dialect.identifier_preparer.quote
        connection.execute(sa.text(f"CREATE DATABASE {quote(database.database)}"))


def drop_database(database: PgDatabase) -> None:
    with _maintenance(database, "drop it") as connection:
        quote = connection.dialect.identifier_preparer.quote
        connection.execute(
            sa.text(f"DROP DATABASE IF EXISTS {quote(database.database)} WITH (FORCE)")
        )


def database_exists(database: PgDatabase) -> bool:
    with _maintenance(database, "look for it") as connection:
        found = connection.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
            {"name": database.database},
        ).first()
    return found is not None


@contextmanager
def _connection(database: PgDatabase, what: str) -> Iterator[sa.Connection]:
    """An autocommit connection to `database`; what fails, as a PostgresError."""
    engine = sa.create_engine(
        database.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as connection:
            yield connection
    except sa.exc.SQLAlchemyError as exc:
        raise PostgresError(f"could not {what}: {database.describe()}: {_reason(exc)}") from exc
    finally:
        engine.dispose()


@contextmanager
def _maintenance(database: PgDatabase, what: str) -> Iterator[sa.Connection]:
    """A connection to the server's maintenance database, for CREATE and DROP DATABASE."""
    problems = []
    for name in MAINTENANCE_DATABASES:
        engine = sa.create_engine(
            database.named(name).url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            connection = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            problems.append(f"{name}: {_reason(exc)}")
            continue
        try:
            yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise PostgresError(f"could not {what}: {database.describe()}: {_reason(exc)}") from exc
        finally:
            connection.close()
            engine.dispose()
        return
    raise PostgresError(
        f"could not {what}: {database.describe()}: no maintenance database answered "
        f"({'; '.join(problems)})"
    )


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tool(database: PgDatabase, argv: list[str], what: str) -> None:
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env |= {
        "PGHOST": database.host,
        "PGPORT": str(database.port),
        "PGUSER": database.user,
        "PGCONNECT_TIMEOUT": "10",
        "LC_ALL": "C",
    }
    if database.password:
        env["PGPASSWORD"] = database.password
    for key, value in database.query:
        if key == "sslmode":
            env["PGSSLMODE"] = value
    try:
        result = run_process(argv, cwd=Path.cwd(), env=env, timeout_s=TOOL_TIMEOUT_S)
    except ExecutableNotFoundError as exc:
        raise PostgresError(
            f"could not {what}: {argv[0]} is not installed (it comes with the PostgreSQL client "
            "tools, e.g. the `postgresql-client` package)"
        ) from exc
    if not result.ok:
        detail = result.tail(1500).strip() or f"exit status {result.returncode}"
        if result.timed_out:
            detail = f"no end within {TOOL_TIMEOUT_S:g} s"
        raise PostgresError(f"could not {what}: {detail}")
