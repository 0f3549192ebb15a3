"""The Dagster entry point: load the registry, build each project's definitions, merge them."""

import dagster as dg

from orchestration.factory import (
    ROLE_TAG,
    build_project_defs,
    build_registry_defs,
    refresh_job,
)
from orchestration.registry import Registry, load_registry
from orchestration.resources import AgentTasks, ProjectWorkspaces
from orchestration.sensors import build_dispatch_sensor, build_import_sensor


def build_definitions(registry: Registry) -> dg.Definitions:
    """Every valid project's group, the registry asset, and the shared job, sensors and
    resources."""
    profiles = registry.agents.profiles if registry.agents else {}
    env = {"base_env": list(registry.agents.base_env)} if registry.agents is not None else {}
    project_defs = [
        build_project_defs(project.spec, profiles.get(project.spec.agent.profile))
        for project in registry.projects
    ]
    specs = {project.name: project.spec for project in registry.projects}
    shared = dg.Definitions(
        jobs=[refresh_job()],
        sensors=[
            build_dispatch_sensor(specs, dg.AssetSelection.tag(ROLE_TAG, "tasks")),
            build_import_sensor(specs),
        ]
        if specs
        else [],
        resources={"workspaces": ProjectWorkspaces(**env), "agent_tasks": AgentTasks(**env)},
    )
    return dg.Definitions.merge(
        *project_defs,
        build_registry_defs(registry.errors, len(registry.projects)),
        shared,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by the webserver, the daemon and the dagster CLI; parses YAML only."""
    return build_definitions(load_registry())
