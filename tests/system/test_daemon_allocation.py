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

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dagster as dg
import psutil
import pytest

from orchestration.process import kill_process_group
from orchestration.tags import PRIORITY_TAG, tasks_partitions_name
from orchestration.tasks.lifecycle import ensure_partitions
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.daemon import (
    daemon_environment,
    running_daemon,
    write_instance,
    write_workspace,
)
from tests.support.orchestrator import (
    DEQUEUE_INTERVAL_S,
    INSTANCE_CHANGES,
    LOG_VAR,
    Monitor,
    Orchestrator,
    Sample,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

SLOTS = 2
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


# --- the running system -------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    root = tmp_path_factory.mktemp("allocation")
    (root / "agents" / "release").mkdir(parents=True)
    env = write_registry(root, PROJECTS, SLOTS)
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
