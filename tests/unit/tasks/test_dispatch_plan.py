"""plan_dispatch, the pure function that decides which queued tasks start now and which can
never start; example cases and a property test over random task sets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.tasks.dispatch import plan_dispatch, run_priority
from orchestration.tasks.models import Task, TaskStatus

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PROJECTS = ("alpha", "beta")


def task(
    task_id: str,
    *,
    project: str = "alpha",
    status: TaskStatus = TaskStatus.QUEUED,
    priority: int = 50,
    minute: int = 0,
    after: Sequence[str] = (),
    dispatched: bool = False,
) -> Task:
    created = EPOCH + timedelta(minutes=minute)
    return Task(
        id=task_id,
        project=project,
        prompt=f"prompt of {task_id}",
        status=status,
        priority=priority,
        created_at=created,
        updated_at=created,
        after=tuple(after),
        dispatched=dispatched,
    )


def plan(tasks: Sequence[Task], projects: Sequence[str] = PROJECTS):
    known = {t.id: t for t in tasks}
    queued = [t for t in tasks if t.status is TaskStatus.QUEUED]
    return plan_dispatch(queued, known, projects)


def ids(tasks) -> list[str]:
    return [t.id for t in tasks]


def test_runnable_order_priority_then_age_then_id() -> None:
    tasks = [
        task("t0000000005", priority=50, minute=1),
        task("t0000000004", priority=90, minute=5),
        task("t0000000003", priority=50, minute=0),
        task("t0000000002", priority=50, minute=1),
        task("t0000000001", priority=10, minute=0),
    ]
    result = plan(tasks)
    assert ids(result.runnable) == [
        "t0000000004",
        "t0000000003",
        "t0000000002",
        "t0000000005",
        "t0000000001",
    ]
    assert result.blocked == ()


def test_plan_does_not_change_its_input() -> None:
    tasks = [task("t0000000002", priority=10), task("t0000000001", priority=90)]
    before = list(tasks)
    plan(tasks)
    plan(tasks)
    assert tasks == before


def test_after_waits_while_a_prerequisite_is_queued_or_running() -> None:
    for status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        tasks = [
            task("t0000000001", status=status),
            task("t0000000002", after=["t0000000001"]),
        ]
        result = plan(tasks)
        assert "t0000000002" not in ids(result.runnable)
        assert result.blocked == ()


def test_after_runs_when_all_prerequisites_succeeded() -> None:
    tasks = [
        task("t0000000001", status=TaskStatus.SUCCEEDED),
        task("t0000000002", status=TaskStatus.SUCCEEDED),
        task("t0000000003", after=["t0000000001", "t0000000002"]),
    ]
    assert ids(plan(tasks).runnable) == ["t0000000003"]


def test_after_waits_for_the_last_prerequisite() -> None:
    tasks = [
        task("t0000000001", status=TaskStatus.SUCCEEDED),
        task("t0000000002", status=TaskStatus.RUNNING),
        task("t0000000003", after=["t0000000001", "t0000000002"]),
    ]
    result = plan(tasks)
    assert result.runnable == () and result.blocked == ()


def test_blocked_when_a_prerequisite_can_never_succeed() -> None:
    for status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.BLOCKED):
        tasks = [
            task("t0000000001", status=status),
            task("t0000000002", after=["t0000000001"]),
        ]
        result = plan(tasks)
        assert result.runnable == ()
        [(blocked, reason)] = result.blocked
        assert blocked.id == "t0000000002"
        assert reason == f"prerequisite task t0000000001 {status.value}"


def test_blocked_when_a_prerequisite_does_not_exist() -> None:
    result = plan([task("t0000000002", after=["t000000gone0"])])
    [(blocked, reason)] = result.blocked
    assert blocked.id == "t0000000002"
    assert reason == "prerequisite task t000000gone0 does not exist"


def test_dispatched_tasks_are_skipped() -> None:
    tasks = [
        task("t0000000001", dispatched=True),
        task("t0000000002", dispatched=True, project="gone"),
        task("t0000000003"),
    ]
    result = plan(tasks)
    assert ids(result.runnable) == ["t0000000003"]
    assert result.blocked == ()


def test_tasks_not_queued_are_skipped() -> None:
    queued = [task("t0000000001", status=TaskStatus.RUNNING), task("t0000000002")]
    result = plan_dispatch(queued, {}, PROJECTS)
    assert ids(result.runnable) == ["t0000000002"]


def test_unknown_project_blocks() -> None:
    result = plan([task("t0000000001", project="retired"), task("t0000000002")])
    assert ids(result.runnable) == ["t0000000002"]
    [(blocked, reason)] = result.blocked
    assert blocked.id == "t0000000001"
    assert "project 'retired' is not in the registry" in reason


def test_projects_may_be_a_mapping_of_specs() -> None:
    result = plan_dispatch([task("t0000000001", project="beta")], {}, {"beta": object()})
    assert ids(result.runnable) == ["t0000000001"]


def test_run_priority_orders_by_project_first() -> None:
    assert run_priority(75, 0) > run_priority(50, 100)
    assert run_priority(50, 60) > run_priority(50, 40)


# --- property -------------------------------------------------------------------------------

STATUSES = list(TaskStatus)


@st.composite
def task_sets(draw) -> list[Task]:
    count = draw(st.integers(min_value=0, max_value=12))
    ids_ = [f"t{n:010d}" for n in range(count)]
    tasks = []
    for task_id in ids_:
        candidates = [*ids_, "t9999999999"]  # one id that never exists
        tasks.append(
            task(
                task_id,
                project=draw(st.sampled_from([*PROJECTS, "unknown"])),
                status=draw(st.sampled_from(STATUSES)),
                priority=draw(st.integers(min_value=0, max_value=100)),
                minute=draw(st.integers(min_value=0, max_value=5)),
                after=draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True)),
                dispatched=draw(st.booleans()),
            )
        )
    return tasks


@settings(max_examples=300, deadline=None)
@given(task_sets())
def test_plan_properties(tasks: list[Task]) -> None:
    known = {t.id: t for t in tasks}
    result = plan(tasks)
    runnable = ids(result.runnable)
    blocked = [t.id for t, _ in result.blocked]

    assert not set(runnable) & set(blocked)
    assert len(set(runnable)) == len(runnable) and len(set(blocked)) == len(blocked)
    for chosen in result.runnable:
        assert chosen.status is TaskStatus.QUEUED and not chosen.dispatched
        assert chosen.project in PROJECTS
        assert all(known[p].status is TaskStatus.SUCCEEDED for p in chosen.after)
    for chosen, reason in result.blocked:
        assert chosen.status is TaskStatus.QUEUED and not chosen.dispatched
        assert reason
    keys = [(-t.priority, t.created_at, t.id) for t in result.runnable]
    assert keys == sorted(keys)
    # Every undispatched queued task of a known project is runnable, blocked or waiting on a
    # prerequisite that is still queued or running.
    for candidate in tasks:
        if candidate.status is not TaskStatus.QUEUED or candidate.dispatched:
            assert candidate.id not in runnable and candidate.id not in blocked
        elif candidate.id not in runnable and candidate.id not in blocked:
            assert candidate.project in PROJECTS
            assert any(
                known[p].status in (TaskStatus.QUEUED, TaskStatus.RUNNING) for p in candidate.after
            )
