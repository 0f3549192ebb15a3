"""The `orchestration` group: the registry and the dependency graph as assets, the shared
`refresh` job that observes every project, and the `lineage_reload` sensor that keeps the asset
graph's cross-project lineage in line with the last detected dependency graph."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

from orchestration.control.runs import lifecycle_table
from orchestration.defs.factory import REFRESH_JOB
from orchestration.defs.metadata import dependencies_metadata, registry_errors_table
from orchestration.defs.reload import request_reload
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.defs.sensors import RELOAD_RETRY_S
from orchestration.dependencies.detection import DetectionCache
from orchestration.dependencies.graph import DependencyGraph, lineage_change
from orchestration.registry.errors import RegistryError
from orchestration.sharding import WHOLE, Shard
from orchestration.tags import ROLE_TAG

REGISTRY_GROUP = "orchestration"
REGISTRY_KEY = dg.AssetKey(["orchestration", "registry"])
DEPENDENCIES_KEY = dg.AssetKey(["orchestration", "dependencies"])
LINEAGE_SENSOR = "lineage_reload"
#: How often the lineage sensor looks at the graph file (one stat when it has not changed).
#: With Dagster's ~5 s sensor loop and a reload of a few seconds, the asset graph follows a
#: new edge within a minute.
LINEAGE_INTERVAL_S = 20


def refresh_job():
    """The main job: every project's source, manifest and verification, and the registry."""
    return dg.define_asset_job(
        REFRESH_JOB,
        # Task runs and a change set's joint verification are runs of their own, by partition.
        selection=dg.AssetSelection.all()
        - dg.AssetSelection.tag(ROLE_TAG, "tasks")
        - dg.AssetSelection.tag(ROLE_TAG, "change"),
        description="Observe every project's repository, scan its manifests and run its tests.",
        # In the run's own process: a Celery run worker (deploy/) runs it inside its pool
        # process, where the multiprocess executor may not start children; the repositories
        # op spreads the work over threads itself.
        executor_def=dg.in_process_executor,
    )


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
    def dependencies(
        context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        current, outcomes = workspaces.detect_all()
        for project, outcome in outcomes.items():
            if isinstance(outcome, str):
                context.log.warning(f"{project}: {outcome}")
        yield dg.MaterializeResult(metadata=dependencies_metadata(current, outcomes))
        yield dg.AssetCheckResult(
            check_name="acyclic",
            passed=not current.cycles,
            metadata={"cycles": dg.MetadataValue.json([list(c) for c in current.cycles])},
            description="; ".join(" -> ".join(c) for c in current.cycles) or None,
        )

    return dependencies


@dataclass
class _LineageWatch:
    """What one code server's lineage sensor has seen: the graph file's stamp, whether that
    graph draws other lineage than the loaded definitions, and when it last asked for a
    reload. Kept per code server on purpose: a reloaded server starts afresh."""

    looked: bool = False
    stamp: tuple[int, int] | None = None
    differs: str | None = None  # how, for the log; None when it does not
    asked: float = float("-inf")


def lineage_sensor(loaded: DependencyGraph | None, shard: Shard = WHOLE) -> dg.SensorDefinition:
    """The sensor that asks the webserver to reload the code location when the last detected
    graph (written by a `manifest` or `orchestration/dependencies` run, or by
    `orch deps detect`) draws other lineage than `loaded`, the graph these definitions were
    built from, into a project of `shard` (its code location draws only those)."""
    watch = _LineageWatch()

    @dg.sensor(
        name=LINEAGE_SENSOR,
        minimum_interval_seconds=LINEAGE_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reload the code location when dependency detection found lineage the "
        "asset graph does not show yet (a project depends on another, or no longer does).",
    )
    def lineage_reload(
        context: dg.SensorEvaluationContext, workspaces: ProjectWorkspaces
    ) -> dg.SkipReason:
        cache = DetectionCache(workspaces.settings().home)
        stamp = cache.graph_stamp()
        if not watch.looked or stamp != watch.stamp:
            watch.looked, watch.stamp = True, stamp
            change = lineage_change(loaded, cache.load_graph()).into(shard.holds)
            watch.differs = change.describe() if change else None
        if watch.differs is None:
            return dg.SkipReason("the asset graph draws the last detected lineage")
        now = time.monotonic()
        if now - watch.asked < RELOAD_RETRY_S:
            return dg.SkipReason(f"waiting for the reload asked for: {watch.differs}")
        watch.asked = now
        message = request_reload(os.environ, location=None if shard.whole else shard.location)
        context.log.info(f"lineage changed ({watch.differs}): {message}")
        return dg.SkipReason(f"lineage changed ({watch.differs}): {message}")

    return lineage_reload


def build_registry_defs(
    errors: Sequence[RegistryError],
    project_count: int,
    graph: DependencyGraph | None = None,
) -> dg.Definitions:
    """The `orchestration/registry` asset, checked against the files as they are when it runs,
    and the `orchestration/dependencies` asset (`graph`'s)."""
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
                description="Every project, template and config file loads without error.",
            )
        ],
        tags={ROLE_TAG: "registry"},
        kinds={"yaml"},
    )
    def registry(
        context: dg.AssetExecutionContext, workspaces: ProjectWorkspaces
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        current = workspaces.registry()
        for warning in current.warnings:
            context.log.warning(warning)
        yield dg.MaterializeResult(
            metadata={
                "projects": dg.MetadataValue.json(list(current.names)),
                "project_count": len(current.projects),
                "archived": dg.MetadataValue.json(list(current.archived)),
                "lifecycle": lifecycle_table(workspaces.project_states().values()),
                "error_count": len(current.errors),
                "warnings": dg.MetadataValue.json(list(current.warnings)),
                "projects_dir": str(current.settings.projects_dir),
                "config_dir": str(current.settings.config_dir),
            }
        )
        yield dg.AssetCheckResult(
            check_name="all_projects_valid",
            passed=not current.errors,
            metadata={
                "errors": registry_errors_table(current.errors),
                "error_count": len(current.errors),
            },
            description="\n".join(str(e) for e in current.errors) or None,
        )

    return dg.Definitions(assets=[registry, _dependencies_asset(graph)])
