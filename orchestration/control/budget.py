"""Budgets: how much of a project's (or all projects') budget is spent, and what that means:
nothing, a warning at 80 %, or a stop until the period ends. Pure functions of what was spent
and a given moment, so the day and month rollover is tested with any clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestration.monitoring.usage import day_start, month_start
from orchestration.registry.models import Budget

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


def day_end(now: datetime) -> datetime:
    """Midnight UTC after `now`: when the day's budget starts again."""
    return day_start(now) + timedelta(days=1)


def month_end(now: datetime) -> datetime:
    """Midnight UTC of the first of the month after `now`'s."""
    start = month_start(now)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
