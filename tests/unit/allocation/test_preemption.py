"""The preemption decision (`orchestration/allocation/preemption.py`), pure and without Dagster:
who is preempted for whom, and every case in which nobody is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from orchestration.allocation.preemption import (
    Candidate,
    Decision,
    Waiting,
    decide,
    priority_label,
    usage_of,
)
from orchestration.registry.models import Preemption

NOW = 1_800_000_000.0
RULE = Preemption(after=60, min_priority="critical")
CRITICAL, HIGH, NORMAL, LOW = 100, 75, 50, 25


def waiting(
    task_id: str = "w1",
    project: str = "crit",
    rank: tuple[int, int] = (CRITICAL, 50),
    *,
    waited: float = 95.0,
    extra_pools: Sequence[str] = (),
) -> Waiting:
    return Waiting(
        task_id,
        project,
        rank,
        frozenset({"agents", f"project_{project}", *extra_pools}),
        NOW - waited,
    )


def running(
    task_id: str,
    project: str = "low",
    rank: tuple[int, int] = (LOW, 50),
    *,
    started_ago: float = 300.0,
    extra_pools: Sequence[str] = (),
    times_preempted: int = 0,
    interrupt_for: str | None = None,
    interrupting: bool = False,
) -> Candidate:
    return Candidate(
        task_id,
        project,
        rank,
        frozenset({"agents", f"project_{project}", *extra_pools}),
        NOW - started_ago,
        times_preempted,
        interrupting or interrupt_for is not None,
        interrupt_for,
    )


def limits(agents: int = 4, **projects: int) -> dict[str, int]:
    """`agents` slots, `heavy` 1, each project's pool 4 unless given."""
    pools = {"agents": agents, "heavy": 1}
    for name in ("crit", "low", "normal", "high", "other"):
        pools[f"project_{name}"] = projects.get(name, 4)
    return pools


def run(
    wait: Sequence[Waiting],
    busy: Sequence[Candidate],
    pool_limits: Mapping[str, int] | None = None,
    rule: Preemption | None = RULE,
) -> list[Decision]:
    return decide(wait, busy, pool_limits or limits(), usage_of(busy), rule, NOW)


def pairs(decisions: Sequence[Decision]) -> list[tuple[str, str]]:
    return [(d.victim, d.waiting) for d in decisions]


FOUR_LOW = [running(f"r{i}", started_ago=100.0 * (i + 1)) for i in range(4)]


# --- the rule ---------------------------------------------------------------------------------


def test_a_long_waiting_critical_task_takes_a_slot_from_a_low_one() -> None:
    decisions = run([waiting()], FOUR_LOW)

    assert pairs(decisions) == [("r0", "w1")]
    assert decisions[0].reason == "preempted by task w1 (critical, waited 95 s)"
    assert decisions[0].waited_s == pytest.approx(95.0)


def test_off_without_a_rule() -> None:
    assert run([waiting()], FOUR_LOW, rule=None) == []


def test_below_min_priority_nothing_happens() -> None:
    assert run([waiting(project="high", rank=(HIGH, 75))], FOUR_LOW) == []
    lowered = Preemption(after=60, min_priority="high")
    assert pairs(run([waiting(project="high", rank=(HIGH, 75))], FOUR_LOW, rule=lowered)) == [
        ("r0", "w1")
    ]


def test_the_task_s_own_priority_qualifies_it_too() -> None:
    urgent = waiting(project="normal", rank=(NORMAL, CRITICAL))

    decisions = run([urgent], FOUR_LOW)

    assert pairs(decisions) == [("r0", "w1")]
    assert "(critical, waited 95 s)" in decisions[0].reason


def test_waited_no_longer_than_after_nothing_happens() -> None:
    assert run([waiting(waited=30.0)], FOUR_LOW) == []
    assert run([waiting(waited=60.0)], FOUR_LOW) == []  # longer than `after`, not as long
    assert pairs(run([waiting(waited=61.0)], FOUR_LOW)) == [("r0", "w1")]


def test_a_free_slot_means_no_preemption() -> None:
    assert run([waiting()], FOUR_LOW[:3]) == []
    assert run([waiting()], FOUR_LOW, limits(agents=5)) == []


def test_the_lowest_rank_is_preempted_and_the_newest_on_a_tie() -> None:
    busy = [
        running("normal_old", "normal", (NORMAL, 50), started_ago=50.0),
        running("low_old", "low", (LOW, 50), started_ago=400.0),
        running("low_new", "low", (LOW, 50), started_ago=20.0),
        running("low_high_task", "low", (LOW, 90), started_ago=10.0),
    ]

    assert pairs(run([waiting()], busy)) == [("low_new", "w1")]


def test_the_project_comes_before_the_task_in_the_rank() -> None:
    busy = [
        running("low_project_urgent_task", "low", (LOW, 100), started_ago=400.0),
        running("normal_project_idle_task", "normal", (NORMAL, 0), started_ago=10.0),
        running("n2", "normal", (NORMAL, 10)),
        running("n3", "normal", (NORMAL, 50)),
    ]

    assert pairs(run([waiting()], busy)) == [("low_project_urgent_task", "w1")]


def test_a_full_project_pool_needs_a_victim_of_that_project() -> None:
    # crit may run 1 at a time: its pool is held by one of its own low-priority tasks; agents has
    # room, so the victim must be the crit task, though low tasks rank lower.
    busy = [running("crit_low", "crit", (CRITICAL, 10)), *FOUR_LOW[:2]]
    assert pairs(run([waiting()], busy, limits(crit=1))) == [("crit_low", "w1")]

    # Both pools full: only a task holding both (one of crit's own) can make room.
    busy = [running("crit_low", "crit", (CRITICAL, 10)), *FOUR_LOW[:3]]
    assert pairs(run([waiting()], busy, limits(crit=1))) == [("crit_low", "w1")]

    # crit's pool is full of tasks that rank as high: no victim, even with low tasks running.
    busy = [running("crit_peer", "crit", (CRITICAL, 50)), *FOUR_LOW[:3]]
    assert run([waiting()], busy, limits(crit=1)) == []


def test_a_full_profile_pool_needs_a_victim_that_holds_it() -> None:
    heavy = waiting(extra_pools=["heavy"])
    busy = [
        running("light_new", started_ago=5.0),
        running("heavy_old", started_ago=500.0, extra_pools=["heavy"]),
        *FOUR_LOW[:2],
    ]

    assert pairs(run([heavy], busy)) == [("heavy_old", "w1")]


def test_the_heavy_pool_alone_full() -> None:
    heavy = waiting(extra_pools=["heavy"])
    busy = [running("heavy_one", extra_pools=["heavy"]), running("light")]

    assert pairs(run([heavy], busy)) == [("heavy_one", "w1")]
    # Without heavy, the same task is not blocked at all.
    assert run([waiting()], busy) == []


def test_equal_rank_is_never_preempted() -> None:
    busy = [running(f"c{i}", "crit", (CRITICAL, 50)) for i in range(4)]
    assert run([waiting()], busy) == []
    # Another critical project at the same rank: still no.
    busy = [running(f"o{i}", "other", (CRITICAL, 50)) for i in range(4)]
    assert run([waiting()], busy) == []


def test_a_task_is_preempted_at_most_max_per_task_times() -> None:
    twice = [running(f"r{i}", times_preempted=2) for i in range(4)]
    assert run([waiting()], twice) == []

    busy = [*twice[:3], running("once", times_preempted=1, started_ago=900.0)]
    assert pairs(run([waiting()], busy)) == [("once", "w1")]

    never = Preemption(after=60, min_priority="critical", max_per_task=0)
    assert run([waiting()], FOUR_LOW, rule=never) == []


def test_a_preemption_in_flight_is_not_repeated() -> None:
    busy = [running("r0", interrupt_for="w1"), *FOUR_LOW[1:]]
    assert run([waiting()], busy) == []


def test_a_slot_about_to_free_is_not_bought_twice() -> None:
    # r0 is being stopped (its run is ending): its slot frees by itself.
    busy = [running("r0", interrupting=True), *FOUR_LOW[1:]]
    assert run([waiting()], busy) == []


def test_two_waiting_tasks_take_two_different_victims() -> None:
    first = waiting("w1", waited=200.0)
    second = waiting("w2", waited=100.0)

    decisions = run([second, first], FOUR_LOW)

    assert pairs(decisions) == [("r0", "w1"), ("r1", "w2")]


def test_higher_rank_is_served_first_then_the_oldest() -> None:
    top = waiting("top", rank=(CRITICAL, 90), waited=70.0)
    older = waiting("older", rank=(CRITICAL, 50), waited=500.0)
    busy = [
        running("low_one"),
        running("crit_low", "crit", (CRITICAL, 10)),
        *(running(f"c{i}", "crit", (CRITICAL, 95)) for i in range(2)),
    ]

    # `top` is served first and gets the lowest victim; `older` the next one below it.
    assert pairs(run([older, top], busy)) == [("low_one", "top"), ("crit_low", "older")]


def test_a_victim_already_being_interrupted_is_skipped() -> None:
    # r0 makes room for w1 already; w2 needs another victim, and r0 is not it.
    busy = [running("r0", interrupt_for="w1"), *FOUR_LOW[1:]]
    first = waiting("w1", waited=200.0)
    second = waiting("w2", waited=100.0)

    assert pairs(run([first, second], busy)) == [("r1", "w2")]


def test_a_victim_is_picked_once_per_pass_and_runs_out() -> None:
    busy = [running("only_low"), *(running(f"c{i}", "crit", (CRITICAL, 50)) for i in range(3))]
    first = waiting("w1", waited=200.0)
    second = waiting("w2", waited=100.0)

    assert pairs(run([first, second], busy)) == [("only_low", "w1")]


def test_the_slots_a_decision_frees_count_for_the_next_waiting_task() -> None:
    # heavy has a free slot now, but the first preemption's waiting task will take it: the
    # second heavy task is blocked on heavy too, and no light victim frees it.
    pool_limits = {**limits(), "heavy": 2}
    busy = [*FOUR_LOW[:3], running("heavy_one", extra_pools=["heavy"], started_ago=900.0)]
    first = waiting("w1", waited=200.0, extra_pools=["heavy"])
    second = waiting("w2", waited=100.0, extra_pools=["heavy"])

    decisions = run([first, second], busy, pool_limits)

    assert pairs(decisions) == [("r0", "w1"), ("heavy_one", "w2")]


def test_a_task_that_needs_a_closed_pool_preempts_nobody() -> None:
    # A held project's pool is 0: its running tasks finish, nothing of it starts.
    busy = [running("crit_low", "crit", (CRITICAL, 10)), *FOUR_LOW[:3]]
    assert run([waiting()], busy, limits(crit=0)) == []


def test_a_waiting_task_is_never_its_own_victim() -> None:
    busy = [running("w1"), *FOUR_LOW[1:]]
    assert pairs(run([waiting()], busy)) == [("r1", "w1")]


def test_priority_labels() -> None:
    assert [priority_label(p) for p in (100, 75, 50, 25, 90)] == [
        "critical",
        "high",
        "normal",
        "low",
        "priority 90",
    ]


def test_usage_counts_every_pool_held() -> None:
    busy = [running("a", extra_pools=["heavy"]), running("b"), running("c", "crit")]
    assert usage_of(busy) == {"agents": 3, "project_low": 2, "heavy": 1, "project_crit": 1}
