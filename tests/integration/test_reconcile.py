"""Runs that ended without recording their task, seen by the dispatch's reconciliation on a
real instance: a run that failed before its agent started puts the task back in the queue with
the run's own error as the reason; one whose agent had started fails the task. Runs that died
without a trace: one that started and never claimed its task is failed and its task queued
again; a run request lost with its sensor tick is made again. (Runs whose task heartbeat
stopped: tests/integration/test_heartbeat.py.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from orchestration.registry.models import ProjectSpec
from orchestration.tags import MAX_RETRIES_TAG, RUN_KEY_TAG, TASK_TAG
from orchestration.tasks.lifecycle import (
    REQUEST_GRACE_S,
    reconcile_ended_runs,
    task_run_tags,
)
from orchestration.tasks.models import EARLY_FAILURE_ATTEMPTS, Task, TaskStatus
from orchestration.tasks.store import TaskStore, tasks_table
from tests.integration.conftest import QUEUED_RUN_ORIGIN

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


# --- runs that died without a trace: before their claim, or before they existed ---------------

#: A stale threshold of half a second (and a heartbeat fast enough to allow it).
FAST = {"ORCH_HEARTBEAT_S": "0.1", "ORCH_HEARTBEAT_STALE_S": "0.5"}


def started_run_of(instance: dg.DagsterInstance, task: Task) -> dg.DagsterRun:
    """A run of the task's current dispatch that its worker started (RUN_START recorded)."""
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTING,
        tags={TASK_TAG: task.id, RUN_KEY_TAG: f"{task.id}.{task.dispatches}"},
    )
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value,
            job_name=run.job_name,
            message="started",
        ),
        run_id=run.run_id,
    )
    started = instance.get_run_by_id(run.run_id)
    assert started is not None and started.status is dg.DagsterRunStatus.STARTED
    return started


def dispatched(store: TaskStore) -> Task:
    task = store.add("alpha", "work")
    assert task is not None and store.mark_dispatched(task.id)
    return store.require(task.id)


def test_a_started_run_that_never_claimed_its_task_is_failed_and_the_task_queued_again(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    """Its worker died before the claim with its code server, where no heartbeat can tell."""
    task = dispatched(store)
    run = started_run_of(instance, task)

    reconcile_ended_runs(store, instance, LOG, environ=FAST)
    assert instance.get_run_by_id(run.run_id).status is dg.DagsterRunStatus.STARTED  # young

    time.sleep(0.6)
    reconcile_ended_runs(store, instance, LOG, environ=FAST)

    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.status is dg.DagsterRunStatus.FAILURE
    requeued = store.require(task.id)
    assert requeued.status is TaskStatus.QUEUED and not requeued.dispatched
    assert "no heartbeat from worker" in (requeued.reason or "")


def test_a_dispatched_task_whose_run_request_was_lost_is_queued_again(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    """The sensor tick that marked it dispatched died before its run request was recorded."""
    task = dispatched(store)
    reconcile_ended_runs(store, instance, LOG)
    assert store.require(task.id).dispatched  # within the grace

    old = datetime.now(UTC) - timedelta(seconds=REQUEST_GRACE_S + 5)
    with store.engine.begin() as connection:
        connection.execute(
            tasks_table.update().where(tasks_table.c.id == task.id).values(updated_at=old)
        )
    reconcile_ended_runs(store, instance, LOG)

    requeued = store.require(task.id)
    assert requeued.status is TaskStatus.QUEUED and not requeued.dispatched
    assert requeued.reason == "its run request was lost"


def test_a_dispatched_task_whose_run_is_waiting_in_the_queue_stays_dispatched(
    instance: dg.DagsterInstance, store: TaskStore
) -> None:
    task = dispatched(store)
    create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={TASK_TAG: task.id, RUN_KEY_TAG: f"{task.id}.{task.dispatches}"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    old = datetime.now(UTC) - timedelta(seconds=REQUEST_GRACE_S + 5)
    with store.engine.begin() as connection:
        connection.execute(
            tasks_table.update().where(tasks_table.c.id == task.id).values(updated_at=old)
        )

    reconcile_ended_runs(store, instance, LOG, environ=FAST)

    assert store.require(task.id).dispatched


def test_task_runs_are_never_retried_by_dagster(store: TaskStore) -> None:
    """A task's own retry is the orchestrator's (it counts attempts and continues sessions):
    Dagster's run retries, should dagster.yaml turn them on, must not run a task again."""
    task = dispatched(store)
    spec = ProjectSpec.model_validate({"name": "alpha", "repo": "/srv/alpha"})
    assert task_run_tags(task, spec)[MAX_RETRIES_TAG] == "0"
