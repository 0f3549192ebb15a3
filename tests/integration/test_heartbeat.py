"""The task heartbeat on a real Dagster instance, a real task store and real processes.

The reaper (in the dispatch tick's reconciliation): a STARTED run whose task heartbeat went
stale is failed with "no heartbeat from worker", its agent's process group is killed and its
task queued to continue the agent's session; a fresh heartbeat leaves everything alone. The
run side, through `AgentTasks.execute` as the Dagster asset calls it with the stand-in
`claude`: the heartbeat is written while the agent works and no longer after; a run the task
was taken from while its agent worked keeps that work only as work so far (trailer
`Orch-Interrupted`) and records nothing, so the run that continues the task makes the one
commit that is its result.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from orchestration.defs.resources import AgentTasks
from orchestration.process import process_start_time
from orchestration.settings import HEARTBEAT_STALE_S, HEARTBEAT_VAR, SANDBOX_VAR
from orchestration.tags import RUN_KEY_TAG, TASK_TAG
from orchestration.tasks.execution import INTERRUPTED_TRAILER, TaskOutcome
from orchestration.tasks.lifecycle import NO_HEARTBEAT, reap_lost_run, reconcile_ended_runs
from orchestration.tasks.models import LOST, Task, TaskStatus
from orchestration.tasks.store import TaskLost, TaskStore, tasks_table
from tests.support.git import git
from tests.support.paths import path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_heartbeat")
AGENT = "agent:\n  profile: claude_code\n"
#: The heartbeat of the runs these tests start: fast, so a test sees several.
BEAT_S = 0.1
WAIT_S = 60.0


def wait_until(what: str, condition: Callable[[], object], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    opened = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    opened.dispose()


@pytest.fixture
def agent_group() -> Iterator[subprocess.Popen[bytes]]:
    """A real process group standing for a running agent: `sleep` leading its own session."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def running_task(
    instance: dg.DagsterInstance, store: TaskStore, agent: subprocess.Popen[bytes]
) -> tuple[Task, dg.DagsterRun]:
    """A task claimed by a STARTED run whose agent (`agent`) works in session `session-1`."""
    task = store.add("alpha", "work")
    assert task is not None
    assert store.mark_dispatched(task.id)
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={TASK_TAG: task.id, RUN_KEY_TAG: f"{task.id}.1"},
    )
    store.claim(task.id, run.run_id)
    assert store.note_agent(
        task.id, agent.pid, process_start_time(agent.pid), "session-1", run_id=run.run_id
    )
    return store.require(task.id), run


def silence(store: TaskStore, task_id: str, seconds: float, *, never_beat: bool = False) -> None:
    """Make the task's last heartbeat (or, with `never_beat`, its claim) `seconds` old."""
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    values = {"heartbeat_at": None, "started_at": then} if never_beat else {"heartbeat_at": then}
    with store.engine.begin() as connection:
        connection.execute(tasks_table.update().where(tasks_table.c.id == task_id).values(**values))


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.message if event else None


# --- the reaper ---------------------------------------------------------------------------------


@pytest.mark.parametrize("never_beat", [False, True], ids=["stale-heartbeat", "no-heartbeat"])
def test_a_started_run_whose_heartbeat_stopped_is_failed_and_its_task_continued(
    instance: dg.DagsterInstance,
    store: TaskStore,
    agent_group: subprocess.Popen[bytes],
    never_beat: bool,
) -> None:
    task, run = running_task(instance, store, agent_group)
    silence(store, task.id, HEARTBEAT_STALE_S + 30, never_beat=never_beat)

    reconcile_ended_runs(store, instance, LOG, environ={})

    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.status is dg.DagsterRunStatus.FAILURE
    assert failure_message(instance, run.run_id) == NO_HEARTBEAT
    continued = store.require(task.id)
    assert continued.status is TaskStatus.QUEUED and not continued.dispatched
    assert continued.run_id is None and continued.resume_session == "session-1"
    assert [entry["kind"] for entry in continued.interruptions] == [LOST]
    assert NO_HEARTBEAT in (continued.reason or "")
    assert agent_group.wait(timeout=10) == -signal.SIGKILL  # the agent's group was killed

    # The next ticks leave the task alone: it waits for its next run, and once dispatched
    # again the failed run is not read as the end of the new one.
    reconcile_ended_runs(store, instance, LOG, environ={})
    assert store.require(task.id) == continued
    assert store.mark_dispatched(task.id)
    reconcile_ended_runs(store, instance, LOG, environ={})
    again = store.require(task.id)
    assert again.status is TaskStatus.QUEUED and again.dispatched and again.dispatches == 2


def test_a_run_with_a_fresh_heartbeat_is_left_alone(
    instance: dg.DagsterInstance, store: TaskStore, agent_group: subprocess.Popen[bytes]
) -> None:
    task, run = running_task(instance, store, agent_group)
    silence(store, task.id, HEARTBEAT_STALE_S - 30)

    reconcile_ended_runs(store, instance, LOG, environ={})

    still = instance.get_run_by_id(run.run_id)
    assert still is not None and still.status is dg.DagsterRunStatus.STARTED
    assert store.require(task.id).status is TaskStatus.RUNNING
    assert agent_group.poll() is None


def test_the_stale_threshold_is_read_from_the_environment(
    instance: dg.DagsterInstance, store: TaskStore, agent_group: subprocess.Popen[bytes]
) -> None:
    task, run = running_task(instance, store, agent_group)
    silence(store, task.id, 20)

    reconcile_ended_runs(store, instance, LOG, environ={})
    assert store.require(task.id).status is TaskStatus.RUNNING

    environ = {HEARTBEAT_VAR: "2", "ORCH_HEARTBEAT_STALE_S": "10"}
    reconcile_ended_runs(store, instance, LOG, environ=environ)
    assert store.require(task.id).status is TaskStatus.QUEUED
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.status is dg.DagsterRunStatus.FAILURE


def test_a_task_whose_heartbeat_came_back_is_not_taken(
    instance: dg.DagsterInstance, store: TaskStore, agent_group: subprocess.Popen[bytes]
) -> None:
    """The reaper decides in the store's one conditional write, not on what it read: a run that
    beats between the read and the write keeps its task (and its run and agent go on)."""
    task, run = running_task(instance, store, agent_group)
    silence(store, task.id, HEARTBEAT_STALE_S + 30)
    stale = store.require(task.id)
    assert store.beat(task.id, run.run_id)

    assert reap_lost_run(store, instance, stale, run, HEARTBEAT_STALE_S, LOG) is None
    assert store.require(task.id).status is TaskStatus.RUNNING
    still = instance.get_run_by_id(run.run_id)
    assert still is not None and still.status is dg.DagsterRunStatus.STARTED
    assert agent_group.poll() is None


@pytest.mark.parametrize("silent", [True, False], ids=["silent", "beating"])
def test_a_run_gone_silent_after_its_task_ended_is_failed(
    instance: dg.DagsterInstance,
    store: TaskStore,
    agent_group: subprocess.Popen[bytes],
    silent: bool,
) -> None:
    """Its worker died between recording the outcome and ending the run (with its code server
    or host): left alone, the run would hold its slots until its `dagster/max_runtime`. While
    its worker beats (delivering the work), it is left alone."""
    task, run = running_task(instance, store, agent_group)
    store.finish(task.id, TaskStatus.SUCCEEDED, run_id=run.run_id)
    if silent:
        with store.engine.begin() as connection:
            then = datetime.now(UTC) - timedelta(seconds=HEARTBEAT_STALE_S + 30)
            connection.execute(
                tasks_table.update()
                .where(tasks_table.c.id == task.id)
                .values(heartbeat_at=then, finished_at=then)
            )
    else:
        silence(store, task.id, HEARTBEAT_STALE_S + 30)
        assert store.beat(task.id, run.run_id)  # delivering, say

    reconcile_ended_runs(store, instance, LOG, environ={})

    after = instance.get_run_by_id(run.run_id)
    assert after is not None
    if silent:
        assert after.status is dg.DagsterRunStatus.FAILURE
        assert NO_HEARTBEAT in (failure_message(instance, run.run_id) or "")
    else:
        assert after.status is dg.DagsterRunStatus.STARTED
    assert store.require(task.id).status is TaskStatus.SUCCEEDED  # the outcome stands


# --- the run side ----------------------------------------------------------------------------


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> RegistryDir:
    """Project alpha running the stand-in `claude` unsandboxed (its prompts wait for files the
    test makes), with a heartbeat every BEAT_S."""
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    monkeypatch.setenv(SANDBOX_VAR, "off")
    monkeypatch.setenv(HEARTBEAT_VAR, str(BEAT_S))
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(registry_dir.root / "agents.jsonl"))
    registry_dir.project("alpha", AGENT + "secrets: [FAKE_CLAUDE_LOG]\n")
    return registry_dir


class Execution:
    """`AgentTasks.execute` of one task in a thread, as a run worker calls it."""

    def __init__(self, task_id: str, run_id: str) -> None:
        self.outcome: TaskOutcome | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(task_id, run_id), daemon=True)
        self._thread.start()

    def _run(self, task_id: str, run_id: str) -> None:
        try:
            self.outcome = AgentTasks().execute("alpha", task_id, run_id, LOG)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self._thread.join(timeout=WAIT_S)
        assert not self._thread.is_alive(), "the run did not end"


def task_commits(registry: RegistryDir, task_id: str) -> list[str]:
    """The messages of the commits on the task's branch that the task made."""
    clone = registry.settings.home / "workspaces" / "alpha" / "repo.git"
    branch = f"refs/heads/orch/alpha/{task_id}"
    log = git(clone, "log", "--format=%B%x00", branch, "--not", "refs/remotes/origin/main")
    return [message.strip() for message in log.split("\0") if message.strip()]


def final_commits(messages: list[str], task_id: str) -> list[str]:
    return [m for m in messages if f"Orch-Task: {task_id}" in m and INTERRUPTED_TRAILER not in m]


def test_a_run_beats_while_its_agent_works_and_stops_after(
    registry: RegistryDir, tmp_path: Path
) -> None:
    store = TaskStore.from_settings(registry.settings, environ={})
    started, release = tmp_path / "started", tmp_path / "release"
    task = store.add("alpha", f"feature\nMARK {started}\nWAITFOR {release}\nAPPEND f.txt one")
    assert task is not None
    assert store.mark_dispatched(task.id)
    run = Execution(task.id, "run-1")
    try:
        wait_until("the agent to start", started.exists)
        beats: set[datetime] = set()

        def beating() -> bool:
            beat = store.require(task.id).heartbeat_at
            assert beat is not None
            beats.add(beat)
            return len(beats) >= 3

        wait_until("three heartbeats while the agent works", beating)
    finally:
        release.touch()
        run.join()
    assert run.error is None, run.error
    assert run.outcome is not None and run.outcome.task.status is TaskStatus.SUCCEEDED
    last = store.require(task.id).heartbeat_at
    time.sleep(BEAT_S * 5)
    assert store.require(task.id).heartbeat_at == last
    store.dispose()


def test_a_run_the_task_was_taken_from_records_nothing_and_commits_only_work_so_far(
    registry: RegistryDir, tmp_path: Path
) -> None:
    store = TaskStore.from_settings(registry.settings, environ={})
    started, release = tmp_path / "started", tmp_path / "release"
    prompt = f"feature\nMARK {started}\nWAITFOR {release}\nAPPEND f.txt one"
    task = store.add("alpha", prompt)
    assert task is not None
    assert store.mark_dispatched(task.id)
    lost_run = Execution(task.id, "run-1")
    try:
        wait_until("the agent to start", started.exists)
        # The reaper's decision, as if the heartbeat had stopped (the worker is in fact alive:
        # the case its commit must not count as the task's result).
        taken = store.reap(
            task.id,
            "run-1",
            stale_before=datetime.now(UTC) + timedelta(seconds=1),
            reason=NO_HEARTBEAT,
            give_up_after=3,
        )
        assert taken is not None and taken.status is TaskStatus.QUEUED
    finally:
        release.touch()
        lost_run.join()
    assert isinstance(lost_run.error, TaskLost), lost_run.error
    requeued = store.require(task.id)
    assert requeued.status is TaskStatus.QUEUED and requeued.run_id is None
    assert requeued.commit is None and requeued.summary is None  # nothing recorded
    messages = task_commits(registry, task.id)
    assert len(messages) == 1 and INTERRUPTED_TRAILER in messages[0]
    assert final_commits(messages, task.id) == []

    # The run that continues the task makes its one result commit, on top of the work so far.
    started.unlink()
    assert store.mark_dispatched(task.id)
    next_run = Execution(task.id, "run-2")
    next_run.join()
    assert next_run.error is None, next_run.error
    assert next_run.outcome is not None
    done = next_run.outcome.task
    assert done.status is TaskStatus.SUCCEEDED and done.run_id == "run-2"
    assert done.extra["base"] == requeued.extra["base"]  # measured from the first attempt
    messages = task_commits(registry, task.id)
    assert len(messages) == 2
    assert len(final_commits(messages, task.id)) == 1
    store.dispose()


def test_a_task_cancelled_while_its_agent_works_gets_no_result_commit(
    registry: RegistryDir, tmp_path: Path
) -> None:
    store = TaskStore.from_settings(registry.settings, environ={})
    started, release = tmp_path / "started", tmp_path / "release"
    task = store.add("alpha", f"feature\nMARK {started}\nWAITFOR {release}\nAPPEND f.txt one")
    assert task is not None
    assert store.mark_dispatched(task.id)
    run = Execution(task.id, "run-1")
    try:
        wait_until("the agent to start", started.exists)
        store.cancel(task.id)
    finally:
        release.touch()
        run.join()
    assert isinstance(run.error, TaskLost), run.error
    assert "it is cancelled" in str(run.error)
    assert store.require(task.id).status is TaskStatus.CANCELLED
    messages = task_commits(registry, task.id)
    assert len(messages) == 1 and INTERRUPTED_TRAILER in messages[0]
    store.dispose()


class WorkerDied(BaseException):
    """Stands for the worker's death (SIGKILL) at one point of a run: nothing after it runs."""


def test_a_result_committed_by_a_run_that_died_before_recording_it_is_not_committed_twice(
    registry: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's worker died between its result commit and recording the outcome; the run that
    continues the task folds that commit into its own: one result commit with both attempts'
    work."""
    store = TaskStore.from_settings(registry.settings, environ={})
    task = store.add("alpha", "feature\nAPPEND f.txt one more line")
    assert task is not None
    assert store.mark_dispatched(task.id)

    def die(*args: object, **kwargs: object) -> None:
        raise WorkerDied

    with monkeypatch.context() as patch:
        patch.setattr(TaskStore, "finish", die)
        first = Execution(task.id, "run-1")
        first.join()
    assert isinstance(first.error, WorkerDied), first.error
    assert len(final_commits(task_commits(registry, task.id), task.id)) == 1
    assert store.require(task.id).status is TaskStatus.RUNNING  # nothing recorded

    taken = store.reap(
        task.id,
        "run-1",
        stale_before=datetime.now(UTC) + timedelta(seconds=1),
        reason=NO_HEARTBEAT,
        give_up_after=3,
    )
    assert taken is not None and taken.extra["result_pending"]["run"] == "run-1"
    assert store.mark_dispatched(task.id)
    second = Execution(task.id, "run-2")
    second.join()

    assert second.error is None, second.error
    done = store.require(task.id)
    assert done.status is TaskStatus.SUCCEEDED and "result_pending" not in done.extra
    messages = task_commits(registry, task.id)
    assert len(messages) == 1 and final_commits(messages, task.id) == messages
    clone = registry.settings.home / "workspaces" / "alpha" / "repo.git"
    assert git(clone, "show", f"{done.commit}:f.txt").splitlines() == ["one more line"] * 2
    store.dispose()
