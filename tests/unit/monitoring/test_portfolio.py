"""The portfolio's pure half (`orchestration/monitoring/portfolio.py`): rows from plain inputs
(which projects get one, their state, counts, spend and verification age), the JSON shape
`orch status --json` promises, pool slots, and the verdict of a verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestration.control.states import ProjectState
from orchestration.control.store import StateRecord
from orchestration.monitoring.portfolio import (
    Evaluation,
    PoolSlots,
    Portfolio,
    ProviderStatus,
    Verification,
    assemble_portfolio,
    pool_slots,
    pools_in_use,
    verdict,
)
from orchestration.monitoring.usage import LifetimeTotals
from orchestration.tasks.models import TaskStatus
from tests.unit.monitoring.records import NOW, task

#: The keys `orch status --json` promises for each project (more may come, none may go).
PROMISED_ROW_KEYS = {
    "name",
    "state",
    "running",
    "queued",
    "succeeded_24h",
    "failed_24h",
    "cost_today_usd",
    "cost_7d_usd",
    "tokens_today",
    "budget_used_pct",
    "last_verification",
}


def portfolio_of_three() -> Portfolio:
    """alpha (busy, verified 90 s ago), beta (paused, with a reason), the archived gamma, and
    delta, whose file is gone but whose task is still recorded."""
    today = NOW - timedelta(hours=2)
    tasks = [
        task(finished=today, cost=1.5, tokens_in=100, tokens_out=10),
        task(TaskStatus.FAILED, finished=today, cost=0.5, tokens_in=20, tokens_out=2),
        task(TaskStatus.RUNNING, started=NOW - timedelta(minutes=1)),
        task(TaskStatus.QUEUED),
        task(TaskStatus.QUEUED),
        task(TaskStatus.BLOCKED),
        task(TaskStatus.QUEUED, project="beta"),
        task(finished=NOW - timedelta(days=3), cost=4.0, project="beta"),
        task(TaskStatus.CANCELLED, finished=today, project="delta"),
    ]
    return assemble_portfolio(
        now=NOW,
        tasks=tasks,
        priorities={"beta": 25, "alpha": 75},
        states={"beta": StateRecord("beta", ProjectState.PAUSED, reason="budget")},
        archived=["gamma"],
        verifications={"alpha": Verification(True, NOW - timedelta(seconds=90))},
        slots={"agents": PoolSlots(4, 1)},
    )


def test_a_row_for_each_registered_archived_stated_or_busy_project_by_name() -> None:
    portfolio = portfolio_of_three()
    assert [row.name for row in portfolio.projects] == ["alpha", "beta", "delta", "gamma"]
    states = {row.name: (row.state, row.state_reason, row.priority) for row in portfolio.projects}
    assert states == {
        "alpha": (ProjectState.ACTIVE, None, 75),
        "beta": (ProjectState.PAUSED, "budget", 25),
        "delta": (ProjectState.ACTIVE, None, None),
        "gamma": (ProjectState.ARCHIVED, None, None),
    }


def test_counts_spend_and_verification_of_a_row() -> None:
    alpha = portfolio_of_three().project("alpha")
    assert (alpha.running, alpha.queued, alpha.blocked) == (1, 2, 1)
    assert alpha.tasks[TaskStatus.SUCCEEDED] == 1 and alpha.tasks[TaskStatus.FAILED] == 1
    assert alpha.lifetime == LifetimeTotals(2.0, 120, 12)
    assert alpha.queue_waits_s == (3540.0,)  # added an hour before now, started a minute ago
    assert alpha.to_dict() == {
        "name": "alpha",
        "state": "active",
        "state_reason": None,
        "priority": 75,
        "running": 1,
        "queued": 2,
        "blocked": 1,
        "succeeded_24h": 1,
        "failed_24h": 1,
        "cost_today_usd": 2.0,
        "cost_7d_usd": 2.0,
        "cost_30d_usd": 2.0,
        "tokens_today": 132,
        "tokens_in_today": 120,
        "tokens_out_today": 12,
        "tasks_succeeded_today": 1,
        "tasks_failed_today": 1,
        "cost_per_success_usd": 2.0,
        "wasted_usd_today": 0.5,
        "burn_rate_usd_per_h": 0.0,
        "budget_used_pct": None,
        "last_verification": {"passed": True, "age_s": 90.0},
    }


def test_a_project_with_no_task_or_verification_is_all_zero() -> None:
    gamma = portfolio_of_three().project("gamma").to_dict()
    assert gamma["running"] == gamma["queued"] == gamma["tokens_today"] == 0
    assert gamma["cost_today_usd"] == gamma["cost_7d_usd"] == 0.0
    assert gamma["last_verification"] is None and gamma["cost_per_success_usd"] is None


def test_the_json_shape_orch_status_promises() -> None:
    data = portfolio_of_three().to_dict()
    assert {"projects", "providers", "slots"} <= set(data)
    for row in data["projects"]:
        assert PROMISED_ROW_KEYS <= set(row)
    assert data["providers"] == []
    assert data["slots"] == {"agents": {"limit": 4, "in_use": 1}}
    assert data["at"] == NOW.isoformat()
    beta = next(row for row in data["projects"] if row["name"] == "beta")
    assert (beta["state"], beta["cost_today_usd"], beta["cost_7d_usd"]) == ("paused", 0.0, 4.0)


def test_providers_are_listed_as_given() -> None:
    portfolio = assemble_portfolio(
        now=NOW, tasks=[], priorities={}, states={}, providers=[ProviderStatus("claude", True)]
    )
    (claude,) = portfolio.to_dict()["providers"]
    assert (claude["name"], claude["paused"]) == ("claude", True)
    with pytest.raises(KeyError, match="no project 'alpha'"):
        portfolio.project("alpha")


def test_dollar_amounts_are_rounded_for_show() -> None:
    tasks = [task(finished=NOW, cost=0.1), task(finished=NOW, cost=0.2)]
    row = assemble_portfolio(now=NOW, tasks=tasks, priorities={"alpha": 50}, states={})
    assert row.project("alpha").usage.cost_today_usd != 0.3  # the float sum
    assert row.to_dict()["projects"][0]["cost_today_usd"] == 0.3


def test_a_verification_in_the_future_is_zero_seconds_old() -> None:
    portfolio = assemble_portfolio(
        now=NOW,
        tasks=[],
        priorities={"alpha": 50},
        states={},
        verifications={"alpha": Verification(False, NOW + timedelta(seconds=5))},
    )
    last = portfolio.project("alpha").last_verification
    assert last is not None and (last.passed, last.age_s) == (False, 0.0)


def test_pools_in_use_count_one_slot_per_run_and_pool() -> None:
    runs = [
        {"agents", "project_alpha"},
        {"agents", "project_alpha", "heavy"},
        ["agents", "agents"],  # a pool named twice is still one slot
    ]
    assert pools_in_use(runs) == {"agents": 3, "project_alpha": 2, "heavy": 1}


def test_pool_slots_prefer_the_instance_s_limit() -> None:
    slots = pool_slots({"heavy": 1, "agents": 4}, {"agents": 2, "project_alpha": 1}, {"heavy": 1})
    assert slots == {"agents": PoolSlots(2, 0), "heavy": PoolSlots(1, 1)}
    assert list(slots) == ["agents", "heavy"]


MATERIALIZED = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
PASSING = {"configured": True, "passed": 12, "failed": 0, "exit_code": 0, "timed_out": False}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (PASSING, True),
        (PASSING | {"failed": 1}, False),
        (PASSING | {"exit_code": 2}, False),
        (PASSING | {"exit_code": -1, "timed_out": True}, False),
    ],
    ids=["passed", "a test failed", "non-zero exit", "timed out"],
)
def test_without_a_check_the_metadata_decides(metadata: dict, expected: bool) -> None:
    assert verdict(metadata, MATERIALIZED, "run1") == Verification(expected, MATERIALIZED)


def test_no_verify_command_or_unknown_metadata_is_no_verification() -> None:
    assert verdict({"configured": False}, MATERIALIZED, "run1") is None
    assert verdict({"note": "made by hand"}, MATERIALIZED, "run1") is None
    failed = Evaluation(False, MATERIALIZED, "run1")
    assert verdict({"configured": False}, MATERIALIZED, "run1", failed) is None


def test_the_check_of_the_same_run_or_a_later_one_decides() -> None:
    earlier = MATERIALIZED - timedelta(seconds=1)
    later = MATERIALIZED + timedelta(seconds=1)
    assert verdict(PASSING, MATERIALIZED, "run1", Evaluation(False, earlier, "run1")) == (
        Verification(False, MATERIALIZED)
    )
    assert verdict(PASSING, MATERIALIZED, "", Evaluation(False, later, "")) == (
        Verification(False, MATERIALIZED)
    )
    # an earlier check of another run judged an earlier materialization
    assert verdict(PASSING, MATERIALIZED, "run2", Evaluation(False, earlier, "run1")) == (
        Verification(True, MATERIALIZED)
    )
    # two runless events: the same empty run id proves nothing
    assert verdict(PASSING, MATERIALIZED, "", Evaluation(False, earlier, "")) == (
        Verification(True, MATERIALIZED)
    )
