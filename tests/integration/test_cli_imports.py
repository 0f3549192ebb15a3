"""The commands that do not talk to the Dagster instance run without importing Dagster (about
a second of start-up), and listing tasks imports neither the registry nor git: each command runs
in a fresh interpreter against a real registry, and the test looks at what it imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

#: Runs `orch ARGS...` in this interpreter, then fails if it imported any module named in
#: FORBIDDEN (comma-separated; a name stands for its submodules too).
CHILD = """\
import os, sys
from orchestration.cli import main
try:
    status = main(sys.argv[1:], prog_name="orch", standalone_mode=False)
except SystemExit as exc:
    status = exc.code
for name in os.environ["FORBIDDEN"].split(","):
    loaded = sorted(m for m in sys.modules if m == name or m.startswith(name + "."))
    if loaded:
        sys.exit(f"imported {len(loaded)} {name} module(s): {', '.join(loaded[:5])}")
sys.exit(status or 0)
"""


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    """Two projects, one with a schedule (validating it once imported Dagster)."""
    registry_dir.project("alpha", 'schedule: "0 6 * * 1-5"\n')
    registry_dir.project("beta")
    return registry_dir


@pytest.fixture
def task_id(registry: RegistryDir) -> str:
    store = TaskStore.from_settings(registry.settings, environ={})
    try:
        task = store.add("alpha", "make the tests pass")
    finally:
        store.dispose()
    assert task is not None
    return task.id


def run_orch(
    registry: RegistryDir, *args: str, forbidden: tuple[str, ...] = ("dagster",)
) -> subprocess.CompletedProcess[str]:
    settings = registry.settings
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DAGSTER_HOME", "ORCH_TASKS_DB_URL")
    }
    env |= {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "FORBIDDEN": ",".join(forbidden),
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], "Run coding agents across many projects"),
        (["task", "list"], "make the tests pass"),
        (["task", "show", "{task_id}"], "make the tests pass"),
        (["task", "add", "beta", "write the docs"], ""),
        (["projects", "list"], "alpha"),
        (["validate"], "2 project(s) valid, 0 error(s)"),
        (["config", "show", "alpha"], "0 6 * * 1-5"),
        (["deps", "graph"], "no dependencies between projects"),
        (["deps", "detect"], "2 project(s), 0 edge(s)"),
        (["allocation", "--help"], "rebalance"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_command_does_not_import_dagster(
    registry: RegistryDir, task_id: str, args: list[str], expected: str
) -> None:
    argv = [arg.format(task_id=task_id) for arg in args]
    result = run_orch(registry, *argv)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_the_check_sees_dagster_when_a_command_imports_it(registry: RegistryDir) -> None:
    # `allocation show` needs the instance, so it imports Dagster (then finds no instance).
    result = run_orch(registry, "allocation", "show")
    assert "error: no Dagster instance yet" in result.stderr
    assert "dagster module(s): dagster" in result.stderr


@pytest.mark.parametrize("args", [["task", "list"], ["task", "show", "{task_id}"]])
def test_listing_tasks_needs_only_the_task_store(
    registry: RegistryDir, task_id: str, args: list[str]
) -> None:
    # What keeps `orch task list` near the cost of importing its libraries (bench/cli.py).
    argv = [arg.format(task_id=task_id) for arg in args]
    result = run_orch(registry, *argv, forbidden=("dagster", "git", "orchestration.registry"))
    assert result.returncode == 0, result.stderr


def test_detecting_dependencies_needs_neither_dagster_nor_the_task_store(
    registry: RegistryDir,
) -> None:
    # What keeps `orch deps detect` near the cost of the detection itself (bench/deps.py
    # --npm-single): Dagster and the task store (SQLAlchemy) are each a tenth of a second or more.
    result = run_orch(
        registry, "deps", "detect", forbidden=("dagster", "sqlalchemy", "orchestration.tasks")
    )
    assert result.returncode == 0, result.stderr
    assert "2 project(s), 0 edge(s), 0 cycle(s); 2 repository(ies) parsed" in result.stdout
