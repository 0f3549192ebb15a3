"""The freshness windows of a scheduled project's `verification`, computed from its cron: the
longest gap between ticks, checked against walking every tick with croniter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from croniter import croniter

from orchestration.defs.factory import (
    FRESHNESS_GRACE,
    longest_cron_gap,
    verification_freshness,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def walked_gap(cron: str) -> timedelta:
    """The longest gap, found the slow way: every tick from 2024-01-01 until past 2025-01-01."""
    ticks = croniter(cron, datetime(2023, 12, 31, 23, 59, tzinfo=UTC))
    previous = ticks.get_next(datetime)
    longest = timedelta(0)
    count = 0
    while True:
        current = ticks.get_next(datetime)
        longest = max(longest, current - previous)
        previous, count = current, count + 1
        if current > datetime(2025, 1, 2, tzinfo=UTC) and count >= 2:
            return longest


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("0 3 * * *", DAY),
        ("@daily", DAY),
        ("0 0,12 * * *", 12 * HOUR),
        ("0 6 * * 1-5", 3 * DAY),  # Friday 6:00 to Monday 6:00
        ("0 9-17 * * 1-5", 2 * DAY + 16 * HOUR),  # Friday 17:00 to Monday 9:00
        ("30 2 * * 0", 7 * DAY),
        ("@weekly", 7 * DAY),
        ("0 0 1,15 * *", 17 * DAY),  # the 15th of January to the 1st of February
        ("0 0 L * *", 31 * DAY),
        ("0 0 * * 5#2", 35 * DAY),  # second Friday of each month
        ("0 0 1 * mon", 7 * DAY),  # cron's OR: the 1st or any Monday
        ("0 0 1 1 *", 366 * DAY),  # 2024 is a leap year
        ("0 0 29 2 *", 1461 * DAY),  # only leap days
        ("59 23 * * *", DAY),
        ("0 3 */2 * *", 2 * DAY),
    ],
)
def test_the_longest_gap_is_the_one_walking_every_tick_finds(cron: str, gap: timedelta) -> None:
    assert longest_cron_gap(cron) == gap
    assert walked_gap(cron) == gap


@pytest.mark.parametrize(
    ("cron", "gap"), [("*/15 * * * *", 15 * 60), ("* * * * 1-5", 2 * 86400 + 60)]
)
def test_frequent_schedules_need_no_walk_over_every_tick(cron: str, gap: int) -> None:
    """Half a million ticks a year are never walked: only the days are looked up."""
    assert longest_cron_gap(cron) == timedelta(seconds=gap)


def test_a_scheduled_project_warns_after_one_period_and_fails_after_two() -> None:
    policy = verification_freshness("0 6 * * 1-5")
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy == dg.FreshnessPolicy.time_window(
        fail_window=6 * DAY + FRESHNESS_GRACE, warn_window=3 * DAY + FRESHNESS_GRACE
    )
    assert FRESHNESS_GRACE == HOUR


def test_an_every_minute_schedule_still_gets_windows_dagster_accepts() -> None:
    policy = verification_freshness("* * * * *")
    assert policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=2) + HOUR, warn_window=timedelta(minutes=1) + HOUR
    )


def test_no_schedule_no_policy() -> None:
    assert verification_freshness(None) is None
