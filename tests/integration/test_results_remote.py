"""The results remote: a task's branch reaches the bare repository ORCH_RESULTS_REMOTE names
when the task ends, and another host (another ORCH_HOME, the same task database) shows and
delivers it from there. A value git must not be given never reaches git."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.defs.resources import AgentTasks
from orchestration.settings import Settings
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from tests.support.git import git
from tests.support.paths import path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_results_remote")


@pytest.fixture
def registry(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[RegistryDir]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.setenv(TASKS_DB_URL_VAR, f"sqlite:///{tmp_path / 'shared-tasks.db'}")
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    registry_dir.project("alpha", "agent:\n  profile: claude_code\n")
    yield registry_dir


def run_task(prompt: str) -> str:
    store = TaskStore.from_settings(Settings.from_env())
    try:
        task = store.add("alpha", prompt)
        assert task is not None
        store.mark_dispatched(task.id)
        AgentTasks().execute("alpha", task.id, f"run-{task.id}", LOG)
        assert store.require(task.id).status is TaskStatus.SUCCEEDED
        return task.id
    finally:
        store.dispose()


def test_a_task_branch_reaches_the_remote_and_another_host_delivers_it(
    registry: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = tmp_path / "results.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    monkeypatch.setenv("ORCH_RESULTS_REMOTE", str(remote))
    task_id = run_task("Write it\nWRITE notes.txt from the first host")
    branch = f"orch/alpha/{task_id}"
    store = TaskStore.from_settings(Settings.from_env())
    commit = store.require(task_id).commit
    store.dispose()
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == commit

    # Another host: its own ORCH_HOME, no private clone yet.
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "other-host"))
    diff = CliRunner().invoke(main, ["task", "diff", task_id], catch_exceptions=False)
    assert diff.exit_code == 0, diff.output
    assert "+from the first host" in diff.output
    delivered = CliRunner().invoke(
        main, ["task", "deliver", task_id, "--to", "local"], catch_exceptions=False
    )
    assert delivered.exit_code == 0, delivered.output
    user = registry.root / "repos" / "alpha"
    assert git(user, "rev-parse", f"refs/heads/{branch}") == commit


def test_a_value_git_must_not_be_given_is_refused_and_the_task_stands(
    registry: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setenv("ORCH_RESULTS_REMOTE", "--upload-pack=touch /tmp/pwned")
    with caplog.at_level(logging.ERROR):
        task_id = run_task("Write it\nWRITE notes.txt hello")
    assert any("did not reach the results remote" in r.message for r in caplog.records)
    assert "looks like a git option" in caplog.text
    diff = CliRunner().invoke(main, ["task", "diff", task_id])
    assert diff.exit_code == 1
    assert "ORCH_RESULTS_REMOTE" in diff.output
