"""The sample projects as a user meets them: `orch task add acme_core PROMPT --propagate` makes
a change set with acme_api; acme_api's agent gets acme_core's diff and its `api` contract;
`orch change verify` runs acme_api's `verify_in_change` against acme_core's task commit (the
library's contract tests run then, skipped against acme_api alone) and reports `all_verified`.
The agents are the stand-in `claude` (the samples' profile overridden to `claude_code`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.defs.resources import AgentTasks
from orchestration.samples import ensure_sample_repos
from orchestration.settings import Settings
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT, path_with_fakes

LOG = logging.getLogger("test_sample_change")


def orch(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_propagate_on_the_samples_makes_a_change_verified_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    for name, value in {
        "ORCH_PROJECTS_DIR": str(REPO_ROOT / "projects"),
        "ORCH_CONFIG_DIR": str(REPO_ROOT / "config"),
        "ORCH_HOME": str(home),
        "ORCH__ACME_CORE__AGENT__PROFILE": "claude_code",
        "ORCH__ACME_API__AGENT__PROFILE": "claude_code",
        "PATH": path_with_fakes(os.environ["PATH"]),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.delenv("ORCH_WEBSERVER_URL", raising=False)
    ensure_sample_repos(home / "samples")
    orch("channel", "post", "acme_core.notes", "slugify keeps its behaviour")

    lines = orch("task", "add", "acme_core", "Document slugify", "--propagate").splitlines()
    tasks = dict(reversed(line.split()) for line in lines)
    assert list(tasks) == ["acme_core", "acme_api"]
    store = TaskStore.from_settings(Settings.from_env())
    try:
        for project, task_id in tasks.items():
            store.mark_dispatched(task_id)
            AgentTasks().execute(project, task_id, f"run-{task_id}", LOG)
            assert store.require(task_id).status is TaskStatus.SUCCEEDED
        change_id = store.require(tasks["acme_core"]).session
    finally:
        store.dispose()
    assert change_id is not None

    (api_log,) = home.glob("workspaces/acme_api/agents/*/fake_claude.jsonl")
    start = next(json.loads(line) for line in api_log.read_text().splitlines())
    files = start["orch_files"]
    assert "+- Document slugify" in files["change/acme_core.diff"]["text"]
    assert "slugify keeps its behaviour" in files["channels/acme_core/notes/messages.md"]["text"]
    assert "channels/acme_core/api/src/acme_core/__init__.py" in files
    assert "ORCH_CHANGE_ACME_CORE" in start["change_checkouts"]

    verified = orch("change", "verify", change_id)
    assert "acme_api: passed (`python3 tests/in_change.py`: 7 passed, 0 failed)" in verified
    shown = json.loads(orch("change", "show", change_id, "--json"))
    assert shown["all_verified"] is True and shown["status"] == "verified"
    assert [m["project"] for m in shown["members"]] == ["acme_core", "acme_api"]
