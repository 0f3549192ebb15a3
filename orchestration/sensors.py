"""The shared sensors: dispatching queued tasks, and importing tasks written in repositories.

Both are thin: they read the task store through the `agent_tasks` resource, ask pure functions
what to do, and turn the answer into run requests.
"""

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from orchestration.allocation.control import (
    AllocationOverrides,
    AllocationSettings,
    apply_pool_limits,
    current_allocation,
    effective_settings,
    rebalance,
)
from orchestration.process import kill_process_group
from orchestration.registry.loader import RegistryWatcher
from orchestration.registry.models import ProjectSpec
from orchestration.resources import AgentTasks
from orchestration.tags import MAX_RUNTIME_TAG, PRIORITY_TAG, PROJECT_TAG, SESSION_TAG, TASK_TAG
from orchestration.tasks.dispatch import plan_dispatch, run_priority
from orchestration.tasks.intake import import_task_lists
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.workspace import ProjectWorkspace

#: The dispatch sensor's minimum interval. Dagster's sensor daemon looks at its sensors about
#: every 5 s whatever their interval (its loop time), so in practice a tick comes every 5 s.
DISPATCH_INTERVAL_S = 2
IMPORT_INTERVAL_S = 120
#: Time a task run may take beyond its agent's and its tests' timeouts (git, bookkeeping).
RUN_OVERHEAD_S = 600
#: A dispatched task whose run has not appeared after this long is queued again.
LAUNCH_GRACE_S = 600
#: Runs one tick creates at most. The daemon creates each task run with two calls to the code
#: server (the asset subset's job, its execution plan), 0.1-0.2 s on a small machine, so an
#: import of 200 tasks would hold a tick for half a minute, and cancellations, rebalancing and
#: live priority changes with it. The highest-ranked tasks go first; the rest follow on the
#: next ticks, far faster than slots free.
MAX_NEW_RUNS_PER_TICK = 20


def task_run_tags(task: Task, spec: ProjectSpec) -> dict[str, str]:
    """The tags every run of a task carries, however it was launched."""
    tags = {
        PROJECT_TAG: spec.name,
        TASK_TAG: task.id,
        PRIORITY_TAG: str(run_priority(spec.priority, task.priority)),
        # Run monitoring ends a run that outlives its agent and tests by far, even when its
        # worker died unseen (the default launcher cannot check a worker's health).
        MAX_RUNTIME_TAG: str(spec.agent.timeout + spec.verify_timeout + RUN_OVERHEAD_S),
    }
    if task.session:
        tags[SESSION_TAG] = task.session
    return tags


def build_dispatch_sensor(
    specs: Mapping[str, ProjectSpec], tasks_selection: dg.AssetSelection
) -> dg.SensorDefinition:
    watcher: list[RegistryWatcher] = []  # made on the first tick, when the environment is known

    @dg.sensor(
        name="task_dispatch",
        asset_selection=tasks_selection,
        minimum_interval_seconds=DISPATCH_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launch a run for every queued task whose prerequisites have succeeded, "
        "ranked by the allocation policy; keep pool limits and queued runs' priorities in line "
        "with the allocation; fail or requeue tasks whose runs ended without recording them.",
    )
    def task_dispatch(context: dg.SensorEvaluationContext, agent_tasks: AgentTasks):
        if not watcher:
            watcher.append(RegistryWatcher(agent_tasks.settings()))
        store = agent_tasks.store()
        try:
            settings = effective_settings(watcher[0].current(), AllocationOverrides(store).all())
            changed = apply_pool_limits(context.instance, settings.pool_limits())
            if changed:
                context.log.info(f"pool limits set: {', '.join(changed)}")
            reconcile_ended_runs(store, context.instance, context.log)
            reranked = rebalance(context.instance, store, settings)
            if reranked:
                context.log.info(f"re-prioritised {len(reranked)} queued run(s)")
            return dg.SensorResult(run_requests=dispatch(store, context.instance, specs, settings))
        finally:
            store.dispose()

    return task_dispatch


def dispatch(
    store: TaskStore,
    instance: dg.DagsterInstance,
    specs: Mapping[str, ProjectSpec],
    settings: AllocationSettings | None = None,
    limit: int = MAX_NEW_RUNS_PER_TICK,
) -> list[dg.RunRequest]:
    """Run requests for up to `limit` runnable queued tasks, the highest ranked by the
    allocation policy first; blocked ones are marked so."""
    queued = store.list(statuses=[TaskStatus.QUEUED])
    prerequisites = {p for task in queued for p in task.after}
    known = {task.id: task for task in store.list(ids=prerequisites)} if prerequisites else {}
    plan = plan_dispatch(queued, known, specs)
    for task, reason in plan.blocked:
        store.block(task.id, reason)
    if not plan.runnable:
        return []
    priorities: Mapping[str, int] = {}
    if settings is not None:
        allocation, _, _ = current_allocation(instance, store, settings, plan.runnable)
        priorities = allocation.priorities
    # Highest priority first: the run queue may start the first runs before the last exist.
    ranked = sorted(plan.runnable, key=lambda t: -priorities.get(t.id, 0))[:limit]
    ensure_partitions(instance, ranked)
    requests = []
    for task in ranked:
        if not store.mark_dispatched(task.id):
            continue
        spec = specs[task.project]
        tags = task_run_tags(task, spec)
        if task.id in priorities:
            tags[PRIORITY_TAG] = str(priorities[task.id])
        requests.append(
            dg.RunRequest(
                run_key=f"{task.id}.{task.attempts + 1}",
                asset_selection=[dg.AssetKey([task.project, "tasks"])],
                partition_key=task.id,
                tags=tags,
            )
        )
    return requests


def ensure_partitions(instance: dg.DagsterInstance, tasks: list[Task]) -> None:
    """Add the tasks' partitions, one bulk call per project."""
    from orchestration.factory import tasks_partitions_name

    by_project: dict[str, list[str]] = {}
    for task in tasks:
        by_project.setdefault(task.project, []).append(task.id)
    for project, ids in by_project.items():
        name = tasks_partitions_name(project)
        missing = [i for i in ids if not instance.has_dynamic_partition(name, i)]
        if missing:
            try:
                instance.add_dynamic_partitions(name, missing)
            except sa.exc.IntegrityError:
                # Another process (the CLI, the sensor) added some of them a moment ago.
                for key in missing:
                    with contextlib.suppress(sa.exc.IntegrityError):
                        instance.add_dynamic_partitions(name, [key])


def reconcile_ended_runs(store: TaskStore, instance: dg.DagsterInstance, log) -> None:
    """A task whose run ended (failed, cancelled, crashed) without recording it never stays
    `running` or dispatched: it fails, is cancelled, or (if its run never appeared) is queued
    again."""
    active = store.list(statuses=[TaskStatus.RUNNING, TaskStatus.QUEUED])
    for task in active:
        if task.status is TaskStatus.QUEUED and not task.dispatched:
            continue
        if task.run_id:  # claimed: its run is known, however it was launched
            run = instance.get_run_by_id(task.run_id)
            runs = [run] if run else []
        else:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task.id}), limit=1)
        if not runs:
            age = (datetime.now(UTC) - task.updated_at).total_seconds()
            if age > LAUNCH_GRACE_S and store.requeue(task.id, "its run never started"):
                log.warning(f"task {task.id}: no run after {age:.0f}s; queued again")
            continue
        latest = runs[0]
        if not latest.is_finished:
            continue
        if latest.status == dg.DagsterRunStatus.CANCELED:
            ended = store.fail_run(task.id, task.run_id, f"run {latest.run_id} was cancelled")
            if ended:
                log.info(f"task {task.id}: run {latest.run_id} cancelled")
        elif latest.status == dg.DagsterRunStatus.FAILURE or task.status is TaskStatus.RUNNING:
            reason = f"run {latest.run_id} ended ({latest.status.value}) without recording the task"
            ended = store.fail_run(task.id, task.run_id, reason)
            if ended:
                log.warning(f"task {task.id}: {reason}")
        else:
            ended = False
        pgid = task.extra.get("agent_pgid")
        if ended and pgid and kill_process_group(int(pgid), task.extra.get("agent_started")):
            log.warning(f"task {task.id}: stopped its agent's process group {pgid}")


def build_import_sensor(specs: Mapping[str, ProjectSpec]) -> dg.SensorDefinition:
    @dg.sensor(
        name="task_import",
        minimum_interval_seconds=IMPORT_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turn unchecked items of .agent-os/specs/*/tasks.md into tasks, once each.",
    )
    def task_import(context: dg.SensorEvaluationContext, agent_tasks: AgentTasks):
        store = agent_tasks.store()
        home = agent_tasks.settings().home
        added = 0
        try:
            for spec in specs.values():
                try:
                    added += len(import_task_lists(spec, ProjectWorkspace(home, spec), store))
                except Exception as exc:  # one project's broken repository never stops the rest
                    context.log.warning(f"{spec.name}: task import failed: {exc}")
        finally:
            store.dispose()
        return dg.SkipReason(f"imported {added} new task(s)")

    return task_import
