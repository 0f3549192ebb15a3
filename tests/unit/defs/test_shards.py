"""A registry split over code locations (`ORCH_SHARD=i/N`): each shard defines its projects
only, every project exactly once; what exists once lives in shard 0; lineage and channels still
cross shards by asset key."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

import orchestration.defs.definitions as definitions_module
from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import ProjectKeys
from orchestration.defs.monitoring import PORTFOLIO_KEY
from orchestration.registry.loader import Registry
from orchestration.sharding import Shard, ShardError
from tests.support.registry import RegistryDir

SHARDS = 3
NAMES = [f"p{i:02d}" for i in range(12)]
SHARED_KEYS = {
    dg.AssetKey(["orchestration", "registry"]),
    dg.AssetKey(["orchestration", "dependencies"]),
    dg.AssetKey(["orchestration", "changes"]),
    PORTFOLIO_KEY,
}
PRIMARY_ONLY_SENSORS = {"task_import", "monitoring", "channels", "change_sets"}


@pytest.fixture
def registry(registry_dir: RegistryDir, tmp_path: Path) -> Registry:
    repo = tmp_path / "repos" / "shared"
    repo.mkdir(parents=True)
    registry_dir.project(
        NAMES[0],
        "verify: [python3, -c, pass]\nchannels:\n  publish:\n    - {name: api, kind: contract, "
        'paths: ["api/*"]}\n',
        repo=str(repo),
    )
    for name in NAMES[1:]:
        registry_dir.project(
            name,
            f"depends_on: [{NAMES[0]}]\nverify: [python3, -c, pass]\n"
            f"channels:\n  subscribe: [{NAMES[0]}.api]\n",
            repo=str(repo),
        )
    loaded = registry_dir.load()
    assert loaded.errors == ()
    return loaded


#: What Dagster marks an asset a location only names (a dependency defined elsewhere) with; the
#: workspace takes another location's definition of the key over it.
STUB = "dagster/auto_created_stub_asset"


def _keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    """The asset keys `defs` defines (not those it only depends on)."""
    return {spec.key for spec in defs.resolve_all_asset_specs() if not spec.metadata.get(STUB)}


def _sensors(defs: dg.Definitions) -> set[str]:
    return {sensor.name for sensor in defs.sensors or []}


def test_every_project_is_defined_by_exactly_one_shard(registry: Registry) -> None:
    whole = _keys(build_definitions(registry))
    shards = [build_definitions(registry, Shard(i, SHARDS)) for i in range(SHARDS)]
    project_keys = [
        {key for key in _keys(defs) if key.path[0] in NAMES}
        & {key for key in whole if key.path[0] in NAMES}
        for defs in shards
    ]
    # Every project's assets in exactly one shard: the one its name hashes to.
    for index, keys in enumerate(project_keys):
        owners = {key.path[0] for key in keys}
        assert owners == {name for name in NAMES if Shard(index, SHARDS).holds(name)}
        for other in project_keys[index + 1 :]:
            assert not keys & other
    assert set().union(*project_keys) == {key for key in whole if key.path[0] in NAMES}
    assert all(project_keys), "the 12 names spread over all 3 shards"
    # Each shard's definitions load as a code location would.
    for defs in shards:
        dg.Definitions.validate_loadable(defs)


def test_what_exists_once_lives_in_the_primary_shard(registry: Registry) -> None:
    primary, *others = [build_definitions(registry, Shard(i, SHARDS)) for i in range(SHARDS)]
    assert SHARED_KEYS <= _keys(primary)
    assert PRIMARY_ONLY_SENSORS <= _sensors(primary)
    assert "project_control" in {job.name for job in primary.resolve_all_job_defs()}
    for defs in others:
        assert not SHARED_KEYS & _keys(defs)
        assert not PRIMARY_ONLY_SENSORS & _sensors(defs)
        # Each shard launches and refreshes its own projects and reloads itself.
        assert {"task_dispatch", "verification_automation", "lineage_reload"} <= _sensors(defs)
        assert "refresh" in {job.name for job in defs.resolve_all_job_defs()}
        assert "project_control" not in {job.name for job in defs.resolve_all_job_defs()}


def test_lineage_and_channels_cross_shards_by_key(registry: Registry) -> None:
    provider = NAMES[0]
    home = next(i for i in range(SHARDS) if Shard(i, SHARDS).holds(provider))
    consumer = next(name for name in NAMES[1:] if not Shard(home, SHARDS).holds(name))
    index = next(i for i in range(SHARDS) if Shard(i, SHARDS).holds(consumer))
    defs = build_definitions(registry, Shard(index, SHARDS))
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    keys = ProjectKeys(consumer)
    assert specs[ProjectKeys(provider).source].metadata.get(STUB)  # named, defined elsewhere
    assert ProjectKeys(provider).source in {dep.asset_key for dep in specs[keys.verification].deps}
    assert ProjectKeys(provider).channel("api") in {dep.asset_key for dep in specs[keys.tasks].deps}
    assert ProjectKeys(provider).tasks not in specs  # its own shard defines it


def test_each_shards_budget_checks_cover_its_projects(registry: Registry) -> None:
    for index in range(SHARDS):
        defs = build_definitions(registry, Shard(index, SHARDS))
        checked = {
            key.asset_key
            for checks in defs.asset_checks or []
            if isinstance(checks, dg.AssetChecksDefinition)
            for key in checks.check_keys
            if key.name == "within_budget"
        }
        mine = {ProjectKeys(n).usage for n in NAMES if Shard(index, SHARDS).holds(n)}
        assert checked == mine | ({PORTFOLIO_KEY} if index == 0 else set())


def test_a_workspace_names_shards_as_attributes(
    registry_dir: RegistryDir, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_dir.use_in(monkeypatch)
    lazy = definitions_module.shard_1_of_3  # type: ignore[attr-defined]
    repository = lazy().get_repository_def()
    names = {key.path[0] for key in repository.asset_graph.materializable_asset_keys}
    assert names & set(NAMES) == {name for name in NAMES if Shard(1, SHARDS).holds(name)}
    with pytest.raises(AttributeError):
        definitions_module.shard_one  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ShardError, match="shard 3 of 3 does not exist"):
        definitions_module.shard_3_of_3  # type: ignore[attr-defined]  # noqa: B018


def test_orch_shard_selects_the_shard_defs_builds(
    registry_dir: RegistryDir, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_dir.use_in(monkeypatch)
    monkeypatch.setenv("ORCH_SHARD", "2/3")
    repository = definitions_module.defs().get_repository_def()
    names = {key.path[0] for key in repository.asset_graph.materializable_asset_keys}
    assert names & set(NAMES) == {name for name in NAMES if Shard(2, SHARDS).holds(name)}
    monkeypatch.setenv("ORCH_SHARD", "3")
    with pytest.raises(ShardError, match="ORCH_SHARD='3': expected INDEX/COUNT"):
        definitions_module.defs()
