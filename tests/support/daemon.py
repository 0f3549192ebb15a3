"""A real `dagster-daemon` for tests: instance and workspace in a temp dir, started in its own
process group, stopped with everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.settings import HOME_VAR
from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT

DAEMON_START_TIMEOUT_S = 120.0

#: The shipped dagster.yaml with shorter polling, so a test waits seconds, not minutes.
FAST_POLLING = {
    "run_queue": {"dequeue_interval_seconds": 1},
    "run_monitoring": {"poll_interval_seconds": 2},
}


def write_instance(root: Path, overrides: Mapping[str, Mapping] = FAST_POLLING) -> Path:
    """DAGSTER_HOME under `root`: the repository's dagster.yaml with `overrides` merged in."""
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dagster_home


def write_workspace(root: Path) -> Path:
    """A workspace loading orchestration.defs.definitions from the repository."""
    workspace = root / "workspace.yaml"
    workspace.write_text(
        textwrap.dedent(
            f"""\
            load_from:
              - python_module:
                  module_name: orchestration.defs.definitions
                  working_directory: {REPO_ROOT}
                  location_name: orchestration
            """
        )
    )
    return workspace


def create_storage(dagster_home: Path, orch_home: Path) -> None:
    """Create the instance's and the task store's databases before any other process opens
    them: two processes creating the same fresh SQLite storage at once can both stamp its
    schema version (alembic then sees two heads)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.get_daemon_heartbeats()
        instance.event_log_storage.get_concurrency_keys()
        instance.all_instigator_state()
    orch_home.mkdir(parents=True, exist_ok=True)
    TaskStore(f"sqlite:///{orch_home / 'tasks.db'}").dispose()


def start_daemon(
    root: Path, workspace: Path, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the daemon's whole process group (it starts a code server and run workers)."""
    for signum, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    try:  # run workers and agents may outlive the daemon in its group
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_healthy(
    daemon: subprocess.Popen[bytes],
    instance: dg.DagsterInstance,
    log_path: Path,
    needed: Iterable[str] = ("SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"),
) -> None:
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while True:
        if daemon.poll() is not None:
            pytest.fail(
                f"dagster-daemon exited ({daemon.returncode}):\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        beats = instance.get_daemon_heartbeats()
        if set(needed) <= set(beats):
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"dagster-daemon not up after {DAEMON_START_TIMEOUT_S:.0f}s (heartbeats: "
                f"{sorted(beats)}):\n" + log_path.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.5)


@dataclass
class DaemonClient:
    """A running daemon's system seen from outside: its instance, its task store, and `orch`
    with the same environment."""

    root: Path
    env: dict[str, str]  # the variables `orch` and the daemon are given
    daemon: subprocess.Popen[bytes]
    daemon_log: Path
    _instance: dg.DagsterInstance | None = field(default=None, repr=False)
    _store: TaskStore | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return Path(self.env[HOME_VAR])

    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        return self._instance

    @property
    def store(self) -> TaskStore:
        if self._store is None:
            self._store = TaskStore(f"sqlite:///{self.home / 'tasks.db'}")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
        if self._instance is not None:
            self._instance.dispose()

    def orch(self, *args: str) -> str:
        """`orch ARGS...` in this process, as a user would run it next to the daemon."""
        result = CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, f"orch {' '.join(args)} failed:\n{result.output}"
        return result.stdout
