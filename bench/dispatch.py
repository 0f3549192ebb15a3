"""Dispatch benchmark: what running a task costs on top of what Dagster itself costs.

Through a real `dagster-daemon` on the shipped dagster.yaml (unchanged), with the stand-in
`claude` CLI (tests/support/fakes/claude) doing no work, it measures how long a task waits
before its agent starts, how long recording it takes after the agent exits, and how many tasks
per minute go through the agent slots. The floor is measured in the same run, through the same
daemon, queue, launcher and pool: an empty asset whose runs are requested by a sensor, as tasks
are.

This module is also that floor's code location (`dispatch_baseline`, attribute `baseline_defs`),
which the benchmark's workspace loads next to `orchestration.defs.definitions`. Run it from the
repository root:

    .venv/bin/python -m bench.dispatch --quick

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import dagster as dg

from bench.machine import discard, finish, machine, progress
from orchestration.defs.sensors import DISPATCH_INTERVAL_S
from orchestration.settings import WEBSERVER_URL_VAR
from tests.support.agent_log import entries

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "dispatch.json"
BASELINE_LOCATION = "dispatch_baseline"
#: The code location `dagster job launch` loads for the command floor (bench/launch_floor.py).
LAUNCH_FLOOR_LOCATION = "launch_floor"
PROJECT = "bench"
#: The file of baseline run requests the baseline sensor reads (one JSON object per line).
TRIGGER_VAR = "BENCH_DISPATCH_TRIGGERS"
JOBS = {"multiprocess": "noop_multiprocess", "in_process": "noop_in_process"}
FAKE_LOG = Path("workspaces") / PROJECT / "agents" / "claude_code" / "fake_claude.jsonl"
STARTUP_TIMEOUT_S = 180.0


# --------------------------------------------------------------------------------------------
# The floor: an empty asset, run through the same sensor -> queue -> launcher -> pool path.


@dg.asset(pool="agents", group_name=BASELINE_LOCATION)
def noop() -> None:
    """Does nothing: every second its runs take is Dagster's."""


_noop_jobs = [
    dg.define_asset_job(JOBS["multiprocess"], selection=[noop]),
    dg.define_asset_job(JOBS["in_process"], selection=[noop], executor_def=dg.in_process_executor),
]


@dg.sensor(
    jobs=_noop_jobs,
    minimum_interval_seconds=DISPATCH_INTERVAL_S,  # as the task_dispatch sensor
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def baseline_requests(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One run request per new line of the trigger file, as `task_dispatch` does per task."""
    path = os.environ.get(TRIGGER_VAR)
    if not path or not Path(path).exists():
        return dg.SkipReason("no trigger file")
    text = Path(path).read_text(encoding="utf-8")
    lines = text[: text.rfind("\n") + 1].splitlines()  # whole lines only
    done = int(context.cursor or 0)
    requests = [
        dg.RunRequest(run_key=item["id"], job_name=item["job"], tags={"bench/request": item["id"]})
        for item in map(json.loads, lines[done:])
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(len(lines)))


baseline_defs = dg.Definitions(assets=[noop], jobs=_noop_jobs, sensors=[baseline_requests])


# --------------------------------------------------------------------------------------------
# The system under test


@dataclass
class Bench:
    """A daemon on a throwaway registry and instance, and the ways to ask it."""

    root: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]
    log: Path
    instance: dg.DagsterInstance
    store: Any  # orchestration.tasks.store.TaskStore
    _triggers: int = 0

    @property
    def home(self) -> Path:
        return Path(self.env["ORCH_HOME"])

    @property
    def trigger_file(self) -> Path:
        return self.root / "triggers.jsonl"

    def add_task(self, prompt: str) -> str:
        from click.testing import CliRunner

        from orchestration.cli import main as orch

        result = CliRunner().invoke(orch, ["task", "add", PROJECT, prompt], env=self.env)
        if result.exit_code != 0:
            raise click.ClickException(f"orch task add failed:\n{result.output}")
        return result.stdout.strip()

    def request_baseline(self, job: str) -> str:
        self._triggers += 1
        request_id = f"b{self._triggers:04d}-{job}"
        line = json.dumps({"id": request_id, "job": job, "time": time.time()}) + "\n"
        with self.trigger_file.open("a", encoding="utf-8") as handle:
            handle.write(line)
        return request_id

    def requested_at(self) -> dict[str, float]:
        if not self.trigger_file.exists():
            return {}
        lines = self.trigger_file.read_text(encoding="utf-8").splitlines()
        return {item["id"]: item["time"] for item in map(json.loads, lines)}

    def baseline_run(self, request_id: str) -> dg.DagsterRun | None:
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(tags={"bench/request": request_id}), limit=1
        )
        return runs[0] if runs else None

    def agent_log(self) -> dict[str, dict[str, float]]:
        """Per task id, when the stand-in agent started and ended (from its own log)."""
        path = self.home / FAKE_LOG
        times: dict[str, dict[str, float]] = {}
        pids: dict[int, str] = {}
        for entry in entries(path):
            if entry["event"] == "start":
                task_id = Path(entry["cwd"]).name
                pids[entry["agent"]] = task_id
                times.setdefault(task_id, {})["agent_start"] = entry["time"]
            elif entry["event"] == "end" and entry["agent"] in pids:
                times[pids[entry["agent"]]]["agent_end"] = entry["time"]
        return times

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.daemon.poll() is not None:
                raise click.ClickException(f"the daemon exited while waiting for {what}")
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise click.ClickException(f"timed out waiting for {what}; daemon log:\n{tail}")
            time.sleep(0.2)

    def wait_tasks(self, task_ids: Sequence[str], timeout_s: float) -> None:
        def finished() -> bool:
            tasks = self.store.tasks(ids=task_ids)
            if not all(t.status.finished and t.run_id for t in tasks):
                return False
            return all(self._run_finished(t.run_id) for t in tasks)

        self.wait(f"{len(task_ids)} task(s) and their runs", finished, timeout_s)
        failed = [t for t in self.store.tasks(ids=task_ids) if t.status.value != "succeeded"]
        if failed:
            raise click.ClickException(
                f"task {failed[0].id} {failed[0].status}: {failed[0].reason}"
            )

    def wait_baseline(self, request_ids: Sequence[str], timeout_s: float) -> None:
        def finished() -> bool:
            runs = [self.baseline_run(r) for r in request_ids]
            return all(run is not None and run.is_finished for run in runs)

        self.wait(f"{len(request_ids)} baseline run(s)", finished, timeout_s)

    def _run_finished(self, run_id: str) -> bool:
        run = self.instance.get_run_by_id(run_id)
        return run is not None and run.is_finished


def write_setup(root: Path) -> tuple[dict[str, str], Path]:
    """Registry, instance and workspace under `root`: the ORCH_* environment and workspace."""
    # Imported here, not at the top: this module is also the floor's code location, and its
    # run workers import it for every run; the floor must not pay for the test harness.
    from tests.support.daemon import write_instance, write_workspace
    from tests.support.git import make_git_repo

    shutil.copytree(REPO_ROOT / "config", root / "config")
    (root / "projects" / "templates").mkdir(parents=True)
    repo = make_git_repo(root / "repos" / PROJECT, {"README.md": "bench\n"})
    (root / "projects" / f"{PROJECT}.yaml").write_text(
        f"name: {PROJECT}\nrepo: {repo}\nagent: {{profile: claude_code, max_parallel: 50}}\n"
    )
    dagster_home = write_instance(root, {})  # the shipped dagster.yaml, unchanged
    workspace = write_workspace(
        root,
        {
            BASELINE_LOCATION: "bench.dispatch:baseline_defs",
            LAUNCH_FLOOR_LOCATION: "bench.launch_floor:defs",
        },
    )
    # What `dagster job launch` loads for the command floor: its small location alone.
    floor = {
        "module_name": "bench.launch_floor",
        "attribute": "defs",
        "working_directory": str(REPO_ROOT),
        "location_name": LAUNCH_FLOOR_LOCATION,
    }
    (root / "floor_workspace.yaml").write_text(
        json.dumps({"load_from": [{"python_module": floor}]})
    )
    env = {
        "ORCH_PROJECTS_DIR": str(root / "projects"),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(root / "home"),
        "DAGSTER_HOME": str(dagster_home),
        TRIGGER_VAR: str(root / "triggers.jsonl"),
    }
    return env, workspace


@contextmanager
def running_daemon(root: Path) -> Iterator[Bench]:
    """The daemon up on a fresh setup under `root`, the stand-in `claude` first on its PATH;
    stopped with its whole process group (run workers included) however the block ends."""
    from orchestration.tasks.store import TaskStore
    from tests.support import daemon
    from tests.support.paths import path_with_fakes

    env, workspace = write_setup(root)
    daemon_env = daemon.daemon_environment(
        env, drop=("BENCH_",), path=path_with_fakes(os.environ["PATH"]), sandbox=False
    )
    needed = ("SENSOR", "QUEUED_RUN_COORDINATOR")
    with daemon.running_daemon(
        root, workspace, daemon_env, needed=needed, timeout_s=STARTUP_TIMEOUT_S
    ) as (process, log):
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        store = TaskStore(f"sqlite:///{root / 'home' / 'tasks.db'}")
        try:
            with running_webserver(root, workspace, daemon_env) as url:
                env[WEBSERVER_URL_VAR] = url
                yield Bench(root, env | {"PATH": daemon_env["PATH"]}, process, log, instance, store)
        finally:
            store.dispose()
            instance.dispose()


@contextmanager
def running_webserver(root: Path, workspace: Path, env: Mapping[str, str]) -> Iterator[str]:
    """The webserver on the same workspace and instance (the UI `orch task add` submits a
    task's run through); its URL."""
    from tests.support.webserver import serving

    with serving(
        ["-w", str(workspace)], env, root / "webserver.log", timeout_s=STARTUP_TIMEOUT_S
    ) as served:
        yield served.url


# --------------------------------------------------------------------------------------------
# Measuring

RUN_EVENTS = {
    dg.DagsterEventType.RUN_STARTING: "launched",
    dg.DagsterEventType.RUN_START: "worker_up",
    dg.DagsterEventType.STEP_START: "step_start",
    dg.DagsterEventType.RUN_SUCCESS: "run_end",
    dg.DagsterEventType.RUN_FAILURE: "run_end",
}
STEP_ENDS = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)


def run_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall-clock times of one run: created, launched, worker up, first step start, last
    step end, run end."""
    record = instance.get_run_record_by_id(run_id)
    assert record is not None
    times = {"run_created": record.create_timestamp.timestamp()}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type in RUN_EVENTS:  # the first of each
            times.setdefault(RUN_EVENTS[event.event_type], entry.timestamp)
        elif event.event_type in STEP_ENDS:  # the last step's
            times["step_end"] = entry.timestamp
    return times


def sensor_ticks(instance: dg.DagsterInstance, since: float) -> dict[str, dict[str, Any]]:
    """Per sensor: how long its ticks took and how far apart they started, since `since`."""
    from dagster._core.definitions.run_request import InstigatorType

    found: dict[str, dict[str, Any]] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = [
            tick
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
            if tick.timestamp >= since and tick.end_timestamp
        ]
        starts = sorted(tick.timestamp for tick in ticks)
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        durations = [tick.end_timestamp - tick.timestamp for tick in ticks]
        found[state.instigator_name] = {
            "ticks": len(ticks),
            "duration_s": _stats(durations),
            "interval_s": _stats(gaps),
        }
    return found


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def task_sample(bench: Bench, task_id: str, agents: Mapping[str, Mapping[str, float]]) -> dict:
    task = bench.store.require(task_id)
    assert task.run_id and task.finished_at
    return {
        "task": task_id,
        "requested": task.created_at.timestamp(),
        **run_times(bench.instance, task.run_id),
        **agents[task_id],
        "recorded": task.finished_at.timestamp(),
    }


def baseline_sample(bench: Bench, request_id: str, requested: Mapping[str, float]) -> dict:
    run = bench.baseline_run(request_id)
    assert run is not None
    return {"request": request_id, "requested": requested[request_id]} | run_times(
        bench.instance, run.run_id
    )


#: (name, from, to, tasks only) per row of the latency table; `work_*` is the agent for tasks
#: and the (empty) step body for the floor.
SEGMENTS = (
    ("request -> run created (sensor tick)", "requested", "run_created", False),
    ("run created -> launched (queue)", "run_created", "launched", False),
    ("launched -> run worker up", "launched", "worker_up", False),
    ("run worker up -> step start", "worker_up", "step_start", False),
    ("step start -> agent start (claim, git worktree)", "step_start", "work_start", True),
    ("**request -> work starts**", "requested", "work_start", False),
    ("agent exit -> task recorded (commit, store)", "work_end", "recorded", True),
    ("work ends -> step end", "work_end", "step_end", False),
    ("step end -> run end", "step_end", "run_end", False),
    ("**work ends -> run ends**", "work_end", "run_end", False),
)


def with_work(sample: dict[str, float], is_task: bool) -> dict[str, float]:
    if is_task:
        return sample | {"work_start": sample["agent_start"], "work_end": sample["agent_end"]}
    return sample | {"work_start": sample["step_start"], "work_end": sample["step_start"]}


def median_segment(samples: Iterable[dict[str, float]], start: str, end: str) -> float | None:
    values = [s[end] - s[start] for s in samples if start in s and end in s]
    return round(statistics.median(values), 3) if values else None


def task_executor(instance: dg.DagsterInstance, run_id: str) -> str:
    """Which executor ran a run ("in_process" or "multiprocess"), from its engine events."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        message = entry.message or ""
        if message.startswith("Executing steps in process"):
            return "in_process"
        if message.startswith("Executing steps using multiprocess executor"):
            return "multiprocess"
    return "multiprocess"


def measure_latency(bench: Bench, samples: int, floors: Sequence[str]) -> dict[str, list[dict]]:
    """One thing at a time, alternating, so each sample has the machine to itself."""
    found: dict[str, list[dict]] = {"tasks": [], **{kind: [] for kind in floors}}
    for index in range(samples):
        progress(f"latency sample {index + 1}/{samples}")
        task_id = bench.add_task(f"NOOP latency sample {index}")
        bench.wait_tasks([task_id], timeout_s=300)
        found["tasks"].append(task_sample(bench, task_id, bench.agent_log()))
        for kind in floors:
            request_id = bench.request_baseline(JOBS[kind])
            bench.wait_baseline([request_id], timeout_s=300)
            found[kind].append(baseline_sample(bench, request_id, bench.requested_at()))
    return found


def measure_commands(bench: Bench, samples: int) -> dict[str, list[dict]]:
    """Request -> work start, each timed from the moment a command is run: `orch task add`
    until its agent starts, and (the floor) `dagster job launch` of the empty job in a code
    location of its own until its step starts; alternating, one at a time."""
    from bench.launch_floor import JOB

    tools = Path(sys.executable).parent
    found: dict[str, list[dict]] = {"tasks": [], "floor": []}
    for index in range(samples):
        progress(f"command sample {index + 1}/{samples}")
        began = time.time()
        added = _command(
            [str(tools / "orch"), "task", "add", PROJECT, f"NOOP command {index}"], bench.env
        )
        returned = time.time()
        task_id = added.stdout.strip()
        bench.wait_tasks([task_id], timeout_s=300)
        task = bench.store.require(task_id)
        run = bench.instance.get_run_by_id(task.run_id or "")
        found["tasks"].append(
            {
                "requested": began,
                "returned": returned,
                "work_start": bench.agent_log()[task_id]["agent_start"],
                "direct": run is not None and "dagster/sensor_name" not in run.tags,
                "said": added.stderr.strip()[-300:],
            }
        )
        request_id = f"c{index:04d}"
        began = time.time()
        _command(
            [
                str(tools / "dagster"),
                "job",
                "launch",
                "-w",
                str(bench.root / "floor_workspace.yaml"),
                "-j",
                JOB,
                "--tags",
                json.dumps({"bench/request": request_id}),
            ],
            bench.env,
        )
        returned = time.time()
        bench.wait_baseline([request_id], timeout_s=300)
        floor_run = bench.baseline_run(request_id)
        assert floor_run is not None
        times = run_times(bench.instance, floor_run.run_id)
        found["floor"].append(
            {"requested": began, "returned": returned, "work_start": times["step_start"]}
        )
    return found


def _command(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(argv[:3])} failed:\n{done.stderr[-2000:]}")
    return done


def _percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` quantile (nearest rank) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def measure_throughput(bench: Bench, count: int, floor: str, rounds: int) -> dict[str, Any]:
    """`count` tasks and `count` empty runs (of the `floor` job), in `rounds` alternating
    batches (tasks, then runs), each batch queued at once; alternating spreads any drift in the
    machine's load over both."""
    batches = [count // rounds + (1 if i < count % rounds else 0) for i in range(rounds)]
    tasks: list[list[dict]] = []
    runs: list[list[dict]] = []
    for index, size in enumerate(batches):
        progress(f"throughput round {index + 1}/{rounds}: {size} tasks")
        task_ids = [bench.add_task(f"NOOP throughput task {index}.{i}") for i in range(size)]
        bench.wait_tasks(task_ids, timeout_s=60 + size * 30)
        agents = bench.agent_log()
        tasks.append([task_sample(bench, t, agents) for t in task_ids])
        progress(f"throughput round {index + 1}/{rounds}: {size} empty runs")
        request_ids = [bench.request_baseline(JOBS[floor]) for _ in range(size)]
        bench.wait_baseline(request_ids, timeout_s=60 + size * 30)
        requested = bench.requested_at()
        runs.append([baseline_sample(bench, r, requested) for r in request_ids])

    def summary(batches: list[list[dict]]) -> dict[str, Any]:
        makespans = [
            max(s["run_end"] for s in batch) - min(s["requested"] for s in batch)
            for batch in batches
        ]
        return {
            "makespan_s": round(sum(makespans), 2),
            "round_makespans_s": [round(m, 2) for m in makespans],
            "per_minute": round(60 * count / sum(makespans), 2),
            "samples": [s for batch in batches for s in batch],
        }

    return {
        "count": count,
        "rounds": rounds,
        "floor": floor,
        "tasks": summary(tasks),
        "baseline": summary(runs),
    }


def _ratio(ours: float | None, floor: float | None) -> str:
    if ours is None or floor is None or floor <= 0:
        return "-"
    return f"{ours / floor:.1f}x"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(results: dict[str, Any]) -> str:
    latency = results["latency"]
    same = results["task_executor"]
    other = next((kind for kind in JOBS if kind != same and kind in latency), None)
    tasks = [with_work(s, True) for s in latency["tasks"]]
    floor = [with_work(s, False) for s in latency[same]]
    others = [with_work(s, False) for s in latency.get(other or "", [])]
    lines = [
        f"Latency, median of {len(tasks)} sample(s), seconds; tasks ran with the {same} executor:",
        "",
        f"| segment | task | floor ({same}) | task / floor | floor ({other or '-'}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, start, end, task_only in SEGMENTS:
        ours = median_segment(tasks, start, end)
        base = None if task_only else median_segment(floor, start, end)
        alternative = None if task_only else median_segment(others, start, end)
        lines.append(
            f"| {name} | {_cell(ours)} | {_cell(base)} | {_ratio(ours, base)} | "
            f"{_cell(alternative)} |"
        )
    lines += ["", "Sensor ticks during the latency samples, seconds (median / max):", ""]
    lines += ["| sensor | ticks | tick duration | interval between ticks |", "|---|---:|---:|---:|"]
    for name, ticks in sorted(results["sensors_during_latency"].items()):
        duration, interval = ticks["duration_s"] or {}, ticks["interval_s"] or {}
        lines.append(
            f"| {name} | {ticks['ticks']} | {_cell(duration.get('median'))} / "
            f"{_cell(duration.get('max'))} | {_cell(interval.get('median'))} / "
            f"{_cell(interval.get('max'))} |"
        )
    commands = results.get("commands")
    if commands:
        lines += [
            "",
            f"From the command, {len(commands['tasks'])} sample(s) each, seconds "
            f"({sum(s['direct'] for s in commands['tasks'])} task(s) submitted by the command "
            "itself):",
            "",
            "| | `orch task add` -> agent starts | `dagster job launch` -> step starts (floor) "
            "| task / floor |",
            "|---|---:|---:|---:|",
        ]
        for label, key, share in (
            ("median", "work_start", 0.5),
            ("p90", "work_start", 0.9),
            ("command returns (median)", "returned", 0.5),
        ):
            ours = _percentile([t[key] - t["requested"] for t in commands["tasks"]], share)
            base = _percentile([t[key] - t["requested"] for t in commands["floor"]], share)
            lines.append(f"| {label} | {_cell(ours)} | {_cell(base)} | {_ratio(ours, base)} |")
    throughput = results["throughput"]
    if throughput:
        ours, base = throughput["tasks"], throughput["baseline"]
        lines += [
            "",
            f"Throughput, {throughput['count']} of each in {throughput['rounds']} alternating "
            f"batch(es) queued at once, on {results['slots']} slots:",
            "",
            f"| | tasks | floor (empty runs, {throughput['floor']}) | tasks slower by |",
            "|---|---:|---:|---:|",
            f"| makespan s | {ours['makespan_s']:.1f} | {base['makespan_s']:.1f} | "
            f"{_ratio(ours['makespan_s'], base['makespan_s'])} |",
            f"| per minute | {ours['per_minute']:.1f} | {base['per_minute']:.1f} | "
            f"{_ratio(base['per_minute'], ours['per_minute'])} |",
        ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--quick",
    is_flag=True,
    help="1 latency sample, 3 command samples, 4 queued tasks, one floor (< 2 min).",
)
@click.option("--samples", type=int, default=None, help="Latency samples (default 6).")
@click.option("--tasks", "count", type=int, default=None, help="Queued tasks (default 50).")
@click.option(
    "--commands",
    "command_samples",
    type=int,
    default=None,
    help="Samples timed from the command: `orch task add` against `dagster job launch` "
    "(default 20).",
)
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directory (daemon log, state).")
def main(
    quick: bool,
    samples: int | None,
    count: int | None,
    command_samples: int | None,
    output: Path,
    keep: bool,
) -> None:
    """Measure dispatch latency and throughput through the real daemon, against the floor."""
    samples = samples if samples is not None else 1 if quick else 6
    command_samples = command_samples if command_samples is not None else 3 if quick else 20
    count = count if count is not None else 4 if quick else 50
    root = Path(tempfile.mkdtemp(prefix="orch-bench-dispatch-"))
    results: dict[str, Any] = {"machine": machine(dagster=version("dagster")), "quick": quick}
    began = time.monotonic()
    try:
        with running_daemon(root) as bench:
            progress(f"daemon up in {root}; warming up (clone, code servers)")
            warm = bench.add_task("NOOP warm-up")
            warm_requests = [bench.request_baseline(job) for job in JOBS.values()]
            bench.wait_tasks([warm], timeout_s=300)
            bench.wait_baseline(warm_requests, timeout_s=300)
            executor = task_executor(bench.instance, bench.store.require(warm).run_id)
            results["task_executor"] = executor
            floors = [executor] if quick else [executor, *(k for k in JOBS if k != executor)]
            since = time.time()
            results["latency"] = measure_latency(bench, samples, floors)
            results["sensors_during_latency"] = sensor_ticks(bench.instance, since)
            results["commands"] = (
                measure_commands(bench, command_samples) if command_samples else None
            )
            since = time.time()
            results["throughput"] = (
                measure_throughput(bench, count, executor, rounds=1 if quick else 2)
                if count
                else None
            )
            results["sensors_during_throughput"] = sensor_ticks(bench.instance, since)
            limits = bench.instance.event_log_storage.get_pool_limits()
            results["pool_limits"] = {limit.name: limit.limit for limit in limits}
            results["slots"] = results["pool_limits"].get("agents")
    finally:
        discard(root, keep)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
