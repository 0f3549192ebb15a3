"""The real dagster-webserver on the shipped workspace.yaml and registry, asked over GraphQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from orchestration.samples import SAMPLE_PROJECTS, ensure_sample_repos
from orchestration.settings import HOME_VAR, PROJECTS_DIR_VAR, RESOURCES_DIR_VAR

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 10.0
ROLES = ("source", "manifest", "verification", "tasks")

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""

ASSETS_QUERY = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        assetGroups { groupName assetKeys { path } }
      }
    }
    ... on PythonError { message }
  }
  assetNodes {
    assetKey { path }
    groupName
    hasAssetChecks
    jobNames
  }
}
"""


@dataclass
class Webserver:
    """A running webserver: where it answers and where its output goes."""

    url: str
    log: Path

    def graphql(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            body = json.load(response)
        assert "errors" not in body, f"GraphQL errors: {body['errors']}"
        return body["data"]

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(
    server: Webserver, process: subprocess.Popen[bytes], deadline: float
) -> dict[str, Any]:
    """Poll /server_info, then the workspace, until the code location has loaded."""
    while True:
        if process.poll() is not None:
            pytest.fail(f"the webserver exited with {process.returncode}:\n{server.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the webserver did not load the workspace in time:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=2) as response:
                json.load(response)
            workspace = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        entries = workspace.get("locationEntries") or []
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            return workspace
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the webserver's whole process group (it starts a code server of its own)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=15)


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    root = tmp_path_factory.mktemp("webserver")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    orch_home = root / "orch_home"
    ensure_sample_repos(orch_home / "samples")
    port = free_port()
    server = Webserver(url=f"http://127.0.0.1:{port}", log=root / "webserver.log")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        HOME_VAR: str(orch_home),
        PROJECTS_DIR_VAR: str(REPO_ROOT / "projects"),
        RESOURCES_DIR_VAR: str(REPO_ROOT / "resources"),
    }
    argv = [
        sys.executable,
        "-m",
        "dagster_webserver",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
    ]
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(server, process, time.monotonic() + STARTUP_TIMEOUT_S)
        yield server
    finally:
        stop(process)


def test_workspace_location_loads(webserver: Webserver) -> None:
    workspace = webserver.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace"
    (entry,) = workspace["locationEntries"]
    assert entry["name"] == "orchestration"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_sample_projects_are_asset_groups(webserver: Webserver) -> None:
    data = webserver.graphql(ASSETS_QUERY)
    repositories = data["repositoriesOrError"]
    assert repositories["__typename"] == "RepositoryConnection", repositories
    groups = {
        group["groupName"]: {"/".join(key["path"]) for key in group["assetKeys"]}
        for repository in repositories["nodes"]
        for group in repository["assetGroups"]
    }
    for project in SAMPLE_PROJECTS:
        assert groups.get(project) == {f"{project}/{role}" for role in ROLES}
    assert "orchestration/registry" in groups.get("orchestration", set())

    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert nodes["orchestration/registry"]["hasAssetChecks"] is True
    for project in SAMPLE_PROJECTS:
        for role in ROLES:
            assert nodes[f"{project}/{role}"]["groupName"] == project
        assert "refresh" in nodes[f"{project}/source"]["jobNames"]
    assert nodes["acme_api/verification"]["hasAssetChecks"] is True
