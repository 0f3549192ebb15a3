"""Applying the allocation to Dagster: pool limits in the instance, priorities of queued runs.

Why pools and run priorities, not dagster.yaml's run-queue tag limits: tag limits are read when
the daemon starts, so changing them needs a restart; pool limits live in the instance's storage
and the run queue reads them on every pass, and a queued run's `dagster/priority` tag can be
changed in place. With `concurrency.pools.granularity: run` a run must get a slot in every pool
its steps use before it starts and keeps them until it ends, so one task run holds a slot of the
global `agents` pool (its agent step) and one of its project's pool `project_<name>` (its
`verify_passed` check step) at once: the global and per-project limits both hold.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from orchestration.allocation.policy import (
    DEFAULT_AGEING_S,
    Allocation,
    ProjectLoad,
    QueuedTask,
    allocate,
)
from orchestration.allocation.providers import (
    ProviderState,
    ProviderStates,
    provider_pools,
    provider_slots,
)
from orchestration.control.store import ProjectStates
from orchestration.registry.channels import lease_pools
from orchestration.registry.loader import Registry
from orchestration.tags import (
    GLOBAL_POOL,
    PRIORITY_TAG,
    PROJECT_POOL_PREFIX,
    PROJECT_TAG,
    TASK_TAG,
    project_pool,
    provider_pool,
)
from orchestration.tasks.models import Task
from orchestration.tasks.store import TaskStore

#: How far back the policy remembers each project's slot-time when ranking.
SERVICE_WINDOW_S = 3600.0
IN_PROGRESS = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

_metadata = sa.MetaData()
#: Made by the task database's migrations (orchestration.tasks.migrations), like the task tables.
allocation_table = sa.Table(
    "orch_allocation",
    _metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


#: The override that holds every new start (`hold_starts`), whatever the other limits say.
MAINTENANCE_KEY = "maintenance"


@dataclass(frozen=True)
class ProjectLimits:
    priority: int
    max_parallel: int


@dataclass(frozen=True)
class AllocationSettings:
    """The limits in force: YAML values, overridden live by `orch allocation set`."""

    slots: int
    pools: Mapping[str, int]  # every pool but the per-project ones, `agents` included
    projects: Mapping[str, ProjectLimits]
    ageing_s: float = DEFAULT_AGEING_S

    def pool_limits(self) -> dict[str, int]:
        limits = dict(self.pools)
        limits[GLOBAL_POOL] = self.slots
        limits.update({project_pool(n): p.max_parallel for n, p in self.projects.items()})
        return limits


class AllocationOverrides:
    """Live overrides, kept in the task database so every process sees the same ones."""

    def __init__(self, store: TaskStore) -> None:
        self.engine = store.engine  # opening the store made the table

    def all(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.key: row.value for row in conn.execute(sa.select(allocation_table))}

    def set(self, values: Mapping[str, int]) -> None:
        with self.engine.begin() as conn:
            for key, value in values.items():
                conn.execute(allocation_table.delete().where(allocation_table.c.key == key))
                conn.execute(allocation_table.insert().values(key=key, value=value))

    def clear(self) -> None:
        """Drop the `orch allocation set` overrides (a maintenance hold stays)."""
        with self.engine.begin() as conn:
            conn.execute(allocation_table.delete().where(allocation_table.c.key != MAINTENANCE_KEY))

    def unset(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(allocation_table.delete().where(allocation_table.c.key == key))


def hold_starts(instance: dg.DagsterInstance, store: TaskStore, registry: Registry) -> None:
    """Start no new agent run anywhere (a quiesced backup): the global pool goes to 0 now and
    stays there on every dispatch tick until `release_starts`. Runs in flight go on."""
    AllocationOverrides(store).set({MAINTENANCE_KEY: 1})
    apply_pool_limits(instance, settings_now(registry, store).pool_limits())


def release_starts(instance: dg.DagsterInstance, store: TaskStore, registry: Registry) -> None:
    """Undo `hold_starts`: the limits in force before come back."""
    AllocationOverrides(store).unset(MAINTENANCE_KEY)
    apply_pool_limits(instance, settings_now(registry, store).pool_limits())


def effective_settings(
    registry: Registry,
    overrides: Mapping[str, int],
    held: Collection[str] = (),
    providers: Mapping[str, ProviderState] | None = None,
) -> AllocationSettings:
    """YAML values with the live overrides on top; the projects in `held` (paused or stopped)
    get no slot at all (their pool's limit is 0, which holds their queued runs), nor do the
    provider accounts `providers` says are paused (one while a canary tries). Each lease
    channel's pool gets the lease's `slots`."""
    pools = {
        name: pool.slots for name, pool in (registry.pools.pools if registry.pools else {}).items()
    }
    slots = overrides.get("slots", pools.get(GLOBAL_POOL, 0))
    for account in provider_pools(registry.agents.profiles if registry.agents else {}):
        configured = provider_slots(registry.pools, account, slots)
        state = (providers or {}).get(account)
        pools[provider_pool(account)] = state.limit(configured) if state is not None else configured
    pools.update(lease_pools({p.name: p.spec for p in registry.projects}))
    ageing = DEFAULT_AGEING_S
    if registry.pools and GLOBAL_POOL in registry.pools.pools:
        ageing = float(registry.pools.pools[GLOBAL_POOL].ageing_seconds)
    projects = {
        p.name: ProjectLimits(
            overrides.get(f"priority:{p.name}", p.spec.priority),
            0
            if p.name in held
            else overrides.get(f"max_parallel:{p.name}", p.spec.agent.max_parallel),
        )
        for p in registry.projects
    }
    return AllocationSettings(
        # While a maintenance hold is on (a quiesced backup), no agent slot is free at all.
        slots=0 if overrides.get(MAINTENANCE_KEY) else slots,
        pools=pools,
        projects=projects,
        ageing_s=ageing,
    )


def settings_now(registry: Registry, store: TaskStore) -> AllocationSettings:
    """The limits in force now: the registry's, the live overrides, the projects' states, the
    provider accounts' pauses."""
    return effective_settings(
        registry,
        AllocationOverrides(store).all(),
        held=ProjectStates(store).held(),
        providers=ProviderStates(store).all(),
    )


def apply_pool_limits(
    instance: dg.DagsterInstance, limits: Mapping[str, int], most: int | None = None
) -> list[str]:
    """Set every pool's limit in the instance (at most `most` of them, the shared pools before
    the projects' own: the rest next time); the pools that changed.

    Dagster writes one limit per transaction (about 13 ms on SQLite): a first dispatch tick
    over 10,000 projects would spend two minutes here, past the sensor's timeout. A project
    pool not set yet has the instance's `default_limit` meanwhile."""
    current = {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}
    changed: list[str] = []
    wanted = sorted(
        limits.items(), key=lambda item: (item[0].startswith(PROJECT_POOL_PREFIX), item)
    )
    for pool, limit in wanted:
        if current.get(pool) != limit:
            if most is not None and len(changed) >= most:
                break
            instance.event_log_storage.set_concurrency_slots(pool, limit)
            changed.append(pool)
    return changed


@dataclass(frozen=True)
class TaskRuns:
    queued: Sequence[dg.DagsterRun]
    running: Sequence[dg.DagsterRun]


def task_runs(instance: dg.DagsterInstance) -> TaskRuns:
    """Queued and in-progress runs that carry a task."""
    queued = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    running = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return TaskRuns(
        queued=[r for r in queued if TASK_TAG in r.tags],
        running=[r for r in running if TASK_TAG in r.tags],
    )


def loads(
    settings: AllocationSettings,
    runs: TaskRuns,
    tasks: Mapping[str, Task],
    now: float,
    extra_queued: Iterable[Task] = (),
    served: Mapping[str, float] | None = None,
) -> list[ProjectLoad]:
    """Each project's running count, queued tasks and recent service, as the policy sees
    them."""
    served = served or {}
    running: dict[str, int] = {}
    for run in runs.running:
        running[run.tags.get(PROJECT_TAG, "")] = running.get(run.tags.get(PROJECT_TAG, ""), 0) + 1
    queued: dict[str, list[QueuedTask]] = {}
    queued_tasks = [tasks[r.tags[TASK_TAG]] for r in runs.queued if r.tags[TASK_TAG] in tasks]
    seen = {task.id for task in queued_tasks}
    extra = [task for task in extra_queued if task.id not in seen]
    for task in [*queued_tasks, *extra]:
        created = task.created_at.timestamp()
        queued.setdefault(task.project, []).append(
            QueuedTask(task.id, task.priority, max(0.0, now - created), created)
        )
    return [
        ProjectLoad(
            name=name,
            priority=limits.priority,
            max_parallel=limits.max_parallel,
            running=running.get(name, 0),
            queued=tuple(queued.get(name, ())),
            served=served.get(name, 0.0),
        )
        for name, limits in settings.projects.items()
    ]


def service(
    history: Iterable[tuple[str, datetime, datetime | None]], now: float, window_s: float
) -> dict[str, float]:
    """How many tasks each project finished in the last `window_s`; a task that straddles the
    window's start counts for the part inside it."""
    start = now - window_s
    served: dict[str, float] = {}
    for project, started, finished in history:
        if finished is None:
            continue  # running tasks count in the policy's `running`
        begin, end = started.timestamp(), finished.timestamp()
        length = max(end - begin, 1e-6)
        inside = min(end, now) - max(begin, start)
        if inside > 0:
            served[project] = served.get(project, 0.0) + min(1.0, inside / length)
    return served


def current_allocation(
    instance: dg.DagsterInstance,
    store: TaskStore,
    settings: AllocationSettings,
    extra_queued: Iterable[Task] = (),
) -> tuple[Allocation, TaskRuns, list[ProjectLoad]]:
    runs = task_runs(instance)
    ids = [r.tags[TASK_TAG] for r in runs.queued]
    tasks = {t.id: t for t in store.tasks(ids=ids)} if ids else {}
    now = time.time()
    window = max(SERVICE_WINDOW_S, 4 * settings.ageing_s)
    history = store.service_since(datetime.fromtimestamp(now - window, UTC))
    project_loads = loads(settings, runs, tasks, now, extra_queued, service(history, now, window))
    return allocate(settings.slots, project_loads, ageing_s=settings.ageing_s), runs, project_loads


def rebalance(
    instance: dg.DagsterInstance, store: TaskStore, settings: AllocationSettings
) -> dict[str, int]:
    """Re-rank the queued task runs; run id -> new priority for the runs that changed."""
    allocation, runs, _ = current_allocation(instance, store, settings)
    changed = {}
    for run in runs.queued:
        wanted = allocation.priorities.get(run.tags[TASK_TAG])
        if wanted is not None and run.tags.get(PRIORITY_TAG) != str(wanted):
            instance.add_run_tags(run.run_id, {PRIORITY_TAG: str(wanted)})
            changed[run.run_id] = wanted
    return changed
