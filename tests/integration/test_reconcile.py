"""Runs that ended without recording their task, seen by the dispatch's reconciliation on a
real instance: a run that failed before its agent started puts the task back in the queue with
the run's own error as the reason; one whose agent had started fails the task."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from orchestration.tags import TASK_TAG
from orchestration.tasks.lifecycle import reconcile_ended_runs
from orchestration.tasks.models import EARLY_FAILURE_ATTEMPTS, Task, TaskStatus
from orchestration.tasks.store import TaskStore

LOG = logging.getLogger("test")
CAUSE = "GitError: cannot fetch /gone/repo: repository not found"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as made:
        yield made


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    opened = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    opened.dispose()


def failed_run_of(
    instance: dg.DagsterInstance, store: TaskStore, *, agent_started: bool, attempts: int = 1
) -> Task:
    """A task claimed by a run that then failed with CAUSE."""
    task = store.add("alpha", "work")
    assert task is not None
    for _ in range(attempts):
        store.mark_dispatched(task.id)
        store.requeue(task.id, "again")
    store.mark_dispatched(task.id)
    run = create_run_for_test(
        instance, status=dg.DagsterRunStatus.STARTED, tags={TASK_TAG: task.id}
    )
    store.claim(task.id, run.run_id)
    if agent_started:
        store.note_agent(task.id, 999_999, None)
    instance.report_run_failed(run, message=CAUSE)
    return store.require(task.id)


def test_a_run_that_failed_before_its_agent_started_requeues_with_the_cause(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    task = failed_run_of(instance, store, agent_started=False)

    reconcile_ended_runs(store, instance, LOG)

    requeued = store.require(task.id)
    assert requeued.status is TaskStatus.QUEUED and not requeued.dispatched
    assert "failed before its agent started" in (requeued.reason or "")
    assert CAUSE in (requeued.reason or "")


def test_after_a_few_early_failures_the_task_fails_with_the_cause(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    task = failed_run_of(instance, store, agent_started=False, attempts=EARLY_FAILURE_ATTEMPTS)

    reconcile_ended_runs(store, instance, LOG)

    failed = store.require(task.id)
    assert failed.status is TaskStatus.FAILED
    assert CAUSE in (failed.reason or "")


def test_a_run_whose_agent_had_started_fails_the_task_with_the_cause(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    task = failed_run_of(instance, store, agent_started=True)

    reconcile_ended_runs(store, instance, LOG)

    failed = store.require(task.id)
    assert failed.status is TaskStatus.FAILED
    assert "without recording the task" in (failed.reason or "")
    assert CAUSE in (failed.reason or "")
