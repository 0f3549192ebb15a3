"""The `orchestration` group: the registry and the dependency graph as assets, and the shared
`refresh` job that observes every project."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

from collections.abc import Iterator, Sequence

import dagster as dg

from orchestration.control.runs import lifecycle_table
from orchestration.defs.factory import REFRESH_JOB
from orchestration.defs.metadata import dependencies_metadata, registry_errors_table
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.errors import RegistryError
from orchestration.tags import ROLE_TAG

REGISTRY_GROUP = "orchestration"
REGISTRY_KEY = dg.AssetKey(["orchestration", "registry"])
DEPENDENCIES_KEY = dg.AssetKey(["orchestration", "dependencies"])


def refresh_job():
    """The main job: every project's source, manifest and verification, and the registry."""
    return dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.all() - dg.AssetSelection.tag(ROLE_TAG, "tasks"),
        description="Observe every project's repository, scan its manifests and run its tests.",
        executor_def=dg.multiprocess_executor,
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


def build_registry_defs(
    errors: Sequence[RegistryError],
    project_count: int,
    graph: DependencyGraph | None = None,
) -> dg.Definitions:
    """The `orchestration/registry` asset, checked against the files as they are when it runs,
    and the `orchestration/dependencies` asset."""
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
