"""The monitoring sensor's plan for a tick (`orchestration/monitoring/recording.py`), from a
portfolio and its cursor: usage recorded when a task ended or the day rolled over, budget
levels that changed, projects paused by a spent budget and resumed when the period is over, the
portfolio recorded on change or every five minutes while work runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from orchestration.control.states import ProjectState
from orchestration.control.store import StateRecord
from orchestration.monitoring.portfolio import Portfolio, assemble_portfolio
from orchestration.monitoring.recording import (
    ALL_PROJECTS,
    BUDGET_REASON,
    PORTFOLIO_EVERY_S,
    MonitorCursor,
    plan_monitoring,
)
from orchestration.registry.models import Budget
from orchestration.tasks.models import Task, TaskStatus
from tests.unit.monitoring.records import NOW, at, task

DAILY_10 = Budget(daily_usd=10)


def portfolio(
    tasks: Iterable[Task],
    *,
    now: datetime = NOW,
    states: Mapping[str, StateRecord] | None = None,
    budgets: Mapping[str, Budget | None] | None = None,
) -> Portfolio:
    return assemble_portfolio(
        now=now,
        tasks=list(tasks),
        priorities={"alpha": 50, "beta": 50},
        states=dict(states or {}),
        budgets=budgets,
    )


def test_the_first_tick_records_everything_and_a_quiet_tick_nothing() -> None:
    seen = portfolio([task(finished=at(10, 8), cost=2.0)])

    first = plan_monitoring(seen, MonitorCursor(), now=NOW)
    quiet = plan_monitoring(seen, first.cursor, now=NOW + timedelta(minutes=10))

    assert [row.name for row in first.usage] == ["alpha", "beta"] and first.portfolio
    assert quiet.usage == () and not quiet.portfolio and quiet.budget_changes == ()
    assert MonitorCursor.from_json(quiet.cursor.to_json()) == quiet.cursor


def test_a_task_that_ends_records_its_project_s_usage_and_the_portfolio() -> None:
    before = plan_monitoring(
        portfolio([task(finished=at(10, 8), cost=2.0)]), MonitorCursor(), now=NOW
    )
    ended = portfolio([task(finished=at(10, 8), cost=2.0), task(TaskStatus.FAILED, finished=NOW)])

    plan = plan_monitoring(ended, before.cursor, now=NOW)

    assert [row.name for row in plan.usage] == ["alpha"] and plan.portfolio


def test_the_day_rollover_records_every_project_s_usage() -> None:
    tasks = [task(finished=at(10, 8), cost=2.0)]
    first = plan_monitoring(portfolio(tasks), MonitorCursor(), now=NOW)

    plan = plan_monitoring(portfolio(tasks, now=at(11)), first.cursor, now=at(11))

    assert [row.name for row in plan.usage] == ["alpha", "beta"]
    assert plan.usage[0].usage.cost_today_usd == 0 and plan.usage[0].usage.cost_7d_usd == 2.0


def test_the_portfolio_is_recorded_every_five_minutes_while_work_runs() -> None:
    running = [task(TaskStatus.RUNNING, started=NOW)]
    first = plan_monitoring(portfolio(running), MonitorCursor(), now=NOW)
    soon = NOW + timedelta(seconds=PORTFOLIO_EVERY_S - 1)
    later = NOW + timedelta(seconds=PORTFOLIO_EVERY_S)

    assert not plan_monitoring(portfolio(running, now=soon), first.cursor, now=soon).portfolio
    assert plan_monitoring(portfolio(running, now=later), first.cursor, now=later).portfolio


def test_a_spent_daily_budget_pauses_the_project_and_the_next_day_resumes_it() -> None:
    budgets = {"alpha": DAILY_10}
    spent = [task(finished=at(10, 8), cost=6.0), task(finished=at(10, 9), cost=4.5)]
    warned = plan_monitoring(
        portfolio(spent[:1] + [task(finished=at(10, 9), cost=2.5)], budgets=budgets),
        MonitorCursor(),
        now=NOW,
    )
    assert [(c.project, str(c.check.level)) for c in warned.budget_changes] == [("alpha", "warn")]
    assert warned.pause == ()

    over = plan_monitoring(portfolio(spent, budgets=budgets), warned.cursor, now=NOW)

    assert over.pause == ("alpha",)
    (change,) = over.budget_changes
    assert (change.project, str(change.check.level), change.before) == ("alpha", "exceeded", "warn")
    assert change.check.resets_at == at(11)

    paused = {"alpha": StateRecord("alpha", ProjectState.PAUSED, reason=BUDGET_REASON)}
    still = plan_monitoring(
        portfolio(spent, states=paused, budgets=budgets), over.cursor, now=at(10, 23, 59, 59)
    )
    assert still.pause == () and still.resume == ()

    next_day = plan_monitoring(
        portfolio(spent, now=at(11), states=paused, budgets=budgets), still.cursor, now=at(11)
    )
    assert next_day.resume == ("alpha",)
    assert [(c.project, str(c.check.level)) for c in next_day.budget_changes] == [("alpha", "ok")]


def test_a_budget_is_evaluated_on_the_first_tick_even_when_nothing_is_spent() -> None:
    plan = plan_monitoring(portfolio([], budgets={"alpha": DAILY_10}), MonitorCursor(), now=NOW)

    assert [(c.project, str(c.check.level)) for c in plan.budget_changes] == [("alpha", "ok")]


def test_a_project_paused_by_hand_is_not_resumed_by_the_budget() -> None:
    paused = {"alpha": StateRecord("alpha", ProjectState.PAUSED, reason="release freeze")}

    plan = plan_monitoring(portfolio([], states=paused), MonitorCursor(), now=NOW)

    assert plan.resume == () and plan.pause == ()


def test_the_budget_of_all_projects_pauses_every_active_project() -> None:
    tasks = [task(finished=NOW, cost=3.0), task(project="beta", finished=NOW, cost=2.0)]
    stopped = {"beta": StateRecord("beta", ProjectState.STOPPED)}

    plan = plan_monitoring(
        portfolio(tasks, states=stopped), MonitorCursor(), now=NOW, all_budget=Budget(daily_usd=5)
    )

    assert plan.pause == ("alpha",)  # beta is stopped already: left as it is
    assert [(c.project, str(c.check.level)) for c in plan.budget_changes] == [
        (ALL_PROJECTS, "exceeded")
    ]


def test_an_unreadable_cursor_is_an_empty_one() -> None:
    assert MonitorCursor.from_json("not json") == MonitorCursor()
    assert MonitorCursor.from_json(None) == MonitorCursor()
