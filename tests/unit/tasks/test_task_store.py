"""The task store on real SQLite files and the real PostgreSQL server: records, the state
machine, idempotent imports, sessions, durability, and claim races between processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from orchestration.settings import Settings
from orchestration.tasks.models import TaskStatus, is_task_id
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskError, TaskStore

RACERS = 8
RACES = 4
#: fork: the children need nothing but the store module, already imported (spawn re-imports all).
START_METHOD = "fork"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[TaskStore]:
    opened = TaskStore(db_url)
    yield opened
    opened.dispose()


# --- records --------------------------------------------------------------------------------


def test_add_and_get(store: TaskStore) -> None:
    task = store.add("alpha", "Fix the bug", priority=70, profile="codex", session="s1")
    assert task is not None
    assert is_task_id(task.id)
    got = store.get(task.id)
    assert got == task
    assert (got.project, got.prompt, got.priority, got.profile) == (
        "alpha",
        "Fix the bug",
        70,
        "codex",
    )
    assert got.status is TaskStatus.QUEUED
    assert got.source == "cli" and not got.dispatched and got.attempts == 0
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == UTC.utcoffset(None)
    assert store.get("tnosuchtask00") is None
    with pytest.raises(TaskError, match="no task with id 'tnosuchtask00'"):
        store.require("tnosuchtask00")


def test_list_filters_and_order(store: TaskStore) -> None:
    a1 = store.add("alpha", "one")
    b1 = store.add("beta", "two")
    a2 = store.add("alpha", "three", after=[a1.id])
    store.cancel(b1.id)
    assert [t.id for t in store.tasks()] == [a1.id, b1.id, a2.id]
    assert [t.id for t in store.tasks(project="alpha")] == [a1.id, a2.id]
    assert [t.id for t in store.tasks(statuses=[TaskStatus.CANCELLED])] == [b1.id]
    assert [t.id for t in store.tasks(project="beta", statuses=[TaskStatus.QUEUED])] == []
    assert [t.id for t in store.tasks(ids=[a2.id, b1.id])] == [b1.id, a2.id]
    assert store.get(a2.id).after == (a1.id,)


def test_ids_are_valid_and_unique(store: TaskStore) -> None:
    ids = [store.add("alpha", f"task {n}").id for n in range(200)]
    assert all(is_task_id(task_id) for task_id in ids)
    assert len(set(ids)) == len(ids)


def test_to_dict_is_plain_json_data(store: TaskStore) -> None:
    task = store.add("alpha", "x", after=[])
    data = task.to_dict()
    assert data["status"] == "queued"
    assert data["after"] == []
    assert isinstance(data["created_at"], str) and data["started_at"] is None


# --- the state machine ----------------------------------------------------------------------


def test_mark_dispatched_only_once(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    assert store.mark_dispatched(task.id) is True
    assert store.mark_dispatched(task.id) is False
    got = store.get(task.id)
    assert got.dispatched and got.attempts == 1 and got.status is TaskStatus.QUEUED


def test_claim_moves_queued_to_running(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    claimed = store.claim(task.id, "run-a")
    assert claimed.status is TaskStatus.RUNNING
    assert claimed.run_id == "run-a"
    assert claimed.started_at is not None and claimed.dispatched


def test_second_claim_by_another_run_names_the_holder(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    with pytest.raises(TaskError) as raised:
        store.claim(task.id, "run-b")
    assert "run-a" in str(raised.value)
    assert "running" in str(raised.value)
    assert store.get(task.id).run_id == "run-a"


def test_same_run_may_claim_again(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    first = store.claim(task.id, "run-a")
    assert store.claim(task.id, "run-a") == first


def test_failed_task_may_be_claimed_again(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    store.finish(task.id, TaskStatus.FAILED, "agent failed")
    again = store.claim(task.id, "run-b")
    assert again.status is TaskStatus.RUNNING
    assert again.run_id == "run-b" and again.reason is None and again.finished_at is None


@pytest.mark.parametrize("final", [TaskStatus.SUCCEEDED, TaskStatus.CANCELLED, TaskStatus.BLOCKED])
def test_claim_refused_outside_queued_or_failed(store: TaskStore, final: TaskStatus) -> None:
    task = store.add("alpha", "x")
    if final is TaskStatus.SUCCEEDED:
        store.claim(task.id, "run-a")
        store.finish(task.id, TaskStatus.SUCCEEDED)
    elif final is TaskStatus.CANCELLED:
        store.cancel(task.id)
    else:
        store.block(task.id, "prerequisite failed")
    with pytest.raises(TaskError, match=f"is {final.value}.*only a queued or failed task can run"):
        store.claim(task.id, "run-z")
    assert store.get(task.id).status is final


def test_claim_of_unknown_task_is_refused(store: TaskStore) -> None:
    with pytest.raises(TaskError, match="no task with id"):
        store.claim("t000000000000", "run-a")


def test_finish_records_the_outcome(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    done = store.finish(
        task.id,
        TaskStatus.SUCCEEDED,
        branch="orch/alpha/" + task.id,
        commit="a" * 40,
        cost_usd=0.5,
        extra={"files_changed": 2},
    )
    assert done.status is TaskStatus.SUCCEEDED
    assert done.commit == "a" * 40 and done.cost_usd == 0.5
    assert done.extra == {"files_changed": 2}
    assert done.finished_at is not None


def test_a_run_ending_after_cancel_does_not_resurrect_the_task(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    store.cancel(task.id)
    assert store.finish(task.id, TaskStatus.SUCCEEDED).status is TaskStatus.CANCELLED


def test_cancel(store: TaskStore) -> None:
    queued = store.add("alpha", "x")
    assert store.cancel(queued.id).status is TaskStatus.CANCELLED
    with pytest.raises(TaskError, match="already cancelled; nothing to cancel"):
        store.cancel(queued.id)
    running = store.add("alpha", "y")
    store.claim(running.id, "run-a")
    assert store.cancel(running.id, "not needed").reason == "not needed"
    blocked = store.add("alpha", "z")
    store.block(blocked.id, "why")
    assert store.cancel(blocked.id).status is TaskStatus.CANCELLED


@pytest.mark.parametrize("final", [TaskStatus.SUCCEEDED, TaskStatus.FAILED])
def test_finished_tasks_refuse_cancel(store: TaskStore, final: TaskStatus) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    store.finish(task.id, final)
    with pytest.raises(TaskError, match=f"already {final.value}"):
        store.cancel(task.id)
    assert store.get(task.id).status is final


def test_block_only_a_queued_task(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    assert store.block(task.id, "prerequisite tX failed") is True
    got = store.get(task.id)
    assert got.status is TaskStatus.BLOCKED and got.reason == "prerequisite tX failed"
    running = store.add("alpha", "y")
    store.claim(running.id, "run-a")
    assert store.block(running.id, "no") is False
    assert store.get(running.id).status is TaskStatus.RUNNING


def test_requeue_makes_a_task_dispatchable_again(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.mark_dispatched(task.id)
    assert store.requeue(task.id, "its run never started") is True
    got = store.get(task.id)
    assert got.status is TaskStatus.QUEUED and not got.dispatched and got.run_id is None
    assert got.reason == "its run never started"
    assert store.mark_dispatched(task.id) is True
    assert store.get(task.id).attempts == 2
    store.claim(task.id, "run-a")
    store.finish(task.id, TaskStatus.SUCCEEDED)
    assert store.requeue(task.id, "no") is False


def test_fail_run_only_touches_the_named_runs_task(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.claim(task.id, "run-a")
    store.finish(task.id, TaskStatus.FAILED, "first attempt failed")
    store.claim(task.id, "run-b")
    assert store.fail_run(task.id, "run-a", "run run-a ended") is False
    assert store.get(task.id).status is TaskStatus.RUNNING
    assert store.fail_run(task.id, "run-b", "run run-b was cancelled") is True
    got = store.get(task.id)
    assert got.status is TaskStatus.FAILED and got.reason == "run run-b was cancelled"


def test_fail_run_without_run_id_fails_a_dispatched_task(store: TaskStore) -> None:
    task = store.add("alpha", "x")
    store.mark_dispatched(task.id)
    assert store.fail_run(task.id, None, "run ended") is True
    assert store.get(task.id).status is TaskStatus.FAILED
    done = store.add("alpha", "y")
    store.cancel(done.id)
    assert store.fail_run(done.id, None, "run ended") is False
    assert store.get(done.id).status is TaskStatus.CANCELLED


def test_source_key_makes_adding_idempotent(store: TaskStore) -> None:
    first = store.add("alpha", "item", source="agent-os", source_key="agent-os:alpha:x:1")
    assert first is not None and first.source == "agent-os"
    assert store.add("alpha", "item", source="agent-os", source_key="agent-os:alpha:x:1") is None
    assert len(store.tasks()) == 1
    assert store.add("alpha", "item", source_key="agent-os:alpha:x:2") is not None
    assert store.add("alpha", "no key") is not None
    assert store.add("alpha", "no key") is not None  # without a key nothing is deduplicated


# --- sessions -------------------------------------------------------------------------------


def test_sessions_per_project_and_profile(store: TaskStore) -> None:
    assert store.last_session("alpha", "claude_code") is None
    store.save_session("alpha", "claude_code", "sess-a1", "t00000000001")
    store.save_session("alpha", "claude_code", "sess-a2", "t00000000002")
    store.save_session("alpha", "codex", "thread-a", "t00000000003")
    store.save_session("beta", "claude_code", "sess-b1", "t00000000004")
    assert store.last_session("alpha", "claude_code") == "sess-a2"
    assert store.last_session("alpha", "codex") == "thread-a"
    assert store.last_session("beta", "claude_code") == "sess-b1"
    assert store.last_session("beta", "codex") is None
    assert store.last_session("gamma", "claude_code") is None
    rows = store.sessions()
    assert {(r["project"], r["profile"], r["session_id"], r["task_id"]) for r in rows} == {
        ("alpha", "claude_code", "sess-a2", "t00000000002"),
        ("alpha", "codex", "thread-a", "t00000000003"),
        ("beta", "claude_code", "sess-b1", "t00000000004"),
    }
    assert {r["session_id"] for r in store.sessions("beta")} == {"sess-b1"}
    assert set(rows[0]) == {"project", "profile", "session_id", "task_id", "updated_at"}
    assert isinstance(rows[0]["updated_at"], str)


def test_a_session_is_never_returned_for_another_project(store: TaskStore) -> None:
    for n in range(5):
        store.save_session(f"p{n}", "claude_code", f"session-of-p{n}", f"t0000000000{n}")
    for n in range(5):
        assert store.last_session(f"p{n}", "claude_code") == f"session-of-p{n}"
        assert {r["session_id"] for r in store.sessions(f"p{n}")} == {f"session-of-p{n}"}


# --- durability -----------------------------------------------------------------------------


def test_records_survive_a_new_store_object(db_url: str) -> None:
    first = TaskStore(db_url)
    task = first.add("alpha", "persist me", source_key="k1")
    first.claim(task.id, "run-a")
    first.save_session("alpha", "demo", "sess-1", task.id)
    first.dispose()

    second = TaskStore(db_url)
    try:
        got = second.get(task.id)
        assert got.status is TaskStatus.RUNNING and got.run_id == "run-a"
        assert got.prompt == "persist me"
        assert second.last_session("alpha", "demo") == "sess-1"
        assert second.add("alpha", "persist me", source_key="k1") is None
        with pytest.raises(TaskError, match="run-a"):
            second.claim(task.id, "run-b")
    finally:
        second.dispose()


def test_from_settings_default_file_and_url_variable(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "projects", tmp_path / "config", tmp_path / "home")
    default = TaskStore.from_settings(settings, environ={})
    default.add("alpha", "x")
    default.dispose()
    assert (tmp_path / "home" / "tasks.db").is_file()

    other = tmp_path / "elsewhere.db"
    named = TaskStore.from_settings(settings, environ={TASKS_DB_URL_VAR: f"sqlite:///{other}"})
    assert named.tasks() == []
    named.dispose()
    assert other.is_file()


# --- claim races between processes ----------------------------------------------------------


def _racer(url: str, task_ids: list[str], run_id: str, barrier, results) -> None:
    store = TaskStore(url)
    try:
        for task_id in task_ids:
            barrier.wait(timeout=60)
            try:
                store.claim(task_id, run_id)
                results.put((task_id, run_id, "won", ""))
            except TaskError as exc:
                results.put((task_id, run_id, "lost", str(exc)))
    finally:
        store.dispose()


def race_claims(url: str) -> None:
    """RACERS processes claim each of RACES tasks at the same moment: exactly one wins each."""
    store = TaskStore(url)
    task_ids = [store.add("alpha", f"race {n}").id for n in range(RACES)]
    store.dispose()  # no open connection is inherited by the forked children
    context = multiprocessing.get_context(START_METHOD)
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    workers = [
        context.Process(target=_racer, args=(url, task_ids, f"run-{n}", barrier, results))
        for n in range(RACERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(RACERS * RACES)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    try:
        for task_id in task_ids:
            mine = [o for o in outcomes if o[0] == task_id]
            winners = [o[1] for o in mine if o[2] == "won"]
            assert len(winners) == 1, mine
            assert store.get(task_id).run_id == winners[0]
            assert store.get(task_id).status is TaskStatus.RUNNING
            for _, _, outcome, message in mine:
                if outcome == "lost":
                    assert f"by run {winners[0]}" in message
    finally:
        store.dispose()


def test_claim_race_sqlite(db_url: str) -> None:
    race_claims(db_url)


def _adder(url: str, keys: list[str], barrier, results) -> None:
    store = TaskStore(url)
    try:
        for key in keys:
            barrier.wait(timeout=60)
            try:
                added = store.add("alpha", f"item {key}", source="agent-os", source_key=key)
                results.put((key, "added" if added else "none"))
            except Exception as exc:  # reported by the caller's assertions
                results.put((key, f"{type(exc).__name__}: {exc}"))
    finally:
        store.dispose()


def race_imports(url: str) -> None:
    """RACERS processes add the same source keys at once: each key is added once, the other
    calls return None, and none raises."""
    TaskStore(url).dispose()
    keys = [f"agent-os:alpha:tasks.md:{n}" for n in range(RACES)]
    context = multiprocessing.get_context(START_METHOD)
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    workers = [
        context.Process(target=_adder, args=(url, keys, barrier, results)) for _ in range(RACERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(RACERS * RACES)]
    for worker in workers:
        worker.join(timeout=60)
    errors = [o for o in outcomes if o[1] not in ("added", "none")]
    assert errors == []
    assert sorted(key for key, outcome in outcomes if outcome == "added") == sorted(keys)


def test_concurrent_imports_of_one_item_add_it_once(db_url: str) -> None:
    race_imports(db_url)


@pytest.mark.postgres
def test_state_machine_on_postgres(postgres_url: str) -> None:
    store = TaskStore(postgres_url)
    try:
        task = store.add("alpha", "on postgres", source_key="pg:1")
        assert store.add("alpha", "again", source_key="pg:1") is None
        assert store.mark_dispatched(task.id) and not store.mark_dispatched(task.id)
        store.claim(task.id, "run-a")
        with pytest.raises(TaskError, match="by run run-a"):
            store.claim(task.id, "run-b")
        assert store.fail_run(task.id, "run-b", "other run") is False
        done = store.finish(task.id, TaskStatus.SUCCEEDED, extra={"files_changed": 1})
        assert done.status is TaskStatus.SUCCEEDED and done.extra == {"files_changed": 1}
        assert done.created_at.tzinfo is not None
        store.save_session("alpha", "demo", "s1", task.id)
        store.save_session("alpha", "demo", "s2", task.id)
        assert store.last_session("alpha", "demo") == "s2"
        assert store.last_session("beta", "demo") is None
    finally:
        store.dispose()


@pytest.mark.postgres
def test_claim_race_postgres(postgres_url: str) -> None:
    race_claims(postgres_url)
