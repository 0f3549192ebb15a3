"""A project added while the orchestrator runs: `orch up` (webserver + daemon) serves a
registry of one project; a second project file is written and a task queued for it with
`orch task add`. The dispatch sensor sees the project in the live registry, asks the webserver
to reload the code location, and the task runs to success, with no restart and no button."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.tasks.models import TaskStatus
from tests.support.daemon import stop
from tests.support.git import make_git_repo
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120.0
#: Reload (seconds), the daemon's workspace refresh (up to a minute), the run itself.
TASK_TIMEOUT_S = 240.0

ASSETS_QUERY = "query { assetNodes { assetKey { path } } }"


@dataclass
class Running:
    url: str
    env: dict[str, str]
    log: Path
    registry: RegistryDir

    def orch(self, *args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, f"orch {' '.join(args)}:\n{result.output}"
        return result.stdout

    def asset_keys(self) -> set[str]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": ASSETS_QUERY}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        return {"/".join(node["assetKey"]["path"]) for node in body["data"]["assetNodes"]}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("live")
    registry = RegistryDir.create(root)
    registry.project("early", "agent: {profile: demo}\n")
    port = _free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("ORCH_", "DAGSTER_"))
    }
    env |= registry.settings.environment()
    env["DAGSTER_HOME"] = str(registry.settings.home / "dagster")
    log = root / "orch-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "orch"),
                "up",
                "--port",
                str(port),
                "--workspace",
                str(REPO_ROOT / "workspace.yaml"),
            ],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Running(f"http://127.0.0.1:{port}", env, log, registry)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"orch up exited with {process.returncode}:\n{server.output()}")
            try:
                if "early/tasks" in server.asset_keys():
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"orch up did not serve the registry in time:\n{server.output()}")
            time.sleep(1)
        yield server
    finally:
        stop(process)


def test_a_project_added_while_running_gets_its_task_run(running: Running) -> None:
    repo = make_git_repo(running.registry.root / "repos" / "late", {"README.md": "late\n"})
    running.registry.write("projects/late.yaml", f"name: late\nrepo: {repo}\n")
    task_id = running.orch("task", "add", "late", "Write a note").strip()

    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        task = json.loads(running.orch("task", "show", task_id, "--json"))
        if task["status"] not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"task still {task['status']} ({task['reason']}):\n{running.output()}")
        time.sleep(1)
    assert task["status"] == TaskStatus.SUCCEEDED, (task, running.output())
    assert "late/tasks" in running.asset_keys()  # the UI shows the new project too
