"""Outcomes a run kept on disk because the task database refused them are recorded later,
and only while the run still owns its task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.tasks.models import TaskStatus
from orchestration.tasks.outcomes import PendingOutcome, record_pending, save_pending
from orchestration.tasks.store import TaskStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    opened = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    opened.dispose()


def outcome(task_id: str, run_id: str) -> PendingOutcome:
    return PendingOutcome(
        task_id=task_id,
        run_id=run_id,
        status="succeeded",
        fields={"commit": "c0ffee", "cost_usd": 0.75, "extra": {"files_changed": 2}},
        session=("alpha", "claude_code", "sess-1"),
    )


def test_a_kept_outcome_is_recorded_and_its_file_removed(store: TaskStore, tmp_path: Path) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.claim(task.id, "run-1")
    path = save_pending(tmp_path / "home" / "workspaces" / "alpha", outcome(task.id, "run-1"))
    assert path.is_file()

    assert record_pending(store, tmp_path / "home") == [task.id]

    recorded = store.require(task.id)
    assert (recorded.status, recorded.commit, recorded.cost_usd) == (
        TaskStatus.SUCCEEDED,
        "c0ffee",
        0.75,
    )
    assert recorded.extra["files_changed"] == 2
    assert store.last_session("alpha", "claude_code") == "sess-1"
    assert not path.exists()


def test_it_replaces_the_failure_recorded_for_a_run_that_ended_without_recording(
    store: TaskStore, tmp_path: Path
) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.claim(task.id, "run-1")
    store.fail_run(task.id, "run-1", "run run-1 ended (FAILURE) without recording the task")
    save_pending(tmp_path / "home" / "workspaces" / "alpha", outcome(task.id, "run-1"))

    assert record_pending(store, tmp_path / "home") == [task.id]
    assert store.require(task.id).status is TaskStatus.SUCCEEDED


def test_an_outcome_of_a_run_that_no_longer_owns_its_task_is_dropped(
    store: TaskStore, tmp_path: Path
) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.claim(task.id, "run-1")
    store.fail_run(task.id, "run-1", "crashed")
    store.retry(task.id)
    store.claim(task.id, "run-2")
    path = save_pending(tmp_path / "home" / "workspaces" / "alpha", outcome(task.id, "run-1"))

    assert record_pending(store, tmp_path / "home") == []
    assert store.require(task.id).status is TaskStatus.RUNNING
    assert not path.exists()
