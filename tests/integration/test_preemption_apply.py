"""Preemption applied (`orchestration/allocation/preempting.py`): a real Dagster instance made
from a copy of the repository's dagster.yaml, runs in the states a busy queue has, the real
SQLite task store and a real registry whose pools.yaml has a `preemption:` rule.

No run worker exists here, so ending a started run stops at what the instance records: the run
is tagged `orch/interrupted` and reported canceling (the launcher has no code server to tell);
the run worker's checkpoint is tested with the execution."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from orchestration.allocation.control import AllocationSettings, effective_settings
from orchestration.allocation.preempting import preempt
from orchestration.registry.loader import Registry
from orchestration.tags import INTERRUPTED_TAG, PRIORITY_TAG, PROJECT_TAG, TASK_TAG
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from tests.integration.conftest import QUEUED_RUN_ORIGIN
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_preemption_apply")
POOLS = """
    agents:
      slots: 2
    heavy:
      slots: 1
    preemption:
      after: 1
      min_priority: critical
"""


@pytest.fixture
def registry_files(registry_dir: RegistryDir) -> RegistryDir:
    """Projects `urgent` (critical) and `batch` (low); 2 agent slots; preemption after 1 s of
    waiting for critical tasks."""
    registry_dir.project("urgent", "priority: critical\n")
    registry_dir.project("batch", "priority: low\nagent:\n  max_parallel: 4\n")
    registry_dir.write("config/pools.yaml", POOLS)
    return registry_dir


@pytest.fixture
def store(registry_files: RegistryDir) -> Iterator[TaskStore]:
    opened = TaskStore.from_settings(registry_files.settings, environ={})
    yield opened
    opened.dispose()


def load(registry_files: RegistryDir) -> tuple[Registry, AllocationSettings]:
    registry = registry_files.load()
    assert not registry.errors, registry.errors
    return registry, effective_settings(registry, {})


def start(instance: dg.DagsterInstance, store: TaskStore, task: Task) -> str:
    """A STARTED run that has claimed `task`, as a run worker leaves it; its run id."""
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={TASK_TAG: task.id, PROJECT_TAG: task.project},
    )
    store.mark_dispatched(task.id)
    store.claim(task.id, run.run_id)
    return run.run_id


def enqueue(instance: dg.DagsterInstance, store: TaskStore, task: Task) -> str:
    """A QUEUED run of `task`, tagged as the dispatch sensor tags it; its run id."""
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={TASK_TAG: task.id, PROJECT_TAG: task.project, PRIORITY_TAG: "100050"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    store.mark_dispatched(task.id)
    return run.run_id


def add(store: TaskStore, project: str, prompt: str) -> Task:
    task = store.add(project, prompt)
    assert task is not None
    return task


def busy_batch(instance: dg.DagsterInstance, store: TaskStore) -> tuple[Task, Task, str, str]:
    """Both agent slots held by `batch` tasks: the older one, the newer one, their runs."""
    older, newer = add(store, "batch", "long job 1"), add(store, "batch", "long job 2")
    older_run = start(instance, store, older)
    time.sleep(0.01)
    newer_run = start(instance, store, newer)
    return older, newer, older_run, newer_run


def past_after() -> None:
    time.sleep(1.2)  # `after: 1`: a task must have waited longer than a second


def test_a_critical_task_past_after_preempts_the_newest_low_task(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    older, newer, older_run, newer_run = busy_batch(instance, store)
    urgent = add(store, "urgent", "fix production")
    enqueue(instance, store, urgent)
    past_after()
    registry, allocation = load(registry_files)

    decisions = preempt(instance, store, registry, allocation, LOG)

    assert [(d.victim, d.waiting) for d in decisions] == [(newer.id, urgent.id)]
    assert decisions[0].reason.startswith(f"preempted by task {urgent.id} (critical, waited ")
    victim = store.require(newer.id)
    assert victim.extra["interrupt"]["kind"] == "preempted"
    assert victim.extra["interrupt"]["by"] == urgent.id
    assert victim.extra["interrupt"]["reason"] == decisions[0].reason
    run = instance.get_run_by_id(newer_run)
    assert run is not None
    assert run.tags[INTERRUPTED_TAG] == "preempted"
    assert run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
    others = store.require(urgent.id).extra["preempted_others"]
    assert [entry["task"] for entry in others] == [newer.id]
    # The older task runs on untouched.
    assert "interrupt" not in store.require(older.id).extra
    untouched = instance.get_run_by_id(older_run)
    assert untouched is not None and untouched.status is dg.DagsterRunStatus.STARTED


def test_a_preemption_in_flight_is_not_repeated(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    _, newer, _, _ = busy_batch(instance, store)
    urgent = add(store, "urgent", "fix production")
    enqueue(instance, store, urgent)
    past_after()
    registry, allocation = load(registry_files)
    assert len(preempt(instance, store, registry, allocation, LOG)) == 1

    # The victim's run is still ending: the next tick leaves the other batch task alone.
    assert preempt(instance, store, registry, allocation, LOG) == []
    assert len(store.require(urgent.id).extra["preempted_others"]) == 1
    assert store.require(newer.id).status is TaskStatus.RUNNING  # until its run checkpoints


def test_a_queued_task_without_a_run_yet_preempts_too(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    _, newer, _, _ = busy_batch(instance, store)
    urgent = add(store, "urgent", "fix production")  # not dispatched yet
    past_after()
    registry, allocation = load(registry_files)

    decisions = preempt(instance, store, registry, allocation, LOG)

    assert [(d.victim, d.waiting) for d in decisions] == [(newer.id, urgent.id)]


def test_nothing_happens_when_a_slot_is_free(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    batch = add(store, "batch", "long job")
    batch_run = start(instance, store, batch)
    urgent = add(store, "urgent", "fix production")
    enqueue(instance, store, urgent)
    past_after()
    registry, allocation = load(registry_files)

    assert preempt(instance, store, registry, allocation, LOG) == []
    assert "interrupt" not in store.require(batch.id).extra
    run = instance.get_run_by_id(batch_run)
    assert run is not None and INTERRUPTED_TAG not in run.tags


def test_nothing_happens_before_after_has_passed(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    busy_batch(instance, store)
    enqueue(instance, store, add(store, "urgent", "fix production"))
    registry, allocation = load(registry_files)

    assert preempt(instance, store, registry, allocation, LOG) == []


def test_nothing_happens_without_a_preemption_rule(
    instance: dg.DagsterInstance, store: TaskStore, registry_files: RegistryDir
) -> None:
    registry_files.write("config/pools.yaml", "agents:\n  slots: 2\nheavy:\n  slots: 1\n")
    busy_batch(instance, store)
    enqueue(instance, store, add(store, "urgent", "fix production"))
    past_after()
    registry, allocation = load(registry_files)

    assert preempt(instance, store, registry, allocation, LOG) == []
    assert all("interrupt" not in task.extra for task in store.tasks())
