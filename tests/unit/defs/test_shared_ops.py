"""Many projects' assets share a few ops: one subsettable multi-asset holds every project's
repository assets, one every `tasks` asset, one check op per extra pool holds its slots. A
project's run still selects only its own assets and holds its own pools, and one project's
failure in a refresh leaves the other projects' results."""

from __future__ import annotations

import gc
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import REPOSITORIES_OP, ProjectKeys
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.registry.models import ProjectSpec
from orchestration.tags import GLOBAL_POOL, project_pool, tasks_partitions_name
from orchestration.workspace.workspace import SourceState
from tests.support.registry import RegistryDir

PROJECTS = ("alpha", "beta", "gamma")


@pytest.fixture
def defs(registry_dir: RegistryDir, tmp_path: Path) -> dg.Definitions:
    shared = tmp_path / "repos" / "shared"
    shared.mkdir(parents=True)
    for name in PROJECTS:
        registry_dir.project(name, "verify: [python3, -c, pass]\n", repo=str(shared))
    registry = registry_dir.load()
    assert registry.errors == ()
    return build_definitions(registry)


def _pools(job: dg.JobDefinition) -> set[str]:
    return {pool for node in job.graph.node_dict.values() for pool in node.definition.pools}


def test_projects_share_ops_and_keep_their_own_partitions(defs: dg.Definitions) -> None:
    for name in PROJECTS:
        keys = ProjectKeys(name)
        for key in keys.repository:
            assert defs.resolve_assets_def(key).node_def.name == REPOSITORIES_OP
        tasks = defs.resolve_assets_def(keys.tasks)
        assert tasks.node_def.name == "tasks"
        assert tasks.can_subset
        (spec,) = [s for s in tasks.specs if s.key == keys.tasks]
        assert isinstance(spec.partitions_def, dg.DynamicPartitionsDefinition)
        assert spec.partitions_def.name == tasks_partitions_name(name)


def test_a_task_run_selects_its_project_only_and_holds_its_pools(defs: dg.Definitions) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    for name in PROJECTS:
        keys = ProjectKeys(name)
        subset = job.get_subset(asset_selection={keys.tasks})
        assert subset.asset_layer.selected_asset_keys == {keys.tasks}
        checks = {key.asset_key for key in subset.asset_layer.asset_graph.asset_check_keys}
        assert checks <= {keys.tasks}
        pools = _pools(subset)
        assert {GLOBAL_POOL, project_pool(name)} <= pools
        assert not pools & {project_pool(other) for other in PROJECTS if other != name}


def test_a_refresh_of_one_project_selects_its_repository_assets_only(
    defs: dg.Definitions,
) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    keys = ProjectKeys("beta")
    subset = job.get_subset(asset_selection=set(keys.repository))
    assert subset.asset_layer.selected_asset_keys == set(keys.repository)
    assert [node.definition.name for node in subset.graph.node_dict.values()] == [REPOSITORIES_OP]


class _BetaUnreadable(ProjectWorkspaces):
    """Workspaces whose `beta` repository cannot be read."""

    def observe(self, spec: ProjectSpec) -> SourceState:
        if spec.name == "beta":
            raise RuntimeError("beta's repository cannot be read")
        return SourceState(
            branch="main",
            branch_sha="0" * 40,
            head_sha="0" * 40,
            head_branch="main",
            dirty=False,
            last_commit_time=None,
            last_commit_summary=None,
            remote=False,
        )


def test_one_projects_failure_leaves_the_others_results(
    defs: dg.Definitions, registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_dir.use_in(monkeypatch)  # the op reads each project's file as it is now
    sources = [ProjectKeys(name).source for name in PROJECTS]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [defs.get_assets_def(sources[0])],
            selection=sources,
            instance=instance,
            resources={"workspaces": _BetaUnreadable()},
            raise_on_error=False,
        )
    assert not result.success
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == {ProjectKeys("alpha").source, ProjectKeys("gamma").source}
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data.user_failure_data
    assert data is not None and data.description is not None
    assert "beta" in data.description and "cannot be read" in data.description


def test_a_load_builds_the_definitions_once_until_a_file_changes(
    registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster calls `defs` twice per load; the second call reuses the first's definitions,
    and a changed project file gets new ones."""
    from orchestration.defs.definitions import defs as load

    (tmp_path / "repo").mkdir()
    registry_dir.project("alpha", repo=str(tmp_path / "repo"))
    registry_dir.use_in(monkeypatch)
    try:
        first = load()
        assert load() is first
        registry_dir.project("beta", repo=str(tmp_path / "repo"))
        again = load()
        assert again is not first
        assert ProjectKeys("beta").tasks in {spec.key for spec in again.resolve_all_asset_specs()}
    finally:
        gc.unfreeze()  # what the loads froze goes back to the collector, as for a new load
