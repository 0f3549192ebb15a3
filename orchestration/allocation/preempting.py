"""Preemption by priority, applied: read the task runs, the tasks and the pools they hold, ask
the pure decision (`preemption.py`), then interrupt each victim as `orch projects stop` does
(work committed, session kept, task queued again) and record the preemption on both tasks.
Called by the dispatch sensor on each tick when pools.yaml has a `preemption:` rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime

import dagster as dg

from orchestration.allocation.control import AllocationSettings, TaskRuns, task_runs
from orchestration.allocation.preemption import (
    Candidate,
    Decision,
    Rank,
    Waiting,
    decide,
    usage_of,
)
from orchestration.control.store import ProjectStates
from orchestration.registry.loader import Registry
from orchestration.registry.models import ProjectSpec
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.tags import (
    GLOBAL_POOL,
    INTERRUPTED_TAG,
    PROJECT_TAG,
    TASK_TAG,
    project_pool,
    provider_pool,
)
from orchestration.tasks.dispatch import plan_dispatch
from orchestration.tasks.lifecycle import interrupt
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore

#: Runs that hold their slots and still do work: a run being cancelled only gives them back.
_WORKING = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def preempt(
    instance: dg.DagsterInstance,
    store: TaskStore,
    registry: Registry,
    allocation: AllocationSettings,
    log: logging.Logger | dg.DagsterLogManager,
) -> list[Decision]:
    """Interrupt the running tasks that must make room for long-waiting high-priority ones;
    the decisions carried out. Nothing when pools.yaml has no `preemption:` rule."""
    rule = registry.pools.preemption if registry.pools is not None else None
    if rule is None:
        return []
    now = time.time()
    runs = task_runs(instance)
    waiting, running, tasks = _gather(store, registry, allocation, runs, now)
    # Every in-progress task run holds its slots, whether or not it may be preempted.
    known = {task.id for task in running}
    others = [
        frozenset({GLOBAL_POOL, project_pool(run.tags.get(PROJECT_TAG, ""))})
        for run in runs.running
        if run.tags[TASK_TAG] not in known
    ]
    usage = usage_of(running)
    for pools in others:
        for pool in pools:
            usage[pool] = usage.get(pool, 0) + 1
    decisions = decide(waiting, running, allocation.pool_limits(), usage, rule, now=now)
    carried_out = []
    for decision in decisions:
        victim = tasks[decision.victim]
        run_id = interrupt(
            store, instance, victim, kind="preempted", reason=decision.reason, by=decision.waiting
        )
        if run_id is None and "interrupt" not in (store.get(victim.id) or victim).extra:
            log.info(f"task {victim.id} ended before it could be preempted")
            continue
        store.note_preempted(decision.waiting, victim.id)
        log.info(
            f"task {victim.id} {decision.reason}: its run {run_id or '(none)'} is ended, its "
            "work committed and it is queued again to continue its session"
        )
        carried_out.append(decision)
    return carried_out


def _gather(
    store: TaskStore,
    registry: Registry,
    allocation: AllocationSettings,
    runs: TaskRuns,
    now: float,
) -> tuple[list[Waiting], list[Candidate], dict[str, Task]]:
    """The waiting and the running tasks as the decision sees them, and the tasks by id."""
    running_runs = {run.tags[TASK_TAG]: run for run in runs.running}
    queued_run_ids = {run.tags[TASK_TAG] for run in runs.queued} - set(running_runs)
    held = {name for name, state in ProjectStates(store).states().items() if state.holds_tasks}
    queued = store.tasks(statuses=[TaskStatus.QUEUED])
    prerequisites = {p for task in queued for p in task.after}
    known = {task.id: task for task in store.tasks(ids=prerequisites)} if prerequisites else {}
    runnable = plan_dispatch(queued, known, registry.names, registry.broken_names).runnable
    in_runs = set(running_runs) | queued_run_ids
    tasks = {task.id: task for task in [*(store.tasks(ids=in_runs) if in_runs else []), *runnable]}

    waiting = []
    for task_id in [*queued_run_ids, *(task.id for task in runnable)]:
        task = tasks.get(task_id)
        if task is None or task.status is not TaskStatus.QUEUED or task_id in running_runs:
            continue
        if task.project in held or task.project not in allocation.projects:
            continue  # a held project's tasks wait for it, not for a slot
        spec = registry.spec(task.project)
        if spec is None or not _may_run(task, spec, registry):
            continue
        waiting.append(
            Waiting(
                id=task.id,
                project=task.project,
                rank=_rank(task, spec, allocation),
                pools=_pools(task, spec, registry),
                queued_at=_queued_at(task),
            )
        )

    running = []
    for task_id, run in running_runs.items():
        task = tasks.get(task_id)
        if task is None:
            continue
        spec = registry.spec(task.project)
        claimed = task.status is TaskStatus.RUNNING and task.run_id == run.run_id
        unclaimed = task.status is TaskStatus.QUEUED and task.dispatched and not task.run_id
        request = task.extra.get("interrupt")
        ending = (
            run.status not in _WORKING or INTERRUPTED_TAG in run.tags or not (claimed or unclaimed)
        )
        running.append(
            Candidate(
                id=task.id,
                project=task.project,
                rank=_rank(task, spec, allocation),
                pools=_pools(task, spec, registry),
                # A run that has not claimed its task yet has done no work: newest of all.
                started_at=task.started_at.timestamp() if claimed and task.started_at else now,
                times_preempted=task.times_preempted,
                interrupting=request is not None or ending,
                interrupt_for=request.get("by") if isinstance(request, Mapping) else None,
            )
        )
    return waiting, running, tasks


def _may_run(task: Task, spec: ProjectSpec, registry: Registry) -> bool:
    """Whether `task`'s profile can run it: a task that cannot start takes no one's slot."""
    if registry.agents is None:
        return False
    try:
        resolve_profile(registry.agents, spec, task.profile)
    except ProfileError:
        return False
    return True


def _rank(task: Task, spec: ProjectSpec | None, allocation: AllocationSettings) -> Rank:
    """(project priority, task priority); the project's as `orch allocation set` left it."""
    limits = allocation.projects.get(task.project)
    project = limits.priority if limits else spec.priority if spec else 0
    return (project, task.priority)


def _pools(task: Task, spec: ProjectSpec | None, registry: Registry) -> frozenset[str]:
    """The pools a run of `task` holds: `agents`, its project's, its profile's and its
    provider account's."""
    pools = {GLOBAL_POOL, project_pool(task.project)}
    name = task.profile or (spec.agent.profile if spec else None)
    if name and registry.agents is not None:
        profile = registry.agents.profiles.get(name)
        if profile is not None:
            pools.add(profile.pool)
            if profile.provider_pool:
                pools.add(provider_pool(profile.provider_pool))
    return frozenset(pools)


def _queued_at(task: Task) -> float:
    """When `task` last joined the queue: its creation, or the end of its last interruption."""
    moments = [task.created_at.timestamp()]
    for entry in task.interruptions:
        ended = entry.get("ended_at")
        if isinstance(ended, str):
            try:
                moments.append(datetime.fromisoformat(ended).timestamp())
            except ValueError:
                continue
    return max(moments)
