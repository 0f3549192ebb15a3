"""The Dagster entry point: load the registry, build each project's definitions, merge them."""

from __future__ import annotations

import dagster as dg

from orchestration.factory import build_project_defs, build_registry_defs, refresh_job
from orchestration.registry import Registry, load_registry
from orchestration.resources import ProjectWorkspaces


def build_definitions(registry: Registry) -> dg.Definitions:
    """Every valid project's group, the registry asset and the shared job and resources."""
    profiles = registry.agents.profiles if registry.agents else {}
    base_env = list(registry.agents.base_env) if registry.agents else None
    project_defs = [
        build_project_defs(project.spec, profiles.get(project.spec.agent.profile))
        for project in registry.projects
    ]
    workspaces = ProjectWorkspaces(**({"base_env": base_env} if base_env is not None else {}))
    return dg.Definitions.merge(
        *project_defs,
        build_registry_defs(registry.errors, len(registry.projects)),
        dg.Definitions(jobs=[refresh_job()], resources={"workspaces": workspaces}),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by the webserver, the daemon and the dagster CLI; parses YAML only."""
    return build_definitions(load_registry())
