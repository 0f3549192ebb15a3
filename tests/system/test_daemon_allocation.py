"""Agent-slot allocation through the real `dagster-daemon`: pool limits, run priorities set by
the `task_dispatch` sensor, live `orch allocation set`, and slots given back on cancel and crash.

One daemon serves the whole module, on a throwaway registry with `agents: {slots: 2}` and these
projects, each a real git repository whose agent is the shipped `claude_code` profile running
the stand-in `claude` (tests/support/fakes/claude) first on PATH:

    block   normal    max_parallel 2   holds both slots while a test queues work behind it
    low     low       max_parallel 2
    high    critical  max_parallel 2
    p1      normal    max_parallel 1   the concurrency monitor's three projects
    p2      high      max_parallel 2
    p3      low       max_parallel 2
    c_one   low       max_parallel 2   live changes; only that test uses them, so that they
    c_two   low       max_parallel 2     have the same history of service
    e_hi    critical  max_parallel 2   weighted shares; only that test uses them
    e_lo    low       max_parallel 2

The stand-in logs a `start` and an `end` line (time, pid, cwd: the task's worktree) to the file
FAKE_CLAUDE_LOG names. FAKE_CLAUDE_LOG is set in the daemon's environment and listed in every
project's `secrets`, which is how it passes the agents' environment allowlist. Words in the
prompt: `SLEEP<n>` works n seconds; `HOLD<name>` works until the file `release/<name>` exists
next to the log (the test releases it), so a test decides when a slot frees.

Every test leaves the system idle (no queued or running task, no task run in the queue). The
last test needs no daemon: two instances adding the same task partition at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml

from orchestration.process import kill_process_group
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.tags import tasks_partitions_name
from orchestration.tasks.lifecycle import ensure_partitions
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.daemon import (
    DaemonClient,
    daemon_environment,
    running_daemon,
    write_instance,
    write_workspace,
)
from tests.support.git import make_git_repo
from tests.support.paths import REPO_ROOT, path_with_fakes

pytestmark = pytest.mark.slow

SLOTS = 2
LOG_VAR = "FAKE_CLAUDE_LOG"
WAIT_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 0.2
DEQUEUE_INTERVAL_S = 1
#: Work-conserving: a free slot may stay free while a runnable queued run waits for at most this
#: many dequeue intervals. Generous: one pass of the queue waits for the runs it launches (a
#: gRPC call that starts a process), which takes 1-2 s on an idle 2-core machine and over 5 s
#: at load 8; a slot lost to bad accounting would stay free until some run ends (much longer).
WORK_CONSERVING_INTERVALS = 10

#: name -> (priority, max_parallel)
PROJECTS: dict[str, tuple[str, int]] = {
    "block": ("normal", 2),
    "low": ("low", 2),
    "high": ("critical", 2),
    "p1": ("normal", 1),
    "p2": ("high", 2),
    "p3": ("low", 2),
    "c_one": ("low", 2),
    "c_two": ("low", 2),
    "e_hi": ("critical", 2),
    "e_lo": ("low", 2),
}
TASK_TAG = "orch/task"
PROJECT_TAG = "project"
PRIORITY_TAG = "dagster/priority"
ACTIVE = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# The shipped instance config, with faster run monitoring (a crashed run is failed sooner).
INSTANCE_CHANGES = {
    "run_queue": {"dequeue_interval_seconds": DEQUEUE_INTERVAL_S},
    "run_monitoring": {"poll_interval_seconds": 2},
}

# --- the running system -------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentCall:
    project: str
    task: str
    agent: str  # the stand-in's own id: inside the sandbox every agent has the same pid
    start: float
    end: float | None


@dataclass(frozen=True)
class Sample:
    """What the instance said at one moment: task runs holding slots and queued, per project."""

    time: float
    active: dict[str, int]
    queued: dict[str, int]

    @property
    def in_use(self) -> int:
        return sum(self.active.values())


@dataclass
class Orchestrator(DaemonClient):
    _added: int = 0

    @property
    def agent_log(self) -> Path:
        return Path(self.env[LOG_VAR])

    # --- asking and telling

    def add(self, project: str, prompt: str) -> str:
        """`orch task add`; the task id. Prompts get a serial number, so each is unique."""
        self._added += 1
        return self.orch("task", "add", project, f"{prompt} #{self._added}").strip()

    def release(self, name: str) -> None:
        (self.agent_log.parent / "release" / name).touch()

    def calls(self) -> dict[str, AgentCall]:
        """Per task id, the stand-in's (last) start and end. Its working directory is the
        task's worktree, ORCH_HOME/workspaces/<project>/worktrees/<task id>."""
        starts: dict[str, tuple[str, float, str]] = {}
        ends: dict[str, float] = {}
        if self.agent_log.exists():
            for line in self.agent_log.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                if entry["event"] == "start":
                    cwd = Path(entry["cwd"])
                    starts[cwd.name] = (cwd.parent.parent.name, entry["time"], entry["agent"])
                elif entry["event"] == "end":
                    ends[entry["agent"]] = entry["time"]
        return {
            task: AgentCall(project, task, agent, start, ends.get(agent))
            for task, (project, start, agent) in starts.items()
        }

    def task_runs(self, task_id: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task_id})))

    def sample(self, instance: dg.DagsterInstance | None = None) -> Sample:
        instance = instance or self.instance
        now = time.time()
        counts: dict[str, dict[str, int]] = {"active": {}, "queued": {}}
        for key, statuses in (("active", ACTIVE), ("queued", [dg.DagsterRunStatus.QUEUED])):
            for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
                if TASK_TAG in run.tags:
                    project = run.tags.get(PROJECT_TAG, "")
                    counts[key][project] = counts[key].get(project, 0) + 1
        return Sample(now, counts["active"], counts["queued"])

    # --- waiting

    def wait_for(
        self, what: str, ready: Callable[[], Any], timeout_s: float = WAIT_TIMEOUT_S
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = ready()
            if value:
                return value
            if self.daemon.poll() is not None:
                pytest.fail(self.explain(f"the daemon exited ({self.daemon.returncode})"))
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"timed out after {timeout_s:.0f}s waiting for {what}"))
            time.sleep(0.1)

    def wait_started(self, *task_ids: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
        self.wait_for(
            f"the agents of {', '.join(task_ids)} to start",
            lambda: set(task_ids) <= set(self.calls()),
            timeout_s,
        )

    def wait_queued(self, *task_ids: str) -> dict[str, dg.DagsterRun]:
        """Each task's run, once every one is in the run queue (QUEUED)."""

        def queued() -> dict[str, dg.DagsterRun] | None:
            found = {}
            for task_id in task_ids:
                runs = [
                    r for r in self.task_runs(task_id) if r.status is dg.DagsterRunStatus.QUEUED
                ]
                if not runs:
                    return None
                found[task_id] = runs[0]
            return found

        return self.wait_for(f"queued runs of {', '.join(task_ids)}", queued)

    def wait_finished(self, *task_ids: str, timeout_s: float = WAIT_TIMEOUT_S) -> list[Task]:
        def finished() -> list[Task] | None:
            tasks = self.store.tasks(ids=list(task_ids))
            done = len(tasks) == len(task_ids) and all(t.status.finished for t in tasks)
            return tasks if done else None

        return self.wait_for(f"tasks {', '.join(task_ids)} to finish", finished, timeout_s)

    def wait_idle(self, timeout_s: float = WAIT_TIMEOUT_S) -> None:
        """No task queued or running, and no task run queued or holding a slot."""

        def idle() -> bool:
            busy = self.store.tasks(statuses=[TaskStatus.QUEUED, TaskStatus.RUNNING])
            sample = self.sample()
            return not busy and not sample.active and not sample.queued

        self.wait_for("the system to be idle", idle, timeout_s)

    def explain(self, message: str) -> str:
        busy = self.store.tasks(statuses=[TaskStatus.QUEUED, TaskStatus.RUNNING])
        runs = self.instance.get_runs(limit=15)
        return "\n".join(
            [
                message,
                "unfinished tasks: "
                + json.dumps([(t.id, t.project, t.status.value, t.run_id) for t in busy]),
                "latest runs:",
                *(
                    f"  {r.run_id[:8]} {r.status.value} {r.tags.get(PROJECT_TAG)} "
                    f"{r.tags.get(TASK_TAG)} priority={r.tags.get(PRIORITY_TAG)}"
                    for r in runs
                ),
                "last agent calls:",
                *(
                    f"  {c.project} {c.task} agent={c.agent} start={c.start:.2f} end={c.end}"
                    for c in sorted(self.calls().values(), key=lambda c: c.start)[-15:]
                ),
                "daemon log tail:",
                self.daemon_log.read_text(errors="replace")[-3000:],
            ]
        )


class Monitor:
    """Samples the instance every SAMPLE_EVERY_S in a thread of its own (its own instance)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        instance = dg.DagsterInstance.from_config(self.orchestrator.env["DAGSTER_HOME"])
        try:
            while not self._stop.is_set():
                self.samples.append(self.orchestrator.sample(instance))
                self._stop.wait(SAMPLE_EVERY_S)
        finally:
            instance.dispose()

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def work_conserving_gaps(
    samples: Sequence[Sample], slots: int, max_parallel: dict[str, int]
) -> list[tuple[float, float]]:
    """(start, length) of every stretch of samples with a free slot while a queued task run
    of a project below its `max_parallel` waited."""
    gaps: list[tuple[float, float]] = []
    began: float | None = None
    for previous, sample in zip([None, *samples], samples, strict=False):
        waiting = any(
            n > 0 and sample.active.get(p, 0) < max_parallel[p] for p, n in sample.queued.items()
        )
        if sample.in_use < slots and waiting:
            if began is None:
                began = previous.time if previous is not None else sample.time
        elif began is not None:
            gaps.append((began, sample.time - began))
            began = None
    if began is not None:
        gaps.append((began, samples[-1].time - began))
    return gaps


def _write_registry(
    root: Path, projects_wanted: dict[str, tuple[str, int]] = PROJECTS
) -> dict[str, str]:
    shutil.copytree(REPO_ROOT / "config", root / "config")
    pools_file = root / "config" / "pools.yaml"
    pools = yaml.safe_load(pools_file.read_text())
    pools["agents"]["slots"] = SLOTS
    pools_file.write_text(yaml.safe_dump(pools, sort_keys=False))
    projects = root / "projects"
    (projects / "templates").mkdir(parents=True)
    for name, (priority, max_parallel) in projects_wanted.items():
        repo = make_git_repo(root / "repos" / name, {"README.md": f"{name}\n"})
        spec = {
            "name": name,
            "repo": str(repo),
            "priority": priority,
            "agent": {
                "profile": "claude_code",
                "max_parallel": max_parallel,
                "timeout": 600,
            },
            "secrets": [LOG_VAR],
        }
        (projects / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return {
        PROJECTS_DIR_VAR: str(projects),
        CONFIG_DIR_VAR: str(root / "config"),
        HOME_VAR: str(root / "home"),
    }


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    root = tmp_path_factory.mktemp("allocation")
    (root / "agents" / "release").mkdir(parents=True)
    env = _write_registry(root)
    env["DAGSTER_HOME"] = str(write_instance(root, INSTANCE_CHANGES))
    env[LOG_VAR] = str(root / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)
    with running_daemon(root, write_workspace(root), daemon_env) as (daemon, daemon_log):
        orchestrator = Orchestrator(root, env, daemon, daemon_log)
        try:
            # The first runs load the code and start the code server's run workers warm.
            warm = [orchestrator.add("block", "warm up") for _ in range(SLOTS)]
            tasks = orchestrator.wait_finished(*warm, timeout_s=240)
            failed = [t.id for t in tasks if t.status is not TaskStatus.SUCCEEDED]
            assert not failed, orchestrator.explain(f"warm-up tasks {failed} failed")
            orchestrator.wait_idle()
            yield orchestrator
        finally:
            for path in (root / "agents" / "release").iterdir():
                path.unlink()
            orchestrator.close()


@pytest.fixture
def idle_after(orchestrator: Orchestrator) -> Iterator[list[str]]:
    """Hold names a test uses; released (and the system left idle) however the test ends."""
    holds: list[str] = []
    yield holds
    for name in holds:
        orchestrator.release(name)
    orchestrator.wait_idle(timeout_s=180)


def _hold_slots(orchestrator: Orchestrator, holds: list[str], name: str) -> list[str]:
    """Both slots taken by `block` tasks that work until `name` is released."""
    holds.append(name)
    blockers = [orchestrator.add("block", f"hold the slot HOLD{name}") for _ in range(SLOTS)]
    orchestrator.wait_started(*blockers)
    return blockers


def _priorities(runs: dict[str, dg.DagsterRun], orchestrator: Orchestrator) -> dict[str, int]:
    """The current `dagster/priority` of each task's run."""
    return {
        task_id: int(orchestrator.instance.get_run_by_id(run.run_id).tags[PRIORITY_TAG])
        for task_id, run in runs.items()
    }


# --- the tests ----------------------------------------------------------------------------------


def test_high_priority_project_starts_first_when_slots_free(
    orchestrator: Orchestrator, idle_after: list[str]
) -> None:
    _hold_slots(orchestrator, idle_after, "a_block")
    low = [orchestrator.add("low", f"low work {i} SLEEP1") for i in range(2)]
    orchestrator.wait_queued(*low)  # queued first: older than every `high` task
    high = [orchestrator.add("high", f"high work {i} SLEEP1") for i in range(2)]
    runs = orchestrator.wait_queued(*low, *high)
    priorities = _priorities(runs, orchestrator)
    assert min(priorities[t] for t in high) > max(priorities[t] for t in low), priorities

    orchestrator.release("a_block")
    orchestrator.wait_finished(*low, *high)
    calls = orchestrator.calls()
    assert max(calls[t].start for t in high) < min(calls[t].start for t in low), (
        "a low-priority task started before the high-priority ones:\n"
        + "\n".join(f"{calls[t].project} {t} {calls[t].start:.2f}" for t in [*low, *high])
    )


def test_limits_hold_and_slots_never_idle_while_work_waits(
    orchestrator: Orchestrator, idle_after: list[str], record_property: Callable
) -> None:
    workload = [("p1", 4), ("p2", 3), ("p3", 3)]  # p1 first: unlimited, it would take both slots
    max_parallel = {name: limit for name, (_, limit) in PROJECTS.items()}
    with Monitor(orchestrator) as monitor:
        ids = [
            orchestrator.add(project, f"{project} work {i} SLEEP2")
            for project, count in workload
            for i in range(count)
        ]
        tasks = orchestrator.wait_finished(*ids, timeout_s=240)
        orchestrator.wait_idle()
    assert all(t.status is TaskStatus.SUCCEEDED for t in tasks), orchestrator.explain("failed")
    samples = monitor.samples
    assert len(samples) > 50, f"only {len(samples)} samples"

    over = [s for s in samples if s.in_use > SLOTS]
    assert not over, f"more than {SLOTS} task runs held slots: {over[:3]}"
    over_project = [
        (s.time, p, n) for s in samples for p, n in s.active.items() if n > max_parallel[p]
    ]
    assert not over_project, f"a project ran more than its max_parallel: {over_project[:3]}"

    # The agents' own start/end lines tell the same story, exactly.
    calls = [orchestrator.calls()[t] for t in ids]
    for call in calls:
        at = call.start
        running = [c for c in calls if c.start <= at < (c.end or float("inf"))]
        assert len(running) <= SLOTS, running
        same = [c for c in running if c.project == call.project]
        assert len(same) <= max_parallel[call.project], same

    gaps = work_conserving_gaps(samples, SLOTS, max_parallel)
    worst = max((length for _, length in gaps), default=0.0)
    record_property("worst_work_conserving_gap_s", round(worst, 2))
    record_property("gaps", len(gaps))
    sys.stderr.write(
        f"\nwork-conserving: {len(gaps)} stretch(es) with a free slot and a runnable queued run; "
        f"worst {worst:.2f}s ({len(samples)} samples)\n"
    )
    assert worst <= WORK_CONSERVING_INTERVALS * DEQUEUE_INTERVAL_S, (
        f"a slot stayed free for {worst:.1f}s while a runnable task run waited "
        f"(all stretches: {[(round(t - samples[0].time, 1), round(n, 1)) for t, n in gaps]})"
    )


def test_live_priority_and_slot_changes(orchestrator: Orchestrator, idle_after: list[str]) -> None:
    pid = orchestrator.daemon.pid
    _hold_slots(orchestrator, idle_after, "c_block")
    # Two projects of the same priority and history; c_one's tasks are older, so they go first.
    first = [orchestrator.add("c_one", f"c_one work {i} SLEEP1") for i in range(2)]
    orchestrator.wait_queued(*first)
    idle_after.append("c_hold")
    second = [orchestrator.add("c_two", f"c_two work {i} HOLDc_hold") for i in range(2)]
    runs = orchestrator.wait_queued(*first, *second)
    before = _priorities(runs, orchestrator)
    assert sorted(before[t] for t in first) == sorted(before[t] for t in second), before
    try:
        _change_live(orchestrator, first, second, runs, before)
    finally:
        orchestrator.orch("allocation", "apply")  # back to the YAML: clears every override
    limits = {p.name: p.limit for p in orchestrator.instance.event_log_storage.get_pool_limits()}
    assert limits["agents"] == SLOTS, limits
    assert orchestrator.daemon.poll() is None and orchestrator.daemon.pid == pid


def _change_live(
    orchestrator: Orchestrator,
    first: list[str],
    second: list[str],
    runs: dict[str, dg.DagsterRun],
    before: dict[str, int],
) -> None:
    out = orchestrator.orch("allocation", "set", "c_two", "--priority", "critical")
    assert "set priority:c_two=100" in out, out
    after = _priorities(runs, orchestrator)  # by the command itself, or by a sensor tick
    assert min(after[t] for t in second) > max(after[t] for t in first), after
    assert all(after[t] == before[t] for t in first), (before, after)

    orchestrator.release("c_block")
    orchestrator.wait_started(*second)
    calls = orchestrator.calls()
    assert not set(first) & set(calls), "a c_one task started before the re-prioritised ones"

    # Now one slot: c_one's two tasks wait until both of c_two's have ended, then run alone.
    orchestrator.orch("allocation", "set", "--slots", "1")
    limits = {p.name: p.limit for p in orchestrator.instance.event_log_storage.get_pool_limits()}
    assert limits["agents"] == 1, limits
    with Monitor(orchestrator) as monitor:
        orchestrator.release("c_hold")
        orchestrator.wait_finished(*first, *second)
        orchestrator.wait_idle()
    calls = orchestrator.calls()
    second_done = max(calls[t].end or 0 for t in second)
    one, two = sorted((calls[t] for t in first), key=lambda c: c.start)
    assert one.start >= second_done and one.end is not None and two.start >= one.end, (one, two)
    # Once c_two's runs (started under two slots) have ended, never more than one at a time.
    freed = next(
        i
        for i, s in enumerate(monitor.samples)
        if s.time > second_done and not s.active.get("c_two")
    )
    over = [s for s in monitor.samples[freed:] if s.in_use > 1]
    assert not over, f"two task runs held slots with --slots 1: {over[:3]}"


def test_backlogged_low_priority_project_gets_its_weighted_share(
    orchestrator: Orchestrator, idle_after: list[str]
) -> None:
    """While a critical project has backlog, a low one still gets its weighted share (weights
    16 and 2: here 2 * 2 / 18 = 0.22 slots), not nothing until the critical backlog is gone or
    ageing_s."""
    _hold_slots(orchestrator, idle_after, "e_block")
    # e_hi's first, so that a tie in dagster/priority goes to it (the queue is FIFO within a
    # priority): e_lo can only get in by ranking strictly higher, whenever the sensor last
    # re-ranked. Neither project has run anything before.
    high = [orchestrator.add("e_hi", f"e_hi work {i} SLEEP1") for i in range(10)]
    orchestrator.wait_queued(*high)
    low = [orchestrator.add("e_lo", f"e_lo work {i} SLEEP1") for i in range(2)]
    orchestrator.wait_queued(*low, *high)
    orchestrator.release("e_block")
    orchestrator.wait_finished(*low, *high, timeout_s=180)
    calls = orchestrator.calls()
    order = sorted([*low, *high], key=lambda t: calls[t].start)
    # Weighted fair queueing by tasks started: e_hi's k-th task is due at (k + 1) / 16, e_lo's
    # first at 1 / 2, so e_lo's first starts right after e_hi's 8th (a tie, which the queue
    # gives to the earlier run), with its 9th (the two slots free together) and before its
    # 10th.
    assert min(calls[t].start for t in low) < max(calls[t].start for t in high), [
        calls[t].project for t in order
    ]


def _run_worker(sandbox: psutil.Process) -> psutil.Process:
    """The run worker: the parent of the agent's sandbox, itself started by the code server."""
    worker = sandbox.parent()
    assert worker is not None, f"the sandbox {sandbox.pid} has no parent"
    server = worker.parent()
    server_argv = server.cmdline() if server else []
    assert "grpc" in server_argv and "api" in server_argv, (worker.cmdline(), server_argv)
    return worker


def test_cancel_and_crash_give_the_slot_back(
    orchestrator: Orchestrator, idle_after: list[str]
) -> None:
    idle_after += ["d_keep", "d_cancel", "d_crash", "d_next"]
    keep = orchestrator.add("p2", "keeps one slot HOLDd_keep")
    doomed = orchestrator.add("p3", "to be cancelled HOLDd_cancel")
    orchestrator.wait_started(keep, doomed)
    crashing = orchestrator.add("p3", "to crash HOLDd_crash")
    orchestrator.wait_queued(crashing)

    # Cancel: the run is terminated and its slot goes to the queued task.
    cancelled_at = time.time()
    out = orchestrator.orch("task", "cancel", doomed)
    assert "terminated run" in out, out
    orchestrator.wait_started(crashing, timeout_s=60)
    (run,) = orchestrator.task_runs(doomed)
    assert run.status is dg.DagsterRunStatus.CANCELED, run.status
    assert orchestrator.store.require(doomed).status is TaskStatus.CANCELLED
    waited = orchestrator.calls()[crashing].start - cancelled_at
    sys.stderr.write(f"\ncancel -> next agent start: {waited:.1f}s\n")

    # Crash: the run worker is SIGKILLed; the run fails and its slot goes to the next task.
    following = orchestrator.add("p1", "after the crash HOLDd_next")
    orchestrator.wait_queued(following)
    # The agent's process group as the orchestrator recorded it: its sandbox, on the host.
    sandbox = psutil.Process(int(orchestrator.store.require(crashing).extra["agent_pgid"]))
    started = sandbox.create_time()
    try:
        os.kill(_run_worker(sandbox).pid, signal.SIGKILL)
        killed_at = time.time()
        orchestrator.wait_started(following, timeout_s=90)
        waited = orchestrator.calls()[following].start - killed_at
        sys.stderr.write(f"crash -> next agent start: {waited:.1f}s\n")
        (run,) = orchestrator.task_runs(crashing)
        assert run.status is dg.DagsterRunStatus.FAILURE, run.status
        task = orchestrator.wait_for(
            "the crashed task to be failed",
            lambda: (t := orchestrator.store.require(crashing)).status.finished and t,
        )
        assert task.status is TaskStatus.FAILED, task.status
        assert orchestrator.sample().in_use <= SLOTS
    finally:
        # A SIGKILLed worker may leave its agent behind; the start time guards a reused id.
        kill_process_group(sandbox.pid, started)


def test_adding_the_same_partition_at_once_is_harmless(tmp_path: Path) -> None:
    """The sensor and the CLI, each with its own instance, add one new task's partition at
    the same moment, for 100 tasks; neither may fail."""
    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    tasks = [store.add("p1", f"task {i}") for i in range(100)]
    store.dispose()
    instances = [dg.DagsterInstance.from_config(str(tmp_path)) for _ in range(3)]
    barrier = threading.Barrier(len(instances))
    errors: list[BaseException] = []

    def add_each(instance: dg.DagsterInstance) -> None:
        for task in tasks:
            assert task is not None
            barrier.wait()
            try:
                ensure_partitions(instance, [task])
            except Exception as exc:  # collected: the thread must keep meeting the barrier
                errors.append(exc)

    threads = [threading.Thread(target=add_each, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for instance in instances:
        instance.dispose()
    if errors:
        raise errors[0]
    name = tasks_partitions_name("p1")
    check = dg.DagsterInstance.from_config(str(tmp_path))
    assert all(t is not None and check.has_dynamic_partition(name, t.id) for t in tasks)
