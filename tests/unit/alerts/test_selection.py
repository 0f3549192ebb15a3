"""What to alert, from plain data: each failed task, failed verification and stuck run once,
nothing from before alerting started, and a cursor that survives a restart (JSON)."""

from __future__ import annotations

from orchestration.alerts.selection import (
    LOOKBACK_S,
    ActiveRun,
    AlertCursor,
    FailedTask,
    Selection,
    VerificationRecord,
    VerificationState,
    select_alerts,
)

T0 = 1_800_000_000.0  # when alerting started


def failed(task_id: str, at: float, **fields: object) -> FailedTask:
    return FailedTask(id=task_id, project="alpha", finished_at=at, **fields)  # type: ignore[arg-type]


def tick(cursor: AlertCursor, now: float, **data: object) -> Selection:
    """One look, through the JSON the sensor keeps (as a restarted daemon would read it)."""
    again = AlertCursor.parse(cursor.to_json())
    assert again == cursor
    return select_alerts(again, now, **data)  # type: ignore[arg-type]


def test_a_failed_task_alerts_once_with_what_happened() -> None:
    start = AlertCursor.start(T0)
    task = failed(
        "t1",
        T0 + 5,
        reason="agent exited 1: out of memory",
        run_id="r" * 36,
        prompt="Add a /version endpoint\nwith tests",
        attempts=2,
        cost_usd=0.42,
    )

    first = tick(start, T0 + 10, failed_tasks=[task], ui_url="http://127.0.0.1:3000/")
    (alert,) = first.alerts
    assert (alert.kind, alert.project, alert.task_id, alert.run_id) == (
        "task_failed",
        "alpha",
        "t1",
        "r" * 36,
    )
    assert alert.title == "Task t1 of alpha failed"
    assert alert.text == "agent exited 1: out of memory"
    assert alert.details["prompt"] == "Add a /version endpoint"
    assert (alert.details["attempts"], alert.details["cost_usd"]) == (2, 0.42)
    assert alert.at.timestamp() == T0 + 5
    assert alert.link == "http://127.0.0.1:3000/runs/" + "r" * 36

    second = tick(first.cursor, T0 + 25, failed_tasks=[task])
    assert second.alerts == ()
    assert tick(second.cursor, T0 + 5000, failed_tasks=[task]).alerts == ()


def test_nothing_from_before_the_first_look_is_alerted() -> None:
    old = failed("t_old", T0 - 1)
    first = tick(AlertCursor.start(T0), T0, failed_tasks=[old])
    assert first.alerts == ()
    assert tick(first.cursor, T0 + 15, failed_tasks=[old]).alerts == ()


def test_a_failure_recorded_late_is_still_alerted_once() -> None:
    """Its record carries a moment before the last look (a slow write, a clock behind)."""
    first = tick(AlertCursor.start(T0), T0 + 100)
    late = failed("t_late", T0 + 90)  # written after the look at T0+100
    second = tick(first.cursor, T0 + 115, failed_tasks=[late])
    assert [a.task_id for a in second.alerts] == ["t_late"]
    assert tick(second.cursor, T0 + 130, failed_tasks=[late]).alerts == ()


def test_a_task_that_fails_again_after_a_retry_alerts_again() -> None:
    first = tick(AlertCursor.start(T0), T0 + 10, failed_tasks=[failed("t1", T0 + 5)])
    again = tick(first.cursor, T0 + 100, failed_tasks=[failed("t1", T0 + 90)])
    assert [a.task_id for a in again.alerts] == ["t1"]


def test_the_cursor_keeps_only_recent_failures() -> None:
    tasks = [failed(f"t{i}", T0 + i) for i in range(1, 4)]
    first = tick(AlertCursor.start(T0), T0 + 10, failed_tasks=tasks)
    assert len(first.alerts) == 3 and len(first.cursor.tasks_seen) == 3
    later = tick(first.cursor, T0 + 10 + LOOKBACK_S + 5, failed_tasks=tasks)
    assert later.alerts == () and later.cursor.tasks_seen == frozenset()
    assert tick(later.cursor, T0 + 2 * LOOKBACK_S, failed_tasks=tasks).alerts == ()


def test_an_unreadable_cursor_is_none() -> None:
    for text in (None, "", "not json", "[]", '{"since": "x"}', '{"tasks_until": 1}'):
        assert AlertCursor.parse(text) is None


def record(number: int, state: VerificationState, **fields: object) -> VerificationRecord:
    return VerificationRecord(
        project="alpha",
        id=number,
        run_id=f"run{number}",
        created=T0 + number,
        state=state,
        **fields,  # type: ignore[arg-type]
    )


def test_a_failed_verification_alerts_once_and_a_passed_one_not_at_all() -> None:
    cursor = AlertCursor.start(T0)
    assert cursor.wants_verifications("alpha", 1, T0 + 1)
    checks = {
        "alpha": [
            record(1, VerificationState.PASSED),
            record(2, VerificationState.FAILED, message="2 failed", details={"failed": 2}),
        ]
    }

    first = tick(cursor, T0 + 10, verifications=checks, projects=["alpha"])
    (alert,) = first.alerts
    assert (alert.kind, alert.project, alert.run_id) == ("verification_failed", "alpha", "run2")
    assert alert.title == "Verification of alpha failed"
    assert (alert.text, alert.details) == ("2 failed", {"failed": 2})
    assert first.cursor.verified == {"alpha": 2}
    assert not first.cursor.wants_verifications("alpha", 2, T0 + 2)
    assert tick(first.cursor, T0 + 20, verifications=checks, projects=["alpha"]).alerts == ()


def test_a_verification_whose_run_failed_alerts_that_it_could_not_run() -> None:
    checks = {"alpha": [record(1, VerificationState.RUN_FAILED, message="repo is gone")]}
    (alert,) = tick(AlertCursor.start(T0), T0 + 10, verifications=checks, projects=["alpha"]).alerts
    assert alert.title == "Verification of alpha could not run"
    assert alert.text == "repo is gone"
    cancelled = {"alpha": [record(1, VerificationState.NOT_RUN)]}
    assert (
        tick(AlertCursor.start(T0), T0 + 10, verifications=cancelled, projects=["alpha"]).alerts
        == ()
    )


def test_a_pending_verification_holds_back_the_later_ones_until_it_ends() -> None:
    pending = {"alpha": [record(1, VerificationState.PENDING), record(2, VerificationState.FAILED)]}
    first = tick(AlertCursor.start(T0), T0 + 10, verifications=pending, projects=["alpha"])
    assert first.alerts == () and first.cursor.verified == {}

    ended = {"alpha": [record(1, VerificationState.FAILED), record(2, VerificationState.FAILED)]}
    second = tick(first.cursor, T0 + 20, verifications=ended, projects=["alpha"])
    assert [a.run_id for a in second.alerts] == ["run1", "run2"]
    assert second.cursor.verified == {"alpha": 2}


def test_verifications_from_before_the_first_look_are_not_alerted() -> None:
    # The instance keeps when a check was planned to the second: one planned in the same second
    # as the first look counts as after it.
    cursor = AlertCursor.start(T0 + 0.7)
    old = VerificationRecord("alpha", 1, "run1", T0 - 1, VerificationState.FAILED)
    same_second = VerificationRecord("alpha", 2, "run2", T0, VerificationState.FAILED)
    assert not cursor.wants_verifications("alpha", 1, T0 - 1)
    result = tick(cursor, T0 + 5, verifications={"alpha": [old, same_second]}, projects=["alpha"])
    assert [a.run_id for a in result.alerts] == ["run2"]


def test_the_cursor_forgets_projects_that_have_no_verification_any_more() -> None:
    cursor = AlertCursor(since=T0, tasks_until=T0, verified={"alpha": 3, "gone": 7})
    assert tick(cursor, T0 + 1, projects=["alpha"]).cursor.verified == {"alpha": 3}


def run(run_id: str, started: float, **fields: object) -> ActiveRun:
    return ActiveRun(run_id=run_id, started=started, job="__ASSET_JOB", status="STARTED", **fields)  # type: ignore[arg-type]


def test_a_stuck_run_alerts_once_and_is_forgotten_when_it_ends() -> None:
    young = run("young-run", T0 + 3000)
    stuck = run("stuck-run-0000", T0, project="alpha", task_id="t1")

    first = tick(AlertCursor.start(T0), T0 + 3700, active_runs=[young, stuck], stuck_after_s=3600)
    (alert,) = first.alerts
    assert (alert.kind, alert.run_id, alert.project, alert.task_id) == (
        "run_stuck",
        "stuck-run-0000",
        "alpha",
        "t1",
    )
    assert alert.title == "Run stuck-ru (task t1 of alpha) in progress for 1 h 01 min"
    assert alert.details["running_s"] == 3700
    assert first.cursor.stuck == {"stuck-run-0000"}

    second = tick(first.cursor, T0 + 3800, active_runs=[young, stuck], stuck_after_s=3600)
    assert second.alerts == ()
    ended = tick(second.cursor, T0 + 3900, active_runs=[young], stuck_after_s=3600)
    assert ended.alerts == () and ended.cursor.stuck == frozenset()
