"""The task's heartbeat and what rests on it, on real SQLite files and the real PostgreSQL
server: the claim and each beat write it only for the run that holds the task, the heartbeat
thread beats while its run holds the task and stops after, a run the task was taken from
records nothing, and a stale task is taken back (queued to continue, or failed once lost too
often) only while it is stale."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration.settings import (
    HEARTBEAT_S,
    HEARTBEAT_STALE_S,
    HEARTBEAT_STALE_VAR,
    HEARTBEAT_VAR,
    heartbeat_interval,
    heartbeat_stale_after,
)
from orchestration.tasks.execution import TaskHeartbeat
from orchestration.tasks.models import LOST, Task, TaskStatus
from orchestration.tasks.store import TaskLost, TaskStore

LOG = logging.getLogger("test")
BEAT_S = 0.05


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = TaskStore(url)
    yield opened
    opened.dispose()


def claimed(store: TaskStore, run_id: str = "run-1", prompt: str = "work") -> Task:
    task = store.add("alpha", prompt)
    assert task is not None
    assert store.mark_dispatched(task.id)
    return store.claim(task.id, run_id)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- the heartbeat in the store ----------------------------------------------------------------


def test_claim_writes_the_first_heartbeat(store: TaskStore) -> None:
    before = datetime.now(UTC)
    task = claimed(store)
    assert task.heartbeat_at is not None and task.heartbeat_at >= before - timedelta(seconds=1)
    assert task.to_dict()["heartbeat_at"] == task.heartbeat_at.isoformat()


def test_a_beat_is_written_only_for_the_run_the_task_is(store: TaskStore) -> None:
    task = claimed(store)
    first = task.heartbeat_at
    assert first is not None
    time.sleep(0.01)

    assert store.beat(task.id, "run-1") is True
    beaten = store.require(task.id)
    assert beaten.heartbeat_at is not None and beaten.heartbeat_at > first
    assert beaten.updated_at == task.updated_at  # a heartbeat is not a change of the task
    assert store.beat(task.id, "run-other") is False

    # The run beats on after recording the outcome, while it delivers the work...
    store.finish(task.id, TaskStatus.FAILED, "agent failed", run_id="run-1")
    assert store.beat(task.id, "run-1") is True
    # ...and no longer once the task is another attempt's.
    store.retry(task.id)
    latest = store.require(task.id).heartbeat_at
    assert store.beat(task.id, "run-1") is False
    assert store.require(task.id).heartbeat_at == latest


# --- the heartbeat thread ----------------------------------------------------------------------


def test_the_heartbeat_thread_beats_while_its_run_holds_the_task_and_stops_after(
    store: TaskStore,
) -> None:
    task = claimed(store)
    seen: set[datetime] = set()
    with TaskHeartbeat(store, task.id, "run-1", BEAT_S, LOG) as heartbeat:

        def three_beats() -> bool:
            beat = store.require(task.id).heartbeat_at
            assert beat is not None
            seen.add(beat)
            return len(seen) >= 3

        wait_until(three_beats)
        assert not heartbeat.lost
    last = store.require(task.id).heartbeat_at
    time.sleep(BEAT_S * 5)
    assert store.require(task.id).heartbeat_at == last  # stopped with the block
    assert not heartbeat._thread.is_alive()


def test_the_heartbeat_thread_does_not_beat_for_another_run(store: TaskStore) -> None:
    task = claimed(store, run_id="run-2")
    recorded = task.heartbeat_at
    with TaskHeartbeat(store, task.id, "run-1", BEAT_S, LOG) as heartbeat:
        wait_until(lambda: heartbeat.lost)
        time.sleep(BEAT_S * 3)
    assert store.require(task.id).heartbeat_at == recorded


def test_the_heartbeat_thread_stops_once_the_task_is_taken_from_its_run(
    store: TaskStore,
) -> None:
    task = claimed(store)
    with TaskHeartbeat(store, task.id, "run-1", BEAT_S, LOG) as heartbeat:
        taken = store.reap(
            task.id,
            "run-1",
            stale_before=datetime.now(UTC) + timedelta(seconds=1),
            reason="no heartbeat from worker",
            give_up_after=3,
        )
        assert taken is not None
        wait_until(lambda: heartbeat.lost)
        last = store.require(task.id).heartbeat_at
        time.sleep(BEAT_S * 3)
        assert store.require(task.id).heartbeat_at == last


class RefusingStore:
    """A store whose first writes fail, as a locked or unreachable database does."""

    def __init__(self, store: TaskStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.calls = 0

    def beat(self, task_id: str, run_id: str) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("database is locked")
        return self.store.beat(task_id, run_id)


def test_a_failed_beat_is_logged_and_tried_again(
    store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    task = claimed(store)
    refusing = RefusingStore(store, failures=2)
    caplog.set_level(logging.WARNING, logger="test")
    with TaskHeartbeat(refusing, task.id, "run-1", BEAT_S, LOG):  # type: ignore[arg-type]
        wait_until(lambda: refusing.calls >= 4)
    assert [r.message for r in caplog.records if "could not write its heartbeat" in r.message]
    assert "database is locked" in caplog.text


# --- a run the task was taken from records nothing ---------------------------------------------


def test_an_old_run_cannot_record_over_the_task_once_it_moved_on(store: TaskStore) -> None:
    task = claimed(store, run_id="run-1")
    store.requeue(task.id, "taken back")
    assert store.mark_dispatched(task.id)
    newer = store.claim(task.id, "run-2")

    with pytest.raises(TaskLost, match="no longer held by run run-1"):
        store.finish(task.id, TaskStatus.SUCCEEDED, run_id="run-1", commit="abc", cost_usd=1.0)

    assert store.require(task.id) == newer
    done = store.finish(task.id, TaskStatus.SUCCEEDED, run_id="run-2", commit="def")
    assert done.status is TaskStatus.SUCCEEDED and done.commit == "def"


def test_an_old_run_cannot_requeue_the_task_a_newer_run_holds(store: TaskStore) -> None:
    task = claimed(store, run_id="run-1")
    store.requeue(task.id, "taken back")
    assert store.mark_dispatched(task.id)
    store.claim(task.id, "run-2")

    assert store.requeue_failed_start(task.id, "run-1", "boom") is None
    assert store.require(task.id).status is TaskStatus.RUNNING
    assert store.requeue_failed_start(task.id, "run-2", "boom") is not None
    assert store.require(task.id).status is TaskStatus.QUEUED


# --- reaping a task whose heartbeat stopped ----------------------------------------------------


def test_a_stale_task_is_taken_back_to_continue_its_session(store: TaskStore) -> None:
    task = claimed(store)
    store.note_agent(task.id, 4242, 123.0, "session-1")
    attempts = store.require(task.id).attempts

    fresh = store.reap(
        task.id,
        "run-1",
        stale_before=datetime.now(UTC) - timedelta(seconds=60),
        reason="no heartbeat from worker",
        give_up_after=3,
    )
    assert fresh is None and store.require(task.id).status is TaskStatus.RUNNING
    assert (
        store.reap(
            task.id,
            "run-other",
            stale_before=datetime.now(UTC) + timedelta(seconds=1),
            reason="no heartbeat from worker",
            give_up_after=3,
        )
        is None
    )

    taken = store.reap(
        task.id,
        "run-1",
        stale_before=datetime.now(UTC) + timedelta(seconds=1),
        reason="no heartbeat from worker",
        give_up_after=3,
    )
    assert taken is not None
    assert taken.status is TaskStatus.QUEUED and not taken.dispatched and taken.run_id is None
    assert taken.resume_session == "session-1" and taken.session_id == "session-1"
    assert taken.attempts == attempts - 1  # the lost attempt is not counted
    assert "agent_pgid" not in taken.extra
    assert [i["kind"] for i in taken.interruptions] == [LOST]
    assert taken.times_lost == 1
    assert "no heartbeat from worker" in (taken.reason or "")


def test_a_task_lost_too_often_fails(store: TaskStore) -> None:
    task = claimed(store)
    for run in ("run-1", "run-2", "run-3"):
        if run != "run-1":
            assert store.mark_dispatched(task.id)
            store.claim(task.id, run)
        taken = store.reap(
            task.id,
            run,
            stale_before=datetime.now(UTC) + timedelta(seconds=1),
            reason="no heartbeat from worker",
            give_up_after=3,
        )
        assert taken is not None
    assert taken.status is TaskStatus.FAILED
    assert taken.times_lost == 3
    assert "lost 3 times" in (taken.reason or "")


def test_checkpoint_uncounts_the_attempt_on_every_database(store: TaskStore) -> None:
    task = claimed(store)
    assert store.request_interrupt(task.id, "stopped", "project stopped")
    continued = store.checkpoint(task.id, "run-1", commit="abc", session_id="s")
    assert continued is not None and continued.attempts == 0


# --- the thresholds ----------------------------------------------------------------------------


def test_thresholds_come_from_the_environment_with_safe_defaults() -> None:
    assert heartbeat_interval({}) == HEARTBEAT_S
    assert heartbeat_stale_after({}) == HEARTBEAT_STALE_S
    assert heartbeat_interval({HEARTBEAT_VAR: "2"}) == 2.0
    env = {HEARTBEAT_VAR: "2", HEARTBEAT_STALE_VAR: "15"}
    assert heartbeat_stale_after(env) == 15.0
    for bad in ("", "soon", "0", "-3", "nan", "inf"):
        assert heartbeat_interval({HEARTBEAT_VAR: bad}) == HEARTBEAT_S
    # never fewer than three beats: a slow write is not taken for a death
    assert heartbeat_stale_after({HEARTBEAT_VAR: "10", HEARTBEAT_STALE_VAR: "5"}) == 30.0


def test_an_agent_is_noted_only_for_the_run_holding_the_task(store: TaskStore) -> None:
    task = claimed(store, run_id="run-1")
    store.requeue(task.id, "taken back")
    assert store.mark_dispatched(task.id)
    store.claim(task.id, "run-2")

    assert store.note_agent(task.id, 4242, 1.0, "s-old", base="abc", run_id="run-1") is False
    assert "agent_pgid" not in store.require(task.id).extra
    assert store.note_agent(task.id, 4343, 2.0, "s-new", base="abc", run_id="run-2") is True
    extra = store.require(task.id).extra
    assert (extra["agent_pgid"], extra["agent_session"], extra["base"]) == (4343, "s-new", "abc")


def test_a_result_commit_is_announced_only_by_the_run_holding_the_task(store: TaskStore) -> None:
    task = claimed(store, run_id="run-1")
    assert store.note_committing(task.id, "run-1", "abc") is True
    assert store.require(task.id).extra["result_pending"] == {"run": "run-1", "parent": "abc"}
    assert store.note_committing(task.id, "run-2", "def") is False

    # Kept when the task is taken back (the next run folds that commit), dropped with the
    # outcome recorded.
    taken = store.reap(
        task.id,
        "run-1",
        stale_before=datetime.now(UTC) + timedelta(seconds=1),
        reason="no heartbeat from worker",
        give_up_after=3,
    )
    assert taken is not None and taken.extra["result_pending"]["parent"] == "abc"
    assert store.mark_dispatched(task.id)
    store.claim(task.id, "run-2")
    done = store.finish(task.id, TaskStatus.SUCCEEDED, run_id="run-2", extra={})
    assert "result_pending" not in done.extra
