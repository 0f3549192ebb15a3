"""What the monitoring sensor records on a tick, decided from the portfolio and what it
recorded before (its cursor): each project's `usage` when a task of it ended or the day rolled
over, a `within_budget` evaluation when a project's budget level changed, the projects to pause
because their budget (or all projects' budget) is spent and those to resume once the period
that stopped them is over, the `orchestration/portfolio` asset when anything changed (or
every few minutes while work runs), and the `orchestration/providers` asset with its
`available` check when a provider account's state changed, with the pauses and resumes to
alert. Pure: plain data in, a plan out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestration.control.budget import BudgetCheck, BudgetLevel, check_budget
from orchestration.control.states import ProjectState
from orchestration.monitoring.portfolio import Portfolio, ProjectRow, ProviderStatus
from orchestration.monitoring.usage import ProjectUsage, as_utc, day_start
from orchestration.registry.models import Budget

#: The reason a project paused by its budget (or all projects' budget) carries; such a project
#: resumes by itself once neither budget is spent.
BUDGET_REASON = "budget"
#: The key of all projects' budget (pools.yaml) in a cursor.
ALL_PROJECTS = "*"
#: How often the portfolio is recorded while something runs and nothing else changed.
PORTFOLIO_EVERY_S = 300.0
#: A provider account's statuses, as the portfolio gives them.
OPEN = "open"
PAUSED = "paused"


@dataclass(frozen=True)
class MonitorCursor:
    """What the monitoring sensor recorded last: the day, each project's usage fingerprint, each
    budget's level, the portfolio's fingerprint and time, each provider account's status and
    the fingerprint of all of their states."""

    day: str = ""
    usage: Mapping[str, str] = field(default_factory=dict)
    budgets: Mapping[str, str] = field(default_factory=dict)
    portfolio: str = ""
    portfolio_at: float = 0.0
    providers: Mapping[str, str] = field(default_factory=dict)
    providers_mark: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "day": self.day,
                "usage": dict(self.usage),
                "budgets": dict(self.budgets),
                "portfolio": self.portfolio,
                "portfolio_at": self.portfolio_at,
                "providers": dict(self.providers),
                "providers_mark": self.providers_mark,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> MonitorCursor:
        """The cursor a sensor kept; an empty one for none or one it cannot read."""
        try:
            data = json.loads(text or "{}")
            return cls(
                day=str(data.get("day", "")),
                usage={str(k): str(v) for k, v in dict(data.get("usage", {})).items()},
                budgets={str(k): str(v) for k, v in dict(data.get("budgets", {})).items()},
                portfolio=str(data.get("portfolio", "")),
                portfolio_at=float(data.get("portfolio_at", 0.0)),
                providers={str(k): str(v) for k, v in dict(data.get("providers", {})).items()},
                providers_mark=str(data.get("providers_mark", "")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True)
class BudgetChange:
    """A budget whose level changed since the last tick (`project` is ALL_PROJECTS for the
    budget of all projects together)."""

    project: str
    check: BudgetCheck
    before: str


@dataclass(frozen=True)
class ProviderChange:
    """A provider account paused (from open or canary) or resumed (from paused to canary or
    open) since the last tick: `before` is the status it had then."""

    provider: ProviderStatus
    before: str

    @property
    def paused(self) -> bool:
        """True for a pause, False for a resume."""
        return self.provider.paused


@dataclass(frozen=True)
class MonitorPlan:
    """What to record and do on this tick, and the cursor to keep after doing it. `providers`:
    record the provider accounts and evaluate their `available` check; `provider_changes`: the
    pauses and resumes to alert."""

    usage: tuple[ProjectRow, ...]
    budget_changes: tuple[BudgetChange, ...]
    pause: tuple[str, ...]
    resume: tuple[str, ...]
    portfolio: bool
    providers: bool
    provider_changes: tuple[ProviderChange, ...]
    cursor: MonitorCursor


def plan_monitoring(
    portfolio: Portfolio,
    cursor: MonitorCursor,
    *,
    now: datetime,
    all_budget: Budget | None = None,
) -> MonitorPlan:
    """This tick's plan, from the portfolio taken `now`, what was recorded before, and the
    budget of all projects together (pools.yaml)."""
    day = day_start(now).date().isoformat()
    rolled = day != cursor.day
    usage_marks = {row.name: usage_mark(row.usage, day) for row in portfolio.projects}
    changed_usage = tuple(
        row
        for row in portfolio.projects
        if rolled or cursor.usage.get(row.name) != usage_marks[row.name]
    )

    total = all_projects_check(portfolio, all_budget, now)
    levels = {row.name: str(row.budget.level) for row in portfolio.projects}
    levels[ALL_PROJECTS] = str(total.level)
    checks = {row.name: row.budget for row in portfolio.projects} | {ALL_PROJECTS: total}
    # A budget seen for the first time is evaluated once; after that, each change of level.
    changes = tuple(
        BudgetChange(name, checks[name], cursor.budgets.get(name, str(BudgetLevel.OK)))
        for name in sorted(levels)
        if (name in cursor.budgets and levels[name] != cursor.budgets[name])
        or (name not in cursor.budgets and checks[name].limit_usd is not None)
    )

    pause, resume = [], []
    for row in portfolio.projects:
        spent = row.budget.exceeded or total.exceeded
        if spent and row.state is ProjectState.ACTIVE:
            pause.append(row.name)
        elif (
            not spent
            and row.state is ProjectState.PAUSED
            and (row.state_reason or "") == BUDGET_REASON
        ):
            resume.append(row.name)

    mark = portfolio_mark(portfolio)
    at = as_utc(now).timestamp()
    running = any(row.running for row in portfolio.projects)
    record_portfolio = (
        mark != cursor.portfolio
        or rolled
        or (running and at - cursor.portfolio_at >= PORTFOLIO_EVERY_S)
    )
    accounts = {provider.name: provider.status for provider in portfolio.providers}
    accounts_mark = providers_mark(portfolio.providers)
    return MonitorPlan(
        usage=changed_usage,
        budget_changes=changes,
        pause=tuple(pause),
        resume=tuple(resume),
        portfolio=record_portfolio,
        cursor=MonitorCursor(
            day=day,
            usage=usage_marks,
            budgets=levels,
            portfolio=mark,
            portfolio_at=at if record_portfolio else cursor.portfolio_at,
            providers=accounts,
            providers_mark=accounts_mark,
        ),
        providers=accounts_mark != cursor.providers_mark,
        provider_changes=provider_changes(portfolio.providers, cursor.providers),
    )


def provider_changes(
    providers: Iterable[ProviderStatus], before: Mapping[str, str]
) -> tuple[ProviderChange, ...]:
    """The accounts paused or resumed since the statuses `before` (an account not in it was
    open): each pause and each resume once."""
    changes = []
    for provider in providers:
        was = before.get(provider.name, OPEN)
        if provider.paused != (was == PAUSED):
            changes.append(ProviderChange(provider, was))
    return tuple(changes)


def all_projects_check(portfolio: Portfolio, budget: Budget | None, now: datetime) -> BudgetCheck:
    """How all projects' spending together stands against their common budget."""
    return check_budget(
        budget,
        spent_today=sum(row.usage.cost_today_usd for row in portfolio.projects),
        spent_month=sum(row.usage.cost_month_usd for row in portfolio.projects),
        now=now,
    )


def usage_mark(usage: ProjectUsage, day: str) -> str:
    """What changes when a task of the project ends (or the day rolls over): its day's and
    month's spend, tokens and outcomes."""
    return _digest(
        [
            day,
            round(usage.cost_today_usd, 6),
            round(usage.cost_month_usd, 6),
            usage.tokens_in_today,
            usage.tokens_out_today,
            usage.tasks_succeeded_today,
            usage.tasks_failed_today,
            round(usage.wasted_usd_today, 6),
        ]
    )


def portfolio_mark(portfolio: Portfolio) -> str:
    """What changes when a project's state, work in flight, outcomes, spend or verification
    does (not the ages and rates that move with the clock)."""
    return _digest(
        [
            [
                row.name,
                str(row.state),
                row.state_reason,
                row.priority,
                row.running,
                row.queued,
                row.blocked,
                row.usage.succeeded_24h,
                row.usage.failed_24h,
                round(row.usage.cost_today_usd, 6),
                row.budget_used_pct,
                row.last_verification.passed if row.last_verification else None,
            ]
            for row in portfolio.projects
        ]
        + [[name, slots.limit, slots.in_use] for name, slots in sorted(portfolio.slots.items())]
        + [[provider.name, provider.paused] for provider in portfolio.providers]
    )


def providers_mark(providers: Iterable[ProviderStatus]) -> str:
    """What changes when a provider account is paused, tried again, opened or resumed, its
    pause extended, or its pool's limit changed."""
    return _digest(
        [
            [
                provider.name,
                provider.status,
                provider.until,
                provider.reason,
                provider.window,
                provider.source_task,
                provider.since,
                provider.limit,
                provider.configured,
            ]
            for provider in providers
        ]
    )


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
