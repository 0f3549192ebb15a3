"""The Dagster entry point: load the registry, build each project's definitions, merge them,
and add the shared job, sensors and resources."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset, check
# and sensor functions (context and resource types) when the definitions are built.

import gc
import threading

import dagster as dg

from orchestration.defs.alerts import alerts_configured, build_alerts_defs
from orchestration.defs.backup import build_backup_defs
from orchestration.defs.changes import build_change_defs
from orchestration.defs.channels import build_channel_defs
from orchestration.defs.control import project_control_job
from orchestration.defs.factory import ProjectInputs, build_projects_defs
from orchestration.defs.monitoring import build_budget_checks, build_monitoring_defs
from orchestration.defs.orchestration_assets import (
    build_registry_defs,
    lineage_sensor,
    refresh_job,
)
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.defs.sensors import build_dispatch_sensor, build_import_sensor
from orchestration.dependencies.detection import DetectionCache
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.channels import published, subscriptions
from orchestration.registry.live import LiveRegistry
from orchestration.registry.loader import Registry
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.sharding import WHOLE, Shard, shard_from_env, shard_of_attribute
from orchestration.tags import ROLE_TAG


def build_definitions(registry: Registry, shard: Shard = WHOLE) -> dg.Definitions:
    """Every valid project's group (of `shard`'s projects only, when the registry is split over
    several code locations), the registry asset, and the shared job, sensors and resources."""
    return _build(registry, DetectionCache(registry.settings.home).load_graph(), shard)


def _build(
    registry: Registry, graph: DependencyGraph | None, shard: Shard = WHOLE
) -> dg.Definitions:
    profiles = registry.agents.profiles if registry.agents else {}
    names = set(registry.names)
    specs = {project.name: project.spec for project in registry.projects}
    mine = [project for project in registry.projects if shard.holds(project.name)]
    held = {project.name for project in mine}
    project_defs = build_projects_defs(
        [
            ProjectInputs(
                project.spec,
                profiles.get(project.spec.agent.profile),
                tuple(_providers(project.spec, graph, names)),
                tuple(subscriptions(specs, project.spec)),
            )
            for project in mine
        ],
        known=names,
    )
    shared = dg.Definitions(
        jobs=[refresh_job(), *([project_control_job] if shard.primary else [])],
        sensors=[
            lineage_sensor(graph, shard),
            *(
                [
                    build_dispatch_sensor(held, dg.AssetSelection.tag(ROLE_TAG, "tasks"), shard),
                    # Dagster's default automation sensor starts stopped; this one runs from
                    # the start so a provider's new commit re-runs its consumers' verification
                    # on its own.
                    dg.AutomationConditionSensorDefinition(
                        "verification_automation",
                        target=dg.AssetSelection.tag(ROLE_TAG, "verification"),
                        default_status=dg.DefaultSensorStatus.RUNNING,
                        description="Re-run verification when a project's or a provider's "
                        "code changed.",
                    ),
                ]
                if held
                else []
            ),
            *([build_import_sensor()] if names and shard.primary else []),
        ],
        resources={"workspaces": ProjectWorkspaces(), "agent_tasks": AgentTasks()},
        # Every job runs its steps in the run's own process: task runs have two light steps
        # (a process start per step saved), and a Celery run worker (deploy/) runs a run
        # inside its pool process, where the multiprocess executor may not start children.
        executor=dg.in_process_executor,
    )
    if not shard.primary:
        return dg.Definitions.merge(
            project_defs, dg.Definitions(asset_checks=build_budget_checks(held)), shared
        )
    channels = [(publisher, channel.name) for publisher, channel in published(specs)]
    return dg.Definitions.merge(
        project_defs,
        build_registry_defs(registry.errors, len(registry.projects), graph),
        *([build_backup_defs(registry.backup)] if registry.backup else []),
        *([build_alerts_defs()] if alerts_configured(registry) else []),
        *([build_monitoring_defs(names, checked=held)] if names else []),
        *([build_channel_defs(channels)] if channels else []),
        *([build_change_defs()] if names else []),
        shared,
    )


def _providers(spec: ProjectSpec, graph: DependencyGraph | None, names: set[str]) -> list[str]:
    """Declared plus last detected providers that are valid projects now, minus ignored ones."""
    detected = graph.providers_of(spec.name) if graph else ()
    wanted = (set(spec.depends_on) | set(detected)) - set(spec.ignore_dependencies)
    return sorted(wanted & names - {spec.name})


class _LastBuilt:
    """The definitions last built in this process for each shard, with the registry and the
    graph file's stamp they were built from.

    Dagster calls `defs` twice per load of a code location (once to find the definitions in the
    module, once to build the repository from them); the second call gets the first's
    definitions unless a registry file, an `ORCH__` variable or the detected graph changed in
    between, which `LiveRegistry` (a new registry object) and the stamp tell.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[Shard, tuple[Registry, tuple[int, int] | None, dg.Definitions]] = {}

    def get(self, registry: Registry, shard: Shard) -> dg.Definitions:
        cache = DetectionCache(registry.settings.home)
        with self._lock:
            stamp = cache.graph_stamp()
            last = self._built.get(shard)
            if last is None or last[0] is not registry or last[1] != stamp:
                built = _built_for_the_process(registry, cache.load_graph(), shard)
                last = self._built[shard] = (registry, stamp, built)
            return last[2]


def _built_for_the_process(
    registry: Registry, graph: DependencyGraph | None, shard: Shard
) -> dg.Definitions:
    """`_build`, with Python's cyclic garbage collector paused while it runs, then everything
    alive moved out of the collector's reach (`gc.freeze`).

    The definitions live as long as the code location, and so do the modules imported before
    them. Building them allocates hundreds of thousands of objects, and each full collection
    walks all of them again, during the build and while Dagster turns them into a repository
    and its snapshots: about a third of loading 1,000 projects (bench/README.md, `load.py`).
    Definitions built earlier are given back to the collector first (`gc.unfreeze`), so the
    ones a rebuild replaces can be freed.
    """
    gc.unfreeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        definitions = _build(registry, graph, shard)
    finally:
        if enabled:
            gc.enable()
    gc.collect()  # the build's own garbage, once, so that none of it is frozen
    gc.freeze()
    return definitions


_LAST_BUILT = _LastBuilt()


def _load(shard: Shard) -> dg.Definitions:
    return _LAST_BUILT.get(LiveRegistry.of(Settings.from_env()).current(), shard)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by the webserver, the daemon and the dagster CLI: parses YAML and reads the last
    detected dependency graph from ORCH_HOME; runs no git. With `ORCH_SHARD=i/N`, only shard
    i's projects (`sharding.py`)."""
    return _load(shard_from_env())


def __getattr__(name: str) -> object:
    """`shard_<i>_of_<N>`: shard i of N's definitions, for a workspace file that lists the
    shards as code locations of one module (`attribute: shard_0_of_4`), since the code servers
    `dagster dev` starts for them share one environment (no `ORCH_SHARD` each)."""
    shard = shard_of_attribute(name)
    if shard is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    @dg.definitions
    def shard_defs() -> dg.Definitions:
        return _load(shard)

    return shard_defs
