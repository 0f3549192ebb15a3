"""The Dagster entry point: load the registry, build each project's definitions, merge them,
and add the shared job, sensors and resources."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import dagster as dg

from orchestration.defs.alerts import alerts_configured, build_alerts_defs
from orchestration.defs.backup import build_backup_defs
from orchestration.defs.control import project_control_job
from orchestration.defs.factory import build_project_defs
from orchestration.defs.monitoring import build_monitoring_defs
from orchestration.defs.orchestration_assets import build_registry_defs, refresh_job
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.defs.sensors import build_dispatch_sensor, build_import_sensor
from orchestration.dependencies.detection import DetectionCache
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.live import LiveRegistry
from orchestration.registry.loader import Registry
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.tags import ROLE_TAG


def build_definitions(registry: Registry) -> dg.Definitions:
    """Every valid project's group, the registry asset, and the shared job, sensors and
    resources."""
    profiles = registry.agents.profiles if registry.agents else {}
    graph = DetectionCache(registry.settings.home).load_graph()
    names = set(registry.names)
    project_defs = [
        build_project_defs(
            project.spec,
            profiles.get(project.spec.agent.profile),
            providers=_providers(project.spec, graph, names),
        )
        for project in registry.projects
    ]
    shared = dg.Definitions(
        jobs=[refresh_job(), project_control_job],
        sensors=[
            build_dispatch_sensor(names, dg.AssetSelection.tag(ROLE_TAG, "tasks")),
            build_import_sensor(),
            # Dagster's default automation sensor starts stopped; this one runs from the start so
            # a provider's new commit re-runs its consumers' verification on its own.
            dg.AutomationConditionSensorDefinition(
                "verification_automation",
                target=dg.AssetSelection.tag(ROLE_TAG, "verification"),
                default_status=dg.DefaultSensorStatus.RUNNING,
                description="Re-run verification when a project's or a provider's code changed.",
            ),
        ]
        if names
        else [],
        resources={"workspaces": ProjectWorkspaces(), "agent_tasks": AgentTasks()},
        # Task runs have two light steps; running them in the run's own process saves a
        # process start per step (the `refresh` job keeps the multiprocess executor).
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(
        *project_defs,
        build_registry_defs(registry.errors, len(registry.projects), graph),
        *([build_backup_defs(registry.backup)] if registry.backup else []),
        *([build_alerts_defs()] if alerts_configured(registry) else []),
        *([build_monitoring_defs(names)] if names else []),
        shared,
    )


def _providers(spec: ProjectSpec, graph: DependencyGraph | None, names: set[str]) -> list[str]:
    """Declared plus last detected providers that are valid projects now, minus ignored ones."""
    detected = graph.providers_of(spec.name) if graph else ()
    wanted = (set(spec.depends_on) | set(detected)) - set(spec.ignore_dependencies)
    return sorted(wanted & names - {spec.name})


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by the webserver, the daemon and the dagster CLI: parses YAML and reads the last
    detected dependency graph from ORCH_HOME; runs no git."""
    return build_definitions(LiveRegistry.of(Settings.from_env()).current())
