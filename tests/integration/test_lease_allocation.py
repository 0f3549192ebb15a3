"""Lease channels in the allocation: each lease's pool limited to its slots in the instance, and
`orch allocation show` (text and JSON) listing it with its slots in use and its subscribers, on a
real Dagster instance and a registry in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result
from dagster._core.storage.dagster_run import RunOpConcurrency
from dagster._core.utils import make_new_run_id

from orchestration.allocation.control import apply_pool_limits, effective_settings
from orchestration.cli import main
from orchestration.tags import GLOBAL_POOL, PROJECT_TAG, TASK_TAG, lease_pool, project_pool
from tests.support.registry import RegistryDir

HUB = """
channels:
  publish:
    - {name: gpu, kind: lease}
    - {name: db, kind: lease, slots: 2, allow: [one]}
    - {name: notes, kind: messages}
"""


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    registry_dir.project("hub", HUB)
    registry_dir.project("one", "channels:\n  subscribe: [hub.gpu, hub.db, hub.notes]\n")
    registry_dir.project("two", "channels:\n  subscribe: [hub.gpu]\n")
    registry_dir.project("solo")
    assert registry_dir.load().errors == ()
    return registry_dir


def orch(registry: RegistryDir, dagster_home: Path, *args: str) -> Result:
    settings = registry.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "ORCH_TASKS_DB_URL": None,
        "DAGSTER_HOME": str(dagster_home),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def start_run(instance: dg.DagsterInstance, project: str, pools: set[str]) -> None:
    """A task run of `project` in progress whose plan uses `pools`, as the run queue records
    one it started."""
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=make_new_run_id(),
            status=dg.DagsterRunStatus.STARTED,
            tags={PROJECT_TAG: project, TASK_TAG: f"t_{project}"},
            run_op_concurrency=RunOpConcurrency(
                root_key_counts={}, has_unconstrained_root_nodes=False, all_pools=pools
            ),
        )
    )


def test_the_instance_limits_each_lease_to_its_slots(
    registry: RegistryDir, instance: dg.DagsterInstance
) -> None:
    apply_pool_limits(instance, effective_settings(registry.load(), {}).pool_limits())
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert (limits[lease_pool("hub", "gpu")], limits[lease_pool("hub", "db")]) == (1, 2)
    assert not any(name.endswith("_notes") for name in limits)  # a messages channel: no pool


def test_allocation_show_lists_the_leases(
    registry: RegistryDir, instance: dg.DagsterInstance, dagster_home: Path
) -> None:
    gpu, db = lease_pool("hub", "gpu"), lease_pool("hub", "db")
    start_run(instance, "one", {GLOBAL_POOL, project_pool("one"), gpu, db})

    data = json.loads(orch(registry, dagster_home, "allocation", "show", "--json").stdout)
    assert data["leases"] == [
        {"pool": db, "channel": "hub.db", "limit": 2, "in_use": 1, "subscribers": ["one"]},
        {"pool": gpu, "channel": "hub.gpu", "limit": 1, "in_use": 1, "subscribers": ["one", "two"]},
    ]
    assert (data["pools"][gpu], data["pools"][db]) == (1, 2)

    lines = orch(registry, dagster_home, "allocation", "show").stdout.splitlines()
    shown = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("lease_")}
    assert shown == {
        db: ["1/2", "in", "use", "lease", "hub.db,", "subscribers:", "one"],
        gpu: ["1/1", "in", "use", "lease", "hub.gpu,", "subscribers:", "one,", "two"],
    }
