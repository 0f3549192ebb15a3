"""A change set across three real repositories (lib -> svc -> app), its tasks run as the Dagster
asset runs them (`AgentTasks.execute`) with the stand-in `claude`: one task per member in
dependency order, the joint verification against the providers' changed code (svc's check
fails against lib's `main` and passes against lib's task commit), and a delivery that is all or
nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import pytest

from orchestration.changes.deliver import deliver_change
from orchestration.changes.sets import ChangeError, ChangeSets, ChangeStatus
from orchestration.changes.verify import change_variable, verify_change
from orchestration.defs.changes import (
    ALL_VERIFIED_CHECK,
    CHANGE_SETS_SENSOR,
    CHANGES_KEY,
    CHANGES_PARTITIONS,
    build_change_defs,
)
from orchestration.defs.resources import AgentTasks
from orchestration.dependencies.detection import last_or_detect
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.agent_log import events
from tests.support.daemon import evaluate_sensor
from tests.support.git import git, make_git_repo
from tests.support.paths import path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_change_sets")
#: svc's check inside a change set: lib as the change leaves it must say VALUE = 2.
CHECK = """\
import os, pathlib, sys
lib = pathlib.Path(os.environ["ORCH_CHANGE_LIB"]) / "lib.py"
namespace = {}
exec(lib.read_text(), namespace)
print("lib VALUE is", namespace["VALUE"])
sys.exit(0 if namespace["VALUE"] == 2 else 1)
"""
AGENT = "agent:\n  profile: claude_code\n"


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryDir]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    repos = registry_dir.root / "repos"
    make_git_repo(repos / "lib", {"lib.py": "VALUE = 1\n"})
    make_git_repo(repos / "svc", {"check.py": CHECK, "svc.py": "print('svc')\n"})
    make_git_repo(repos / "app", {"app.py": "print('app')\n"})
    registry_dir.project("lib", AGENT, repo=str(repos / "lib"))
    registry_dir.project(
        "svc",
        AGENT
        + "depends_on: [lib]\nverify: [python3, svc.py]\n"
        + "verify_in_change: [python3, check.py]\n",
        repo=str(repos / "svc"),
    )
    registry_dir.project("app", AGENT + "depends_on: [svc]\n", repo=str(repos / "app"))
    yield registry_dir


@pytest.fixture
def store(registry: RegistryDir) -> Iterator[TaskStore]:
    opened = TaskStore.from_settings(registry.settings, environ={})
    yield opened
    opened.dispose()


def agent_starts(registry: RegistryDir) -> dict[str, dict]:
    """The stand-in agent's start line of each project's (last) task, by project."""
    found = {}
    for log in registry.settings.home.glob("workspaces/*/agents/*/fake_claude.jsonl"):
        for entry in events("start", log):
            found[log.parts[-4]] = entry
    return found


def run_all(store: TaskStore, change_id: str) -> None:
    """Each member's task in the order the change set queued them, as the asset runs it."""
    for task in store.tasks_of_session(change_id):
        store.mark_dispatched(task.id)
        AgentTasks().execute(task.project, task.id, f"run-{task.id}", LOG)
        assert store.require(task.id).status is TaskStatus.SUCCEEDED, store.require(task.id)


def test_a_change_set_is_made_verified_together_and_delivered_all_or_none(
    registry: RegistryDir, store: TaskStore
) -> None:
    loaded = registry.load()
    graph = last_or_detect(loaded.projects, registry.settings)
    changes = ChangeSets(store)
    change, tasks = changes.create(
        "Raise VALUE\nWRITE lib.py VALUE = 2", ["app", "lib", "svc"], graph, priority=60
    )
    assert [t.project for t in tasks] == ["lib", "svc", "app"]
    lib_task, svc_task, app_task = tasks
    assert lib_task.after == () and svc_task.after == (lib_task.id,)
    assert app_task.after == (svc_task.id,)
    assert {t.session for t in tasks} == {change.id} and {t.priority for t in tasks} == {60}
    assert "svc's part of change set" in svc_task.prompt
    assert change.status is ChangeStatus.IN_PROGRESS and not change.all_verified
    with pytest.raises(ChangeError, match="must succeed before"):
        verify_change(change, loaded, registry.settings.home, os.environ, LOG)

    run_all(store, change.id)
    change = changes.require(change.id)
    assert change.status is ChangeStatus.VERIFYING

    # Each consumer's agent read its providers' work: diffs and summaries under .orch/change/,
    # and read-only checkouts of their commits named by ORCH_CHANGE_<PROJECT>.
    seen = agent_starts(registry)
    assert seen["lib"]["orch_files"] == {} and seen["lib"]["change_checkouts"] == {}
    svc = seen["svc"]
    assert sorted(svc["orch_files"]) == ["change/lib.diff", "change/lib.md"]
    assert "+VALUE = 2" in svc["orch_files"]["change/lib.diff"]["text"]
    assert not svc["orch_files"]["change/lib.diff"]["writable"]
    assert lib_task.id in svc["orch_files"]["change/lib.md"]["text"]
    (checkout,) = svc["change_checkouts"].values()
    assert list(svc["change_checkouts"]) == ["ORCH_CHANGE_LIB"]
    assert checkout["names"] == [".git", "lib.py"] and not checkout["writable"]
    app = seen["app"]
    assert sorted(app["orch_files"]) == [
        "change/lib.diff",
        "change/lib.md",
        "change/svc.diff",
        "change/svc.md",
    ]
    assert sorted(app["change_checkouts"]) == ["ORCH_CHANGE_LIB", "ORCH_CHANGE_SVC"]
    # Nothing of it was committed, and the checkouts are gone.
    clone = registry.settings.home / "workspaces" / "svc" / "repo.git"
    files = git(clone, "ls-tree", "-r", "--name-only", f"orch/svc/{svc_task.id}")
    assert ".orch" not in files
    assert not list(registry.settings.home.glob("workspaces/*/worktrees/handoff-*"))

    # svc's check fails against lib's main ...
    lib_main = registry.root / "repos" / "lib"
    env = {**os.environ, change_variable("lib"): str(lib_main)}
    against_main = subprocess.run(
        [sys.executable, "check.py"], cwd=registry.root / "repos" / "svc", env=env, check=False
    )
    assert against_main.returncode == 1
    # ... and passes verified together, against lib's task commit.
    checks = verify_change(change, loaded, registry.settings.home, os.environ, LOG)
    assert {p: c.passed for p, c in checks.items()} == {"lib": True, "svc": True, "app": True}
    assert "1 passed" in checks["svc"].summary
    assert "lib VALUE is 2" in checks["svc"].output_tail
    change = changes.record_verification(change.id, checks)
    assert change.all_verified and change.status is ChangeStatus.VERIFIED
    shown = change.as_json()
    assert [m["project"] for m in shown["members"]] == ["lib", "svc", "app"]
    assert all(m["verified"] is True and m["status"] == "succeeded" for m in shown["members"])
    # The checkouts are gone afterwards.
    assert not list(registry.settings.home.glob("workspaces/*/worktrees/change-*"))

    # app's branch name is taken in its repository by other work: nothing is delivered.
    app_repo = registry.root / "repos" / "app"
    app_branch = f"orch/app/{app_task.id}"
    git(app_repo, "checkout", "-q", "-b", app_branch)
    (app_repo / "other.txt").write_text("other work\n")
    git(app_repo, "add", "other.txt")
    git(app_repo, "commit", "-q", "-m", "other work")
    git(app_repo, "checkout", "-q", "main")
    with pytest.raises(ChangeError, match="nothing delivered; app: "):
        deliver_change(store, loaded, registry.settings.home, change, "local")
    for project, task in (("lib", lib_task), ("svc", svc_task)):
        branches = git(registry.root / "repos" / project, "branch", "--list", f"orch/{project}/*")
        assert branches == "", (project, task.id)
    assert changes.require(change.id).delivery_error.startswith("nothing delivered")

    git(app_repo, "branch", "-q", "-D", app_branch)
    lines: list[str] = []
    delivered = deliver_change(
        store, loaded, registry.settings.home, change, "local", report=lines.append
    )
    assert delivered.status is ChangeStatus.DELIVERED and delivered.delivered_to == "local"
    assert [line.split()[1] for line in lines] == [
        f"orch/lib/{lib_task.id}",
        f"orch/svc/{svc_task.id}",
        f"orch/app/{app_task.id}",
    ]
    lib_branch = f"orch/lib/{lib_task.id}"
    assert git(lib_main, "show", f"{lib_branch}:lib.py") == "VALUE = 2"


def test_a_failed_member_fails_the_change_and_it_is_not_delivered(
    registry: RegistryDir, store: TaskStore
) -> None:
    loaded = registry.load()
    graph = last_or_detect(loaded.projects, registry.settings)
    changes = ChangeSets(store)
    change, tasks = changes.create("Break it ERROR", ["lib", "svc"], graph)
    store.mark_dispatched(tasks[0].id)
    AgentTasks().execute("lib", tasks[0].id, "run-1", LOG)
    change = changes.require(change.id)
    assert change.status is ChangeStatus.FAILED
    with pytest.raises(ChangeError, match="only a change verified together is delivered"):
        deliver_change(store, loaded, registry.settings.home, change, "local")


def test_a_change_set_needs_two_distinct_projects(registry: RegistryDir, store: TaskStore) -> None:
    loaded = registry.load()
    graph = last_or_detect(loaded.projects, registry.settings)
    with pytest.raises(ChangeError, match="two projects or more"):
        ChangeSets(store).create("x", ["lib"], graph)
    with pytest.raises(ChangeError, match="named twice: lib"):
        ChangeSets(store).create("x", ["lib", "lib", "svc"], graph)
    assert store.tasks() == []


def test_the_sensor_records_the_change_and_the_run_verifies_it_together(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    defs = build_change_defs()
    (sensor,) = defs.sensors or []
    assert sensor.name == CHANGE_SETS_SENSOR
    (asset,) = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    resources = {"agent_tasks": AgentTasks()}
    loaded = registry.load()
    graph = last_or_detect(loaded.projects, registry.settings)
    change, _tasks = ChangeSets(store).create(
        "Raise VALUE\nWRITE lib.py VALUE = 2", ["lib", "svc"], graph
    )

    first = evaluate_sensor(sensor, instance, None, resources)
    (request,) = first.dynamic_partitions_requests
    assert list(request.partition_keys) == [change.id]
    assert first.run_requests == []
    instance.add_dynamic_partitions(CHANGES_PARTITIONS, [change.id])
    (observed,) = first.asset_events
    assert observed.partition == change.id
    assert observed.metadata["status"].value == "in_progress"
    assert [row.data["project"] for row in observed.metadata["members"].value.records] == [
        "lib",
        "svc",
    ]
    # Nothing moved: nothing recorded, nothing requested.
    again = evaluate_sensor(sensor, instance, first.cursor, resources)
    assert again.asset_events == [] and again.run_requests == []

    run_all(store, change.id)
    due = evaluate_sensor(sensor, instance, again.cursor, resources)
    (run,) = due.run_requests
    assert run.partition_key == change.id and run.asset_selection == [CHANGES_KEY]
    assert due.asset_events[0].metadata["status"].value == "verifying"

    result = dg.materialize(
        [asset], partition_key=change.id, instance=instance, resources=resources
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == ALL_VERIFIED_CHECK and check.passed
    (materialized,) = result.asset_materializations_for_node("orchestration__changes")
    assert materialized.metadata["all_verified"].value is True
    assert ChangeSets(store).require(change.id).status is ChangeStatus.VERIFIED
