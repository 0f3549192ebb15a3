"""A real `dagster-daemon` for tests and benchmarks: instance and workspace in a temporary
directory, started in its own process group, stopped with everything it started.

    with running_daemon(root, workspace, env) as (daemon, log_path): ...

does it all (storage created first, heartbeats awaited, the group stopped however it ends);
`start_daemon`, `wait_healthy` and `stop` are its steps. `RestartableDaemon` is one that a
chaos test may kill and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.instance import open_instance
from orchestration.settings import HOME_VAR, SANDBOX_VAR
from orchestration.sharding import workspace_document
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from tests.support.paths import REPO_ROOT

DAEMON_START_TIMEOUT_S = 120.0
#: The daemons a task system needs: sensors, the run queue, run monitoring.
TASK_DAEMONS = ("SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING")
#: Variables of this machine that must not reach a daemon under test: it gets its own.
MACHINE_SETTINGS = ("ORCH_", "DAGSTER_")

#: The shipped dagster.yaml with shorter polling, so a test waits seconds, not minutes.
FAST_POLLING = {
    "run_queue": {"dequeue_interval_seconds": 1},
    "run_monitoring": {"poll_interval_seconds": 2},
}


def write_instance(
    root: Path,
    overrides: Mapping[str, Mapping] = FAST_POLLING,
    *,
    replace: Mapping[str, Mapping] | None = None,
    source: Path = REPO_ROOT / "dagster.yaml",
) -> Path:
    """DAGSTER_HOME under `root`: the repository's dagster.yaml (or `source`, such as
    deploy/dagster.yaml) with `overrides` merged into its sections and the sections in
    `replace` replaced whole (`{}`: Dagster's defaults)."""
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    config = yaml.safe_load(source.read_text())
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    for section, values in (replace or {}).items():
        config[section] = dict(values)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dagster_home


def write_workspace(root: Path, extra: Mapping[str, str] | None = None, shards: int = 1) -> Path:
    """A workspace loading orchestration.defs.definitions from the repository (split over
    `shards` code locations, as `orch up --shards` does), and the `extra` code locations
    (location name -> "module:attribute", e.g. a benchmark's baseline)."""
    load_from = workspace_document(shards, str(REPO_ROOT))["load_from"]
    assert isinstance(load_from, list)
    for name, target in (extra or {}).items():
        module, _, attribute = target.partition(":")
        entry = {"module_name": module, "working_directory": str(REPO_ROOT)}
        entry |= {"attribute": attribute} if attribute else {}
        load_from.append({"python_module": entry | {"location_name": name}})
    workspace = root / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": load_from}, sort_keys=False))
    return workspace


def daemon_environment(
    env: Mapping[str, str],
    *,
    drop: Iterable[str] = (),
    path: str | None = None,
    sandbox: bool = True,
) -> dict[str, str]:
    """A daemon's environment: this process's, without this machine's ORCH_ and DAGSTER_
    settings or any variable starting with one of `drop`, then `env`, then `path` as PATH.

    `sandbox=False` runs the agents unsandboxed: for the tests and benchmarks of scheduling
    whose stand-ins all log to one shared file, which no agent sandbox can reach (the sandbox
    itself is tested in tests/integration/test_sandbox.py and tests/system/test_daemon_tasks.py).
    """
    prefixes = (*MACHINE_SETTINGS, *drop)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    environment = {**inherited, **env} | ({"PATH": path} if path is not None else {})
    if not sandbox:
        environment[SANDBOX_VAR] = "off"
    return environment


def create_storage(dagster_home: Path, orch_home: Path, tasks_url: str | None = None) -> None:
    """Create the instance's and the task store's databases before the daemon opens them, as
    `orch up` does: the daemon takes no lock, and two processes creating the same fresh SQLite
    storage at once can both stamp its schema version (alembic then sees two heads). The task
    store is `tasks_url` (ORCH_TASKS_DB_URL) when given, else ORCH_HOME/tasks.db."""
    open_instance(dagster_home).dispose()
    orch_home.mkdir(parents=True, exist_ok=True)
    TaskStore(tasks_url or f"sqlite:///{orch_home / 'tasks.db'}").dispose()


def start_daemon(
    root: Path, workspace: Path, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """`dagster-daemon run` in `root` with exactly `env`, in a process group of its own, its
    output to `log_path`."""
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
    needed: Iterable[str] = TASK_DAEMONS,
    timeout_s: float = DAEMON_START_TIMEOUT_S,
) -> None:
    """Return once each of the `needed` daemons has sent a heartbeat; fail with the daemon's
    log if it exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
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
                f"dagster-daemon not up after {timeout_s:.0f}s (heartbeats: "
                f"{sorted(beats)}):\n" + log_path.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.5)


@contextmanager
def running_daemon(
    root: Path,
    workspace: Path,
    env: Mapping[str, str],
    *,
    needed: Iterable[str] = TASK_DAEMONS,
    timeout_s: float = DAEMON_START_TIMEOUT_S,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A daemon on the instance in env's DAGSTER_HOME, healthy: (the process, its log, which
    is `root`/daemon.log). Stopped with its whole process group however the block ends."""
    create_storage(Path(env["DAGSTER_HOME"]), Path(env[HOME_VAR]), env.get(TASKS_DB_URL_VAR))
    log_path = root / "daemon.log"
    daemon = start_daemon(root, workspace, env, log_path)
    try:
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            wait_healthy(daemon, instance, log_path, needed, timeout_s)
        yield daemon, log_path
    finally:
        stop(daemon)


class RestartableDaemon:
    """A `dagster-daemon` that can be SIGKILLed like a crash and started again with the same
    command and environment, as a supervisor would (chaos tests). Each start is a process group
    of its own (the daemon, its code server, their run workers); the code server and run
    workers of a killed daemon live on, as they do after a real crash, until `stop_all` ends
    every group started. Its output goes to one log, each start appending."""

    def __init__(self, root: Path, workspace: Path, env: Mapping[str, str], log_path: Path):
        self.root = root
        self.workspace = workspace
        self.env = dict(env)
        self.log_path = log_path
        self.generations: list[subprocess.Popen[bytes]] = []
        self.restarts = 0

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.generations[-1]

    @property
    def groups(self) -> list[int]:
        """The process groups started: one per start, each led by that start's daemon."""
        return [process.pid for process in self.generations]

    def start(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dagster-daemon"),
                    "run",
                    "-w",
                    str(self.workspace),
                ],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.generations.append(process)
        return process

    def kill(self) -> int:
        """SIGKILL the current daemon process alone (its children live on); its pid."""
        process = self.current
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
        return process.pid

    def restart(self) -> subprocess.Popen[bytes]:
        """Start the daemon again after `kill` (or after it died)."""
        self.restarts += 1
        return self.start()

    def stop_all(self) -> None:
        """Stop the current daemon as `stop` does, then kill every group ever started."""
        if self.generations:
            stop(self.current)
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in self.generations:
            if process.poll() is None:
                process.wait(timeout=10)


@contextmanager
def restartable_daemon(
    root: Path,
    workspace: Path,
    env: Mapping[str, str],
    *,
    needed: Iterable[str] = TASK_DAEMONS,
    timeout_s: float = DAEMON_START_TIMEOUT_S,
) -> Iterator[RestartableDaemon]:
    """`running_daemon`, restartable: healthy when the block starts, every process group it
    started stopped however the block ends. Its log is `root`/daemon.log."""
    create_storage(Path(env["DAGSTER_HOME"]), Path(env[HOME_VAR]), env.get(TASKS_DB_URL_VAR))
    daemon = RestartableDaemon(root, workspace, env, root / "daemon.log")
    try:
        daemon.start()
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            wait_healthy(daemon.current, instance, daemon.log_path, needed, timeout_s)
        yield daemon
    finally:
        daemon.stop_all()


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
            url = self.env.get(TASKS_DB_URL_VAR) or f"sqlite:///{self.home / 'tasks.db'}"
            self._store = TaskStore(url)
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


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    resources: Mapping[str, object],
) -> dg.SensorResult:
    """One evaluation of `sensor` in this process, its asset events recorded in `instance` as
    the sensor daemon records a tick's (`instance.report_runless_asset_event`)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult), result
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result
