"""Channels in the definitions: each published channel an asset of its publisher's group with
lineage to its subscribers' `tasks`, a lease's pool held by every task run of a subscriber, its
limit the lease's slots, and the `channels` sensor present when anything is published."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from orchestration.allocation.control import effective_settings
from orchestration.defs.channels import CHANNELS_SENSOR
from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import ProjectKeys, build_project_defs
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.registry.channels import subscriptions
from orchestration.tags import GLOBAL_POOL, ROLE_TAG, lease_pool, project_pool
from tests.support.registry import RegistryDir

HUB = """
owners: [team:hub]
tags:
  domain: shared
channels:
  publish:
    - {name: api, kind: contract, paths: ["api/*.proto", "docs/api.md"], description: The API.}
    - {name: notes, kind: messages, allow: [one]}
    - {name: gpu, kind: lease}
    - {name: db, kind: lease, slots: 3}
"""
#: subscriber -> what it subscribes to
SUBSCRIBERS = {
    "one": ["hub.api", "hub.notes", "hub.gpu"],
    "two": ["hub.gpu", "hub.db"],
}


@pytest.fixture
def registry(registry_dir: RegistryDir, tmp_path: Path) -> RegistryDir:
    repo = tmp_path / "repos" / "shared"
    repo.mkdir(parents=True)
    registry_dir.project("hub", HUB, repo=str(repo))
    for name, refs in SUBSCRIBERS.items():
        registry_dir.project(name, f"channels:\n  subscribe: [{', '.join(refs)}]\n", repo=str(repo))
    registry_dir.project("solo", repo=str(repo))
    assert registry_dir.load().errors == ()
    return registry_dir


@pytest.fixture
def defs(registry: RegistryDir) -> dg.Definitions:
    return build_definitions(registry.load())


def _spec(defs: dg.Definitions, key: dg.AssetKey) -> dg.AssetSpec:
    (spec,) = [s for s in defs.resolve_all_asset_specs() if s.key == key]
    return spec


def _deps(defs: dg.Definitions, project: str) -> set[dg.AssetKey]:
    return {dep.asset_key for dep in _spec(defs, ProjectKeys(project).tasks).deps}


def _pools(job: dg.JobDefinition) -> set[str]:
    return {pool for node in job.graph.node_dict.values() for pool in node.definition.pools}


def test_each_published_channel_is_an_asset_of_its_publishers_group(
    defs: dg.Definitions,
) -> None:
    hub = ProjectKeys("hub")
    specs = {s.key: s for s in defs.resolve_all_asset_specs() if s.key.path[1:2] != ["tasks"]}
    channels = {key for key in specs if key.path[-1].startswith("channel_")}
    assert channels == {hub.channel(name) for name in ("api", "notes", "gpu", "db")}
    for key in channels:
        spec = specs[key]
        assert spec.group_name == "hub"
        assert spec.owners == ["team:hub"]
        assert spec.tags[ROLE_TAG] == "channel" and spec.tags["domain"] == "shared"
        assert not defs.resolve_assets_def(key).is_executable  # recorded by the sensor only
    api, notes, gpu, db = (specs[hub.channel(n)] for n in ("api", "notes", "gpu", "db"))
    assert api.kinds == {"channel", "contract"}
    assert notes.kinds == {"channel", "messages"}
    assert gpu.kinds == db.kinds == {"channel", "lease"}
    assert api.metadata == {
        "kind": "contract",
        "paths": "api/*.proto, docs/api.md",
        "allow": "any project",
    }
    assert notes.metadata == {"kind": "messages", "allow": "one"}
    assert gpu.metadata == {
        "kind": "lease",
        "slots": 1,
        "pool": "lease_hub_gpu",
        "allow": "any project",
    }
    assert db.metadata["slots"] == 3 and db.metadata["pool"] == "lease_hub_db"
    assert api.description is not None and api.description.startswith("The API.\n\n")
    assert "`hub.api` (contract)" in api.description


def test_subscribers_tasks_depend_on_their_channels_only(defs: dg.Definitions) -> None:
    hub = ProjectKeys("hub")
    for name, refs in SUBSCRIBERS.items():
        wanted = {hub.channel(ref.split(".")[1]) for ref in refs}
        assert _deps(defs, name) == {ProjectKeys(name).source, *wanted}
    assert _deps(defs, "solo") == {ProjectKeys("solo").source}
    assert _deps(defs, "hub") == {hub.source}
    graph = defs.resolve_asset_graph()
    assert graph.get(hub.channel("gpu")).child_keys == {
        ProjectKeys("one").tasks,
        ProjectKeys("two").tasks,
    }
    assert graph.get(hub.channel("notes")).child_keys == {ProjectKeys("one").tasks}


def test_a_subscribers_task_run_holds_each_lease(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    held = {"one": {"gpu"}, "two": {"gpu", "db"}, "solo": set(), "hub": set()}
    every_lease = {lease_pool("hub", n) for n in ("gpu", "db")}
    for name, leases in held.items():
        keys = ProjectKeys(name)
        pools = {lease_pool("hub", lease) for lease in leases}
        checks = {key.name for key in graph.asset_check_keys if key.asset_key == keys.tasks}
        assert {c for c in checks if c.startswith("holds_lease_")} == {
            f"holds_{pool}_slot" for pool in pools
        }
        for pool in pools:
            check = dg.AssetCheckKey(keys.tasks, f"holds_{pool}_slot")
            assert defs.get_asset_checks_def(check).node_def.pools == {pool}
        run = _pools(job.get_subset(asset_selection={keys.tasks}))
        assert {GLOBAL_POOL, project_pool(name), *pools} <= run
        assert not run & (every_lease - pools)


def test_the_lease_pools_limits_are_their_slots(registry: RegistryDir) -> None:
    current = effective_settings(registry.load(), {})
    assert current.pools["lease_hub_gpu"] == 1
    assert current.pools["lease_hub_db"] == 3
    limits = current.pool_limits()
    assert (limits["lease_hub_gpu"], limits["lease_hub_db"]) == (1, 3)


def test_the_channels_sensor_comes_with_a_published_channel(
    defs: dg.Definitions, registry_dir: RegistryDir, tmp_path: Path
) -> None:
    sensor = defs.resolve_sensor_def(CHANNELS_SENSOR)
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
    quiet = RegistryDir.create(tmp_path / "quiet")
    quiet.project("solo", repo=str(tmp_path / "repos" / "shared"))
    names = {s.name for s in build_definitions(quiet.load()).get_repository_def().sensor_defs}
    assert "task_dispatch" in names and CHANNELS_SENSOR not in names


def test_no_lineage_to_a_publisher_that_is_not_loaded(registry: RegistryDir) -> None:
    """One project's definitions alone: its lease is still held, but no dep on an asset that
    is not there."""
    loaded = registry.load()
    specs = {p.name: p.spec for p in loaded.projects}
    two = specs["two"]
    alone = dg.Definitions.merge(
        build_project_defs(two, subscriptions=subscriptions(specs, two)),
        dg.Definitions(resources={"workspaces": ProjectWorkspaces(), "agent_tasks": AgentTasks()}),
    )
    keys = ProjectKeys("two")
    assert _deps(alone, "two") == {keys.source}
    checks = {key.name for key in alone.resolve_asset_graph().asset_check_keys}
    assert {"holds_lease_hub_gpu_slot", "holds_lease_hub_db_slot"} <= checks
