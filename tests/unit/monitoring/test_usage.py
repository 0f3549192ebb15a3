"""Usage numbers (`orchestration/monitoring/usage.py`) from hand-made task records and a fixed
clock: each window's edge, the UTC day boundary, rollover, outcomes and waste, burn rate, the
24-hour counts, lifetime totals and queue waits. Costs are sums of powers of two, so which
tasks a number counted can be read off it exactly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestration.monitoring.usage import (
    LifetimeTotals,
    ProjectUsage,
    day_start,
    lifetime_totals,
    project_usage,
    queue_waits,
    status_counts,
    usage_by_project,
)
from orchestration.tasks.models import TaskStatus
from tests.unit.monitoring.records import NOW, at, task


def test_each_window_starts_at_a_utc_midnight() -> None:
    tasks = [
        task(finished=at(10), cost=1.0),  # today's first instant
        task(finished=at(9, 23, 59, 59), cost=2.0),  # yesterday's last second
        task(finished=at(4), cost=4.0),  # the first day of the 7 (today and the 6 before)
        task(finished=at(3, 23, 59, 59), cost=8.0),  # just before the 7 days
        task(finished=at(9, month=2), cost=16.0),  # the first day of the 30
        task(finished=at(8, 23, 59, 59, month=2), cost=32.0),  # just before the 30 days
    ]
    usage = project_usage("alpha", tasks, NOW)
    assert usage.cost_today_usd == 1.0
    assert usage.cost_7d_usd == 1.0 + 2.0 + 4.0
    assert usage.cost_30d_usd == 1.0 + 2.0 + 4.0 + 8.0 + 16.0
    assert usage.cost_month_usd == 1.0 + 2.0 + 4.0 + 8.0  # March only: from the 1st


def test_the_month_is_the_calendar_month() -> None:
    tasks = [
        task(finished=at(1), cost=1.0),  # the month's first instant
        task(finished=at(28, 23, 59, 59, month=2), cost=2.0),  # February's last second
    ]
    assert project_usage("alpha", tasks, NOW).cost_month_usd == 1.0


def test_days_are_utc_days_whatever_the_clock_s_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = datetime(2026, 3, 10, 0, 30, tzinfo=plus_two)  # 2026-03-09 22:30 UTC
    assert day_start(now) == at(9)
    tasks = [
        task(finished=datetime(2026, 3, 9, 23, 0, tzinfo=plus_two), cost=1.0),  # 21:00 UTC, 9th
        task(finished=datetime(2026, 3, 9, 1, 0, tzinfo=plus_two), cost=2.0),  # 23:00 UTC, 8th
    ]
    assert project_usage("alpha", tasks, now).cost_today_usd == 1.0


def test_at_rollover_today_starts_from_zero_and_the_week_keeps_it() -> None:
    tasks = [task(finished=at(10, 8), cost=1.5, tokens_in=100, tokens_out=10)]
    before = project_usage("alpha", tasks, at(10, 23, 59, 59))
    after = project_usage("alpha", tasks, at(11))
    assert (before.cost_today_usd, before.tokens_in_today, before.tasks_succeeded_today) == (
        1.5,
        100,
        1,
    )
    assert (after.cost_today_usd, after.tokens_in_today, after.tasks_succeeded_today) == (0, 0, 0)
    assert after.cost_per_success_usd is None
    assert after.cost_7d_usd == before.cost_7d_usd == 1.5


def test_outcomes_tokens_cost_per_success_and_waste_of_today() -> None:
    today = at(10, 8)
    tasks = [
        task(finished=today, cost=1.5, tokens_in=100, tokens_out=10),
        task(finished=today, cost=2.5, tokens_in=200, tokens_out=20),
        task(TaskStatus.FAILED, finished=today, cost=0.75, tokens_in=50, tokens_out=5),
        task(TaskStatus.FAILED, finished=today),  # failed before it cost anything
        task(TaskStatus.CANCELLED, finished=today, cost=0.25),
        task(TaskStatus.RUNNING, started=today),  # nothing counts until it finishes
        task(TaskStatus.QUEUED),
        task(TaskStatus.FAILED, finished=at(9, 12), cost=8.0),  # yesterday's waste
        task(finished=today, cost=64.0, project="beta"),  # another project's
    ]
    usage = project_usage("alpha", tasks, NOW)
    assert usage == ProjectUsage(
        project="alpha",
        cost_today_usd=5.0,
        cost_7d_usd=13.0,
        cost_30d_usd=13.0,
        cost_month_usd=13.0,
        tokens_in_today=350,
        tokens_out_today=35,
        tasks_succeeded_today=2,
        tasks_failed_today=2,
        cost_per_success_usd=2.5,  # all of today's 5.0, over 2 successes
        wasted_usd_today=1.0,  # the failed 0.75 and the cancelled 0.25
        burn_rate_usd_per_h=0.0,
        succeeded_24h=2,
        failed_24h=3,
    )
    assert usage.tokens_today == 385


def test_cost_per_success_is_none_without_a_success() -> None:
    usage = project_usage("alpha", [task(TaskStatus.FAILED, finished=at(10, 1), cost=3.0)], NOW)
    assert usage.cost_per_success_usd is None
    assert usage.wasted_usd_today == 3.0


def test_burn_rate_is_the_cost_finished_in_the_last_hour() -> None:
    tasks = [
        task(finished=NOW - timedelta(minutes=59, seconds=59), cost=1.0),
        task(finished=NOW - timedelta(minutes=60), cost=2.0),  # the window's first instant
        task(finished=NOW - timedelta(minutes=60, seconds=1), cost=4.0),
        task(TaskStatus.FAILED, finished=NOW - timedelta(minutes=5), cost=8.0),  # waste burns too
    ]
    assert project_usage("alpha", tasks, NOW).burn_rate_usd_per_h == 11.0


def test_outcomes_of_the_last_24_hours_span_two_days() -> None:
    day = timedelta(hours=24)
    tasks = [
        task(finished=NOW - day, cost=1.0),  # yesterday 09:30: the window's first instant
        task(finished=NOW - day - timedelta(seconds=1)),
        task(TaskStatus.FAILED, finished=NOW - timedelta(hours=23)),
        task(TaskStatus.FAILED, finished=NOW - day - timedelta(seconds=1)),
        task(TaskStatus.CANCELLED, finished=NOW - timedelta(hours=1)),  # neither
    ]
    usage = project_usage("alpha", tasks, NOW)
    assert (usage.succeeded_24h, usage.failed_24h) == (1, 1)
    assert (usage.tasks_succeeded_today, usage.tasks_failed_today) == (0, 0)


def test_a_clock_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        project_usage("alpha", [], datetime(2026, 3, 10, 9, 30))


def test_usage_by_project_has_named_projects_and_every_project_of_a_task() -> None:
    tasks = [task(finished=at(10, 1), cost=1.0), task(finished=at(10, 2), project="beta")]
    usage = usage_by_project(tasks, NOW, ["gamma", "alpha"])
    assert set(usage) == {"alpha", "beta", "gamma"}
    assert usage["gamma"] == ProjectUsage("gamma")
    assert usage["alpha"].cost_today_usd == 1.0
    assert usage["beta"].tasks_succeeded_today == 1


def test_status_counts_have_every_status() -> None:
    tasks = [task(TaskStatus.QUEUED), task(TaskStatus.QUEUED), task(TaskStatus.BLOCKED)]
    counts = status_counts([*tasks, task(TaskStatus.RUNNING, project="beta")])
    assert counts["alpha"] == {
        TaskStatus.QUEUED: 2,
        TaskStatus.RUNNING: 0,
        TaskStatus.SUCCEEDED: 0,
        TaskStatus.FAILED: 0,
        TaskStatus.CANCELLED: 0,
        TaskStatus.BLOCKED: 1,
    }
    assert counts["beta"][TaskStatus.RUNNING] == 1


def test_lifetime_totals_count_every_record_whenever_it_finished() -> None:
    tasks = [
        task(finished=at(1, month=1), cost=1.0, tokens_in=10, tokens_out=1),
        task(TaskStatus.FAILED, finished=NOW, cost=2.0, tokens_in=20, tokens_out=2),
        task(TaskStatus.QUEUED),
        task(finished=NOW, cost=4.0, tokens_in=40, tokens_out=4, project="beta"),
    ]
    assert lifetime_totals(tasks) == {
        "alpha": LifetimeTotals(3.0, 30, 3),
        "beta": LifetimeTotals(4.0, 40, 4),
    }


def test_queue_waits_of_tasks_started_in_the_last_day() -> None:
    tasks = [
        task(
            TaskStatus.RUNNING,
            created=NOW - timedelta(minutes=10),
            started=NOW - timedelta(minutes=4),
        ),
        task(created=NOW - timedelta(hours=30), started=NOW - timedelta(hours=24)),  # edge: in
        task(created=NOW - timedelta(hours=30), started=NOW - timedelta(hours=25)),  # out
        task(TaskStatus.QUEUED, created=NOW - timedelta(hours=2)),  # not started
        task(created=NOW, started=NOW - timedelta(seconds=3)),  # clocks disagree: no wait
        task(created=NOW - timedelta(seconds=90), started=NOW, project="beta"),
    ]
    assert queue_waits(tasks, NOW) == {"alpha": (360.0, 6 * 3600.0, 0.0), "beta": (90.0,)}
