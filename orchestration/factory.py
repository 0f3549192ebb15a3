"""Project specs in, Dagster definitions out: one asset group per project, built without I/O.

Per project `<p>`, the group `<p>` holds:
  - `<p>/source`, `<p>/manifest`, `<p>/verification`: one multi-asset (subsettable), because one
    op per project keeps the repository snapshot small when there are thousands of projects;
  - `<p>/tasks`: the agent work, dynamically partitioned by task id.
A project that depends on another gets lineage from its `verification` to the other's `source`:
when a provider's code changes, its consumers' tests are what must be re-run.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from orchestration.allocation.control import project_pool
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.errors import RegistryError
from orchestration.registry.loader import GLOBAL_POOL
from orchestration.registry.models import AgentProfile, ProjectSpec
from orchestration.resources import AgentTasks, ProjectWorkspaces
from orchestration.tags import PRIORITY_TAG, PROJECT_TAG, ROLE_TAG
from orchestration.tasks.execution import TaskOutcome
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError

REGISTRY_GROUP = "orchestration"
REGISTRY_KEY = dg.AssetKey(["orchestration", "registry"])
REFRESH_JOB = "refresh"


class ProjectKeys:
    """The asset keys of one project."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.source = dg.AssetKey([project, "source"])
        self.manifest = dg.AssetKey([project, "manifest"])
        self.verification = dg.AssetKey([project, "verification"])
        self.tasks = dg.AssetKey([project, "tasks"])

    @property
    def repository(self) -> list[dg.AssetKey]:
        return [self.source, self.manifest, self.verification]


def tasks_partitions_name(project: str) -> str:
    """The dynamic partitions definition holding a project's task ids."""
    return f"{project}_tasks"


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
        assets=[_repository_assets(spec, keys, providers), *_tasks_asset(spec, keys, profile)],
        schedules=[_schedule(spec, keys)] if spec.schedule else [],
    )


def _common(spec: ProjectSpec, role: str) -> dict[str, Any]:
    return {
        "group_name": spec.name,
        "owners": list(spec.owners),
        "tags": {
            **spec.tags,
            PROJECT_TAG: spec.name,
            "priority": spec.priority_class,
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
    def repository(context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces):
        selected = context.selected_asset_keys
        if keys.source in selected:
            yield _source_result(keys, workspaces, spec)
        if keys.manifest in selected:
            yield _manifest_result(keys, workspaces, spec)
        if keys.verification in selected:
            yield from _verification_results(context, keys, workspaces, spec)

    return repository


def _source_result(
    keys: ProjectKeys, workspaces: ProjectWorkspaces, spec: ProjectSpec
) -> dg.MaterializeResult:
    state = workspaces.observe(spec)
    metadata: dict[str, Any] = {
        "repo": spec.repo,
        "branch": state.branch,
        "branch_sha": state.branch_sha or "",
        "remote": state.remote,
    }
    if not state.remote:
        metadata |= {
            "head_sha": state.head_sha or "",
            "head_branch": state.head_branch or "(detached)",
            "dirty": bool(state.dirty),
        }
    if state.last_commit_time is not None:
        metadata["last_commit_time"] = dg.MetadataValue.timestamp(state.last_commit_time)
        metadata["last_commit"] = state.last_commit_summary or ""
    return dg.MaterializeResult(
        asset_key=keys.source,
        metadata=metadata,
        data_version=dg.DataVersion(state.branch_sha) if state.branch_sha else None,
    )


def _manifest_result(
    keys: ProjectKeys, workspaces: ProjectWorkspaces, spec: ProjectSpec
) -> dg.MaterializeResult:
    outcome, graph = workspaces.detect_dependencies(spec)
    scan = outcome.scan
    rows = "\n".join(
        f"| `{m.path}` | {m.ecosystem} | {', '.join(p.name for p in m.packages)} | "
        f"{len(m.requirements)} |"
        for m in scan.manifests
    )
    providers = [e for e in graph.edges if e.consumer == spec.name]
    consumers = [e.consumer for e in graph.edges if e.provider == spec.name]
    mismatches = [m for edge in providers for m in edge.version_mismatches]
    return dg.MaterializeResult(
        asset_key=keys.manifest,
        metadata={
            "commit": scan.commit or "",
            "cached": outcome.cached,
            "manifest_count": len(scan.manifests),
            "requirement_count": len(scan.requirements),
            "provides": dg.MetadataValue.json(sorted({p.name for p in scan.packages})),
            "manifests": dg.MetadataValue.md(
                "| file | ecosystem | provides | requirements |\n|---|---|---|---|\n" + rows
                if rows
                else "none found"
            ),
            "depends_on": dg.MetadataValue.json(
                {e.provider: [ev.to_dict() for ev in e.evidence] for e in providers}
            ),
            "used_by": dg.MetadataValue.json(sorted(consumers)),
            "version_mismatches": dg.MetadataValue.json(mismatches),
            "cycles": dg.MetadataValue.json([list(c) for c in graph.cycles if spec.name in c]),
            "problems": dg.MetadataValue.json(list(scan.problems)),
        },
        data_version=dg.DataVersion(scan.commit) if scan.commit else None,
    )


def _verification_results(
    context: dg.AssetExecutionContext,
    keys: ProjectKeys,
    workspaces: ProjectWorkspaces,
    spec: ProjectSpec,
) -> Iterable[dg.MaterializeResult | dg.AssetCheckResult]:
    if not spec.verify:
        yield dg.MaterializeResult(asset_key=keys.verification, metadata={"configured": False})
        return
    result = workspaces.verify(spec)
    context.log.info(
        f"{spec.name}: verify {'passed' if result.passed else 'FAILED'} "
        f"({result.tests_passed} passed, {result.tests_failed} failed)"
    )
    yield dg.MaterializeResult(
        asset_key=keys.verification,
        metadata={
            "configured": True,
            "command": " ".join(result.argv),
            "passed": result.tests_passed,
            "failed": result.tests_failed,
            "skipped": result.tests_skipped,
            "exit_code": result.exit_code if result.exit_code is not None else -1,
            "timed_out": result.timed_out,
            "runner": result.runner or "exit code",
            "duration_s": round(result.duration_s, 3),
            "output_tail": dg.MetadataValue.md(f"```\n{result.output_tail}\n```"),
        },
    )
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
    common["tags"] |= {"agent_profile": agent} | ({"agent": "demo"} if offline else {})
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
    def tasks(context: dg.AssetExecutionContext, agent_tasks: AgentTasks):
        try:
            outcome = agent_tasks.execute(spec, context.partition_key, context.run_id, context.log)
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
    def verify_passed(context: dg.AssetCheckExecutionContext, agent_tasks: AgentTasks):
        task = agent_tasks.store().require(context.partition_key)
        extra = task.extra
        return dg.AssetCheckResult(
            passed=task.status is TaskStatus.SUCCEEDED,
            metadata={
                "passed": int(extra.get("verify_passed") or 0),
                "failed": int(extra.get("verify_failed") or 0),
                "status": str(task.status),
            },
            description=task.reason,
        )

    definitions: list[dg.AssetsDefinition | dg.AssetChecksDefinition] = [tasks, verify_passed]
    if profile is not None and profile.pool != GLOBAL_POOL:

        @dg.asset_check(
            asset=keys.tasks,
            name=f"holds_{profile.pool}_slot",
            pool=profile.pool,
            description=f"Holds a slot of the `{profile.pool}` pool for the task's run.",
        )
        def holds_slot() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        definitions.append(holds_slot)
    return definitions


def task_metadata(outcome: TaskOutcome) -> dict[str, Any]:
    """Metadata of a task's materialization; numbers stay numbers so the UI can plot them."""
    agent, verification = outcome.agent, outcome.verification
    return {
        "task": outcome.task.id,
        "status": str(outcome.task.status),
        "profile": outcome.profile,
        "model": outcome.model or "",
        "duration_s": round(agent.duration_s, 3),
        "cost_usd": float(agent.cost_usd or 0.0),
        "tokens_in": int(agent.tokens_in or 0),
        "tokens_out": int(agent.tokens_out or 0),
        "turns": int(agent.turns or 0),
        "files_changed": outcome.diff.files_changed,
        "lines_added": outcome.diff.lines_added,
        "lines_removed": outcome.diff.lines_removed,
        "commit": outcome.commit or "",
        "branch": outcome.branch,
        "verify_passed": verification.tests_passed if verification else 0,
        "verify_failed": verification.tests_failed if verification else 0,
        "session_id": agent.session_id or "",
        "summary": dg.MetadataValue.md(agent.summary[:2000] or "(none)"),
        **({"reason": outcome.task.reason} if outcome.task.reason else {}),
    }


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
    def refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            asset_selection=keys.repository,
            tags={PROJECT_TAG: spec.name, PRIORITY_TAG: str(spec.priority)},
        )

    return refresh_schedule


def refresh_job():
    """The main job: every project's source, manifest and verification, and the registry."""
    return dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.all() - dg.AssetSelection.tag(ROLE_TAG, "tasks"),
        description="Observe every project's repository, scan its manifests and run its tests.",
        executor_def=dg.multiprocess_executor,
    )


DEPENDENCIES_KEY = dg.AssetKey(["orchestration", "dependencies"])


def _dependencies_asset(graph: DependencyGraph | None) -> dg.AssetsDefinition:
    """The cross-project dependency graph: detection over every project, with a cycle check."""
    if graph is None:
        known = "No detection has run yet: materialize this asset or run `orch deps detect`."
    else:
        cycles = "\n".join(f"- {' -> '.join(c)}" for c in graph.cycles) or "none"
        known = (
            f"Last detection: {len(graph.nodes)} projects, {len(graph.edges)} edges.\n\n"
            f"Cycles:\n{cycles}"
        )

    @dg.asset(
        key=DEPENDENCIES_KEY,
        group_name=REGISTRY_GROUP,
        description="Dependencies between projects, detected from their manifests "
        f"(the graph lineage is drawn from).\n\n{known}",
        check_specs=[
            dg.AssetCheckSpec(
                "acyclic",
                asset=DEPENDENCIES_KEY,
                description="No cycle between projects' dependencies.",
            )
        ],
        tags={ROLE_TAG: "dependencies"},
        kinds={"git"},
    )
    def dependencies(context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces):
        current, outcomes = workspaces.detect_all()
        failed = {p: o for p, o in outcomes.items() if isinstance(o, str)}
        for project, error in failed.items():
            context.log.warning(f"{project}: {error}")
        yield dg.MaterializeResult(
            metadata={
                "projects": len(current.nodes),
                "edges": len(current.edges),
                "cycles": len(current.cycles),
                "parsed": sum(
                    1 for o in outcomes.values() if not isinstance(o, str) and not o.cached
                ),
                "failed": dg.MetadataValue.json(failed),
                "graph": dg.MetadataValue.md(f"```mermaid\n{current.to_mermaid()}\n```"),
            }
        )
        yield dg.AssetCheckResult(
            check_name="acyclic",
            passed=not current.cycles,
            metadata={"cycles": dg.MetadataValue.json([list(c) for c in current.cycles])},
            description="; ".join(" -> ".join(c) for c in current.cycles) or None,
        )

    return dependencies


def build_registry_defs(
    errors: Sequence[RegistryError],
    project_count: int,
    graph: DependencyGraph | None = None,
) -> dg.Definitions:
    """The `orchestration/registry` asset: the registry as loaded, with a check per load."""
    listing = "\n".join(f"- `{error}`" for error in errors) or "No errors."

    @dg.asset(
        key=REGISTRY_KEY,
        group_name=REGISTRY_GROUP,
        description=(
            f"The project registry: {project_count} valid project(s), {len(errors)} error(s) "
            f"when these definitions loaded.\n\n{listing}"
        ),
        metadata={"errors_at_load": len(errors), "projects_at_load": project_count},
        check_specs=[
            dg.AssetCheckSpec(
                "all_projects_valid",
                asset=REGISTRY_KEY,
                description="Every project, template and resource file loads without error.",
            )
        ],
        tags={ROLE_TAG: "registry"},
        kinds={"yaml"},
    )
    def registry(context: dg.AssetExecutionContext):
        from orchestration.registry import load_registry

        current = load_registry()
        table = "\n".join(
            f"| `{e.file}` | {e.line or ''} | `{e.key}` | {e.message} |" for e in current.errors
        )
        yield dg.MaterializeResult(
            metadata={
                "projects": dg.MetadataValue.json(list(current.names)),
                "project_count": len(current.projects),
                "error_count": len(current.errors),
            }
        )
        yield dg.AssetCheckResult(
            check_name="all_projects_valid",
            passed=not current.errors,
            metadata={
                "errors": dg.MetadataValue.md(
                    "| file | line | key | error |\n|---|---|---|---|\n" + table
                    if table
                    else "none"
                ),
                "error_count": len(current.errors),
            },
            description="\n".join(str(e) for e in current.errors) or None,
        )

    return dg.Definitions(assets=[registry, _dependencies_asset(graph)])
