"""A registry split over two code locations (`orch up --shards 2`'s workspace), served by a real
`dagster-daemon` and `dagster-webserver` on one instance: every task runs in the code location
of its project's shard, each shard's sensor launching its own, the allocation and the pools
shared; `orch task add` submits to the right location through the webserver; a reload asked
for one shard reloads that location only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestration.defs.reload import request_reload
from orchestration.settings import WEBSERVER_URL_VAR
from orchestration.sharding import Shard
from orchestration.tasks.models import TaskStatus
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import LOG_VAR, Orchestrator, write_registry
from tests.support.paths import path_with_fakes
from tests.support.webserver import post_graphql, serving

pytestmark = pytest.mark.slow

SHARDS = 2
#: Six projects, three in each of the two shards (by the stable hash of their names).
CANDIDATES = [f"s{i}" for i in range(40)]
PROJECTS = [n for n in CANDIDATES if Shard(0, SHARDS).holds(n)][:3] + [
    n for n in CANDIDATES if Shard(1, SHARDS).holds(n)
][:3]
SHARD_LIST = [Shard(i, SHARDS) for i in range(SHARDS)]
LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }
"""


@dataclass
class System:
    orchestrator: Orchestrator
    url: str


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("shards")
    (root / "agents").mkdir()
    env = write_registry(root, {name: ("normal", 2) for name in PROJECTS}, slots=3)
    env["DAGSTER_HOME"] = str(write_instance(root))
    env[LOG_VAR] = str(root / "agents" / "fake_claude.jsonl")
    env["PATH"] = path_with_fakes(os.environ["PATH"])  # `orch task add` checks the agent
    daemon_env = daemon_environment(env, path=env["PATH"], sandbox=False)
    workspace = write_workspace(root, shards=SHARDS)
    with serving(["-w", str(workspace)], daemon_env, root / "webserver.log") as served:
        env[WEBSERVER_URL_VAR] = served.url
        daemon_env[WEBSERVER_URL_VAR] = served.url
        with running_daemon(root, workspace, daemon_env) as (daemon, log):
            orchestrator = Orchestrator(root, env, daemon, log)
            try:
                yield System(orchestrator, served.url)
            finally:
                orchestrator.close()


def test_the_workspace_has_one_location_per_shard(system: System) -> None:
    entries = post_graphql(f"{system.url}/graphql", LOCATIONS_QUERY, None, 30)["workspaceOrError"][
        "locationEntries"
    ]
    assert sorted(e["name"] for e in entries) == [Shard(i, SHARDS).location for i in range(2)]
    assert all(e["loadStatus"] == "LOADED" for e in entries)


def test_every_task_runs_in_its_projects_shard(system: System) -> None:
    orchestrator = system.orchestrator
    # Added straight to the task store: the shards' dispatch sensors launch them.
    ids = {}
    for name in PROJECTS:
        task = orchestrator.store.add(name, f"SLEEP1 work on {name}")
        assert task is not None
        ids[task.id] = name
    tasks = orchestrator.wait_finished(*ids, timeout_s=300)
    failed = [t.id for t in tasks if t.status is not TaskStatus.SUCCEEDED]
    assert not failed, orchestrator.explain(f"tasks {failed} did not succeed")
    for task in tasks:
        (run,) = orchestrator.task_runs(task.id)
        origin = run.remote_job_origin
        assert origin is not None
        (expected,) = [s for s in SHARD_LIST if s.holds(ids[task.id])]
        assert origin.location_name == expected.location, (task.id, ids[task.id])


def test_task_add_submits_to_the_shard_of_the_project(system: System) -> None:
    orchestrator = system.orchestrator
    orchestrator.wait_idle(timeout_s=120)
    name = PROJECTS[-1]  # shard 1
    task_id = orchestrator.add(name, "SLEEP1 submitted directly")
    (run,) = orchestrator.task_runs(task_id)  # made by the command, before any sensor tick
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == Shard(1, SHARDS).location
    (done,) = orchestrator.wait_finished(task_id, timeout_s=180)
    assert done.status is TaskStatus.SUCCEEDED, orchestrator.explain(task_id)


def test_a_reload_of_one_shard_reloads_that_location(system: System) -> None:
    env = {WEBSERVER_URL_VAR: system.url}
    location = Shard(1, SHARDS).location
    assert request_reload(env, wait=True, location=location) == (
        f"{system.url}/graphql reloaded the code location {location}"
    )
    missing = request_reload(env, wait=True, location="orchestration_9_of_10")
    assert "could not reload the code location orchestration_9_of_10" in missing
    assert "RepositoryLocationNotFound" in missing


def test_the_shipped_sharded_workspace_lists_each_shard() -> None:
    import yaml

    from orchestration.sharding import workspace_document

    shipped = Path(__file__).resolve().parents[2] / "deploy" / "workspace.sharded.yaml"
    assert yaml.safe_load(shipped.read_text()) == workspace_document(4, "..")
