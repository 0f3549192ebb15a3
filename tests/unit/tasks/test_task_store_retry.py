"""The writes that record a finished agent's work wait out a database that is locked for
longer than its busy timeout, instead of losing the outcome."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore


def hold_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another process's writer: an exclusive lock on the database for `seconds`."""
    connection = sqlite3.connect(path, timeout=5, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    connection.execute("COMMIT")
    connection.close()


def locked_store(tmp_path: Path, write_retry_s: float) -> tuple[TaskStore, str]:
    path = tmp_path / "tasks.db"
    store = TaskStore(f"sqlite:///{path}", busy_timeout_s=0.2, write_retry_s=write_retry_s)
    task = store.add("alpha", "work")
    assert task is not None
    store.claim(task.id, "run-1")
    return store, task.id


def test_finish_waits_out_a_lock_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    store, task_id = locked_store(tmp_path, write_retry_s=10)
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "tasks.db", 1.5, locked))
    holder.start()
    assert locked.wait(5)
    try:
        finished = store.finish(task_id, TaskStatus.SUCCEEDED, commit="abc123", cost_usd=1.25)
    finally:
        holder.join()
        store.dispose()
    assert (finished.status, finished.commit, finished.cost_usd) == (
        TaskStatus.SUCCEEDED,
        "abc123",
        1.25,
    )


def test_without_retries_a_locked_database_refuses_at_once(tmp_path: Path) -> None:
    store, task_id = locked_store(tmp_path, write_retry_s=0)
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "tasks.db", 1.5, locked))
    holder.start()
    assert locked.wait(5)
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            store.finish(task_id, TaskStatus.SUCCEEDED)
    finally:
        holder.join()
        store.dispose()
