"""Start benchmark: how long a task waits from `orch task add` until its agent starts, with a
small registry (100 projects, one code location) and a large one (10,000 projects, split over
ceil(N / 1000) code locations), one after the other in the same run. Goal: the large one at most
1.5x the small one.

Each size gets its own temporary registry (bench.load's synthetic projects plus a few measured
projects with real git repositories and the shipped `claude_code` profile run by the stand-in
`claude`), instance and task database, and a real `dagster-webserver` and `dagster-daemon` over
the registry split as `orch up --shards N` splits it, each code location served by its own
`dagster api grpc` process (`--layout servers`, as deploy/README.md runs them) or as
`python_module` entries (`--layout modules`). Each sample runs the `orch` executable as a user
would, timed from just before the process starts until the stand-in logs its start.

    .venv/bin/python -m bench.scale_start --quick
    .venv/bin/python -m bench.scale_start --sizes 100,10000

See bench/README.md for what is measured and the results.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import psutil
import yaml

from bench.dispatch import run_times
from bench.load import write_registry as write_synthetic_registry
from bench.machine import discard, finish, loadavg, machine, progress
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR, WEBSERVER_URL_VAR
from orchestration.sharding import Shard, workspace_document
from orchestration.tags import TASK_TAG
from orchestration.tasks.store import TASKS_DB_URL_VAR
from orchestration.webserver import WebserverError, post_graphql
from tests.support.agent_log import events
from tests.support.daemon import (
    create_storage,
    daemon_environment,
    running_daemon,
    stop,
    write_instance,
    write_workspace,
)
from tests.support.orchestrator import LOG_VAR, Orchestrator, write_runnable_project
from tests.support.paths import path_with_fakes
from tests.support.webserver import free_port, serving

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "scale_start.json"
SIZES = (100, 10_000)
QUICK_SIZES = (100, 2000)
SAMPLES = 8
QUICK_SAMPLES = 3
GOAL = 1.5  # request -> agent start, the largest size over the smallest
#: The default split: one code location per this many projects (one for the small registry).
PROJECTS_PER_SHARD = 1000
#: Projects with real git repositories whose tasks are measured, spread over the shards.
MEASURED = 3
CANDIDATES = [f"live{i}" for i in range(500)]
#: The stand-in's prompt: answer at once, so the agent's own time is nothing.
PROMPT = "SLEEP0 start sample"
#: After the warm-up, before the first sample: the daemon's loops back to their pace.
SETTLE_S = 30.0
#: Between samples, once the system is idle again: the same pause for every size.
PAUSE_S = 2.0
LOAD_TIMEOUT_S = 1500.0
DAEMON_TIMEOUT_S = 900.0
TASK_TIMEOUT_S = 600.0
RSS_EVERY_S = 1.0
#: A synthetic project's `schedule` is rewritten to this, a day that does not come in a run: the
#: generator's crons fall on 12 minutes of the day, 84 projects each at 10,000, whose refresh
#: runs (on a directory that is no git repository) would burst into whichever sample is there.
#: The schedules are still defined, loaded and looked at by the scheduler, as before.
NEVER = '"0 0 29 2 *"'
#: A run's moments (bench.dispatch.run_times), each timed from the request like the agent's start.
STAGES = ("run_created", "launched", "worker_up", "step_start")
#: The table's breakdown: from one moment to the next, medians.
SEGMENTS = (
    ("request -> run created (the command)", None, "run_created"),
    ("run created -> launched (run queue)", "run_created", "launched"),
    ("launched -> run worker up (loads the code location)", "launched", "worker_up"),
    ("run worker up -> step start", "worker_up", "step_start"),
    ("step start -> agent start (claim, git worktree)", "step_start", "agent_start"),
    ("**request -> agent start**", None, "agent_start"),
)
LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus updatedTimestamp } } } }
"""
SENSORS_QUERY = """
query($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    ... on Sensors { results { name sensorState { id status } } }
  }
}
"""
STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""
SENSOR_TICKS_QUERY = """
query($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { name sensorState { ticks(limit: 1) { timestamp } } } }
  }
}
"""


def default_shards(projects: int) -> int:
    """One code location per PROJECTS_PER_SHARD projects (rounded up), one for a small registry."""
    return max(1, math.ceil(projects / PROJECTS_PER_SHARD))


def measured_names(shards: int, count: int = MEASURED) -> list[str]:
    """`count` project names over as many different shards of `shards` as there are, the first
    and last shard among them (shard 0 also holds what exists once: the busiest)."""
    targets = sorted({round(i * (shards - 1) / max(1, count - 1)) for i in range(count)})
    names = [next(n for n in CANDIDATES if Shard(t, shards).holds(n)) for t in targets]
    names += [n for n in CANDIDATES if n not in names][: count - len(names)]
    return names


# --------------------------------------------------------------------------------------------
# The system under test


def write_registry(root: Path, projects: int, measured: Sequence[str]) -> dict[str, str]:
    """bench.load's `projects` synthetic projects (their schedules moved to NEVER) and the
    `measured` ones, each a real git repository whose agent is the shipped `claude_code` profile
    (the stand-in, first on PATH), its log variable passed as a secret. The ORCH_ variables."""
    directory = write_synthetic_registry(root, projects)
    for path in directory.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if "\nschedule: " in text:
            path.write_text(re.sub(r"(?m)^schedule: .*$", f"schedule: {NEVER}", text))
    for name in measured:
        write_runnable_project(root, directory, name)
    return {
        PROJECTS_DIR_VAR: str(directory),
        CONFIG_DIR_VAR: str(root / "config"),
        HOME_VAR: str(root / "home"),
    }


class MemoryWatch:
    """The resident memory of the webserver's and the daemon's process trees, sampled every
    RSS_EVERY_S in a thread: the peak of each code server (a child of either that serves a
    code location) and of their sum, of a run worker (a code server's child), of everything."""

    def __init__(self) -> None:
        self.roots: dict[str, psutil.Process] = {}
        self.code_server_peak_mb: dict[tuple[str, str, int], float] = {}
        self.code_servers_sum_peak_mb = 0.0
        self.run_worker_peak_mb = 0.0
        self.total_peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, owner: str, pid: int) -> None:
        """Watch the process `pid` and its children (code servers it starts, their run
        workers); a code server itself when it serves a location (`dagster api grpc`)."""
        self.roots[owner] = psutil.Process(pid)

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            code_servers = total = 0.0
            for owner, root in list(self.roots.items()):
                try:
                    serves = _location_served(root.cmdline())
                    children = [root] if serves else root.children()
                    total += 0.0 if serves else root.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                for child in children:
                    try:
                        rss = child.memory_info().rss / 2**20
                        location = _location_served(child.cmdline())
                        workers = [w.memory_info().rss / 2**20 for w in child.children(True)]
                    except psutil.Error:
                        continue
                    total += rss + sum(workers)
                    self.run_worker_peak_mb = max(self.run_worker_peak_mb, *workers, 0.0)
                    if location is not None:
                        code_servers += rss
                        key = (owner, location, child.pid)
                        self.code_server_peak_mb[key] = max(
                            self.code_server_peak_mb.get(key, 0.0), rss
                        )
            self.code_servers_sum_peak_mb = max(self.code_servers_sum_peak_mb, code_servers)
            self.total_peak_mb = max(self.total_peak_mb, total)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict[str, Any]:
        peaks = sorted(self.code_server_peak_mb.values())
        return {
            "code_servers": len(peaks),  # processes seen; a restarted one counts again
            "code_server_peak_mb": round(peaks[-1]) if peaks else None,
            "code_server_median_peak_mb": round(statistics.median(peaks)) if peaks else None,
            "code_servers_sum_peak_mb": round(self.code_servers_sum_peak_mb),
            "run_worker_peak_mb": round(self.run_worker_peak_mb),
            "all_processes_peak_mb": round(self.total_peak_mb),
            "per_code_server_peak_mb": {
                f"{owner}:{location}:{pid}": round(mb)
                for (owner, location, pid), mb in sorted(self.code_server_peak_mb.items())
            },
        }


def _location_served(argv: Sequence[str]) -> str | None:
    """The code location a `dagster api grpc` process serves; None for any other process."""
    if "grpc" not in argv or "--location-name" not in argv:
        return None
    return argv[argv.index("--location-name") + 1]


@dataclass
class System:
    """A running webserver and daemon on one registry, and the ways to ask them."""

    orchestrator: Orchestrator
    url: str
    env: dict[str, str]
    added: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return Path(self.env[LOG_VAR])

    def locations(self) -> list[dict[str, Any]]:
        data = post_graphql(f"{self.url}/graphql", LOCATIONS_QUERY, None, 60)
        return data["workspaceOrError"]["locationEntries"]

    def agent_start(self, task_id: str) -> float | None:
        """When the stand-in logged the start of `task_id`'s agent (its own clock), if it has."""
        for entry in events("start", self.log):
            if Path(entry["cwd"]).name == task_id:
                return float(entry["time"])
        return None

    def add(self, project: str, prompt: str) -> dict[str, Any]:
        """`orch task add` as a process, timed to its agent's start; then waits until the task
        has finished and nothing runs or waits."""
        self.added.append(project)
        argv = [str(Path(sys.executable).parent / "orch"), "task", "add", project, prompt]
        began = time.time()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        returned = time.time()
        if done.returncode != 0:
            raise click.ClickException(f"orch task add failed:\n{done.stderr[-2000:]}")
        task_id = done.stdout.strip()
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while (started := self.agent_start(task_id)) is None:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    self.orchestrator.explain(f"the agent of {task_id} did not start")
                )
            time.sleep(0.05)
        (task,) = self.orchestrator.wait_finished(task_id, timeout_s=TASK_TIMEOUT_S)
        if task.status.value != "succeeded":
            raise click.ClickException(self.orchestrator.explain(f"task {task_id}: {task.status}"))
        self.orchestrator.wait_idle(timeout_s=TASK_TIMEOUT_S)
        runs = self.orchestrator.task_runs(task_id)
        times = run_times(self.orchestrator.instance, runs[-1].run_id) if runs else {}
        return {
            "project": project,
            "task": task_id,
            "requested": began,
            "returned_s": round(returned - began, 3),
            "agent_start_s": round(started - began, 3),
            # When the run was made, left the queue, its worker was up, its step started.
            **{f"{name}_s": round(times[name] - began, 3) for name in STAGES if name in times},
            "direct": bool(runs) and all("dagster/sensor_name" not in r.tags for r in runs),
            "said": done.stderr.strip()[-300:],
            "loadavg": loadavg(),
        }

    def stop_sensors(self, names: Sequence[str]) -> list[str]:
        """Turn off the sensors called `names` in every code location, as an operator would in
        the UI; `location:sensor` of each one turned off."""
        stopped = []
        for entry in self.locations():
            selector = {
                "repositoryName": "__repository__",
                "repositoryLocationName": entry["name"],
            }
            data = post_graphql(f"{self.url}/graphql", SENSORS_QUERY, {"selector": selector}, 60)
            for sensor in data["sensorsOrError"].get("results") or []:
                if sensor["name"] not in names:
                    continue
                answer = post_graphql(
                    f"{self.url}/graphql", STOP_SENSOR, {"id": sensor["sensorState"]["id"]}, 60
                )["stopSensor"]
                if answer["__typename"] != "StopSensorMutationResult":
                    raise click.ClickException(f"could not stop {sensor['name']}: {answer}")
                stopped.append(f"{entry['name']}:{sensor['name']}")
        return stopped

    def wait_daemon_ticks(self, locations: Sequence[str], since: float, timeout_s: float) -> float:
        """Wait until the daemon has ticked a sensor of every location (so its own code server
        for each has loaded); the seconds from `since` until it had."""
        waiting = set(locations)
        deadline = time.monotonic() + timeout_s
        while waiting:
            for location in sorted(waiting):
                selector = {"repositoryName": "__repository__", "repositoryLocationName": location}
                try:
                    data = post_graphql(
                        f"{self.url}/graphql", SENSOR_TICKS_QUERY, {"selector": selector}, 60
                    )["sensorsOrError"]
                except WebserverError:
                    continue
                ticks = [
                    tick["timestamp"]
                    for sensor in data.get("results") or []
                    for tick in (sensor["sensorState"]["ticks"] or [])
                ]
                if any(t >= since for t in ticks):
                    waiting.discard(location)
            if self.orchestrator.daemon.poll() is not None:
                raise click.ClickException(self.orchestrator.explain("the daemon exited"))
            if waiting and time.monotonic() > deadline:
                raise click.ClickException(
                    self.orchestrator.explain(f"no sensor tick from {sorted(waiting)}")
                )
            if waiting:
                time.sleep(2)
        return time.time() - since


@contextmanager
def code_servers(
    root: Path, shards: int, env: dict[str, str], memory: MemoryWatch
) -> Iterator[Path]:
    """One `dagster api grpc` process per code location of `shards` (as on several hosts,
    deploy/README.md), and a workspace naming them as `grpc_server` entries, so that neither
    the webserver nor the daemon starts (or, on its workspace refresh, restarts) code servers of
    its own. Yields once every server answers its health check."""
    dagster = str(Path(sys.executable).parent / "dagster")
    servers: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    # The servers open the instance at once: its SQLite storage must exist before them.
    create_storage(Path(env["DAGSTER_HOME"]), Path(env[HOME_VAR]), env.get(TASKS_DB_URL_VAR))
    try:
        locations = workspace_document(shards, str(REPO_ROOT))["load_from"]
        assert isinstance(locations, list)
        for entry in locations:
            module = entry["python_module"]
            port = free_port()
            argv = [dagster, "api", "grpc", "-m", module["module_name"]]
            argv += ["-d", module["working_directory"], "-h", "127.0.0.1", "-p", str(port)]
            argv += ["--location-name", module["location_name"]]
            argv += ["-a", module["attribute"]] if "attribute" in module else []
            with (root / f"code-server-{module['location_name']}.log").open("wb") as log:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            servers.append((module["location_name"], port, process))
            memory.watch(f"server {module['location_name']}", process.pid)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        for name, port, process in servers:
            while not _answers(dagster, port):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (root / f"code-server-{name}.log").read_text(errors="replace")[-3000:]
                    raise click.ClickException(f"code server {name} did not start:\n{tail}")
                time.sleep(1)
        workspace = root / "workspace.yaml"
        entries = [
            {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": name}}
            for name, port, _ in servers
        ]
        workspace.write_text(yaml.safe_dump({"load_from": entries}, sort_keys=False))
        yield workspace
    finally:
        for _, _, process in servers:
            stop(process)


def _answers(dagster: str, port: int) -> bool:
    done = subprocess.run(
        [dagster, "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@contextmanager
def running_system(
    root: Path, projects: int, shards: int, measured: Sequence[str], layout: str = "servers"
) -> Iterator[tuple[System, dict[str, Any]]]:
    """A registry of `projects` synthetic and the `measured` projects under `root`, served over
    `shards` code locations by a webserver and a daemon: the system, and what starting it took.
    `layout` `servers`: a code server per location started here (`code_servers`); `modules`:
    the locations as `python_module` entries, for which the webserver and the daemon each
    start their own."""
    setup: dict[str, Any] = {}
    began = time.monotonic()
    (root / "agents").mkdir(parents=True)
    env = daemon_environment(
        write_registry(root, projects, measured),
        path=path_with_fakes(os.environ["PATH"]),
        sandbox=False,
    )
    env["DAGSTER_HOME"] = str(write_instance(root))
    env[LOG_VAR] = str(root / "agents" / "fake_claude.jsonl")
    setup["write_s"] = round(time.monotonic() - began, 1)
    # As `orch up` does before it serves (it detects dependencies): one process reads the
    # registry first, and keeps what it read under ORCH_HOME (500 projects or more).
    began = time.monotonic()
    orch = str(Path(sys.executable).parent / "orch")
    subprocess.run([orch, "projects", "list"], env=env, capture_output=True, check=False)
    setup["first_read_s"] = round(time.monotonic() - began, 1)
    with MemoryWatch() as memory, ExitStack() as servers:
        started = time.time()
        if layout == "servers":
            workspace = servers.enter_context(code_servers(root, shards, env, memory))
            setup["code_servers_up_s"] = round(time.time() - started, 1)
        else:
            workspace = write_workspace(root, shards=shards)
        with serving(
            ["-w", str(workspace)], env, root / "webserver.log", timeout_s=LOAD_TIMEOUT_S
        ) as served:
            setup["webserver_loaded_s"] = round(served.loaded_s, 1)
            memory.watch("webserver", _webserver_pid(served.url))
            env[WEBSERVER_URL_VAR] = served.url
            with running_daemon(root, workspace, env, timeout_s=DAEMON_TIMEOUT_S) as (daemon, log):
                memory.watch("daemon", daemon.pid)
                system = System(Orchestrator(root, dict(env), daemon, log), served.url, env)
                try:
                    entries = system.locations()
                    setup["locations_loaded_s"] = {
                        e["name"]: round(e["updatedTimestamp"] - started, 1) for e in entries
                    }
                    daemon_up = time.time()
                    setup["daemon_ticked_all_s"] = round(
                        system.wait_daemon_ticks(
                            [e["name"] for e in entries], daemon_up, DAEMON_TIMEOUT_S
                        ),
                        1,
                    )
                    yield system, setup
                finally:
                    setup["memory"] = memory.summary()
                    system.orchestrator.close()


def _webserver_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if "dagster_webserver" in command and port in command:
            return child.pid
    raise click.ClickException(f"no webserver process serving {url}")


# --------------------------------------------------------------------------------------------
# Measuring


def measure_size(
    projects: int,
    shards: int,
    samples: int,
    measured: Sequence[str],
    keep: bool,
    stop_sensors: Sequence[str] = (),
    layout: str = "servers",
) -> dict[str, Any]:
    """Start a system of `projects` over `shards` locations (the sensors `stop_sensors` turned
    off; `layout` as `running_system`), warm each measured project's location with one task,
    let the daemon settle, then time `samples` tasks, one at a time, round robin over the
    measured projects."""
    root = Path(tempfile.mkdtemp(prefix=f"orch-bench-start-{projects}-"))
    result: dict[str, Any] = {
        "projects": projects,
        "shards": shards,
        "layout": layout,
        "measured": {name: _location(name, shards) for name in measured},
    }
    began = time.monotonic()
    progress(f"{projects} projects over {shards} code location(s) in {root}")
    try:
        with running_system(root, projects, shards, measured, layout) as (system, setup):
            result["setup"] = setup
            result["stopped_sensors"] = system.stop_sensors(stop_sensors) if stop_sensors else []
            progress(
                f"  webserver loaded in {setup['webserver_loaded_s']} s, the daemon ticked every "
                f"location {setup['daemon_ticked_all_s']} s later; warming up"
            )
            result["warm_up"] = [system.add(name, f"{PROMPT} warm-up") for name in measured]
            progress(
                "  warm-up request -> agent start: "
                + ", ".join(f"{w['agent_start_s']:.2f} s" for w in result["warm_up"])
                + f"; settling {SETTLE_S:.0f} s"
            )
            time.sleep(SETTLE_S)
            result["loadavg_before"] = loadavg()
            found = []
            for index in range(samples):
                time.sleep(PAUSE_S)
                sample = system.add(measured[index % len(measured)], f"{PROMPT} {index}")
                found.append(sample)
                progress(
                    f"  sample {index + 1}/{samples} ({sample['project']}): "
                    f"{sample['agent_start_s']:.2f} s, command {sample['returned_s']:.2f} s, "
                    f"{'submitted' if sample['direct'] else 'by the sensor'}"
                )
            result["samples"] = found
            result["loadavg_after"] = loadavg()
            result["non_task_runs"] = _non_task_runs(system)
    finally:
        result["wall_s"] = round(time.monotonic() - began, 1)
        discard(root, keep)
    result["summary"] = summarize(result["samples"])
    return result


def _location(name: str, shards: int) -> str:
    return next(s.location for s in (Shard(i, shards) for i in range(shards)) if s.holds(name))


def _non_task_runs(system: System) -> int:
    """Runs that were no task's (a refresh, a sensor's upkeep) while the system was up."""
    runs = system.orchestrator.instance.get_runs(limit=1000)
    return sum(1 for run in runs if TASK_TAG not in run.tags)


def percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` quantile (nearest rank) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def summarize(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    starts = [s["agent_start_s"] for s in samples]
    returns = [s["returned_s"] for s in samples]
    return {
        "samples": len(samples),
        "median_s": round(statistics.median(starts), 3) if starts else None,
        "p90_s": percentile(starts, 0.9),
        "min_s": min(starts, default=None),
        "max_s": max(starts, default=None),
        "command_median_s": round(statistics.median(returns), 3) if returns else None,
        "direct": sum(1 for s in samples if s["direct"]),
        "segments_median_s": {
            label: _median_between(samples, start, end) for label, start, end in SEGMENTS
        },
    }


def _median_between(samples: Sequence[dict[str, Any]], start: str | None, end: str) -> float | None:
    """The median of `end` - `start` (from the request when `start` is None) over the samples
    that have both."""
    values = [
        s[f"{end}_s"] - (s[f"{start}_s"] if start else 0.0)
        for s in samples
        if f"{end}_s" in s and (start is None or f"{start}_s" in s)
    ]
    return round(statistics.median(values), 3) if values else None


def run_start_benchmark(
    sizes: Sequence[int],
    samples: int,
    shards_for: Callable[[int], int] = default_shards,
    *,
    rounds: int = 1,
    keep: bool = False,
    partial: Callable[[list[dict[str, Any]]], None] | None = None,
    stop_sensors: Sequence[str] = (),
    layout: str = "servers",
) -> dict[str, Any]:
    """Request -> agent start at each of `sizes` (projects), `samples` tasks each, the registry
    over `shards_for(size)` code locations; one size after the other, never two systems at
    once. A second round runs the sizes in the other order. Pooled per size, and the ratio of
    the largest size's median (and p90) to the smallest's. `partial` is given the runs so far
    after each size (to keep them should a later one fail)."""
    measured = measured_names(max(shards_for(size) for size in sizes))
    runs = []
    for index in range(rounds):
        order = list(sizes) if index % 2 == 0 else list(reversed(sizes))
        for size in order:
            progress(f"round {index + 1}/{rounds}: {size} projects")
            run = measure_size(
                size, shards_for(size), samples, measured, keep, stop_sensors, layout
            )
            runs.append(run | {"round": index + 1})
            if partial is not None:
                partial(runs)
    pooled = {}
    for size in sizes:
        mine = [run for run in runs if run["projects"] == size]
        pooled[str(size)] = summarize([s for run in mine for s in run["samples"]])
    small, large = pooled[str(min(sizes))], pooled[str(max(sizes))]
    ratio = _ratio(large["median_s"], small["median_s"])
    return {
        "sizes": list(sizes),
        "samples_per_round": samples,
        "rounds": rounds,
        "measured_projects": measured,
        "stopped_sensors": list(stop_sensors),
        "layout": layout,
        "runs": runs,
        "pooled": pooled,
        "ratio_median": ratio,
        "ratio_p90": _ratio(large["p90_s"], small["p90_s"]),
        "goal": {"value": ratio, "goal": f"<= {GOAL}", "met": ratio is not None and ratio <= GOAL},
    }


def _ratio(large: float | None, small: float | None) -> float | None:
    if large is None or small is None or small <= 0:
        return None
    return round(large / small, 2)


def render_start_table(results: dict[str, Any]) -> str:
    """Per size: the shards, the request -> agent start median and p90, the command's own time,
    how many were submitted by the command, the locations' load times and the peak memory."""
    lines = [
        f"Request -> agent start (`orch task add` as a process until the stand-in logs its "
        f"start), {results['samples_per_round']} sample(s) per size and round, "
        f"{results['rounds']} round(s), code servers: {results.get('layout', 'modules')}, "
        "seconds"
        + (
            f" (sensors turned off: {', '.join(results['stopped_sensors'])})"
            if results.get("stopped_sensors")
            else ""
        )
        + ":",
        "",
        "| projects | round | code locations | median | p90 | min-max | command returns "
        "(median) | submitted by the command | locations loaded (s, max) | daemon ticked all "
        "(s) | code server peak MB (max / sum) | load avg (1 min) during |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in results["runs"]:
        summary, setup = run["summary"], run["setup"]
        loaded = setup["locations_loaded_s"].values()
        memory = setup["memory"]
        lines.append(
            f"| {run['projects']} | {run['round']} | {run['shards']} | {summary['median_s']:.2f} "
            f"| {summary['p90_s']:.2f} | {summary['min_s']:.2f}-{summary['max_s']:.2f} "
            f"| {summary['command_median_s']:.2f} | {summary['direct']}/{summary['samples']} "
            f"| {max(loaded):.0f} | {setup['daemon_ticked_all_s']:.0f} "
            f"| {memory['code_server_peak_mb']} / {memory['code_servers_sum_peak_mb']} "
            f"| {_loads(run)} |"
        )
    lines += ["", "| projects | samples | median | p90 | command returns (median) |"]
    lines += ["|---:|---:|---:|---:|---:|"]
    for size, pooled in results["pooled"].items():
        lines.append(
            f"| {size} | {pooled['samples']} | {pooled['median_s']:.2f} | {pooled['p90_s']:.2f} "
            f"| {pooled['command_median_s']:.2f} |"
        )
    sizes = list(results["pooled"])
    lines += ["", "Where the time goes, medians over every sample of a size, seconds:", ""]
    lines += [f"| segment | {' | '.join(f'{n} projects' for n in sizes)} |"]
    lines += ["|---|" + "---:|" * len(sizes)]
    for label, _start, _end in SEGMENTS:
        cells = [results["pooled"][n]["segments_median_s"][label] for n in sizes]
        lines.append(f"| {label} | {' | '.join(_cell(c) for c in cells)} |")
    goal = results["goal"]
    lines += [
        "",
        f"{max(results['sizes'])} / {min(results['sizes'])} projects: median "
        f"{results['ratio_median']}x, p90 {results['ratio_p90']}x (goal {goal['goal']}x): "
        f"{'met' if goal['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _loads(run: dict[str, Any]) -> str:
    values = [s["loadavg"][0] for s in run["samples"] if s.get("loadavg")]
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


@click.command()
@click.option("--sizes", default=None, help="Comma-separated project counts (default 100,10000).")
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    default=None,
    help="Code locations of the largest registry (default ceil(projects / 1000); the smaller "
    "sizes always get ceil(projects / 1000)).",
)
@click.option("--samples", type=click.IntRange(1, 1000), default=None, help="Default 8.")
@click.option(
    "--rounds",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Rounds over the sizes, every other one in the reverse order.",
)
@click.option("--quick", is_flag=True, help="100 and 2000 projects, 3 samples.")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option(
    "--stop-sensor",
    "stop_sensors",
    multiple=True,
    help="Turn this sensor off in every code location before the warm-up (repeatable), to see "
    "what it costs the others.",
)
@click.option(
    "--layout",
    type=click.Choice(["servers", "modules"]),
    default="servers",
    show_default=True,
    help="servers: a `dagster api grpc` code server per location, named in the workspace as "
    "grpc_server entries (deploy/README.md); modules: python_module entries, for which the "
    "webserver and the daemon each start their own code servers.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directories (logs, state).")
def main(
    sizes: str | None,
    shards: int | None,
    samples: int | None,
    rounds: int,
    quick: bool,
    output: Path,
    keep: bool,
    stop_sensors: tuple[str, ...],
    layout: str,
) -> None:
    """Time request -> agent start with a small and a large registry, one after the other."""
    chosen = tuple(int(s) for s in sizes.split(",")) if sizes else QUICK_SIZES if quick else SIZES
    if len(chosen) < 2:
        raise click.UsageError("--sizes needs two sizes or more")
    count = samples or (QUICK_SAMPLES if quick else SAMPLES)
    largest = max(chosen)

    def shards_for(projects: int) -> int:
        return shards if shards is not None and projects == largest else default_shards(projects)

    began = time.monotonic()
    results = {"machine": machine(dagster=version("dagster")), "quick": quick}

    def partial(runs: list[dict[str, Any]]) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results | {"partial": True, "runs": runs}, indent=2) + "\n")

    results |= run_start_benchmark(
        chosen,
        count,
        shards_for,
        rounds=rounds,
        keep=keep,
        partial=partial,
        stop_sensors=stop_sensors,
        layout=layout,
    )
    finish(results, render_start_table, output, began)


if __name__ == "__main__":
    main()
