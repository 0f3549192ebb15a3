"""Project specs in, Dagster definitions out: one asset group per project, built without I/O.

Per project `<p>`, the group `<p>` holds:
  - `<p>/source`, `<p>/manifest`, `<p>/verification`: one multi-asset (subsettable), because one
    op per project keeps the repository snapshot small when there are thousands of projects;
  - `<p>/tasks`: the agent work, dynamically partitioned by task id.
A project that depends on another gets lineage from its `verification` to the other's `source`:
when a provider's code changes, its consumers' tests are what must be re-run. A project with a
`schedule` gets a freshness policy on `verification` (see `verification_freshness`), so tests
that have not run when the schedule says they should show as late, then stale.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from orchestration.defs.metadata import (
    manifest_metadata,
    source_metadata,
    task_check_metadata,
    task_metadata,
    verification_metadata,
)
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.registry.models import AgentProfile, ProjectSpec
from orchestration.tags import (
    AGENT_PROFILE_TAG,
    AGENT_TAG,
    GLOBAL_POOL,
    PRIORITY_CLASS_TAG,
    PRIORITY_TAG,
    PROJECT_TAG,
    ROLE_TAG,
    project_pool,
    provider_pool,
    tasks_partitions_name,
)
from orchestration.tasks.execution import ProviderLimited
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError

REFRESH_JOB = "refresh"
#: How late a scheduled run may be (queued behind others, slow to start) before it counts.
FRESHNESS_GRACE = timedelta(hours=1)
#: Where the search for a schedule's longest gap starts: a fixed moment (a Monday, in a leap
#: year), so the answer, and the definitions, do not depend on when they load.
_CRON_SAMPLE_START = datetime(2024, 1, 1, tzinfo=UTC)
_CRON_SAMPLE_DAYS = 366


class ProjectKeys:
    """The asset keys of one project."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.source = dg.AssetKey([project, "source"])
        self.manifest = dg.AssetKey([project, "manifest"])
        self.verification = dg.AssetKey([project, "verification"])
        self.tasks = dg.AssetKey([project, "tasks"])
        self.usage = dg.AssetKey([project, "usage"])

    @property
    def repository(self) -> list[dg.AssetKey]:
        return [self.source, self.manifest, self.verification]


def build_project_defs(
    spec: ProjectSpec,
    profile: AgentProfile | None = None,
    providers: Sequence[str] = (),
) -> dg.Definitions:
    """All definitions of one project. Pure: reads nothing but its arguments.

    `providers` are the projects this one depends on (detected or declared); they become
    lineage from this project's `verification` to their `source`.
    """
    keys = ProjectKeys(spec.name)
    return dg.Definitions(
        assets=[
            _repository_assets(spec, keys, providers),
            *_tasks_asset(spec, keys, profile),
            _usage_asset(spec, keys),
        ],
        schedules=[_schedule(spec, keys)] if spec.schedule else [],
    )


def _usage_asset(spec: ProjectSpec, keys: ProjectKeys) -> dg.AssetSpec:
    """What the project's agents spent and achieved, recorded by the `monitoring` sensor when a
    task ends and at midnight (no op: a runless record of the task records)."""
    budget = spec.budget
    limits = [
        f"${limit:g} a {period}"
        for period, limit in (
            ("day", budget and budget.daily_usd),
            ("month", budget and budget.monthly_usd),
        )
        if limit
    ]
    return dg.AssetSpec(
        keys.usage,
        description=(
            "Spend, tokens and outcomes of this project's agent tasks, recorded by the "
            "`monitoring` sensor when a task ends and at midnight (UTC); Overview, Metadata, "
            "Plots shows them over time. "
            + (
                f"Budget: {' and '.join(limits)}; the `within_budget` check warns at 80 % and "
                "fails at 100 %, which pauses the project until the period ends."
                if limits
                else "No budget (project key `budget`)."
            )
        ),
        kinds={"cost"},
        deps=[keys.tasks],
        **_common(spec, "usage"),
    )


def _common(spec: ProjectSpec, role: str) -> dict[str, Any]:
    return {
        "group_name": spec.name,
        "owners": list(spec.owners),
        "tags": {
            **spec.tags,
            PROJECT_TAG: spec.name,
            PRIORITY_CLASS_TAG: spec.priority_class,
            ROLE_TAG: role,
        },
    }


#: Re-run a project's verification when its own or a provider's code changed (a new commit
#: observed by `source`, whose data version is the branch sha), never while a run is going.
VERIFY_ON_CHANGE = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("own or a provider's code changed")


def _repository_assets(
    spec: ProjectSpec, keys: ProjectKeys, providers: Sequence[str]
) -> dg.AssetsDefinition:
    if spec.is_remote:
        source_text = (
            f"Tip of branch `{spec.branch}` of the remote repository `{spec.repo}`, read with "
            "`git ls-remote`; nothing is cloned to observe it."
        )
    else:
        source_text = (
            f"State of the local repository `{spec.repo}`: HEAD, branch `{spec.branch}` tip, "
            "uncommitted changes, last commit. Observed in place; never written to."
        )
    specs = [
        dg.AssetSpec(
            keys.source,
            description=source_text,
            kinds={"git"},
            **_common(spec, "source"),
        ),
        dg.AssetSpec(
            keys.manifest,
            deps=[keys.source],
            description=(
                f"Dependency manifests on `{spec.branch}` of {spec.name} (pyproject, "
                "requirements, package.json, go.mod, Cargo.toml, .gitmodules) and the package "
                "names the project provides."
            ),
            kinds={"git"},
            **_common(spec, "manifest"),
        ),
        dg.AssetSpec(
            keys.verification,
            deps=[keys.source, *(ProjectKeys(dep).source for dep in providers)],
            description=(
                f"The project's own test command (`{' '.join(spec.verify)}`) run on a fresh "
                f"worktree of `{spec.branch}`, with passed and failed counts."
                if spec.verify
                else "No `verify` command is configured for this project."
            ),
            kinds={"git"},
            automation_condition=VERIFY_ON_CHANGE if spec.verify else None,
            freshness_policy=verification_freshness(spec.schedule),
            **_common(spec, "verification"),
        ),
    ]
    checks = (
        [
            dg.AssetCheckSpec(
                "verify_passed",
                asset=keys.verification,
                description="The verify command exited 0 and its runner reported no failures.",
            )
        ]
        if spec.verify
        else []
    )

    @dg.multi_asset(
        name=f"{spec.name}__repository",
        specs=specs,
        check_specs=checks,
        can_subset=True,
        op_tags={PROJECT_TAG: spec.name},
    )
    def repository(
        context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        current = workspaces.spec(spec.name)  # the file as it is now, not as it was at load
        selected = context.selected_asset_keys
        if keys.source in selected:
            state = workspaces.observe(current)
            yield dg.MaterializeResult(
                asset_key=keys.source,
                metadata=source_metadata(current, state),
                data_version=dg.DataVersion(state.branch_sha) if state.branch_sha else None,
            )
        if keys.manifest in selected:
            outcome, graph = workspaces.detect_dependencies(current)
            yield dg.MaterializeResult(
                asset_key=keys.manifest,
                metadata=manifest_metadata(current, outcome, graph),
                data_version=dg.DataVersion(outcome.scan.commit) if outcome.scan.commit else None,
            )
        if keys.verification in selected:
            yield from _verification_results(context, keys, workspaces, current, bool(checks))

    return repository


def verification_freshness(schedule: str | None) -> dg.FreshnessPolicy | None:
    """The freshness policy of a project's `verification`: none without a schedule; with one,
    warn when the last run is older than the schedule's period plus `FRESHNESS_GRACE`, fail
    when it is older than two periods plus the grace (one scheduled run missed, then two).

    The period is the longest time between two ticks of the schedule (`longest_cron_gap`), so a
    weekday schedule does not look late every Monday. Dagster's freshness daemon evaluates it.
    """
    if schedule is None:
        return None
    period = longest_cron_gap(schedule)
    return dg.FreshnessPolicy.time_window(
        fail_window=2 * period + FRESHNESS_GRACE, warn_window=period + FRESHNESS_GRACE
    )


@functools.cache  # one answer per cron string: a thousand projects share a few schedules
def longest_cron_gap(cron: str) -> timedelta:
    """The longest time between two consecutive ticks of `cron`, in UTC (as the schedules run),
    over a year of ticks from a fixed start (and past it, until a second day with ticks).

    Cron's minutes and hours do not depend on the day, so every day with ticks has the same
    times of day: the longest gap is the longest one within a day, or the one from the last
    tick of a day with ticks to the first of the next such day. Only the days are looked up,
    one croniter query per day, not every tick (an every-minute cron has half a million a
    year).
    """
    from croniter import croniter  # the cron library Dagster schedules with

    (minutes, hours, *_), *_ = croniter.expand(cron)
    times = sorted(
        hour * 60 + minute
        for hour in (range(24) if hours == ["*"] else hours)
        for minute in (range(60) if minutes == ["*"] else minutes)
    )
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0)
    days: list[date] = []
    moment = _CRON_SAMPLE_START - timedelta(minutes=1)
    end = (_CRON_SAMPLE_START + timedelta(days=_CRON_SAMPLE_DAYS)).date()
    while len(days) < 2 or days[-1] < end:
        tick: datetime = croniter(cron, moment).get_next(datetime)  # strictly after `moment`
        days.append(tick.date())
        moment = datetime.combine(tick.date(), datetime.max.time(), UTC)  # skip the rest of it
    day_span = times[-1] - times[0]
    longest = max(
        longest, *((b - a).days * 24 * 60 - day_span for a, b in itertools.pairwise(days))
    )
    return timedelta(minutes=longest)


def _verification_results(
    context: dg.AssetExecutionContext,
    keys: ProjectKeys,
    workspaces: ProjectWorkspaces,
    spec: ProjectSpec,
    has_check: bool,
) -> Iterable[dg.MaterializeResult | dg.AssetCheckResult]:
    if not spec.verify:
        yield dg.MaterializeResult(asset_key=keys.verification, metadata={"configured": False})
        if has_check:  # `verify` was removed after these definitions loaded
            yield dg.AssetCheckResult(
                asset_key=keys.verification,
                check_name="verify_passed",
                passed=False,
                description=f"{spec.name} has no verify command now",
            )
        return
    result = workspaces.verify(spec)
    context.log.info(
        f"{spec.name}: verify {'passed' if result.passed else 'FAILED'} "
        f"({result.tests_passed} passed, {result.tests_failed} failed)"
    )
    yield dg.MaterializeResult(asset_key=keys.verification, metadata=verification_metadata(result))
    yield dg.AssetCheckResult(
        asset_key=keys.verification,
        check_name="verify_passed",
        passed=result.passed,
        metadata={"passed": result.tests_passed, "failed": result.tests_failed},
        description=None if result.passed else result.output_tail[-500:],
    )


def _tasks_asset(
    spec: ProjectSpec, keys: ProjectKeys, profile: AgentProfile | None
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The task asset and its check.

    The agent step holds a slot of the global `agents` pool; the check step holds one of the
    project's own pool, so a task run needs both before it starts (pool granularity `run`).
    A profile in another pool (say `heavy`) adds a step that holds that pool's slot too.
    """
    agent = spec.agent.profile
    offline = profile is not None and profile.offline
    common = _common(spec, "tasks")
    common["tags"] |= {AGENT_PROFILE_TAG: agent} | ({AGENT_TAG: "demo"} if offline else {})
    partitions = dg.DynamicPartitionsDefinition(name=tasks_partitions_name(spec.name))

    @dg.asset(
        key=keys.tasks,
        deps=[keys.source],
        partitions_def=partitions,
        description=(
            f"Coding-agent work on {spec.name}: one partition per task id, run by the "
            f"`{agent}` agent profile"
            + (" (offline demo agent: scripted, no paid service)" if offline else "")
            + " in its own git worktree and branch `orch/<project>/<task-id>`."
        ),
        kinds={"agent"},
        pool=GLOBAL_POOL,
        **common,
    )
    def tasks(context: dg.AssetExecutionContext, agent_tasks: AgentTasks) -> dg.MaterializeResult:
        try:
            outcome = agent_tasks.execute(
                spec.name, context.partition_key, context.run_id, context.log
            )
        except ProviderLimited as exc:
            # Closed now rather than at the next dispatch tick, so that no queued run on the
            # account starts meanwhile; the tick keeps the limit from then on.
            context.instance.event_log_storage.set_concurrency_slots(provider_pool(exc.account), 0)
            raise dg.Failure(description=str(exc)) from None
        except TaskError as exc:
            raise dg.Failure(description=str(exc)) from None
        metadata = task_metadata(outcome)
        if outcome.task.status is TaskStatus.FAILED and outcome.verification is None:
            raise dg.Failure(description=outcome.task.reason, metadata=metadata)
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset_check(
        asset=keys.tasks,
        name="verify_passed",
        pool=project_pool(spec.name),
        description=(
            f"The project's verify command (`{' '.join(spec.verify)}`) passed on the task's branch."
            if spec.verify
            else "The task succeeded (no verify command is configured)."
        ),
    )
    def verify_passed(
        context: dg.AssetCheckExecutionContext, agent_tasks: AgentTasks
    ) -> dg.AssetCheckResult:
        store = agent_tasks.store()
        try:
            task = store.require(context.partition_key)
        finally:
            store.dispose()
        return dg.AssetCheckResult(
            passed=task.status is TaskStatus.SUCCEEDED,
            metadata=task_check_metadata(task),
            description=task.reason,
        )

    definitions: list[dg.AssetsDefinition | dg.AssetChecksDefinition] = [tasks, verify_passed]
    return definitions + [_holds_slot(keys, pool) for pool in _extra_pools(profile)]


def _extra_pools(profile: AgentProfile | None) -> list[str]:
    """The pools a task run of the profile holds besides the global and the project's: the
    profile's own (say `heavy`) and its provider account's."""
    if profile is None:
        return []
    pools = [profile.pool] if profile.pool != GLOBAL_POOL else []
    return pools + ([provider_pool(profile.provider_pool)] if profile.provider_pool else [])


def _holds_slot(keys: ProjectKeys, pool: str) -> dg.AssetChecksDefinition:
    """A check step that only holds a slot of `pool` for the task's run."""

    @dg.asset_check(
        asset=keys.tasks,
        name=f"holds_{pool}_slot",
        pool=pool,
        description=f"Holds a slot of the `{pool}` pool for the task's run.",
    )
    def holds_slot() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return holds_slot


def _schedule(spec: ProjectSpec, keys: ProjectKeys) -> dg.ScheduleDefinition:
    """The project's `schedule`: a refresh of its repository assets, through the shared job.

    Targeting the shared `refresh` job with an asset selection, rather than giving the schedule
    its own `target=`, keeps one job for all schedules: every extra job costs snapshot time.
    """

    @dg.schedule(
        name=f"{spec.name}_refresh",
        cron_schedule=str(spec.schedule),
        job_name=REFRESH_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refresh source, manifest and verification of {spec.name}.",
    )
    def refresh_schedule(workspaces: ProjectWorkspaces) -> dg.RunRequest | dg.SkipReason:
        current = workspaces.registry().spec(spec.name)  # the file as it is now
        if current is None:
            return dg.SkipReason(f"{spec.name} is not valid in the registry now; see orch validate")
        state = workspaces.project_state(spec.name)
        if state.state.holds_tasks:
            return dg.SkipReason(
                f"project {state.state}" + (f": {state.reason}" if state.reason else "")
            )
        return dg.RunRequest(
            asset_selection=keys.repository,
            tags={PROJECT_TAG: spec.name, PRIORITY_TAG: str(current.priority)},
        )

    return refresh_schedule
