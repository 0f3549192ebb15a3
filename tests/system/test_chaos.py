"""Chaos: no task is lost and none is run twice while the orchestrator's processes are killed.

30 stand-in tasks (`SLEEP2` to `SLEEP6`) over 3 projects and 3 agent slots, through the real
`dagster-daemon` (tests/support/daemon.py `restartable_daemon`; agents unsandboxed, so that
they all log to one file). Every 5 to 20 s a chaos thread SIGKILLs one of these, each kind once
per round in a random order (another kind when there is none of it to kill); its generator is
seeded, the seed printed, and `CHAOS_SEED=<n>` replays the timing and the order of kinds:

    daemon       the `dagster-daemon` process, started again at once with the same command and
                 environment, as a supervisor would; its code server and run workers live on
    code server  the daemon's `dagster api grpc` child: its run workers live on unsupervised,
                 and the daemon starts a new server at its next workspace refresh (<= 60 s)
    run worker   a task run's process (a multiprocessing child of a code server), one whose
                 code server is dead when there is one: the death nothing in Dagster sees
    agent        a stand-in agent's process group (the `pgid` of its start line)
    code server host
                 the code server with its run workers and their agents, as when the host or
                 container they share dies: runs that Dagster's default launcher never fails

The task heartbeat is fast here (ORCH_HEARTBEAT_S=2, ORCH_HEARTBEAT_STALE_S=15), so that a run
whose worker died unseen (its code server dead first) is reaped within the test; run
monitoring's start timeout is short, for a run the daemon died launching; and the run queue
puts back a run it could not launch while the code server was down (RUN_QUEUE) rather than
failing it.

Sampled every 0.5 s: never two runs in progress for one task, never more task runs in progress
than slots. Once the backlog is done: every task in exactly one terminal state (a killed agent
or run worker fails its task, which is allowed), every succeeded task has exactly one commit
with its `Orch-Task` trailer and without `Orch-Interrupted` on its branch in the private
clone, no run in progress, no agent left running. The counts (tasks, succeeded, failed, kills
by kind, lost, duplicated) are printed and recorded as properties of the test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
import pytest

from orchestration.settings import HEARTBEAT_STALE_VAR, HEARTBEAT_VAR
from orchestration.tags import PROJECT_TAG, TASK_TAG
from orchestration.tasks.lifecycle import NO_HEARTBEAT
from orchestration.tasks.models import Task, TaskStatus
from tests.support.daemon import (
    RestartableDaemon,
    daemon_environment,
    restartable_daemon,
    write_instance,
    write_workspace,
)
from tests.support.orchestrator import (
    ACTIVE,
    INSTANCE_CHANGES,
    LOG_VAR,
    Orchestrator,
    agent_groups,
    final_commits,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

SLOTS = 3
#: name -> (priority, max_parallel)
PROJECTS: dict[str, tuple[str, int]] = {
    "chaos_a": ("normal", SLOTS),
    "chaos_b": ("normal", SLOTS),
    "chaos_c": ("normal", SLOTS),
}
TASKS = 30
KILL_EVERY_S = (5.0, 20.0)
KINDS = ("daemon", "code server", "run worker", "agent", "code server host")
#: Chaos stops after this long even if the backlog is not done, so the rest converges in time.
CHAOS_MAX_S = 240.0
BACKLOG_TIMEOUT_S = 600.0
SAMPLE_EVERY_S = 0.5
HEARTBEAT = {HEARTBEAT_VAR: "2", HEARTBEAT_STALE_VAR: "15"}
START_TIMEOUT_S = 30
#: A run the queue cannot launch because the code server is down (the daemon starts a new one
#: within a minute) goes back to the queue instead of failing, and with it its task's attempt.
RUN_QUEUE = {"max_user_code_failure_retries": 12, "user_code_failure_retry_delay": 10}
SEED_VAR = "CHAOS_SEED"


# --- the processes to kill ------------------------------------------------------------------


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def code_servers(daemon: RestartableDaemon) -> list[psutil.Process]:
    """The current daemon's code server (`dagster api grpc`)."""
    try:
        children = psutil.Process(daemon.current.pid).children()
    except psutil.Error:
        return []
    return [p for p in children if {"api", "grpc"} <= set(_cmdline(p))]


def run_workers(daemon: RestartableDaemon) -> list[psutil.Process]:
    """Every task run's process in the daemons' process groups: a code server's
    multiprocessing child (or a `dagster api execute_run`); those whose code server is dead
    (they live on, unsupervised) if there are any."""
    groups = set(daemon.groups)
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) not in groups:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        argv = _cmdline(process)
        text = " ".join(argv)
        if "spawn_main" in text and "--multiprocessing-fork" in argv:
            found.append(process)
        elif {"api", "execute_run"} <= set(argv):
            found.append(process)
    orphans = [p for p in found if not {"api", "grpc"} <= set(_cmdline(_parent(p)))]
    return orphans or found


def _has_run_workers(server: psutil.Process) -> bool:
    try:
        return any("--multiprocessing-fork" in _cmdline(c) for c in server.children())
    except psutil.Error:
        return False


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started, itself first (so that it cannot report
    its children's deaths), as when the host or container they run in dies."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.Error:
            continue


def _parent(process: psutil.Process) -> psutil.Process:
    try:
        return process.parent() or process
    except psutil.Error:
        return process


@dataclass(frozen=True)
class Kill:
    at: float
    kind: str
    target: int


@dataclass
class Chaos:
    """SIGKILLs one process of a random kind every 5-20 s, in a thread, until stopped; keeps
    the daemon running (started again after it is killed, or if it dies by itself)."""

    daemon: RestartableDaemon
    agent_log: Path
    seed: int
    kills: list[Kill] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unexpected_exits: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.began = time.monotonic()
        self._deck: list[str] = []
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def __enter__(self) -> Chaos:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def supervise(self) -> None:
        """Start the daemon again if it died by itself (not killed here)."""
        with self._lock:
            if self.daemon.current.poll() is not None:
                self.unexpected_exits += 1
                self.daemon.restart()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(*KILL_EVERY_S)):
            if time.monotonic() - self.began > CHAOS_MAX_S:
                return
            try:
                self.supervise()
                self._strike()
            except Exception as exc:  # reported by the test; the chaos goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _strike(self) -> None:
        finders: dict[str, Callable[[], list[int]]] = {
            "daemon": lambda: [self.daemon.current.pid],
            "code server": lambda: [p.pid for p in code_servers(self.daemon)],
            "run worker": lambda: [p.pid for p in run_workers(self.daemon)],
            "agent": lambda: agent_groups(self.agent_log),
            "code server host": lambda: [
                p.pid for p in code_servers(self.daemon) if _has_run_workers(p)
            ],
        }
        if not self._deck:  # each kind once per round, in a random order
            self._deck = self.rng.sample(KINDS, len(KINDS))
        kind = self._deck.pop()
        targets = finders[kind]()
        if not targets:  # nothing of that kind right now: another kind that has some
            available = {other: found for other in KINDS if (found := finders[other]())}
            kind = self.rng.choice(sorted(available))
            targets = available[kind]
        target = self.rng.choice(sorted(targets))
        with self._lock:
            try:
                if kind == "daemon":
                    self.daemon.kill()
                    self.daemon.restart()
                elif kind == "agent":
                    os.killpg(target, signal.SIGKILL)
                elif kind == "code server host":
                    _kill_tree(target)
                else:
                    os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                return  # it ended by itself meanwhile: no kill
        self.kills.append(Kill(time.monotonic() - self.began, kind, target))
        sys.stderr.write(f"chaos {time.monotonic() - self.began:6.1f}s: killed {kind} {target}\n")


# --- the invariants sampled while it runs ----------------------------------------------------


@dataclass
class Invariants:
    """Samples the instance every SAMPLE_EVERY_S in a thread (its own instance): task runs in
    progress (STARTING, STARTED, CANCELING) per task and in all."""

    dagster_home: str
    samples: int = 0
    most_in_progress: int = 0
    too_many: list[str] = field(default_factory=list)
    overlapping: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="invariants", daemon=True)

    def __enter__(self) -> Invariants:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        instance = dg.DagsterInstance.from_config(self.dagster_home)
        try:
            while not self._stop.is_set():
                try:
                    self._sample(instance)
                except Exception as exc:  # a busy database: the next sample
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(SAMPLE_EVERY_S)
        finally:
            instance.dispose()

    def _sample(self, instance: dg.DagsterInstance) -> None:
        runs = [
            run
            for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE))
            if TASK_TAG in run.tags
        ]
        self.samples += 1
        self.most_in_progress = max(self.most_in_progress, len(runs))
        if len(runs) > SLOTS:
            self.too_many.append(", ".join(f"{r.run_id[:8]}:{r.status.value}" for r in runs))
        per_task = Counter(run.tags[TASK_TAG] for run in runs)
        for task_id, count in per_task.items():
            if count > 1:
                self.overlapping[task_id] = sorted(
                    r.run_id for r in runs if r.tags[TASK_TAG] == task_id
                )


# --- the test -------------------------------------------------------------------------------


@pytest.fixture
def seed() -> int:
    value = os.environ.get(SEED_VAR)
    return int(value) if value else random.SystemRandom().randrange(2**31)


@pytest.fixture
def leaves_nothing_behind(tmp_path: Path) -> Iterator[None]:
    """After the test: no process of its own left (a daemon's group, an agent, a code server
    that left its group), whatever happened."""
    yield
    mine = str(tmp_path)
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid():
                continue
            environ = process.environ()
            if any(mine in environ.get(name, "") for name in (LOG_VAR, "DAGSTER_HOME")):
                group = os.getpgid(process.pid)
                if group == os.getpgid(0):
                    process.kill()
                else:
                    os.killpg(group, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue


def test_no_task_is_lost_or_run_twice_while_processes_are_killed(
    tmp_path: Path,
    seed: int,
    record_property: Callable[[str, object], None],
    leaves_nothing_behind: None,
) -> None:
    began = time.monotonic()
    sys.stderr.write(f"\nchaos seed {seed} ({SEED_VAR}={seed} replays it)\n")
    record_property("seed", seed)
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, PROJECTS, SLOTS)
    monitoring = {**INSTANCE_CHANGES["run_monitoring"], "start_timeout_seconds": START_TIMEOUT_S}
    queue = {**INSTANCE_CHANGES["run_queue"], **RUN_QUEUE}
    env["DAGSTER_HOME"] = str(
        write_instance(tmp_path, {"run_queue": queue, "run_monitoring": monitoring})
    )
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    env |= HEARTBEAT
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)

    with restartable_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as daemon:
        orchestrator = Orchestrator(tmp_path, env, daemon.current, daemon.log_path)
        try:
            projects = sorted(PROJECTS)
            ids = [
                orchestrator.add(projects[i % len(projects)], f"SLEEP{2 + i % 5} chaos")
                for i in range(TASKS)
            ]
            with Invariants(env["DAGSTER_HOME"]) as invariants:
                with Chaos(daemon, orchestrator.agent_log, seed) as chaos:
                    tasks = _wait_for_backlog(orchestrator, chaos, ids)
                chaos.supervise()
                in_progress = _wait_for_no_run_in_progress(orchestrator, chaos)
            time.sleep(7)  # the longest stand-in (SLEEP6) an unrecorded run left has ended
            orphans = agent_groups(orchestrator.agent_log)
            tasks = orchestrator.store.tasks(ids=ids)
            verdict = _verdict(orchestrator, tasks)
            reaped = _reaped_runs(orchestrator.instance)
        finally:
            orchestrator.close()

    counts = Counter(task.status.value for task in tasks)
    kills = Counter(kill.kind for kill in chaos.kills)
    summary = {
        "tasks": len(tasks),
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "cancelled": counts.get("cancelled", 0),
        "kills": {kind: kills.get(kind, 0) for kind in KINDS},
        "daemon restarts": daemon.restarts,
        "runs reaped (no heartbeat)": len(reaped),
        "tasks continued after a lost run": sum(1 for task in tasks if task.times_lost),
        "lost": len(verdict["lost"]),
        "duplicated": len(verdict["duplicated"]) + len(invariants.overlapping),
        "without a result commit": len(verdict["missing"]),
        "most task runs in progress": invariants.most_in_progress,
        "samples": invariants.samples,
        "runtime_s": round(time.monotonic() - began, 1),
    }
    for key, value in summary.items():
        record_property(key.replace(" ", "_"), value)
    sys.stderr.write(f"chaos summary (seed {seed}): {json.dumps(summary)}\n")
    failed_reasons = Counter((t.reason or "")[:90] for t in tasks if t.status.value == "failed")
    sys.stderr.write(f"failure reasons: {json.dumps(failed_reasons.most_common())}\n")

    assert not chaos.errors, chaos.errors
    assert chaos.unexpected_exits == 0, "the daemon exited by itself"
    assert not verdict["lost"], f"tasks not in a terminal state: {verdict['lost']}"
    assert not invariants.overlapping, (
        f"two runs in progress for one task: {invariants.overlapping}"
    )
    assert not invariants.too_many, f"more task runs in progress than slots: {invariants.too_many}"
    assert not verdict["duplicated"], f"succeeded tasks with several result commits: {verdict}"
    assert not verdict["missing"], f"succeeded tasks without their result commit: {verdict}"
    assert not in_progress, f"runs left in progress: {in_progress}"
    assert not orphans, f"agents left running: {orphans}"
    assert invariants.samples > 0 and len(tasks) == TASKS


def _wait_for_backlog(orchestrator: Orchestrator, chaos: Chaos, ids: list[str]) -> list[Task]:
    deadline = time.monotonic() + BACKLOG_TIMEOUT_S
    while True:
        chaos.supervise()
        tasks = orchestrator.store.tasks(ids=ids)
        if len(tasks) == len(ids) and all(task.status.finished for task in tasks):
            return tasks
        if time.monotonic() > deadline:
            pytest.fail(
                orchestrator.explain(
                    f"the backlog was not done after {BACKLOG_TIMEOUT_S:.0f}s "
                    f"(kills: {chaos.kills})"
                )
            )
        time.sleep(1)


def _wait_for_no_run_in_progress(
    orchestrator: Orchestrator, chaos: Chaos, timeout_s: float = 120
) -> list[str]:
    """The task runs still in progress after `timeout_s` (none, once each run has ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        chaos.supervise()
        runs = [
            f"{run.run_id} {run.status.value} {run.tags.get(PROJECT_TAG)} {run.tags.get(TASK_TAG)}"
            for run in orchestrator.instance.get_runs(
                filters=dg.RunsFilter(statuses=[*ACTIVE, dg.DagsterRunStatus.QUEUED])
            )
        ]
        if not runs or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def _reaped_runs(instance: dg.DagsterInstance) -> list[str]:
    """The runs the reaper failed: no heartbeat from their worker."""
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        messages = [
            r.event_log_entry.dagster_event.message or ""
            for r in records
            if r.event_log_entry.dagster_event
        ]
        if any(NO_HEARTBEAT in message for message in messages):
            reaped.append(run.run_id)
    return reaped


def _verdict(orchestrator: Orchestrator, tasks: list[Task]) -> dict[str, list[str]]:
    """Tasks not in a terminal state; succeeded tasks with several result commits, or none."""
    lost = [f"{t.id} {t.status.value}: {t.reason}" for t in tasks if not t.status.finished]
    duplicated, missing = [], []
    for task in tasks:
        if task.status is not TaskStatus.SUCCEEDED:
            continue
        clone = orchestrator.home / "workspaces" / task.project / "repo.git"
        finals = final_commits(clone, task.project, task)
        if len(finals) > 1:
            duplicated.append(f"{task.id}: {finals}")
        elif not finals or finals[0] != task.commit:
            missing.append(f"{task.id}: recorded {task.commit}, result commits {finals}")
    return {"lost": lost, "duplicated": duplicated, "missing": missing}
