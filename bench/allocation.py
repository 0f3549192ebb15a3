"""Allocation benchmark: how agent slots are shared among many projects of three priority classes,
against plain Dagster (FIFO, one global pool) on the same workload, through one real daemon.

Workload: N projects (a third each critical, normal, low, round robin), T tasks each, all queued
at once in round-robin order (task 0 of every project, then task 1, ...), 4 slots, agents that
work for a random, seeded time: the stand-in `claude` (tests/support/fakes/claude) run by the
`command` profile, told to change nothing. The same daemon and instance then run the baseline,
the same tasks as runs of a plain asset job in pool `agents` (same limit, no priorities, no
rebalancing: Dagster's FIFO) running the same stand-in, and the floor: empty runs through the
same queue on a pool of one slot. This module is also the code location of the baseline and the
floor (`allocation_baseline`, attribute `baseline_defs`). Run it from the repository root:

    .venv/bin/python -m bench.allocation --quick

`--preemption` measures preemption by priority instead: the slots held by low-priority agents
that run until released, then critical tasks arrive; their wait with a `preemption:` rule in
pools.yaml and without one, on the same daemon.

See bench/README.md for the options and what the numbers mean.
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import dagster as dg
import yaml
from dagster import AssetExecutionContext

from bench.machine import discard, finish, machine, progress
from orchestration.allocation.policy import priority_weight
from orchestration.defs.sensors import DISPATCH_INTERVAL_S  # the baseline's requests come as often
from tests.support.agent_log import entries
from tests.support.paths import FAKE_CLAUDE

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "allocation.json"
PREEMPTION_RESULTS_FILE = REPO_ROOT / "bench" / "results" / "allocation_preemption.json"
BASELINE_LOCATION = "allocation_baseline"
TRIGGER_VAR = "BENCH_ALLOCATION_TRIGGERS"
LOG_VAR = "FAKE_CLAUDE_LOG"  # the stand-in's log; a `secrets` variable of every bench project
WORK_VAR = "BENCH_ALLOCATION_WORK"  # where the baseline's agents work, a directory per item
SLOTS = 4
FLOOR_POOL = "bench_floor"
CLASSES = {"critical": 100, "normal": 50, "low": 25}
STARTUP_TIMEOUT_S = 180.0
#: The preemption mode's profile: the stand-in run as Claude Code is, sessions and all, so an
#: interrupted agent's session can be continued (the `command` profile has no sessions).
SESSION_PROFILE = "bench_claude"
LOW_PROJECT, CRITICAL_PROJECT = "batch", "urgent"
#: How long a critical task's agent works, seconds.
CRITICAL_WORK_S = 5
#: The issue's goal: every critical task's agent starts within `after` plus this many seconds.
PREEMPTION_GOAL_S = 10

# --------------------------------------------------------------------------------------------
# The baseline and the floor: plain Dagster, requested by a sensor as tasks are.


@dg.asset(pool="agents", group_name=BASELINE_LOCATION)
def fifo_work(context: AssetExecutionContext) -> None:
    """Runs the stand-in agent for the run's `bench/seconds`, as a task's run would, in a
    directory named after the item (as a task's agent works in a worktree named after it)."""
    # FAKE_CLAUDE comes with the module's imports: a run worker has the repository on its path
    # only while it loads this module, so an import here would fail.
    tags = context.run.tags
    work = Path(os.environ[WORK_VAR]) / tags["bench/task"]
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(FAKE_CLAUDE), f"NOOP SLEEP{tags['bench/seconds']}"],
        cwd=work,
        capture_output=True,
        check=True,
    )


@dg.asset(pool=FLOOR_POOL, group_name=BASELINE_LOCATION)
def floor_noop() -> None:
    """Does nothing: every second between two of its runs is Dagster's."""


_jobs = [
    dg.define_asset_job("fifo_work_job", selection=[fifo_work]),
    dg.define_asset_job("floor_job", selection=[floor_noop]),
]


@dg.sensor(
    jobs=_jobs,
    minimum_interval_seconds=DISPATCH_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def bench_requests(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One run request per new line of the trigger file."""
    path = os.environ.get(TRIGGER_VAR)
    if not path or not Path(path).exists():
        return dg.SkipReason("no trigger file")
    text = Path(path).read_text(encoding="utf-8")
    lines = text[: text.rfind("\n") + 1].splitlines()
    done = int(context.cursor or 0)
    requests = [
        dg.RunRequest(run_key=item["id"], job_name=item["job"], tags=item["tags"])
        for item in map(json.loads, lines[done:])
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(len(lines)))


baseline_defs = dg.Definitions(
    assets=[fifo_work, floor_noop],
    jobs=_jobs,
    sensors=[bench_requests],
    executor=dg.in_process_executor,  # as orchestration.defs.definitions
)


# --------------------------------------------------------------------------------------------
# The workload


@dataclass(frozen=True)
class Item:
    """One unit of work: a project's task, agent time in seconds."""

    key: str
    project: str
    cls: str
    seconds: float


def workload(projects: int, tasks: int, low: float, high: float, seed: int) -> list[Item]:
    """Round robin over projects, task 0 of each first; classes critical, normal, low in turn."""
    rng = random.Random(seed)
    classes = list(CLASSES)
    return [
        Item(f"w{j:03d}p{i:02d}", f"p{i:02d}", classes[i % 3], round(rng.uniform(low, high), 2))
        for j in range(tasks)
        for i in range(projects)
    ]


@dataclass
class Sample:
    """One task's life: when it was asked for, its run held a slot, its agent worked."""

    key: str
    project: str
    cls: str
    added: float
    launched: float
    worker_up: float
    agent_start: float
    agent_end: float
    run_end: float


# --------------------------------------------------------------------------------------------
# The system


@dataclass
class Bench:
    root: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]
    log: Path
    instance: dg.DagsterInstance
    store: Any  # orchestration.tasks.store.TaskStore
    _triggers: int = 0

    @property
    def agent_log(self) -> Path:
        return Path(self.env[LOG_VAR])

    @property
    def trigger_file(self) -> Path:
        return Path(self.env[TRIGGER_VAR])

    def agents(self) -> dict[str, tuple[float, float | None]]:
        """Per task (or baseline item), the stand-in's start and end. It works in a directory
        named after the task: its worktree, or the baseline item's directory."""
        found: dict[str, tuple[float, float | None]] = {}
        tasks: dict[int, str] = {}
        for entry in entries(self.agent_log):
            if entry["event"] == "start":
                tasks[entry["agent"]] = task = Path(entry["cwd"]).name
                found[task] = (entry["time"], None)
            elif entry["event"] == "end" and entry["agent"] in tasks:
                task = tasks[entry["agent"]]
                found[task] = (found[task][0], entry["time"])
        return found

    def agent_runs(self) -> dict[str, list[dict[str, Any]]]:
        """Per task, every time its stand-in ran, in order: start, end (None while it runs or
        if it was killed), the session it worked in."""
        found: dict[str, list[dict[str, Any]]] = {}
        by_agent: dict[str, dict[str, Any]] = {}
        for entry in entries(self.agent_log):
            if entry["event"] == "start":
                record = {"start": entry["time"], "end": None, "session": entry.get("session_id")}
                by_agent[entry["agent"]] = record
                found.setdefault(Path(entry["cwd"]).name, []).append(record)
            elif entry["event"] == "end" and entry["agent"] in by_agent:
                by_agent[entry["agent"]]["end"] = entry["time"]
        return found

    def release(self, name: str) -> float:
        """Let the stand-ins holding `HOLD<name>` finish (now and whenever they start); when."""
        release = self.agent_log.parent / "release" / name
        release.parent.mkdir(parents=True, exist_ok=True)
        release.touch()
        return time.time()

    def trigger(self, items: Sequence[tuple[str, str, dict[str, str]]]) -> float:
        """Append run requests (id, job, tags) in one write; when."""
        lines = "".join(
            json.dumps({"id": key, "job": job, "tags": tags}) + "\n" for key, job, tags in items
        )
        with self.trigger_file.open("a", encoding="utf-8") as handle:
            handle.write(lines)
        return time.time()

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.daemon.poll() is not None:
                raise click.ClickException(f"the daemon exited while waiting for {what}")
            if time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise click.ClickException(f"timed out waiting for {what}; daemon log:\n{tail}")
            time.sleep(0.5)

    def runs_by_tag(self, key: str, values: Sequence[str]) -> dict[str, dg.DagsterRun]:
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={key: list(values)}))
        return {run.tags[key]: run for run in runs}


def shipped_instance_config() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())


def write_setup(
    root: Path,
    items: Sequence[Item],
    run_queue: Mapping[str, Any] | None,
    ageing_s: int | None,
    sessions: bool = False,
) -> tuple[dict[str, str], Path]:
    """Registry (one git repository per project), instance, workspace; environment.
    `run_queue` replaces the shipped dagster.yaml's (`{}`: Dagster's defaults). `sessions`: the
    projects run the stand-in as Claude Code (SESSION_PROFILE), not as the `command` profile."""
    # Imported here, not at the top: this module is also the baseline's code location, and its
    # run workers import it for every run; the baseline must not pay for the test harness.
    from tests.support.daemon import write_instance, write_workspace
    from tests.support.git import make_git_repo

    shutil.copytree(REPO_ROOT / "config", root / "config")
    pools_file = root / "config" / "pools.yaml"
    pools = yaml.safe_load(pools_file.read_text())
    pools["agents"]["slots"] = SLOTS
    if ageing_s is not None:
        pools["agents"]["ageing_seconds"] = ageing_s
    pools[FLOOR_POOL] = {"slots": 1, "description": "The floor's single slot."}
    pools_file.write_text(yaml.safe_dump(pools, sort_keys=False))
    if sessions:
        agents_file = root / "config" / "agents.yaml"
        agents = yaml.safe_load(agents_file.read_text())
        agents["profiles"][SESSION_PROFILE] = {
            "description": "The stand-in claude, run as Claude Code is (benchmark).",
            "argv": ["{python}", str(FAKE_CLAUDE), "-p", "--output-format", "json", "--"]
            + ["{prompt}"],
            "resume_args": ["--resume", "{session_id}"],
            "session_args": ["--session-id", "{session_id}"],
            "output": "claude_json",
        }
        agents_file.write_text(yaml.safe_dump(agents, sort_keys=False))
    agent: dict[str, Any] = (
        {"profile": SESSION_PROFILE}
        if sessions
        else {"profile": "command", "command": [sys.executable, str(FAKE_CLAUDE)]}
    )
    projects = root / "projects"
    (projects / "templates").mkdir(parents=True)
    for name, cls in sorted({(i.project, i.cls) for i in items}):
        repo = make_git_repo(root / "repos" / name, {"README.md": f"{name}\n"})
        spec = {
            "name": name,
            "repo": str(repo),
            "priority": cls,
            "agent": {
                **agent,
                "max_parallel": SLOTS,  # never binds: the baseline has no per-project limit
                "timeout": 3600,
            },
            "secrets": [LOG_VAR],
        }
        (projects / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    replace = {"run_queue": run_queue} if run_queue is not None else None
    dagster_home = write_instance(root, {}, replace=replace)
    workspace = write_workspace(root, {BASELINE_LOCATION: "bench.allocation:baseline_defs"})
    env = {
        "ORCH_PROJECTS_DIR": str(projects),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(root / "home"),
        "DAGSTER_HOME": str(dagster_home),
        TRIGGER_VAR: str(root / "triggers.jsonl"),
        LOG_VAR: str(root / "agents.log"),
        WORK_VAR: str(root / "fifo"),
    }
    return env, workspace


@contextmanager
def running_daemon(
    root: Path,
    items: Sequence[Item],
    run_queue: Mapping[str, Any] | None = None,
    ageing_s: int | None = None,
    sessions: bool = False,
) -> Iterator[Bench]:
    """The daemon up on a fresh setup under `root`; stopped with its whole process group (run
    workers included) however the block ends."""
    from orchestration.tasks.store import TaskStore
    from tests.support import daemon

    env, workspace = write_setup(root, items, run_queue, ageing_s, sessions)
    daemon_env = daemon.daemon_environment(env, drop=("BENCH_", "FAKE_CLAUDE_"), sandbox=False)
    needed = ("SENSOR", "QUEUED_RUN_COORDINATOR")
    with daemon.running_daemon(
        root, workspace, daemon_env, needed=needed, timeout_s=STARTUP_TIMEOUT_S
    ) as (process, log):
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        store = TaskStore(f"sqlite:///{root / 'home' / 'tasks.db'}")
        try:
            # The dispatch sensor sets these from pools.yaml too, but perhaps not before the
            # floor.
            instance.event_log_storage.set_concurrency_slots("agents", SLOTS)
            instance.event_log_storage.set_concurrency_slots(FLOOR_POOL, 1)
            yield Bench(root, env, process, log, instance, store)
        finally:
            store.dispose()
            instance.dispose()


# --------------------------------------------------------------------------------------------
# Running the three phases


def _event_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    kinds = {
        dg.DagsterEventType.RUN_STARTING: "launched",
        dg.DagsterEventType.RUN_START: "worker_up",
        dg.DagsterEventType.STEP_START: "step_start",
        dg.DagsterEventType.STEP_SUCCESS: "step_end",
        dg.DagsterEventType.STEP_FAILURE: "step_end",
        dg.DagsterEventType.RUN_SUCCESS: "run_end",
        dg.DagsterEventType.RUN_FAILURE: "run_end",
        dg.DagsterEventType.RUN_CANCELED: "run_end",
    }
    times: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type in kinds:
            times.setdefault(kinds[event.event_type], entry.timestamp)
    return times


def _timeout(items: Sequence[Item]) -> float:
    return 300 + sum(i.seconds + 30 for i in items) / SLOTS


def _sample(
    bench: Bench, item: Item, added: float, run_id: str, agent: tuple[float, float | None]
) -> Sample:
    """One item's life from its request time, its run's events and its agent's start and end."""
    times = _event_times(bench.instance, run_id)
    start, end = agent
    assert end is not None
    return Sample(
        item.key,
        item.project,
        item.cls,
        added,
        times["launched"],
        times["worker_up"],
        start,
        end,
        times["run_end"],
    )


def run_ours(bench: Bench, items: Sequence[Item]) -> list[Sample]:
    """The tasks, queued through the task store (as `orch task add` does) all at once."""
    ids: dict[str, Item] = {}
    added: dict[str, float] = {}
    for item in items:
        task = bench.store.add(item.project, f"bench {item.key} NOOP SLEEP{item.seconds}")
        ids[task.id] = item
        added[task.id] = task.created_at.timestamp()
    progress(f"ours: {len(items)} tasks queued")

    def done() -> bool:
        tasks = bench.store.tasks(ids=list(ids))
        if not all(t.status.finished for t in tasks):
            return False
        runs = bench.runs_by_tag("orch/task", list(ids))
        return len(runs) == len(ids) and all(r.is_finished for r in runs.values())

    bench.wait("our tasks", done, _timeout(items))
    failed = [t for t in bench.store.tasks(ids=list(ids)) if t.status.value != "succeeded"]
    if failed:
        raise click.ClickException(f"task {failed[0].id} {failed[0].status}: {failed[0].reason}")
    agents = bench.agents()
    runs = bench.runs_by_tag("orch/task", list(ids))
    return [
        _sample(bench, item, added[task_id], runs[task_id].run_id, agents[task_id])
        for task_id, item in ids.items()
    ]


def run_baseline(bench: Bench, items: Sequence[Item]) -> list[Sample]:
    """The same work as runs of a plain job in pool `agents`: equal priority, FIFO."""
    requests = [
        (
            f"fifo-{item.key}",
            "fifo_work_job",
            {
                "bench/item": item.key,
                "bench/project": item.project,
                "bench/task": f"fifo-{item.key}",
                "bench/seconds": str(item.seconds),
            },
        )
        for item in items
    ]
    added = bench.trigger(requests)
    progress(f"baseline: {len(items)} runs requested")
    keys = [i.key for i in items]

    def done() -> bool:
        runs = bench.runs_by_tag("bench/item", keys)
        return len(runs) == len(keys) and all(r.is_finished for r in runs.values())

    bench.wait("the baseline runs", done, _timeout(items))
    runs = bench.runs_by_tag("bench/item", keys)
    failed = [r for r in runs.values() if r.status is not dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise click.ClickException(f"baseline run {failed[0].run_id} {failed[0].status.value}")
    agents = bench.agents()
    return [
        _sample(bench, item, added, runs[item.key].run_id, agents[f"fifo-{item.key}"])
        for item in items
    ]


def run_floor(bench: Bench, count: int, tag: str) -> list[dict[str, float]]:
    """`count` empty runs queued at once on a one-slot pool; each run's event times."""
    requests = [
        (f"{tag}-{i:03d}", "floor_job", {"bench/floor": f"{tag}-{i:03d}"}) for i in range(count)
    ]
    bench.trigger(requests)
    keys = [key for key, _, _ in requests]

    def done() -> bool:
        runs = bench.runs_by_tag("bench/floor", keys)
        return len(runs) == len(keys) and all(r.is_finished for r in runs.values())

    bench.wait("the floor runs", done, 120 + 30 * count)
    runs = bench.runs_by_tag("bench/floor", keys)
    return [_event_times(bench.instance, runs[key].run_id) for key in keys]


# --------------------------------------------------------------------------------------------
# Measuring


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": round(statistics.fmean(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


def slot_gaps(samples: Sequence[Sample]) -> list[float]:
    """Agent end -> the next agent start on the freed slot, while work waits: each end is paired
    with the first unpaired start after it (ends in order)."""
    last_start = max(s.agent_start for s in samples)
    starts = sorted(s.agent_start for s in samples)
    gaps = []
    used = 0
    for end in sorted(s.agent_end for s in samples if s.agent_end < last_start):
        while used < len(starts) and starts[used] < end:
            used += 1
        if used == len(starts):
            break
        gaps.append(starts[used] - end)
        used += 1
    return gaps


def jain(values: Sequence[float]) -> float | None:
    total, squares = sum(values), sum(v * v for v in values)
    return round(total * total / (len(values) * squares), 4) if squares > 0 else None


def measure(samples: Sequence[Sample], ageing_s: float, fifo_max_wait: float | None) -> dict:
    """The numbers of one phase. `fifo_max_wait`: the longest wait under FIFO on the same
    work, which with `ageing_s` bounds the lowest class's wait (see `starvation`)."""
    first_start = min(s.agent_start for s in samples)
    last_start = max(s.agent_start for s in samples)
    window = last_start - first_start
    busy = sum(_overlap(s.agent_start, s.agent_end, first_start, last_start) for s in samples)
    held = sum(_overlap(s.launched, s.run_end, first_start, last_start) for s in samples)

    waits = {
        cls: _summary([s.agent_start - s.added for s in samples if s.cls == cls]) for cls in CLASSES
    }
    # Fairness: slot-seconds per project over the window where every project has backlog (from
    # the last first request to the first project's last start), divided by its weight.
    projects = sorted({s.project for s in samples})
    fair_lo = max(min(s.added for s in samples if s.project == p) for p in projects)
    fair_hi = min(max(s.agent_start for s in samples if s.project == p) for p in projects)
    weight = {s.project: priority_weight(CLASSES[s.cls]) for s in samples}
    shares = {
        p: sum(_overlap(s.launched, s.run_end, fair_lo, fair_hi) for s in samples if s.project == p)
        / weight[p]
        for p in projects
    }
    lowest = list(CLASSES)[-1]
    # Ageing's guarantee: a task waits at most ageing_s more than first come, first served
    # would make it wait (it is overtaken only by tasks that arrived less than ageing_s after
    # it, and only until it has aged).
    bound = ageing_s + fifo_max_wait if fifo_max_wait is not None else None
    gaps = slot_gaps(samples)
    return {
        "tasks": len(samples),
        "makespan_s": round(max(s.run_end for s in samples) - min(s.added for s in samples), 1),
        "backlog_window_s": round(window, 1),
        "utilisation_agents": round(busy / (SLOTS * window), 4) if window > 0 else None,
        "utilisation_slots": round(held / (SLOTS * window), 4) if window > 0 else None,
        "wait_s": waits,
        "fairness_window_s": round(max(0.0, fair_hi - fair_lo), 1),
        "weighted_shares": {p: round(v, 4) for p, v in shares.items()},
        "jain": jain(list(shares.values())) if fair_hi > fair_lo else None,
        "starvation": {
            "lowest_class": lowest,
            "max_wait_s": waits[lowest]["max"] if waits[lowest] else None,
            "ageing_s": ageing_s,
            "bound_s": round(bound, 1) if bound is not None else None,
        },
        "gap_s": _summary(gaps),
        "launch_to_worker_s": _summary([s.worker_up - s.launched for s in samples]),
        "worker_to_agent_s": _summary([s.agent_start - s.worker_up for s in samples]),
        "agent_to_run_end_s": _summary([s.run_end - s.agent_end for s in samples]),
    }


def sensor_ticks(instance: dg.DagsterInstance, since: float, until: float) -> dict[str, dict]:
    """Per sensor: how long its ticks took and how far apart they started, in a window."""
    from dagster._core.definitions.run_request import InstigatorType

    found: dict[str, dict[str, Any]] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = [
            tick
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
            if since <= tick.timestamp <= until and tick.end_timestamp
        ]
        starts = sorted(tick.timestamp for tick in ticks)
        found[state.instigator_name] = {
            "ticks": len(ticks),
            "duration_s": _summary([t.end_timestamp - t.timestamp for t in ticks]),
            "interval_s": _summary([b - a for a, b in zip(starts, starts[1:], strict=False)]),
        }
    return found


def measure_floor(count: int, run_queue: Mapping[str, Any], keep: bool) -> dict[str, Any]:
    """The floor on a daemon of its own whose dagster.yaml has `run_queue` (no projects)."""
    root = Path(tempfile.mkdtemp(prefix="orch-bench-allocation-floor-"))
    try:
        with running_daemon(root, [], run_queue) as bench:
            runs = run_floor(bench, count + 1, "floor")[1:]  # the first loads the code
    finally:
        discard(root, keep)
    return {"run_queue": dict(run_queue), "gap_s": _summary(floor_gaps(runs)), "runs": runs}


def floor_gaps(runs: Sequence[dict[str, float]]) -> list[float]:
    ordered = sorted(runs, key=lambda r: r["step_start"])
    return [b["step_start"] - a["step_end"] for a, b in zip(ordered, ordered[1:], strict=False)]


# --------------------------------------------------------------------------------------------
# Preemption: every slot held by low-priority agents, then critical tasks arrive


def set_preemption(config_dir: Path, rule: Mapping[str, Any] | None) -> None:
    """Write the `preemption:` rule of pools.yaml, or remove it (None). The dispatch sensor's
    live registry reads the file again on its next tick."""
    path = config_dir / "pools.yaml"
    pools = yaml.safe_load(path.read_text())
    pools.pop("preemption", None)
    if rule is not None:
        pools["preemption"] = dict(rule)
    path.write_text(yaml.safe_dump(pools, sort_keys=False))


def run_preemption_phase(bench: Bench, label: str, critical: int, bound_s: float) -> dict:
    """SLOTS low-priority agents that hold their slots until released (`HOLD<label>`), then
    `critical` critical tasks. The holders are released once every critical agent has started,
    or `bound_s` after the critical tasks arrived; then everything runs to its end. What each
    task's agents did and what its record says."""
    store = bench.store
    holders = [
        store.add(LOW_PROJECT, f"bench {label} holder {i} NOOP HOLD{label}") for i in range(SLOTS)
    ]
    holder_ids = [task.id for task in holders]
    progress(f"{label}: {SLOTS} low-priority agents to hold every slot")
    bench.wait(
        f"the {label} holders' agents",
        lambda: set(holder_ids) <= set(bench.agent_runs()),
        STARTUP_TIMEOUT_S,
    )
    criticals = [
        store.add(CRITICAL_PROJECT, f"bench {label} critical {i} NOOP SLEEP{CRITICAL_WORK_S}")
        for i in range(critical)
    ]
    critical_ids = [task.id for task in criticals]
    progress(f"{label}: {critical} critical tasks queued; waiting at most {bound_s:.0f} s")
    deadline = time.monotonic() + bound_s
    while not set(critical_ids) <= set(bench.agent_runs()) and time.monotonic() < deadline:
        if bench.daemon.poll() is not None:
            raise click.ClickException(f"the daemon exited during the {label} phase")
        time.sleep(0.5)
    released = bench.release(label)
    started = len(set(critical_ids) & set(bench.agent_runs()))
    progress(f"{label}: {started} of {critical} critical agents started; holders released")
    ids = [*holder_ids, *critical_ids]

    def done() -> bool:
        if not all(task.status.finished for task in store.tasks(ids=ids)):
            return False
        runs = bench.instance.get_runs(filters=dg.RunsFilter(tags={"orch/task": ids}))
        return all(run.is_finished for run in runs)

    bench.wait(f"the {label} tasks to finish", done, 300 + 60 * len(ids))
    agents = bench.agent_runs()
    tasks = {task.id: task for task in store.tasks(ids=ids)}
    return {
        "released_at": released,
        "bound_s": bound_s,
        "critical": [_task_record(tasks[i], agents.get(i, [])) for i in critical_ids],
        "holders": [_task_record(tasks[i], agents.get(i, [])) for i in holder_ids],
    }


def _task_record(task: Any, agents: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task": task.id,
        "added": task.created_at.timestamp(),
        "status": task.status.value,
        "agents": agents,
        "interruptions": task.interruptions,
        "preempted_others": task.extra.get("preempted_others", []),
    }


def _moment(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def measure_preemption(phase: Mapping[str, Any]) -> dict[str, Any]:
    """Critical waits (added -> first agent start), split by whether the agent started before
    the holders were released; the preemptions the holders' records show, and their timing."""
    released = phase["released_at"]
    waits = []
    for task in phase["critical"]:
        start = task["agents"][0]["start"] if task["agents"] else None
        waits.append(
            {
                "task": task["task"],
                "wait_s": round(start - task["added"], 2) if start is not None else None,
                "before_release": start is not None and start < released,
            }
        )
    first_start = {t["task"]: t["agents"][0]["start"] for t in phase["critical"] if t["agents"]}
    added = {t["task"]: t["added"] for t in phase["critical"]}
    preemptions = [
        {**entry, "victim": holder["task"]}
        for holder in phase["holders"]
        for entry in holder["interruptions"]
        if entry.get("kind") == "preempted"
    ]
    victims = [h for h in phase["holders"] if any(p["victim"] == h["task"] for p in preemptions)]
    resumed = [
        h
        for h in victims
        if len(h["agents"]) >= 2 and len({a["session"] for a in h["agents"]}) == 1
    ]
    decided, checkpointed, handover = [], [], []
    for entry in preemptions:
        at, ended = _moment(entry.get("at")), _moment(entry.get("ended_at"))
        by = entry.get("by")
        if at is not None and by in added:
            decided.append(at - added[by])
        if at is not None and ended is not None:
            checkpointed.append(ended - at)
        if ended is not None and by in first_start:
            handover.append(first_start[by] - ended)
    early = [w["wait_s"] for w in waits if w["before_release"]]
    return {
        "critical": len(waits),
        "started_before_release": len(early),
        "wait_s": _summary(early),
        "waits": waits,
        "preemptions": len(preemptions),
        "victims": len(victims),
        "victims_resumed_session": len(resumed),
        "recorded_on_waiting": sum(len(t["preempted_others"]) for t in phase["critical"]),
        "arrival_to_decision_s": _summary(decided),
        "decision_to_checkpoint_s": _summary(checkpointed),
        "checkpoint_to_agent_s": _summary(handover),
        "not_succeeded": [
            t["task"] for t in [*phase["critical"], *phase["holders"]] if t["status"] != "succeeded"
        ],
    }


def main_preemption(
    critical: int, after_s: int, bound_s: int, output: Path, keep: bool, seed: int
) -> None:
    """Both phases on one daemon: without a `preemption:` rule, then with one."""
    results: dict[str, Any] = {
        "machine": machine(dagster=version("dagster")),
        "mode": "preemption",
        "slots": SLOTS,
        "critical_tasks": critical,
        "critical_work_s": CRITICAL_WORK_S,
        "after_s": after_s,
        "bound_s": bound_s,
        "seed": seed,
    }
    items = [
        Item(LOW_PROJECT, LOW_PROJECT, "low", 0.0),
        Item(CRITICAL_PROJECT, CRITICAL_PROJECT, "critical", 0.0),
    ]
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="orch-bench-preemption-"))
    try:
        with running_daemon(root, items, sessions=True) as bench:
            progress(f"daemon up in {root}")
            config = Path(bench.env["ORCH_CONFIG_DIR"])
            phases: dict[str, Any] = {}
            set_preemption(config, None)
            phases["without"] = run_preemption_phase(bench, "without", critical, bound_s)
            set_preemption(config, {"after": after_s, "min_priority": "critical"})
            phases["with"] = run_preemption_phase(bench, "with", critical, bound_s)
            results["phases"] = phases
            results["without"] = measure_preemption(phases["without"])
            results["with"] = measure_preemption(phases["with"])
    finally:
        discard(root, keep)
    finish(results, render_preemption_table, output, began)


# --------------------------------------------------------------------------------------------
# Reporting


def _f(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _verdict(ok: bool | None, applies: bool = True, why: str = "") -> str:
    if not applies:
        return f"not judged{f' ({why})' if why else ''}"
    if ok is None:
        return "no data"
    return "**met**" if ok else "**missed**"


def _ticks(results: dict[str, Any], phase: str) -> str:
    ticks = results.get(f"sensors_during_{phase}", {}).get("task_dispatch", {})
    duration = ticks.get("duration_s")
    return f"{duration['median']:.2f} / {duration['max']:.2f}" if duration else "-"


def render_table(results: dict[str, Any]) -> str:
    ours, base = results["ours"], results["baseline"]
    floor = results["floor"]["gap_s"]
    long_agents = results["agent_seconds"][0] >= 30
    short_agents = results["agent_seconds"][1] <= 5
    crit_ours, crit_base = ours["wait_s"]["critical"], base["wait_s"]["critical"]
    gap_ratio = ours["gap_s"]["median"] / floor["median"] if ours["gap_s"] and floor else None
    default_floor = results.get("floor_dagster_defaults", {}).get("gap_s")
    default_ratio = (
        ours["gap_s"]["median"] / default_floor["median"]
        if ours["gap_s"] and default_floor
        else None
    )
    starving = ours["starvation"]
    lines = [
        f"{results['projects']} projects x {results['tasks_per_project']} tasks, "
        f"{SLOTS} slots, agents {results['agent_seconds'][0]}-{results['agent_seconds'][1]} s, "
        f"seed {results['seed']}, dequeue workers {results['dequeue_workers']}, wall "
        f"{results['wall_s']:.0f} s, load average {results['machine']['loadavg_at_start']} -> "
        f"{results['machine']['loadavg_at_end']}:",
        "",
        "| measure | ours | plain Dagster (FIFO) | goal | verdict |",
        "|---|---:|---:|---|---|",
        f"| slot utilisation while backlog (agents working) | {_pct(ours['utilisation_agents'])} "
        f"| {_pct(base['utilisation_agents'])} | >= 90% (30-60 s agents) | "
        + _verdict(
            (ours["utilisation_agents"] or 0) >= 0.9, long_agents, "goal is for 30-60 s agents"
        )
        + " |",
        f"| slot utilisation while backlog (runs holding slots) | "
        f"{_pct(ours['utilisation_slots'])} | {_pct(base['utilisation_slots'])} | | |",
        f"| agent end -> next agent start on the freed slot, median (max) | "
        f"{_f(ours['gap_s'] and ours['gap_s']['median'], ' s')} "
        f"({_f(ours['gap_s'] and ours['gap_s']['max'], ' s')}) | "
        f"{_f(base['gap_s'] and base['gap_s']['median'], ' s')} "
        f"({_f(base['gap_s'] and base['gap_s']['max'], ' s')}) | <= 1.5x the floor through "
        f"the shipped queue ({_f(floor and floor['median'], ' s')}); ours is "
        f"{_f(gap_ratio, 'x')} | "
        + _verdict(
            gap_ratio is not None and gap_ratio <= 1.5, short_agents, "goal is for 2-5 s agents"
        )
        + " |",
        f"| the same gap against the floor with Dagster's default run queue | | | <= 1.5x "
        f"({_f(default_floor and default_floor['median'], ' s')}); ours is "
        f"{_f(default_ratio, 'x')} | "
        + _verdict(
            default_ratio is not None and default_ratio <= 1.5,
            short_agents and default_floor is not None,
            "goal is for 2-5 s agents",
        )
        + " |",
        f"| critical mean wait | {_f(crit_ours and crit_ours['mean'], ' s')} | "
        f"{_f(crit_base and crit_base['mean'], ' s')} | <= half the baseline's | "
        + _verdict(
            crit_ours is not None
            and crit_base is not None
            and crit_ours["mean"] <= crit_base["mean"] / 2
        )
        + " |",
        f"| Jain's index of weighted shares (window s) | {_f(ours['jain'], '', 3)} "
        f"({_f(ours['fairness_window_s'])}) | {_f(base['jain'], '', 3)} "
        f"({_f(base['fairness_window_s'])}) | >= 0.9 | "
        + _verdict(ours["jain"] is not None and ours["jain"] >= 0.9)
        + " |",
        f"| starvation: max wait of `{starving['lowest_class']}` vs ageing bound | "
        f"{_f(starving['max_wait_s'], ' s')} | {_f(base['starvation']['max_wait_s'], ' s')} | "
        f"<= {starving['bound_s']} s (ageing {starving['ageing_s']:.0f} s + FIFO's longest "
        f"wait) | "
        + _verdict(
            starving["max_wait_s"] is not None and starving["max_wait_s"] <= starving["bound_s"],
            max(w["max"] for w in ours["wait_s"].values() if w) >= starving["ageing_s"],
            "no task waited the ageing period",
        )
        + " |",
        "",
        "Wait (request -> agent start) per class, seconds, mean / max:",
        "",
        "| class | ours | plain Dagster (FIFO) |",
        "|---|---:|---:|",
    ]
    for cls in CLASSES:
        a, b = ours["wait_s"][cls], base["wait_s"][cls]
        lines.append(
            f"| {cls} | {_f(a and a['mean'])} / {_f(a and a['max'])} | "
            f"{_f(b and b['mean'])} / {_f(b and b['max'])} |"
        )
    lines += [
        "",
        "| other | ours | plain Dagster (FIFO) |",
        "|---|---:|---:|",
        f"| makespan s | {ours['makespan_s']} | {base['makespan_s']} |",
        f"| run launched -> run worker up s, median | {ours['launch_to_worker_s']['median']} | "
        f"{base['launch_to_worker_s']['median']} |",
        f"| run worker up -> agent start s, median | {ours['worker_to_agent_s']['median']} | "
        f"{base['worker_to_agent_s']['median']} |",
        f"| agent end -> run end s, median | {ours['agent_to_run_end_s']['median']} | "
        f"{base['agent_to_run_end_s']['median']} |",
        f"| `task_dispatch` sensor tick s, median / max | {_ticks(results, 'ours')} | "
        f"{_ticks(results, 'baseline')} |",
        f"| floor: empty run end -> next start on one slot s, median / max ({floor and floor['n']} "
        f"gaps) | {_f(floor and floor['median'], '', 2)} / {_f(floor and floor['max'], '', 2)} | |",
        f"| the floor with Dagster's default run queue s, median / max | "
        f"{_f(default_floor and default_floor['median'], '', 2)} / "
        f"{_f(default_floor and default_floor['max'], '', 2)} | |",
    ]
    return "\n".join(lines)


def _waits(measure: Mapping[str, Any], bound_s: float) -> str:
    """Mean / max of the waits that ended before the holders were released, else '> bound'."""
    wait = measure["wait_s"]
    if measure["started_before_release"] == measure["critical"] and wait:
        return f"{wait['mean']:.1f} / {wait['max']:.1f} s"
    if wait:
        return f"{wait['mean']:.1f} / > {bound_s:.0f} s"
    return f"> {bound_s:.0f} s"


def render_preemption_table(results: dict[str, Any]) -> str:
    on, off = results["with"], results["without"]
    after, bound, n = results["after_s"], results["bound_s"], results["critical_tasks"]
    goal_s = after + PREEMPTION_GOAL_S
    all_early = on["started_before_release"] == n
    machine_ = results["machine"]
    lines = [
        f"{SLOTS} slots held by low-priority agents that run until released, then {n} critical "
        f"tasks arrive (agents {results['critical_work_s']} s); wait = task added -> its agent "
        f"starts; the holders are released when every critical agent has started or {bound} s "
        f"after the critical tasks arrived. Wall {results['wall_s']:.0f} s, load average "
        f"{machine_['loadavg_at_start']} -> {machine_['loadavg_at_end']}:",
        "",
        f"| measure | with preemption (after {after} s) | without | goal | verdict |",
        "|---|---:|---:|---|---|",
        f"| critical tasks started while the slots were held | {on['started_before_release']} / "
        f"{n} | {off['started_before_release']} / {n} | all with, none without | "
        + _verdict(all_early and off["started_before_release"] == 0)
        + " |",
        f"| critical wait, mean / max | {_waits(on, bound)} | {_waits(off, bound)} | max <= "
        f"after + {PREEMPTION_GOAL_S} s ({goal_s} s) | "
        + _verdict(all_early and on["wait_s"] is not None and on["wait_s"]["max"] <= goal_s)
        + " |",
        f"| preemptions (distinct victims) | {on['preemptions']} ({on['victims']}) | "
        f"{off['preemptions']} ({off['victims']}) | one per critical task, none without | "
        + _verdict(on["preemptions"] == n and off["preemptions"] == 0)
        + " |",
        f"| preemptions recorded on the waiting task | {on['recorded_on_waiting']} | "
        f"{off['recorded_on_waiting']} | as many as preemptions | "
        + _verdict(on["recorded_on_waiting"] == on["preemptions"])
        + " |",
        f"| victims that continued their agent session | {on['victims_resumed_session']} / "
        f"{on['victims']} | - | all | "
        + _verdict(on["victims_resumed_session"] == on["victims"], on["victims"] > 0, "no victim")
        + " |",
        f"| tasks that did not succeed | {len(on['not_succeeded'])} | "
        f"{len(off['not_succeeded'])} | none | "
        + _verdict(not on["not_succeeded"] and not off["not_succeeded"])
        + " |",
        "",
        "Where the wait goes with preemption, seconds, median (max):",
        "",
        "| segment | s |",
        "|---|---:|",
    ]
    for key, label in (
        ("arrival_to_decision_s", f"critical task added -> its victim chosen (after = {after})"),
        ("decision_to_checkpoint_s", "victim chosen -> its work committed and re-queued"),
        ("checkpoint_to_agent_s", "victim re-queued -> the critical agent starts"),
    ):
        value = on[key]
        lines.append(
            f"| {label} | {_f(value and value['median'])} ({_f(value and value['max'])}) |"
        )
    lines += ["", "Per critical task, wait s (with / without):", ""]
    for a, b in zip(on["waits"], off["waits"], strict=True):
        left = _f(a["wait_s"]) if a["before_release"] else f"> {bound}"
        right = _f(b["wait_s"]) if b["before_release"] else f"> {bound}"
        lines.append(f"- {left} / {right}")
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="6 projects x 4 tasks, agents 2-5 s.")
@click.option("--short", is_flag=True, help="20 projects x 10 tasks, agents 2-5 s.")
@click.option("--projects", type=click.IntRange(3, 500), default=None, help="Default 20.")
@click.option("--tasks", type=click.IntRange(1, 1000), default=None, help="Per project; 10.")
@click.option("--seconds", nargs=2, type=float, default=None, help="Agent time range; 30 60.")
@click.option("--floor-runs", type=click.IntRange(3, 100), default=None, help="Default 8.")
@click.option(
    "--dequeue-workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Override run_queue.dequeue_num_workers of dagster.yaml (shipped: 2).",
)
@click.option(
    "--ageing",
    type=click.IntRange(1, 7 * 24 * 3600),
    default=None,
    help="Set ageing_seconds of the `agents` pool (shipped: the default, 3600).",
)
@click.option(
    "--preemption",
    is_flag=True,
    help="Measure preemption instead: critical tasks arriving while low-priority agents hold "
    "every slot, with and without a `preemption:` rule.",
)
@click.option(
    "--critical",
    type=click.IntRange(1, SLOTS),
    default=3,
    show_default=True,
    help="With --preemption: how many critical tasks arrive.",
)
@click.option(
    "--after",
    type=click.IntRange(1, 3600),
    default=20,
    show_default=True,
    help="With --preemption: the rule's `after` (seconds a critical task waits first).",
)
@click.option(
    "--bound",
    type=click.IntRange(10, 7200),
    default=120,
    show_default=True,
    help="With --preemption: release the holders this long after the critical tasks arrive.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Default {RESULTS_FILE.relative_to(REPO_ROOT)} "
    f"({PREEMPTION_RESULTS_FILE.relative_to(REPO_ROOT)} with --preemption).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directory (daemon log, state).")
def main(
    quick: bool,
    short: bool,
    projects: int | None,
    tasks: int | None,
    seconds: tuple[float, float] | None,
    floor_runs: int | None,
    dequeue_workers: int | None,
    ageing: int | None,
    preemption: bool,
    critical: int,
    after: int,
    bound: int,
    seed: int,
    output: Path | None,
    keep: bool,
) -> None:
    """Share 4 agent slots among many projects through the real daemon, against FIFO; or, with
    --preemption, how long critical tasks wait for slots held by low-priority agents."""
    if quick and short:
        raise click.UsageError("--quick or --short, not both")
    if preemption:
        others = {"--quick": quick, "--short": short, "--projects": projects, "--tasks": tasks}
        others |= {"--seconds": seconds, "--floor-runs": floor_runs, "--ageing": ageing}
        others |= {"--dequeue-workers": dequeue_workers}
        given = [name for name, value in others.items() if value]
        if given:
            raise click.UsageError(f"--preemption takes none of {', '.join(given)}")
        if bound <= after:
            raise click.UsageError(f"--bound ({bound}) must be longer than --after ({after})")
        main_preemption(critical, after, bound, output or PREEMPTION_RESULTS_FILE, keep, seed)
        return
    output = output or RESULTS_FILE
    projects = projects or (6 if quick else 20)
    tasks = tasks or (4 if quick else 10)
    low, high = seconds or ((2.0, 5.0) if quick or short else (30.0, 60.0))
    floor_runs = floor_runs or (5 if quick else 8)
    items = workload(projects, tasks, low, high, seed)
    mode = "quick" if quick else "short" if short else "full"
    results: dict[str, Any] = {
        "machine": machine(dagster=version("dagster")),
        "mode": mode,
        "projects": projects,
        "tasks_per_project": tasks,
        "agent_seconds": [low, high],
        "slots": SLOTS,
        "seed": seed,
        "dispatch_interval_s": DISPATCH_INTERVAL_S,
        "dequeue_workers": dequeue_workers or "as shipped",
    }
    run_queue = None
    if dequeue_workers is not None:
        shipped = shipped_instance_config()["run_queue"]
        run_queue = {**shipped, "dequeue_num_workers": dequeue_workers}
    began = time.monotonic()
    progress(f"floor with Dagster's default run queue ({floor_runs} empty runs, one slot)")
    results["floor_dagster_defaults"] = measure_floor(floor_runs, run_queue={}, keep=keep)
    root = Path(tempfile.mkdtemp(prefix="orch-bench-allocation-"))
    try:
        with running_daemon(root, items, run_queue, ageing) as bench:
            from orchestration.allocation.control import AllocationOverrides, effective_settings
            from orchestration.registry import load_registry
            from orchestration.settings import Settings

            registry = load_registry(Settings.from_env(bench.env))
            ageing_s = effective_settings(registry, AllocationOverrides(bench.store).all()).ageing_s
            progress(f"daemon up in {root}; floor ({floor_runs} empty runs, one slot)")
            floor = run_floor(bench, floor_runs + 1, "floor")[1:]  # the first loads the code
            results["floor"] = {"gap_s": _summary(floor_gaps(floor)), "runs": floor}
            progress("warming up our code location (one task)")
            run_ours(bench, [Item("warm", items[0].project, items[0].cls, 0.1)])
            started, since = time.monotonic(), time.time()
            ours = run_ours(bench, items)
            progress(f"ours done in {time.monotonic() - started:.0f} s")
            results["sensors_during_ours"] = sensor_ticks(bench.instance, since, time.time())
            started, since = time.monotonic(), time.time()
            base = run_baseline(bench, items)
            progress(f"baseline done in {time.monotonic() - started:.0f} s")
            results["sensors_during_baseline"] = sensor_ticks(bench.instance, since, time.time())
            fifo_max_wait = max(s.agent_start - s.added for s in base)
            results["ours"] = measure(ours, ageing_s, fifo_max_wait)
            results["baseline"] = measure(base, ageing_s, fifo_max_wait)
            results["samples"] = {
                "ours": [asdict(s) for s in ours],
                "baseline": [asdict(s) for s in base],
            }
    finally:
        discard(root, keep)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
