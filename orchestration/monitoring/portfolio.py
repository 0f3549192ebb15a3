"""The portfolio: one snapshot of every project (state, work in flight, outcomes, spend, last
verification), of the agent pools and of the provider accounts agents spend, for `orch status`,
the metrics exporter and the `monitoring` sensor.

Two halves: `assemble_portfolio` and the helpers above it are pure (plain inputs in, frozen
data out); `read_portfolio` and the `read_*` functions below gather those inputs from the
registry, the task database and the Dagster instance. Dagster is imported only by the readers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestration.allocation.providers import (
    ProviderState,
    ProviderStates,
    provider_pools,
    provider_slots,
)
from orchestration.allocation.providers import ProviderStatus as AccountStatus
from orchestration.control.budget import BudgetCheck, BudgetLevel, check_budget
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates, StateRecord
from orchestration.monitoring.usage import (
    LifetimeTotals,
    ProjectUsage,
    as_utc,
    lifetime_totals,
    queue_waits,
    status_counts,
    usage_by_project,
)
from orchestration.registry.models import Budget
from orchestration.tags import GLOBAL_POOL, PROJECT_TAG, project_pool, provider_pool
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore

if TYPE_CHECKING:
    import dagster as dg

    from orchestration.registry.loader import Registry

#: The check the verification asset records its verdict with (orchestration/defs/factory.py).
VERIFY_CHECK = "verify_passed"
#: Digits kept of a dollar amount when shown (sums of floats otherwise print as 0.30000000004).
USD_DIGITS = 6


@dataclass(frozen=True)
class Verification:
    """A project's latest verification: its verdict and when it was recorded."""

    passed: bool
    at: datetime


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a verification's check: passed or not, when, in which run (empty for
    a runless one)."""

    passed: bool
    at: datetime
    run_id: str


@dataclass(frozen=True)
class LastVerification:
    """A verification's verdict and how old it is when the portfolio was taken."""

    passed: bool
    age_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "age_s": round(self.age_s, 3)}


@dataclass(frozen=True)
class PoolSlots:
    """One agent pool: its limit and the slots held by runs in progress."""

    limit: int
    in_use: int

    def to_dict(self) -> dict[str, int]:
        return {"limit": self.limit, "in_use": self.in_use}


@dataclass(frozen=True)
class ProviderStatus:
    """A provider account agents spend (its pool `provider_<name>`): whether a usage limit
    closed it (`paused`: no task on it starts), its status (open, paused, or canary: one task
    tries it again), until when and why, and its pool's limit now against the configured one."""

    name: str
    paused: bool
    status: str = "open"
    #: Paused: when one canary task may try (None: until `orch providers resume`). Canary: when
    #: the account opens fully if no new limit came.
    until: datetime | None = None
    reason: str | None = None
    limit: int = 0
    configured: int = 0
    window: str | None = None
    source_task: str | None = None
    since: datetime | None = None
    actor: str | None = None
    backoff_s: float = 0.0

    @classmethod
    def of(cls, state: ProviderState, configured: int) -> ProviderStatus:
        """The account as `state` has it, its pool configured with `configured` slots."""
        return cls(
            name=state.name,
            paused=state.status is AccountStatus.PAUSED,
            status=str(state.status),
            until=state.until,
            reason=state.reason,
            limit=state.limit(configured),
            configured=configured,
            window=state.window,
            source_task=state.source_task,
            since=state.since,
            actor=state.actor,
            backoff_s=state.backoff_s,
        )

    @property
    def pool(self) -> str:
        return provider_pool(self.name)

    def describe(self) -> str:
        """One line for people: `paused until 2026-11-29T16:05:00Z (five_hour, from task t1)`,
        `canary (one slot) until ...`, or `open`."""
        if self.status == str(AccountStatus.PAUSED):
            when = f"until {utc_iso(self.until)}" if self.until else "until resumed by hand"
            why = [self.window] if self.window else []
            why += [f"from task {self.source_task}"] if self.source_task else []
            return f"paused {when}" + (f" ({', '.join(why)})" if why else "")
        if self.status == str(AccountStatus.CANARY):
            return "canary (one slot)" + (f" until {utc_iso(self.until)}" if self.until else "")
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "paused": self.paused,
            "until": utc_iso(self.until) if self.until else None,
            "reason": self.reason,
            "window": self.window,
            "source_task": self.source_task,
            "since": utc_iso(self.since) if self.since else None,
            "backoff_s": self.backoff_s,
            "actor": self.actor,
            "pool": self.pool,
            "limit": self.limit,
            "configured": self.configured,
        }


def utc_iso(moment: datetime) -> str:
    """A moment as UTC ISO 8601 to the second: `2026-11-29T16:05:00Z`."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ProjectRow:
    """One project in the portfolio."""

    name: str
    state: ProjectState
    state_reason: str | None
    priority: int | None  # None: not in the registry now (archived, or its file is gone)
    usage: ProjectUsage
    tasks: Mapping[TaskStatus, int]  # every status, how many of its tasks are in it now
    lifetime: LifetimeTotals = field(default_factory=LifetimeTotals)
    queue_waits_s: tuple[float, ...] = ()  # tasks started in the last 24 h
    last_verification: LastVerification | None = None
    budget: BudgetCheck = field(default_factory=lambda: BudgetCheck(BudgetLevel.OK))

    @property
    def budget_used_pct(self) -> float | None:
        """How much of its budget the project has spent (the most used period); None: none."""
        return self.budget.used_pct

    @property
    def running(self) -> int:
        return self.tasks[TaskStatus.RUNNING]

    @property
    def queued(self) -> int:
        return self.tasks[TaskStatus.QUEUED]

    @property
    def blocked(self) -> int:
        return self.tasks[TaskStatus.BLOCKED]

    def to_dict(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "name": self.name,
            "state": str(self.state),
            "state_reason": self.state_reason,
            "priority": self.priority,
            "running": self.running,
            "queued": self.queued,
            "blocked": self.blocked,
            "succeeded_24h": usage.succeeded_24h,
            "failed_24h": usage.failed_24h,
            "cost_today_usd": _usd(usage.cost_today_usd),
            "cost_7d_usd": _usd(usage.cost_7d_usd),
            "cost_30d_usd": _usd(usage.cost_30d_usd),
            "tokens_today": usage.tokens_today,
            "tokens_in_today": usage.tokens_in_today,
            "tokens_out_today": usage.tokens_out_today,
            "tasks_succeeded_today": usage.tasks_succeeded_today,
            "tasks_failed_today": usage.tasks_failed_today,
            "cost_per_success_usd": _usd(usage.cost_per_success_usd),
            "wasted_usd_today": _usd(usage.wasted_usd_today),
            "burn_rate_usd_per_h": _usd(usage.burn_rate_usd_per_h),
            "budget_used_pct": self.budget_used_pct,
            "last_verification": (
                self.last_verification.to_dict() if self.last_verification else None
            ),
        }


@dataclass(frozen=True)
class Portfolio:
    """Every project and agent pool at one moment."""

    at: datetime
    projects: tuple[ProjectRow, ...]
    slots: Mapping[str, PoolSlots]
    providers: tuple[ProviderStatus, ...] = ()

    def project(self, name: str) -> ProjectRow:
        for row in self.projects:
            if row.name == name:
                return row
        raise KeyError(f"no project {name!r} in the portfolio")

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "projects": [row.to_dict() for row in self.projects],
            "providers": [provider.to_dict() for provider in self.providers],
            "slots": {name: slots.to_dict() for name, slots in self.slots.items()},
        }


# --- the pure assembly ------------------------------------------------------------------------


def assemble_portfolio(
    *,
    now: datetime,
    tasks: Iterable[Task],
    priorities: Mapping[str, int],
    states: Mapping[str, StateRecord],
    archived: Collection[str] = (),
    verifications: Mapping[str, Verification] | None = None,
    slots: Mapping[str, PoolSlots] | None = None,
    providers: Iterable[ProviderStatus] = (),
    budgets: Mapping[str, Budget | None] | None = None,
) -> Portfolio:
    """The portfolio from plain inputs.

    `priorities` holds the registry's projects (with the priority in force), `states` the
    recorded lifecycle states (a project without one is active, or archived when it is in
    `archived`). A row is made for each of those and for every project a task belongs to,
    sorted by name. `budgets` holds each project's budget (none: no budget).
    """
    tasks = list(tasks)
    verifications = verifications or {}
    budgets = budgets or {}
    names = sorted({*priorities, *archived, *states, *(task.project for task in tasks)})
    usage = usage_by_project(tasks, now, names)
    counts = status_counts(tasks)
    totals = lifetime_totals(tasks)
    waits = queue_waits(tasks, now)
    rows = []
    for name in names:
        default = ProjectState.ARCHIVED if name in archived else ProjectState.ACTIVE
        record = states.get(name, StateRecord(name, default))
        verification = verifications.get(name)
        spent = usage[name]
        budget = check_budget(
            budgets.get(name),
            spent_today=spent.cost_today_usd,
            spent_month=spent.cost_month_usd,
            now=now,
        )
        rows.append(
            ProjectRow(
                name=name,
                state=record.state,
                state_reason=record.reason,
                priority=priorities.get(name),
                usage=usage[name],
                tasks=counts.get(name, dict.fromkeys(TaskStatus, 0)),
                lifetime=totals.get(name, LifetimeTotals()),
                queue_waits_s=waits.get(name, ()),
                last_verification=(
                    LastVerification(
                        verification.passed,
                        max(0.0, (as_utc(now) - as_utc(verification.at)).total_seconds()),
                    )
                    if verification
                    else None
                ),
                budget=budget,
            )
        )
    return Portfolio(
        at=as_utc(now),
        projects=tuple(rows),
        slots=dict(slots or {}),
        providers=tuple(providers),
    )


def pools_in_use(run_pools: Iterable[Collection[str]]) -> dict[str, int]:
    """How many runs hold a slot of each pool, given the pools of each run in progress (with
    pool granularity `run`, a run holds one slot of every pool its steps use)."""
    in_use: dict[str, int] = {}
    for pools in run_pools:
        for pool in set(pools):
            in_use[pool] = in_use.get(pool, 0) + 1
    return in_use


def pool_slots(
    configured: Mapping[str, int],
    instance_limits: Mapping[str, int],
    in_use: Mapping[str, int],
) -> dict[str, PoolSlots]:
    """Each agent pool of `configured` (the limits the allocation wants) with the limit the
    instance enforces (the configured one until the dispatch sensor first sets it) and the
    slots in use."""
    return {
        name: PoolSlots(instance_limits.get(name, limit), in_use.get(name, 0))
        for name, limit in sorted(configured.items())
    }


def verdict(
    metadata: Mapping[str, Any],
    materialized_at: datetime,
    run_id: str,
    check: Evaluation | None = None,
) -> Verification | None:
    """A verification from its materialization (raw metadata values, when, which run) and the
    latest evaluation of its `verify_passed` check, which decides when it evaluated this
    materialization (same run, or later). None when the project had no verify command then.
    Otherwise the metadata decides as the runner does: the command exited 0, in time, and no
    test failed."""
    if metadata.get("configured") is False:
        return None
    if check is not None and ((run_id and check.run_id == run_id) or check.at >= materialized_at):
        return Verification(check.passed, materialized_at)
    if "exit_code" not in metadata:
        return None
    passed = (
        metadata.get("exit_code") == 0
        and not metadata.get("timed_out", False)
        and not metadata.get("failed", 0)
    )
    return Verification(bool(passed), materialized_at)


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, USD_DIGITS)


# --- the reading ------------------------------------------------------------------------------


def read_portfolio(
    registry: Registry,
    store: TaskStore,
    instance: dg.DagsterInstance | None,
    now: datetime,
) -> Portfolio:
    """The portfolio now: projects from the registry (archived ones too), their states and
    tasks from the task database, pool limits, runs in progress and verifications from the
    instance (without an instance: the configured limits, nothing in use, no verification),
    and the provider accounts (`read_providers`)."""
    from orchestration.allocation.control import settings_now  # imports Dagster

    allocation = settings_now(registry, store)
    limits = allocation.pool_limits()
    configured = {name: limits[name] for name in {*allocation.pools, GLOBAL_POOL}}
    instance_limits: dict[str, int] = {}
    in_use: dict[str, int] = {}
    verifications: dict[str, Verification] = {}
    if instance is not None:
        instance_limits = {
            limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()
        }
        in_use = read_pools_in_use(instance)
        verifications = read_verifications(instance, registry.names)
    return assemble_portfolio(
        now=now,
        tasks=store.tasks(),
        priorities={name: limit.priority for name, limit in allocation.projects.items()},
        states=ProjectStates(store).all(),
        archived=registry.archived,
        verifications=verifications,
        slots=pool_slots(configured, instance_limits, in_use),
        providers=read_providers(registry, store),
        budgets={project.name: project.spec.budget for project in registry.projects},
    )


def read_providers(registry: Registry, store: TaskStore) -> tuple[ProviderStatus, ...]:
    """Every provider account the agent profiles name and every one with a recorded state (an
    account never recorded is open), sorted by name, with its pool's limit now. Reads the task
    database only: no Dagster."""
    states = ProviderStates(store).all()
    named = provider_pools(registry.agents.profiles if registry.agents else {})
    pools = registry.pools
    global_pool = pools.pools.get(GLOBAL_POOL) if pools else None
    global_slots = global_pool.slots if global_pool is not None else 0
    return tuple(
        ProviderStatus.of(
            states.get(name, ProviderState(name)), provider_slots(pools, name, global_slots)
        )
        for name in sorted({*named, *states})
    )


def read_pools_in_use(instance: dg.DagsterInstance) -> dict[str, int]:
    """Slots held per pool by the task runs in progress (as `orch allocation show` counts
    them)."""
    from orchestration.allocation.control import task_runs

    return pools_in_use(_pools_of(run) for run in task_runs(instance).running)


def _pools_of(run: dg.DagsterRun) -> set[str]:
    """The pools a run holds: the ones its plan uses, as the run queue counts them; for a run
    made without a plan, those of a task run (the global pool and its project's)."""
    concurrency = run.run_op_concurrency
    if concurrency is not None and concurrency.all_pools:
        return set(concurrency.all_pools)
    project = run.tags.get(PROJECT_TAG)
    return {GLOBAL_POOL, *([project_pool(project)] if project else [])}


def read_verifications(
    instance: dg.DagsterInstance, projects: Iterable[str]
) -> dict[str, Verification]:
    """Each project's latest verification: the latest materialization of `<p>/verification`
    and its `verify_passed` check (two queries, whatever the number of projects)."""
    import dagster as dg

    keys = {name: dg.AssetKey([name, "verification"]) for name in projects}
    if not keys:
        return {}
    materializations = instance.get_latest_materialization_events(list(keys.values()))
    check_keys = [dg.AssetCheckKey(key, VERIFY_CHECK) for key in keys.values()]
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    found = {}
    for name, key in keys.items():
        entry = materializations.get(key)
        materialization = entry.asset_materialization if entry else None
        if entry is None or materialization is None:
            continue
        metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        record = checks.get(dg.AssetCheckKey(key, VERIFY_CHECK))
        check = None
        if record is not None and record.status.value in ("SUCCEEDED", "FAILED"):
            # The evaluation event's own time: the row's creation time may be truncated.
            at = record.event.timestamp if record.event else record.create_timestamp
            check = Evaluation(
                record.status.value == "SUCCEEDED", _from_timestamp(at), record.run_id
            )
        result = verdict(metadata, _from_timestamp(entry.timestamp), entry.run_id, check)
        if result is not None:
            found[name] = result
    return found


def _from_timestamp(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
