"""The shared sensors, thin shells over the task lifecycle: dispatching queued tasks, and
importing tasks written in repositories.

Both read the live registry and the task store through the `agent_tasks` resource, ask the
domain (`tasks/lifecycle.py`, `tasks/intake.py`, `allocation/`) what to do, and turn the answer
into run requests.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import os
import time
from collections.abc import Collection

import dagster as dg

from orchestration.allocation.control import (
    AllocationSettings,
    apply_pool_limits,
    rebalance,
    settings_now,
)
from orchestration.allocation.preempting import preempt
from orchestration.allocation.providers import ProviderStates
from orchestration.control.budget import budget_now
from orchestration.control.runs import hold_project_runs
from orchestration.control.store import ProjectStates
from orchestration.defs.reload import request_reload
from orchestration.defs.resources import AgentTasks
from orchestration.registry.loader import Registry
from orchestration.sharding import WHOLE, Shard
from orchestration.tasks.intake import import_task_lists
from orchestration.tasks.lifecycle import Launch, dispatch, reconcile_ended_runs
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.tasks.submit import submit_now
from orchestration.workspace.workspace import ProjectWorkspace

#: The dispatch sensor's minimum interval. Dagster's sensor daemon looks at its sensors about
#: every 5 s whatever their interval (its loop time), so in practice a tick comes every 5 s.
DISPATCH_INTERVAL_S = 2
IMPORT_INTERVAL_S = 120
#: How long one import tick goes on fetching projects' repositories before it leaves the rest
#: to the next tick (Dagster's sensor timeout is 60 s).
IMPORT_TICK_BUDGET_S = 30.0
#: The most pool limits one tick writes (about 13 ms each on SQLite), so that the first tick
#: over thousands of projects stays well inside the sensor's timeout; the rest follow.
POOL_WRITES_PER_TICK = 500
#: How long to wait before asking again for a reload that has not happened.
RELOAD_RETRY_S = 120


def build_dispatch_sensor(
    loaded: Collection[str], tasks_selection: dg.AssetSelection, shard: Shard = WHOLE
) -> dg.SensorDefinition:
    """The `task_dispatch` sensor of definitions that hold the projects `loaded`, of `shard`:
    it launches that shard's tasks; the primary shard's also keeps the global state (pool
    limits, provider accounts, holds, priorities of queued runs, preemption, runs that ended
    without recording their task)."""
    asked_reload: dict[str, float] = {}  # project -> when this code server asked for a reload

    @dg.sensor(
        name="task_dispatch",
        asset_selection=tasks_selection,
        minimum_interval_seconds=DISPATCH_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launch a run for every queued task whose prerequisites have succeeded, "
        "ranked by the allocation policy; keep pool limits, queued runs' priorities and the "
        "holds of paused projects in line with the allocation and the projects' states; "
        "preempt when pools.yaml asks for it; fail or requeue tasks whose runs ended without "
        "recording them.",
    )
    def task_dispatch(
        context: dg.SensorEvaluationContext, agent_tasks: AgentTasks
    ) -> dg.SensorResult | dg.SkipReason:
        live = agent_tasks.live_registry()
        registry = live.current()
        store = agent_tasks.store()
        try:
            if shard.primary:
                reconcile_ended_runs(store, context.instance, context.log, registry.settings.home)
            if registry.config_errors:
                # A broken agents or pools file would fail every task it touched: start none.
                return dg.SkipReason(
                    "nothing dispatched until the config files load: "
                    + "; ".join(str(e) for e in registry.config_errors)
                )
            if shard.primary:  # before the allocation, which reads the accounts' pools
                for account in ProviderStates(store).advance(budget_now(os.environ)):
                    context.log.info(
                        f"provider {account.name}: {account.status} "
                        f"({account.reason or 'no reason'})"
                    )
            allocation = settings_now(registry, store)
            states = ProjectStates(store)
            if shard.primary:
                _keep_global_state(context, store, registry, allocation, states)
            outcome = dispatch(
                store,
                context.instance,
                registry,
                fingerprint=live.fingerprint,
                loaded=loaded,
                allocation=allocation,
                holds=None if shard.whole else shard.holds,
            )
            now = time.monotonic()
            # Projects the files have and the loaded definitions lack, or the other way round
            # (an archived or removed project's group must leave the asset graph).
            stale = [*outcome.unloaded, *sorted(set(loaded) - set(registry.names))]
            due = [p for p in stale if now - asked_reload.get(p, -1e9) > RELOAD_RETRY_S]
            if due:
                asked_reload.update(dict.fromkeys(due, now))
                location = None if shard.whole else shard.location
                context.log.info(
                    f"project(s) {', '.join(due)} differ between the registry and the loaded "
                    "definitions: " + request_reload(os.environ, location=location)
                )
            if not outcome.launches:
                waiting = held_back(store, states)
                if waiting:
                    return dg.SkipReason(waiting)
            return dg.SensorResult(
                run_requests=[_run_request(launch) for launch in outcome.launches]
            )
        finally:
            store.dispose()

    return task_dispatch


def _keep_global_state(
    context: dg.SensorEvaluationContext,
    store: TaskStore,
    registry: Registry,
    allocation: AllocationSettings,
    states: ProjectStates,
) -> None:
    """What one dispatch tick keeps in line for every project: pool limits, holds on paused
    projects' queued runs, queued runs' priorities, preemption."""
    changed = apply_pool_limits(context.instance, allocation.pool_limits(), POOL_WRITES_PER_TICK)
    if changed:
        more = " (more on the next tick)" if len(changed) == POOL_WRITES_PER_TICK else ""
        shown = ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if changed[20:] else "")
        context.log.info(f"pool limits set: {shown}{more}")
    held, released = hold_project_runs(context.instance, states.held())
    if held or released:
        context.log.info(f"queued runs of paused projects: {held} held, {released} released")
    reranked = rebalance(context.instance, store, allocation)
    if reranked:
        context.log.info(f"re-prioritised {len(reranked)} queued run(s)")
    if registry.pools is not None and registry.pools.preemption is not None:
        preempt(context.instance, store, registry, allocation, context.log)


def held_back(store: TaskStore, states: ProjectStates) -> str | None:
    """What the tick shows in the UI when nothing new starts: the projects whose queued tasks
    wait for them to resume (their queued runs name another pool as the reason)."""
    records = {r.project: r for r in states.all().values() if r.state.holds_tasks}
    if not records:
        return None
    counts: dict[str, int] = {}
    for task in store.tasks(statuses=[TaskStatus.QUEUED]):
        if task.project in records:
            counts[task.project] = counts.get(task.project, 0) + 1
    parts = [
        f"{name} {records[name].state}"
        + (f" ({records[name].reason})" if records[name].reason else "")
        + f": {count} queued task(s) wait"
        for name, count in sorted(counts.items())
    ]
    return "; ".join(parts) or None


def _run_request(launch: Launch) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=launch.run_key,
        asset_selection=[dg.AssetKey(list(launch.asset_path))],
        partition_key=launch.task.id,
        tags=dict(launch.tags),
    )


def build_import_sensor(budget_s: float = IMPORT_TICK_BUDGET_S) -> dg.SensorDefinition:
    """The `task_import` sensor. Each project's import fetches its repository, so a tick takes
    projects in name order from where the last one stopped (its cursor) until `budget_s` has
    passed: thousands of projects are gone through over several ticks, each tick short."""

    @dg.sensor(
        name="task_import",
        minimum_interval_seconds=IMPORT_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turn unchecked items of .agent-os/specs/*/tasks.md into tasks, once each.",
    )
    def task_import(context: dg.SensorEvaluationContext, agent_tasks: AgentTasks) -> dg.SkipReason:
        registry = agent_tasks.registry()
        store = agent_tasks.store()
        projects = sorted(registry.projects, key=lambda p: p.name)
        after = context.cursor or ""
        turn = [p for p in projects if p.name > after] + [p for p in projects if p.name <= after]
        deadline = time.monotonic() + budget_s
        added = looked = 0
        try:
            for project in turn:
                if looked and time.monotonic() > deadline:
                    break
                looked += 1
                context.update_cursor(project.name)
                workspace = ProjectWorkspace(registry.settings.home, project.spec)
                try:
                    new = import_task_lists(
                        project.spec, workspace, store, warn=context.log.warning
                    )
                except Exception as exc:  # one project's broken repository never stops the rest
                    context.log.warning(f"{project.name}: task import failed: {exc}")
                    continue
                added += len(new)
                for task in new:  # queued at once when nothing else waits, as `orch task add`
                    submitted = submit_now(store, registry, task)
                    if submitted.run_id:
                        context.log.info(f"task {task.id}: run {submitted.run_id} queued")
        finally:
            store.dispose()
        rest = f"; the other {len(turn) - looked} next tick" if looked < len(turn) else ""
        return dg.SkipReason(f"imported {added} new task(s) from {looked} project(s){rest}")

    return task_import
