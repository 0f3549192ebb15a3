"""Fixtures for the task store's tests: a throwaway database on the loopback PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

PG_HOST = "127.0.0.1"
PG_PORT = 5432
# Trust authentication on loopback; which role exists depends on how the server was set up.
PG_USERS = ("postgres", "root")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the loopback PostgreSQL server, dropped afterwards."""
    problems = []
    for user in PG_USERS:
        try:
            admin = psycopg2.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5
            )
            break
        except psycopg2.OperationalError as exc:
            problems.append(f"as {user!r}: {str(exc).strip()}")
    else:
        pytest.fail(f"PostgreSQL on {PG_HOST}:{PG_PORT} is not usable: {'; '.join(problems)}")
    admin.autocommit = True
    name = f"orch_tasks_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()
