"""Budgets: how much of a project's (or all projects') budget is spent, and what that means:
nothing, a warning at 80 %, or a stop until the period ends. Pure functions of what was spent
and a given moment, so the day and month rollover is tested with any clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestration.monitoring.usage import ProjectUsage, day_start, month_start
from orchestration.registry.models import Budget
from orchestration.settings import clock_offset

#: The share of a budget from which a warning is given.
WARN_AT = 0.8


class BudgetLevel(StrEnum):
    OK = "ok"
    WARN = "warn"
    EXCEEDED = "exceeded"


@dataclass(frozen=True)
class BudgetCheck:
    """Where spending stands against a budget; the period most used decides."""

    level: BudgetLevel
    #: Percent of the most used period's budget (None without a budget).
    used_pct: float | None = None
    #: "day" or "month": the period that decided.
    period: str | None = None
    spent_usd: float = 0.0
    limit_usd: float | None = None
    #: When that period ends (UTC): a project stopped by its budget resumes then.
    resets_at: datetime | None = None

    @property
    def exceeded(self) -> bool:
        return self.level is BudgetLevel.EXCEEDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": str(self.level),
            "used_pct": self.used_pct,
            "period": self.period,
            "spent_usd": round(self.spent_usd, 6),
            "limit_usd": self.limit_usd,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }


def check_budget(
    budget: Budget | None, *, spent_today: float, spent_month: float, now: datetime
) -> BudgetCheck:
    """How `spent_today` and `spent_month` (US dollars, UTC periods containing `now`) stand
    against `budget`."""
    if budget is None or (budget.daily_usd is None and budget.monthly_usd is None):
        return BudgetCheck(BudgetLevel.OK)
    candidates = []
    if budget.daily_usd is not None:
        candidates.append(("day", spent_today, budget.daily_usd, day_end(now)))
    if budget.monthly_usd is not None:
        candidates.append(("month", spent_month, budget.monthly_usd, month_end(now)))
    # The most used period decides; on a tie, the one that ends later (it stops longer).
    period, spent, limit, resets = max(candidates, key=lambda c: (c[1] / c[2], c[3]))
    share = spent / limit
    level = (
        BudgetLevel.EXCEEDED
        if share >= 1
        else BudgetLevel.WARN
        if share >= WARN_AT
        else BudgetLevel.OK
    )
    return BudgetCheck(level, round(100 * share, 2), period, spent, limit, resets)


#: The least cap given to an agent: a cap of nothing is refused by some CLIs, and a project over
#: its budget is paused by the next monitoring tick anyway.
MIN_TASK_CAP_USD = 0.01


def remaining_budget(
    budget: Budget | None, *, spent_today: float, spent_month: float
) -> float | None:
    """What is left of `budget` in its tightest period (at least MIN_TASK_CAP_USD); None
    without a budget."""
    if budget is None:
        return None
    left = [
        limit - spent
        for limit, spent in ((budget.daily_usd, spent_today), (budget.monthly_usd, spent_month))
        if limit is not None
    ]
    return max(MIN_TASK_CAP_USD, min(left)) if left else None


def task_cap(
    project: Budget | None,
    all_projects: Budget | None,
    usage: Mapping[str, ProjectUsage],
    name: str,
) -> float | None:
    """The most one task of project `name` may spend: what is left of its own budget and of
    all projects' budget, whichever is less (from `usage`, every project's usage now); None
    when neither budget is set."""
    own = usage.get(name)
    caps = [
        remaining_budget(
            project,
            spent_today=own.cost_today_usd if own else 0.0,
            spent_month=own.cost_month_usd if own else 0.0,
        ),
        remaining_budget(
            all_projects,
            spent_today=sum(u.cost_today_usd for u in usage.values()),
            spent_month=sum(u.cost_month_usd for u in usage.values()),
        ),
    ]
    found = [cap for cap in caps if cap is not None]
    return min(found) if found else None


def budget_now(environ: Mapping[str, str]) -> datetime:
    """Now as budgets read it: the system clock shifted by ORCH_CLOCK_OFFSET_S (drills and
    tests that must cross a midnight)."""
    return datetime.now(UTC) + timedelta(seconds=clock_offset(environ))


def day_end(now: datetime) -> datetime:
    """Midnight UTC after `now`: when the day's budget starts again."""
    return day_start(now) + timedelta(days=1)


def month_end(now: datetime) -> datetime:
    """Midnight UTC of the first of the month after `now`'s."""
    start = month_start(now)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
