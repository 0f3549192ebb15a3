"""The loopback PostgreSQL server of the tests and benchmarks: a connection to its maintenance
database, and throwaway databases made and dropped around a test. The server is part of the
test environment (CI starts it), so one that does not answer fails the caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

PG_HOST = "127.0.0.1"
PG_PORT = 5432
# Trust authentication on loopback; which role exists depends on how the server was set up.
PG_USERS = ("postgres", "root")
PG_MAINTENANCE_DB = "postgres"


@dataclass(frozen=True)
class Database:
    """A throwaway database and the role that owns it."""

    name: str
    user: str

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=self.user, dbname=self.name, connect_timeout=5
        )


def admin_connection() -> tuple[str, psycopg2.extensions.connection]:
    """A connection to the maintenance database with the first role the server accepts."""
    problems = []
    for user in PG_USERS:
        try:
            connection = psycopg2.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname=PG_MAINTENANCE_DB, connect_timeout=5
            )
        except psycopg2.OperationalError as exc:
            problems.append(f"as {user!r}: {str(exc).strip()}")
            continue
        connection.autocommit = True
        return user, connection
    pytest.fail(
        f"PostgreSQL on {PG_HOST}:{PG_PORT} is not usable ({'; '.join(problems)}). "
        "These tests need the server running with trust authentication for one of "
        f"{', '.join(PG_USERS)}; CI starts it, locally start it (e.g. `service postgresql start`)."
    )


@contextmanager
def throwaway_database(prefix: str) -> Iterator[Database]:
    """A fresh database named `prefix` and a random suffix, dropped afterwards."""
    user, admin = admin_connection()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield Database(name, user)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()
