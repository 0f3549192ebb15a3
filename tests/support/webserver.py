"""A real `dagster-webserver` for the tests and the benchmarks: a free port, the workspace
query, and a server started in its own process group, waited for until every code location
has loaded, and stopped with its code servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestration.webserver import WebserverError, post_graphql
from tests.support.daemon import stop

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


class WebserverDown(RuntimeError):
    """The webserver exited, or its code locations did not load in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loaded_workspace(url: str) -> dict | None:
    """The webserver's workspace once every code location has loaded; None before (or while
    the webserver does not answer yet)."""
    try:
        workspace = post_graphql(f"{url}/graphql", WORKSPACE_QUERY, None, 10)["workspaceOrError"]
    except (WebserverError, KeyError, TypeError):
        return None
    entries = workspace.get("locationEntries") or []
    if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
        return workspace
    return None


@dataclass(frozen=True)
class Served:
    url: str
    loaded_s: float  # from the start of the process until every code location had loaded


@contextmanager
def serving(
    target: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    timeout_s: float = 180.0,
) -> Iterator[Served]:
    """`dagster-webserver` on a free port of 127.0.0.1 for `target` (`-w workspace.yaml`, or
    `-m module`), its output in `log`; stopped with its process group however the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "dagster_webserver", *target, "-h", "127.0.0.1", "-p", str(port)]
    began = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code servers are stopped with its process group
        )
    try:
        while loaded_workspace(url) is None:
            if process.poll() is not None or time.perf_counter() - began > timeout_s:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise WebserverDown(f"the webserver did not load its code locations:\n{tail}")
            time.sleep(0.25)
        yield Served(url, time.perf_counter() - began)
    finally:
        stop(process)
