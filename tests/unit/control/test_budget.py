"""Budgets against what was spent: warn at 80 %, exceeded at 100 %, the period that decides and
when it ends, at any moment (day and month rollovers, a December)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from orchestration.control.budget import (
    MIN_TASK_CAP_USD,
    BudgetLevel,
    check_budget,
    day_end,
    month_end,
    remaining_budget,
    task_cap,
)
from orchestration.monitoring.usage import ProjectUsage
from orchestration.registry.models import Budget

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def test_no_budget_is_always_ok() -> None:
    assert check_budget(None, spent_today=1e6, spent_month=1e6, now=NOW).level is BudgetLevel.OK
    assert check_budget(Budget(), spent_today=5, spent_month=5, now=NOW).used_pct is None


@pytest.mark.parametrize(
    ("spent", "level"),
    [
        (0.0, BudgetLevel.OK),
        (7.99, BudgetLevel.OK),
        (8.0, BudgetLevel.WARN),
        (9.99, BudgetLevel.WARN),
        (10.0, BudgetLevel.EXCEEDED),
        (25.0, BudgetLevel.EXCEEDED),
    ],
)
def test_a_daily_budget_warns_at_80_and_is_exceeded_at_100_percent(
    spent: float, level: BudgetLevel
) -> None:
    check = check_budget(Budget(daily_usd=10), spent_today=spent, spent_month=spent, now=NOW)

    assert check.level is level and check.used_pct == pytest.approx(spent * 10)
    assert (check.period, check.limit_usd) == ("day", 10)
    assert check.resets_at == datetime(2026, 11, 30, tzinfo=UTC)


def test_the_most_used_period_decides() -> None:
    budget = Budget(daily_usd=10, monthly_usd=100)

    daily = check_budget(budget, spent_today=9, spent_month=50, now=NOW)
    monthly = check_budget(budget, spent_today=1, spent_month=100, now=NOW)

    assert (daily.period, daily.level, daily.used_pct) == ("day", BudgetLevel.WARN, 90.0)
    assert (monthly.period, monthly.level) == ("month", BudgetLevel.EXCEEDED)
    assert monthly.resets_at == datetime(2026, 12, 1, tzinfo=UTC)


def test_periods_are_utc_days_and_calendar_months() -> None:
    late = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    berlin = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 23:30 UTC

    assert day_end(late) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_end(late) == datetime(2027, 1, 1, tzinfo=UTC)
    assert day_end(berlin) == datetime(2026, 12, 1, tzinfo=UTC)
    assert month_end(berlin) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="daily_usd"):
        Budget(daily_usd=0)
    with pytest.raises(ValidationError, match="monthly_usd"):
        Budget.model_validate({"monthly_usd": -5})


def test_a_task_may_spend_what_is_left_of_the_tightest_budget() -> None:
    both = Budget(daily_usd=10, monthly_usd=100)

    assert remaining_budget(None, spent_today=5, spent_month=5) is None
    assert remaining_budget(both, spent_today=4, spent_month=20) == 6
    assert remaining_budget(both, spent_today=4, spent_month=97) == 3
    assert remaining_budget(both, spent_today=12, spent_month=20) == MIN_TASK_CAP_USD


def test_the_cap_of_a_task_is_its_project_s_or_all_projects_whichever_is_less() -> None:
    usage = {
        "alpha": ProjectUsage("alpha", cost_today_usd=2.0, cost_month_usd=2.0),
        "beta": ProjectUsage("beta", cost_today_usd=7.0, cost_month_usd=7.0),
    }

    assert task_cap(Budget(daily_usd=5), None, usage, "alpha") == 3.0
    assert task_cap(Budget(daily_usd=5), Budget(daily_usd=10), usage, "alpha") == 1.0
    assert task_cap(None, Budget(daily_usd=20), usage, "gamma") == 11.0
    assert task_cap(None, None, usage, "alpha") is None
