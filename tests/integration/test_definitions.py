"""The generated Dagster definitions: a snapshot of the graph, fault isolation, no I/O at load,
and `dagster definitions validate` on a throwaway registry and on the shipped one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import REFRESH_JOB
from orchestration.defs.orchestration_assets import REGISTRY_KEY
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.samples import ensure_sample_repos
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.workspace.git import GitError, run_git
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions_graph.json"
UPDATE_VAR = "UPDATE_SNAPSHOTS"
TMP_PLACEHOLDER = "<registry>"
KIND_TAG_PREFIX = "dagster/kind/"


# The registry -------------------------------------------------------------------------------


def write_snapshot_registry(registry_dir: RegistryDir) -> None:
    """Four projects covering the factory's branches: a template chain, a dependency, a
    schedule, a project with and without `verify`, a local and a remote repository, channels
    (a contract and a lease) and their subscribers."""
    registry_dir.write(
        "projects/_defaults.yaml",
        """
        owners: [team:platform]
        """,
    )
    registry_dir.write(
        "projects/templates/python_lib.yaml",
        """
        verify: [python3, -m, unittest, discover, -s, tests, -t, .]
        tags:
          language: python
        """,
    )
    registry_dir.project(
        "core",
        """
        extends: python_lib
        priority: high
        owners: [team:core]
        tags:
          layer: library
        channels:
          publish:
            - {name: api, kind: contract, paths: ["core/*.py"], allow: [api]}
            - {name: db, kind: lease, description: The shared test database.}
        """,
    )
    registry_dir.project(
        "api",
        """
        depends_on: [core]
        schedule: "0 6 * * 1-5"
        verify: [python3, -m, pytest, -q]
        secrets: [API_TOKEN]
        owners: [team:backend, api-lead@example.com]
        tags:
          domain: api
        channels:
          subscribe: [core.api, core.db]
        """,
    )
    registry_dir.project(
        "web",
        """
        priority: low
        agent:
          profile: codex
        tags:
          language: javascript
        channels:
          subscribe: [core.db]
        """,
    )
    registry_dir.project(
        "mirror",
        """
        branch: develop
        """,
        repo="https://git.invalid/mirror.git",
    )


# Serialising the graph ----------------------------------------------------------------------


def graph_snapshot(defs: dg.Definitions, tmp_root: Path) -> dict[str, Any]:
    """The definitions as plain, sorted data with temporary paths replaced by a placeholder."""

    def text(value: str | None) -> str | None:
        if value is None:
            return None
        for root in {str(tmp_root), str(tmp_root.resolve())}:
            value = value.replace(root, TMP_PLACEHOLDER)
        return value

    asset_graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for spec in defs.resolve_all_asset_specs():
        assets_def = defs.resolve_assets_def(spec.key)
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            "description": text(spec.description),
            "owners": list(spec.owners),
            "tags": {k: v for k, v in spec.tags.items() if not k.startswith(KIND_TAG_PREFIX)},
            "kinds": sorted(spec.kinds),
            "metadata": {k: _plain(v) for k, v in spec.metadata.items()},
            "partitions": _partitions(spec.partitions_def),
            # An external asset (recorded by a sensor, as `usage`) has no op.
            "op": assets_def.node_def.name if assets_def.is_executable else None,
            "can_subset": assets_def.can_subset,
            "pool": next(iter(assets_def.node_def.pools), None)
            if assets_def.is_executable
            else None,
            "freshness": str(spec.freshness_policy) if spec.freshness_policy else None,
        }

    checks = {
        _check_name(key): {"description": text(asset_graph.get_check_spec(key).description)}
        for key in asset_graph.asset_check_keys
    }

    jobs: dict[str, Any] = {}
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):  # Dagster's implicit asset jobs
            continue
        layer = job.asset_layer
        jobs[job.name] = {
            "description": job.description,
            "assets": sorted(key.to_user_string() for key in layer.selected_asset_keys),
            "checks": sorted(
                _check_name(key) for data in layer.data for key in data.assets_def.check_keys
            ),
            "tags": dict(job.tags),
        }

    schedules: dict[str, Any] = {}
    for schedule in defs.get_repository_def().schedule_defs:
        resources = {"workspaces": defs.resources["workspaces"]}
        with dg.build_schedule_context(resources=resources) as context:
            requests = schedule.evaluate_tick(context).run_requests or []
        schedules[schedule.name] = {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
            "description": schedule.description,
            "run_requests": [
                {
                    "assets": sorted(key.to_user_string() for key in request.asset_selection or []),
                    "tags": dict(request.tags),
                }
                for request in requests
            ],
        }

    repository = defs.get_repository_def()
    sensors = {
        sensor.name: {
            "interval_s": sensor.minimum_interval_seconds,
            "default_status": sensor.default_status.value,
            "assets": sorted(
                key.to_user_string()
                for key in (
                    sensor.asset_selection.resolve(asset_graph) if sensor.asset_selection else []
                )
            ),
            "description": sensor.description,
        }
        for sensor in repository.sensor_defs
    }

    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": jobs,
        "schedules": schedules,
        "sensors": sensors,
        "resources": sorted(defs.resources or {}),
    }


def _check_name(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"dynamic:{partitions_def.name}"
    return type(partitions_def).__name__


def _plain(value: object) -> object:
    """A metadata value as JSON data: `MetadataValue`s unwrapped, anything else as text."""
    raw = getattr(value, "value", value)
    return raw if isinstance(raw, str | int | float | bool | type(None)) else repr(raw)


def _to_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# Tests ---------------------------------------------------------------------------------------


def test_definitions_graph_matches_snapshot(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_snapshot_registry(registry_dir)
    registry_dir.use_in(monkeypatch)  # schedules read the registry when they tick
    registry = registry_dir.load()
    assert registry.errors == ()
    actual = _to_json(graph_snapshot(build_definitions(registry), registry_dir.root))
    assert str(registry_dir.root) not in actual, "a temporary path leaked into the snapshot"

    if os.environ.get(UPDATE_VAR) == "1" or not SNAPSHOT.is_file():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(actual, encoding="utf-8")
        pytest.fail(
            f"snapshot {SNAPSHOT} was (re)written; review it and run the test again "
            f"(unset {UPDATE_VAR} to compare instead of rewriting)"
        )
    expected = SNAPSHOT.read_text(encoding="utf-8")
    assert actual == expected, (
        "the generated definitions graph changed; if that is intended, rerun with "
        f"{UPDATE_VAR}=1 and review the diff of {SNAPSHOT.relative_to(REPO_ROOT)}"
    )


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param("verfy: [python3, -m, unittest]\n", "verfy", id="unknown-key"),
        pytest.param("depends_on: [nowhere]\n", "depends_on[0]", id="unknown-dependency"),
        pytest.param("priority: urgent\n", "priority", id="bad-value"),
    ],
)
def test_broken_project_file_leaves_the_others_loaded(
    registry_dir: RegistryDir, body: str, key: str
) -> None:
    registry_dir.project("alpha", "verify: [python3, -m, unittest]\n")
    registry_dir.project("gamma")
    broken = registry_dir.project("beta", body)

    defs = build_definitions(registry_dir.load())

    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    assert groups == {"alpha", "gamma", "orchestration"}
    description = defs.resolve_assets_def(REGISTRY_KEY).specs_by_key[REGISTRY_KEY].description
    assert description is not None
    assert "2 valid project(s), 1 error(s)" in description
    assert str(broken) in description
    assert f" {key}:" in description
    assert dg.AssetCheckKey(REGISTRY_KEY, "all_projects_valid") in (
        defs.resolve_asset_graph().asset_check_keys
    )


def test_broken_yaml_syntax_is_listed_with_its_line(registry_dir: RegistryDir) -> None:
    registry_dir.project("alpha")
    broken = registry_dir.write("projects/beta.yaml", "name: beta\ntags: {a: [b\n")

    defs = build_definitions(registry_dir.load())

    assert {spec.group_name for spec in defs.resolve_all_asset_specs()} == {
        "alpha",
        "orchestration",
    }
    description = defs.resolve_assets_def(REGISTRY_KEY).specs_by_key[REGISTRY_KEY].description
    assert description is not None
    assert f"{broken}:" in description


def test_building_definitions_runs_no_git(
    registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no program reachable on PATH, any git (or other) subprocess at load would fail."""
    registry_dir.project("local", "verify: [python3, -m, unittest]\n")
    registry_dir.project("remote", repo="https://git.invalid/x.git")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GitError):  # the guard works: git cannot be started now
        run_git(["--version"], cwd=tmp_path, what="prove git is unreachable")

    registry = registry_dir.load()
    assert registry.errors == ()
    defs = build_definitions(registry)
    # Definitions resolve lazily: force the whole repository, jobs and schedules too.
    defs.get_repository_def().load_all_definitions()
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}

    assert {"local/source", "remote/source", "remote/verification"} <= keys
    assert defs.resolve_job_def(REFRESH_JOB).name == REFRESH_JOB


def _validate(env: Mapping[str, str], dagster_home: Path) -> subprocess.CompletedProcess[str]:
    dagster_home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "orchestration.defs.definitions",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dagster_validates_a_registry(registry_dir: RegistryDir, tmp_path: Path) -> None:
    write_snapshot_registry(registry_dir)
    settings = registry_dir.settings
    result = _validate(
        {
            PROJECTS_DIR_VAR: str(settings.projects_dir),
            CONFIG_DIR_VAR: str(settings.config_dir),
            HOME_VAR: str(settings.home),
        },
        tmp_path / "dagster_home",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_dagster_validates_the_shipped_registry(tmp_path: Path) -> None:
    home = tmp_path / "orch_home"
    ensure_sample_repos(home / "samples")
    result = _validate(
        {
            PROJECTS_DIR_VAR: str(REPO_ROOT / "projects"),
            CONFIG_DIR_VAR: str(REPO_ROOT / "config"),
            HOME_VAR: str(home),
        },
        tmp_path / "dagster_home",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stderr + result.stdout


def _with_base_env(registry_dir: RegistryDir, names: str) -> None:
    agents = registry_dir.root / "config" / "agents.yaml"
    text = agents.read_text(encoding="utf-8")
    assert "\nbase_env: [PATH, LANG, LC_ALL, TZ, TERM]\n" in text
    agents.write_text(
        text.replace("\nbase_env: [PATH, LANG, LC_ALL, TZ, TERM]\n", f"\nbase_env: {names}\n"),
        encoding="utf-8",
    )


def _verify_env(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The variable names the `verify` command of project `alpha` sees, run the way the
    `verification` asset runs it: through the resource, reading the registry at run time."""
    registry_dir.project("alpha", "verify: [env]\n")
    registry_dir.use_in(monkeypatch)
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("SOME_SECRET", "hunter2")
    workspaces = ProjectWorkspaces()
    result = workspaces.verify(workspaces.spec("alpha"))
    assert result.passed, result.output_tail
    return {line.split("=", 1)[0] for line in result.output_tail.splitlines() if "=" in line}


def test_verify_sees_the_registry_base_env(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_base_env(registry_dir, "[PATH, LANG]")
    assert _verify_env(registry_dir, monkeypatch) <= {"PATH", "LANG", "HOME"}


def test_empty_base_env_lets_no_parent_variable_through(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_base_env(registry_dir, "[]")
    assert _verify_env(registry_dir, monkeypatch) == {"HOME"}
