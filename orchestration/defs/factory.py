"""Project specs in, Dagster definitions out: one asset group per project, built without I/O.

Per project `<p>`, the group `<p>` holds:
  - `<p>/source`, `<p>/manifest`, `<p>/verification`: assets of the one `repositories`
    multi-asset that holds every project's (subsettable, so a run refreshes one project or all),
    because an op per project is what makes loading thousands of projects slow;
  - `<p>/tasks`: the agent work, dynamically partitioned by task id; every project's is an
    asset of the one `tasks` multi-asset (each with its own partitions), and its check
    `verify_passed` is the project's own op, which holds a slot of the project's pool;
  - `<p>/usage`: what its agents spent, recorded by the `monitoring` sensor;
  - `<p>/channel_<name>`: each channel it publishes, with lineage to each subscriber's `tasks`;
    its posts, deliveries and refusals are recorded by the `channels` sensor.
A subscriber's task run also holds a slot of each `lease` channel's pool it subscribes to.
A project that depends on another gets lineage from its `verification` to the other's `source`:
when a provider's code changes, its consumers' tests are what must be re-run. A project with a
`schedule` gets a freshness policy on `verification` (see `verification_freshness`), so tests
that have not run when the schedule says they should show as late, then stale.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import functools
import itertools
import os
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import dagster as dg

from orchestration.defs.metadata import (
    manifest_metadata,
    source_metadata,
    task_check_metadata,
    task_metadata,
    verification_metadata,
)
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.placement import placement_tags
from orchestration.registry.channels import Subscription
from orchestration.registry.models import AgentProfile, ChannelSpec, ProjectSpec
from orchestration.sharding import split_evenly
from orchestration.tags import (
    AGENT_PROFILE_TAG,
    AGENT_TAG,
    GLOBAL_POOL,
    PRIORITY_CLASS_TAG,
    PRIORITY_TAG,
    PROJECT_TAG,
    ROLE_TAG,
    channel_asset_name,
    lease_pool,
    project_pool,
    provider_pool,
    tasks_partitions_name,
)
from orchestration.tasks.execution import ProviderLimited
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError
from orchestration.verification import VerificationResult

REFRESH_JOB = "refresh"
#: The op of the multi-asset that holds every project's source, manifest and verification.
REPOSITORIES_OP = "repositories"
#: How late a scheduled run may be (queued behind others, slow to start) before it counts.
FRESHNESS_GRACE = timedelta(hours=1)
#: Where the search for a schedule's longest gap starts: a fixed moment (a Monday, in a leap
#: year), so the answer, and the definitions, do not depend on when they load.
_CRON_SAMPLE_START = datetime(2024, 1, 1, tzinfo=UTC)
_CRON_SAMPLE_DAYS = 366
_T = TypeVar("_T")


class ProjectKeys:
    """The asset keys of one project."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.source = dg.AssetKey([project, "source"])
        self.manifest = dg.AssetKey([project, "manifest"])
        self.verification = dg.AssetKey([project, "verification"])
        self.tasks = dg.AssetKey([project, "tasks"])
        self.usage = dg.AssetKey([project, "usage"])

    def channel(self, name: str) -> dg.AssetKey:
        """The asset of a channel this project publishes."""
        return dg.AssetKey([self.project, channel_asset_name(name)])

    @property
    def repository(self) -> list[dg.AssetKey]:
        return [self.source, self.manifest, self.verification]


@dataclass(frozen=True)
class ProjectInputs:
    """What the factory builds one project's definitions from: its spec, the agent profile its
    tasks run with (None when the agents file does not define it), the projects it depends
    on (detected or declared), which become lineage from its `verification` to their `source`,
    and the channels it subscribes to, resolved against their publishers: lineage from their
    assets to its `tasks`, and a slot of each lease's pool held by its task runs."""

    spec: ProjectSpec
    profile: AgentProfile | None = None
    providers: tuple[str, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()


def build_projects_defs(
    projects: Sequence[ProjectInputs], known: Collection[str] | None = None
) -> dg.Definitions:
    """All definitions of these projects. Pure: reads nothing but its arguments.

    Their repository assets share one subsettable multi-asset, their `tasks` assets another
    (each with its own partitions); each project keeps its own `verify_passed` check of its
    tasks (in its own pool), `usage` asset, channel assets and schedule. A subscription's
    lineage is drawn only when its publisher is `known` (by default: among `projects`; a
    shard knows every project of the registry, whichever code location defines it).
    """
    if known is None:
        known = {project.spec.name for project in projects}
    assets: list[dg.AssetsDefinition | dg.AssetChecksDefinition | dg.AssetSpec] = (
        [_repository_assets(projects), _tasks_assets(projects, known)] if projects else []
    )
    assets += _slot_holders(projects)
    schedules = []
    for project in projects:
        keys = ProjectKeys(project.spec.name)
        assets.append(_tasks_check(project.spec, keys))
        assets.append(_usage_asset(project.spec, keys))
        assets += [
            _channel_asset(project.spec, channel) for channel in project.spec.channels.publish
        ]
        if project.spec.schedule:
            schedules.append(_schedule(project.spec, keys))
    return dg.Definitions(assets=assets, schedules=schedules)


def build_project_defs(
    spec: ProjectSpec,
    profile: AgentProfile | None = None,
    providers: Sequence[str] = (),
    subscriptions: Sequence[Subscription] = (),
) -> dg.Definitions:
    """All definitions of one project. Pure: reads nothing but its arguments.

    `providers` are the projects this one depends on (detected or declared); they become
    lineage from this project's `verification` to their `source`. `subscriptions`' leases are
    held by its task runs (their publishers are not among these definitions: no lineage).
    """
    return build_projects_defs(
        [ProjectInputs(spec, profile, tuple(providers), tuple(subscriptions))]
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


#: What each kind of channel carries, for its asset's description.
_CHANNEL_KINDS = {
    "contract": "files of {publisher} that its subscribers' agents get read-only at each task "
    "start",
    "messages": "notes from {publisher} that its subscribers' agents get at their next task "
    "(`orch channel post {publisher}.{name} TEXT`)",
    "lease": "a shared resource of {publisher}: at most {slots} of its subscribers' task runs "
    "hold it at once (pool `{pool}`)",
}


def _channel_asset(spec: ProjectSpec, channel: ChannelSpec) -> dg.AssetSpec:
    """A channel the project publishes: no op; its posts, deliveries to subscribers' tasks and
    refusals are observations recorded by the `channels` sensor."""
    pool = lease_pool(spec.name, channel.name)
    what = _CHANNEL_KINDS[channel.kind].format(
        publisher=spec.name, name=channel.name, slots=channel.lease_slots, pool=pool
    )
    metadata: dict[str, Any] = {"kind": channel.kind}
    if channel.kind == "contract":
        metadata["paths"] = ", ".join(channel.paths)
    if channel.kind == "lease":
        metadata |= {"slots": channel.lease_slots, "pool": pool}
    metadata["allow"] = (
        (", ".join(channel.allow) or "no project") if channel.allow is not None else "any project"
    )
    return dg.AssetSpec(
        ProjectKeys(spec.name).channel(channel.name),
        description=(
            (f"{channel.description}\n\n" if channel.description else "")
            + f"Channel `{spec.name}.{channel.name}` ({channel.kind}): {what}. Every post, "
            "delivery to a task and refusal is recorded here by the `channels` sensor "
            f"(`orch channel log {spec.name}.{channel.name}`)."
        ),
        kinds={"channel", channel.kind},
        metadata=metadata,
        **_common(spec, "channel"),
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


def _repository_specs(
    project: ProjectInputs,
) -> tuple[list[dg.AssetSpec], list[dg.AssetCheckSpec]]:
    """The source, manifest and verification specs of one project, and its verification check."""
    spec, keys = project.spec, ProjectKeys(project.spec.name)
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
            deps=[keys.source, *(ProjectKeys(dep).source for dep in project.providers)],
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
    return specs, checks


def _repository_assets(projects: Sequence[ProjectInputs]) -> dg.AssetsDefinition:
    """One subsettable multi-asset over every project's source, manifest and verification.

    A run works on the projects its selection names: every selected `source` first, then every
    `manifest`, then every `verification` (which may read a provider's new source), each step
    for up to as many projects at once as the machine has cores (as the multiprocess executor
    ran one op per project). A project that fails a step is left out of its later steps, and
    so are the verifications of the projects that depend on it; the others go on, and the run
    fails at the end naming every failure (each is logged with its traceback).
    """
    specs: list[dg.AssetSpec] = []
    checks: list[dg.AssetCheckSpec] = []
    for project in projects:
        project_specs, project_checks = _repository_specs(project)
        specs += project_specs
        checks += project_checks
    checked = {check.asset_key for check in checks}
    providers = {project.spec.name: project.providers for project in projects}

    @dg.multi_asset(
        name=REPOSITORIES_OP,
        specs=specs,
        check_specs=checks,
        can_subset=True,
    )
    def repositories(
        context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        selected = context.selected_asset_keys
        names = sorted({key.path[0] for key in selected if key.path[0] in providers})
        failures: dict[str, str] = {}
        current: dict[str, ProjectSpec] = {}
        for name in names:
            try:
                current[name] = workspaces.spec(name)  # the file as it is now, not at load
            except dg.Failure as exc:
                failures[name] = exc.description or str(exc)

        def wanted(key: Callable[[ProjectKeys], dg.AssetKey]) -> list[str]:
            return [n for n in current if n not in failures and key(ProjectKeys(n)) in selected]

        def failed(name: str, step: str, exc: BaseException) -> None:
            failures[name] = f"{step}: {exc}"
            context.log.error(f"{name}: {step} failed\n" + "".join(traceback.format_exception(exc)))

        def _step(result_of: Callable[..., Any], name: str) -> Any:
            return result_of(workspaces, current[name])

        steps: tuple[tuple[str, Callable[[ProjectKeys], dg.AssetKey], Callable[..., Any]], ...] = (
            ("source", lambda k: k.source, _source_result),
            ("manifest", lambda k: k.manifest, _manifest_result),
        )
        for step, key, result_of in steps:
            for name, outcome in _each(wanted(key), functools.partial(_step, result_of)):
                if isinstance(outcome, BaseException):
                    failed(name, step, outcome)
                else:
                    yield outcome
        verifying = [
            name
            for name in wanted(lambda k: k.verification)
            if not any(provider in failures for provider in providers[name])
        ]
        for name, result in _each(
            verifying, lambda n: workspaces.verify(current[n]) if current[n].verify else None
        ):
            if isinstance(result, BaseException):
                failed(name, "verification", result)
            else:
                keys = ProjectKeys(name)
                yield from _verification_results(
                    context, keys, current[name], keys.verification in checked, result
                )
        if failures:
            raise dg.Failure(
                description="; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
            )

    return repositories


def _each(
    names: Sequence[str], work: Callable[[str], _T]
) -> Iterator[tuple[str, _T | BaseException]]:
    """`work` for each name, up to as many at once as there are cores, in the names' order;
    an exception is returned in place of the result of the name it was raised for."""

    def attempt(name: str) -> _T | BaseException:
        try:
            return work(name)
        except Exception as exc:  # one project's failure must not stop the others
            return exc

    if len(names) <= 1:
        yield from ((name, attempt(name)) for name in names)
        return
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        yield from zip(names, pool.map(attempt, names), strict=True)


def _source_result(workspaces: ProjectWorkspaces, spec: ProjectSpec) -> dg.MaterializeResult:
    state = workspaces.observe(spec)
    return dg.MaterializeResult(
        asset_key=ProjectKeys(spec.name).source,
        metadata=source_metadata(spec, state),
        data_version=dg.DataVersion(state.branch_sha) if state.branch_sha else None,
    )


def _manifest_result(workspaces: ProjectWorkspaces, spec: ProjectSpec) -> dg.MaterializeResult:
    outcome, graph = workspaces.detect_dependencies(spec)
    return dg.MaterializeResult(
        asset_key=ProjectKeys(spec.name).manifest,
        metadata=manifest_metadata(spec, outcome, graph),
        data_version=dg.DataVersion(outcome.scan.commit) if outcome.scan.commit else None,
    )


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
    tick of a day with ticks to the first of the next such day. Only the days are looked up
    (`_longest_day_gap`), not every tick (an every-minute cron has half a million a year).
    """
    from croniter import croniter  # the cron library Dagster schedules with

    (minutes, hours, *_), *_ = croniter.expand(cron)
    times = sorted(
        hour * 60 + minute
        for hour in (range(24) if hours == ["*"] else hours)
        for minute in (range(60) if minutes == ["*"] else minutes)
    )
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0)
    fields = cron.split()
    # The days with ticks depend only on the day fields: crons that differ in their minutes
    # and hours alone (the usual case) share one look-up of the days.
    days_cron = " ".join(["0", "0", *fields[2:]]) if len(fields) == 5 else cron
    day_span = times[-1] - times[0]
    return timedelta(minutes=max(longest, _longest_day_gap(days_cron) * 24 * 60 - day_span))


@functools.cache
def _longest_day_gap(cron: str) -> int:
    """The most days from one day with ticks of `cron` to the next, over a year of days from
    the fixed start: one croniter query per day with ticks."""
    from croniter import croniter

    days: list[date] = []
    moment = _CRON_SAMPLE_START - timedelta(minutes=1)
    end = (_CRON_SAMPLE_START + timedelta(days=_CRON_SAMPLE_DAYS)).date()
    while len(days) < 2 or days[-1] < end:
        tick: datetime = croniter(cron, moment).get_next(datetime)  # strictly after `moment`
        days.append(tick.date())
        moment = datetime.combine(tick.date(), datetime.max.time(), UTC)  # skip the rest of it
    return max((b - a).days for a, b in itertools.pairwise(days))


def _verification_results(
    context: dg.AssetExecutionContext,
    keys: ProjectKeys,
    spec: ProjectSpec,
    has_check: bool,
    result: VerificationResult | None,
) -> Iterable[dg.MaterializeResult | dg.AssetCheckResult]:
    """The events of one project's verification; `result` is None when it has no `verify`."""
    if result is None:
        yield dg.MaterializeResult(asset_key=keys.verification, metadata={"configured": False})
        if has_check:  # `verify` was removed after these definitions loaded
            yield dg.AssetCheckResult(
                asset_key=keys.verification,
                check_name="verify_passed",
                passed=False,
                description=f"{spec.name} has no verify command now",
            )
        return
    context.log.info(
        f"{spec.name}: verify {'passed' if result.passed else 'FAILED'} "
        f"({result.tests_passed} passed, {result.tests_failed} failed)"
    )
    yield dg.MaterializeResult(asset_key=keys.verification, metadata=verification_metadata(result))
    if has_check:
        yield dg.AssetCheckResult(
            asset_key=keys.verification,
            check_name="verify_passed",
            passed=result.passed,
            metadata={"passed": result.tests_passed, "failed": result.tests_failed},
            description=None if result.passed else result.output_tail[-500:],
        )


def _tasks_assets(projects: Sequence[ProjectInputs], known: Collection[str]) -> dg.AssetsDefinition:
    """Every project's `tasks` asset, in one subsettable multi-asset: a task run selects one
    project's asset and the partition of its task. Each asset keeps its own dynamic
    partitions (`<project>_tasks`).

    The agent step holds a slot of the global `agents` pool; the project's `verify_passed`
    check step holds one of the project's own pool (`_tasks_check`), so a task run needs both
    before it starts (pool granularity `run`). A profile in another pool (say `heavy`) adds a
    step that holds that pool's slot too (`_slot_holders`), and so does each lease channel a
    project subscribes to.
    """

    @dg.multi_asset(
        name="tasks",
        specs=[_tasks_spec(project, known) for project in projects],
        can_subset=True,
        pool=GLOBAL_POOL,
    )
    def tasks(
        context: dg.AssetExecutionContext, agent_tasks: AgentTasks
    ) -> Iterator[dg.MaterializeResult]:
        selected = sorted(context.selected_asset_keys)
        if len(selected) != 1:
            raise dg.Failure(
                description="A task run works on one project's task: select one "
                f"`<project>/tasks` asset and its task's partition, not {len(selected)}."
            )
        (key,) = selected
        try:
            outcome = agent_tasks.execute(
                key.path[0], context.partition_key, context.run_id, context.log
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
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)

    return tasks


def _tasks_spec(project: ProjectInputs, known: Collection[str]) -> dg.AssetSpec:
    """One project's `tasks` asset: the agent work, one partition per task id, downstream of
    its source and of the channels it subscribes to whose publishers are `known`."""
    spec, profile = project.spec, project.profile
    agent = spec.agent.profile
    offline = profile is not None and profile.offline
    common = _common(spec, "tasks")
    common["tags"] |= {AGENT_PROFILE_TAG: agent} | ({AGENT_TAG: "demo"} if offline else {})
    keys = ProjectKeys(spec.name)
    return dg.AssetSpec(
        keys.tasks,
        deps=[
            keys.source,
            *(
                ProjectKeys(sub.publisher).channel(sub.channel.name)
                for sub in project.subscriptions
                if sub.publisher in known
            ),
        ],
        partitions_def=dg.DynamicPartitionsDefinition(name=tasks_partitions_name(spec.name)),
        description=(
            f"Coding-agent work on {spec.name}: one partition per task id, run by the "
            f"`{agent}` agent profile"
            + (" (offline demo agent: scripted, no paid service)" if offline else "")
            + " in its own git worktree and branch `orch/<project>/<task-id>`."
        ),
        kinds={"agent"},
        **common,
    )


def _tasks_check(spec: ProjectSpec, keys: ProjectKeys) -> dg.AssetChecksDefinition:
    """The `verify_passed` check of a project's task, in a step that holds a slot of the
    project's pool."""

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

    return verify_passed


def _extra_pools(project: ProjectInputs) -> list[str]:
    """The pools a task run of the project holds besides the global and the project's: its
    profile's own (say `heavy`), its provider account's, and each lease channel's it subscribes
    to (`lease_<publisher>_<channel>`)."""
    profile = project.profile
    pools = []
    if profile is not None:
        pools += [profile.pool] if profile.pool != GLOBAL_POOL else []
        pools += [provider_pool(profile.provider_pool)] if profile.provider_pool else []
    return pools + [
        lease_pool(sub.publisher, sub.channel.name)
        for sub in project.subscriptions
        if sub.channel.kind == "lease"
    ]


def _slot_holders(projects: Sequence[ProjectInputs]) -> list[dg.AssetChecksDefinition]:
    """Per extra pool (`_extra_pools`), one subsettable op (per `MOST_PER_OP` projects)
    holding the check `holds_<pool>_slot` of every project whose task runs need that pool: a
    task run selects its project's check only, so its step holds one slot of the pool for the
    run."""
    by_pool: dict[str, list[str]] = {}
    for project in projects:
        for pool in _extra_pools(project):
            by_pool.setdefault(pool, []).append(project.spec.name)
    return [
        _holds_slot(
            pool,
            [ProjectKeys(name).tasks for name in group],
            f"holds_{pool}_slot" + (f"_{number}" if number else ""),
        )
        for pool, names in sorted(by_pool.items())
        for number, group in enumerate(split_evenly(names))
    ]


def _holds_slot(pool: str, assets: Sequence[dg.AssetKey], op: str) -> dg.AssetChecksDefinition:
    """A check step (op `op`) that only holds a slot of `pool` for the task's run."""

    @dg.multi_asset_check(
        name=op,
        specs=[
            dg.AssetCheckSpec(
                f"holds_{pool}_slot",
                asset=asset,
                description=f"Holds a slot of the `{pool}` pool for the task's run.",
            )
            for asset in assets
        ],
        can_subset=True,
        pool=pool,
    )
    def holds_slot(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        for key in sorted(context.selected_asset_check_keys):
            yield dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=True)

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
            tags={PROJECT_TAG: spec.name, PRIORITY_TAG: str(current.priority)}
            | placement_tags(current),
        )

    return refresh_schedule
