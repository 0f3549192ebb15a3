"""The allocation policy (`orchestration/allocation/policy.py`), pure and without Dagster:
property tests over random loads for the target shares, the queue order and the run
priorities; simulations of the run queue for the share each project gets over a window and for
starvation; and the numbers the module docstring gives."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.allocation.policy import (
    AGE_BAND,
    ARRIVAL_EPOCH,
    DEFAULT_AGEING_S,
    MAX_PRIORITY,
    RANK_SCALE,
    Allocation,
    ProjectLoad,
    QueuedTask,
    allocate,
    priority_weight,
    queue_order,
    run_priority,
    target_slots,
)

EPS = 1e-6

# --- strategies -------------------------------------------------------------------------------

#: Waits in exact binary fractions (multiples of 1/8 s), so "waited one more band" is exact.
waits = st.integers(0, 8 * 36_000).map(lambda eighths: eighths / 8)
#: Ageing periods as the pools file gives them: whole seconds.
ageing_periods = st.integers(1, 3_600).map(float)


@st.composite
def project_loads(draw: st.DrawFn, name: str, *, detailed: bool = True) -> ProjectLoad:
    """One project: priority 0-100, max_parallel 1-10, running 0..max_parallel, 0-30 queued.
    Without `detailed` only the number of queued tasks is drawn (all the targets look at)."""
    max_parallel = draw(st.integers(1, 10))
    if detailed:
        queued = draw(
            st.lists(
                st.tuples(st.integers(0, 100), waits, st.floats(0, 1e9, allow_nan=False)),
                max_size=30,
            )
        )
    else:
        queued = [(50, 0.0, float(k)) for k in range(draw(st.integers(0, 30)))]
    return ProjectLoad(
        name=name,
        priority=draw(st.integers(0, 100)),
        max_parallel=max_parallel,
        running=draw(st.integers(0, max_parallel)),
        queued=tuple(
            QueuedTask(f"{name}-t{k}", priority, waited, order)
            for k, (priority, waited, order) in enumerate(queued)
        ),
    )


@st.composite
def loads(draw: st.DrawFn, max_projects: int = 20, *, detailed: bool = True) -> list[ProjectLoad]:
    count = draw(st.integers(1, max_projects))
    return [draw(project_loads(f"p{i}", detailed=detailed)) for i in range(count)]


slot_counts = st.integers(0, 50)


def capped_demand(project: ProjectLoad) -> float:
    return float(min(project.max_parallel, project.demand))


def all_tasks(projects: Sequence[ProjectLoad]) -> list[QueuedTask]:
    return [task for project in projects for task in project.queued]


# --- target shares: weighted water-filling ----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(slots=slot_counts, projects=loads(detailed=False))
def test_targets_never_exceed_the_slots_or_the_capped_demand(
    slots: int, projects: list[ProjectLoad]
) -> None:
    targets = target_slots(slots, projects)
    assert set(targets) == {p.name for p in projects}
    total = sum(targets.values())
    assert total <= slots + EPS
    assert total <= sum(capped_demand(p) for p in projects) + EPS


@settings(max_examples=150, deadline=None)
@given(slots=slot_counts, projects=loads(detailed=False))
def test_no_target_above_max_parallel_or_demand(slots: int, projects: list[ProjectLoad]) -> None:
    targets = target_slots(slots, projects)
    for project in projects:
        assert -EPS <= targets[project.name] <= project.max_parallel + EPS
        assert targets[project.name] <= project.demand + EPS


@settings(max_examples=150, deadline=None)
@given(slots=slot_counts, projects=loads(detailed=False))
def test_targets_are_work_conserving(slots: int, projects: list[ProjectLoad]) -> None:
    """Every slot some project can use is handed out: nothing idles while work waits."""
    targets = target_slots(slots, projects)
    wanted = min(slots, sum(capped_demand(p) for p in projects))
    assert sum(targets.values()) == pytest.approx(wanted, abs=EPS)


@settings(max_examples=150, deadline=None)
@given(slots=slot_counts, projects=loads(detailed=False))
def test_uncapped_projects_get_equal_slots_per_unit_of_weight(
    slots: int, projects: list[ProjectLoad]
) -> None:
    """Water-filling: the projects below their cap share one level (target / weight), and a
    capped project sits at or below that level (else it would be taking from the others)."""
    targets = target_slots(slots, projects)
    uncapped = [p for p in projects if targets[p.name] < capped_demand(p) - EPS]
    if not uncapped:
        return
    levels = [targets[p.name] / p.weight for p in uncapped]
    assert max(levels) - min(levels) <= EPS
    for project in projects:
        assert targets[project.name] / project.weight <= max(levels) + EPS


@settings(max_examples=40, deadline=None)
@given(slots=slot_counts, projects=loads(), ageing_s=ageing_periods)
def test_allocate_gives_the_targets_and_a_priority_to_every_queued_task(
    slots: int, projects: list[ProjectLoad], ageing_s: float
) -> None:
    result = allocate(slots, projects, ageing_s=ageing_s)
    assert dict(result.targets) == target_slots(slots, projects)
    assert set(result.priorities) == {t.task_id for t in all_tasks(projects)}
    assert all(priority >= 0 for priority in result.priorities.values())
    for project in projects:
        expected = result.targets[project.name] / slots if slots else 0.0
        assert result.target_share(project.name) == pytest.approx(expected)


# --- queue order and run priorities -----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(project=project_loads("solo"))
def test_queue_order_is_task_priority_then_arrival(project: ProjectLoad) -> None:
    order = queue_order(project)
    assert sorted(t.task_id for t in order) == sorted(t.task_id for t in project.queued)
    for first, second in pairwise(order):
        assert first.priority >= second.priority
        if first.priority == second.priority:
            assert first.order <= second.order


@settings(max_examples=150, deadline=None)
@given(
    slots=slot_counts,
    project=project_loads("solo"),
    waited=waits,
    ageing_s=st.one_of(st.just(0.0), ageing_periods),
)
def test_run_priorities_strictly_decrease_along_a_queue_when_waits_are_equal(
    slots: int, project: ProjectLoad, waited: float, ageing_s: float
) -> None:
    project = replace(project, queued=tuple(replace(t, waited_s=waited) for t in project.queued))
    priorities = allocate(slots, [project], ageing_s=ageing_s).priorities
    ranked = [priorities[t.task_id] for t in queue_order(project)]
    if ageing_s and waited >= ageing_s:  # aged: by arrival; Dagster keeps the queue's order
        assert all(first >= second for first, second in pairwise(ranked))
    else:
        assert all(first > second for first, second in pairwise(ranked))


@settings(max_examples=50, deadline=None)
@given(slots=slot_counts, projects=loads(max_projects=8), waited=waits)
def test_with_equal_waits_the_project_furthest_below_its_share_goes_first(
    slots: int, projects: list[ProjectLoad], waited: float
) -> None:
    """Ranks follow the virtual finish time (running + k + 1) / weight across projects: an
    earlier finish never ranks lower (equal ranks only within 1 / RANK_SCALE)."""
    projects = [
        replace(p, queued=tuple(replace(t, waited_s=waited) for t in p.queued)) for p in projects
    ]
    priorities = allocate(slots, projects, ageing_s=0.0).priorities
    ranked = sorted(
        ((p.running + k + 1) / p.weight, priorities[t.task_id])
        for p in projects
        for k, t in enumerate(queue_order(p))
    )
    assert all(first[1] >= second[1] for first, second in pairwise(ranked))
    finishes = [finish for finish, _ in ranked]
    for finish, priority in ranked:
        clearly_later = bisect_left(finishes, finish + 1 / RANK_SCALE)
        if clearly_later < len(ranked):
            assert priority > ranked[clearly_later][1]


@settings(max_examples=60, deadline=None)
@given(slots=slot_counts, projects=loads(), ageing_s=ageing_periods)
def test_an_aged_task_outranks_every_other_and_the_aged_go_oldest_first(
    slots: int, projects: list[ProjectLoad], ageing_s: float
) -> None:
    """Whatever the weights, positions and task priorities: a task that has waited `ageing_s`
    outranks every task that has not, aged tasks rank by arrival (to the second, earlier
    higher), and every priority fits Dagster's 32-bit range."""
    priorities = allocate(slots, projects, ageing_s=ageing_s).priorities
    tasks = all_tasks(projects)
    aged = [t for t in tasks if t.waited_s >= ageing_s]
    young = [priorities[t.task_id] for t in tasks if t.waited_s < ageing_s]
    for task in aged:
        assert priorities[task.task_id] > max(young, default=-1)
    for first, second in pairwise(sorted(aged, key=lambda t: t.order)):
        if int(first.order) < int(second.order):
            assert priorities[first.task_id] >= priorities[second.task_id]
    assert all(0 <= p <= MAX_PRIORITY for p in priorities.values())


@settings(max_examples=200, deadline=None)
@given(
    waited=waits,
    extra=waits,
    ageing_s=ageing_periods,
    low_running=st.integers(0, 10),
    low_position=st.integers(0, 29),
    high_running=st.integers(0, 10),
)
def test_ageing_beats_the_largest_weight_difference(
    waited: float,
    extra: float,
    ageing_s: float,
    low_running: int,
    low_position: int,
    high_running: int,
) -> None:
    """The worst case for ageing: the lowest task of a priority-0 project with a long queue
    against the first task of an idle priority-100 project."""
    low = ProjectLoad("low", 0, 10, low_running)
    high = ProjectLoad("high", 100, 10, high_running)
    old = QueuedTask("old", 0, ageing_s + extra, 0.0)
    young = QueuedTask("young", 100, waited % ageing_s, 0.0)
    assert run_priority(low, low_position, old, ageing_s) > run_priority(high, 0, young, ageing_s)


# --- the numbers in the module docstring ------------------------------------------------------


def backlog(name: str, count: int, *, priority: int = 50, waited: float = 0.0) -> tuple:
    return tuple(QueuedTask(f"{name}-{k}", priority, waited, float(k)) for k in range(count))


def test_constants() -> None:
    assert AGE_BAND == 10_000_000
    assert RANK_SCALE == 1_000
    assert DEFAULT_AGEING_S == 3600.0


def test_weight_doubles_every_25_points_and_demand_is_running_plus_queued() -> None:
    assert [ProjectLoad("a", p, 4, 0).weight for p in (0, 25, 50, 75, 100)] == [1, 2, 4, 8, 16]
    assert priority_weight(60) == pytest.approx(2**2.4)
    assert ProjectLoad("a", 50, 4, 2, backlog("a", 3)).demand == 5


def test_targets_are_in_proportion_to_weight() -> None:
    projects = [
        ProjectLoad("normal", 50, 4, 0, backlog("normal", 10)),
        ProjectLoad("low", 25, 4, 0, backlog("low", 10)),
    ]
    targets = target_slots(4, projects)
    assert targets["normal"] == pytest.approx(8 / 3)
    assert targets["low"] == pytest.approx(4 / 3)


def test_what_a_capped_project_cannot_use_goes_to_the_others() -> None:
    projects = [
        ProjectLoad("normal", 50, 1, 0, backlog("normal", 10)),  # max_parallel 1
        ProjectLoad("low", 25, 4, 0, backlog("low", 10)),
        ProjectLoad("thin", 100, 4, 0, backlog("thin", 1)),  # demand 1
        ProjectLoad("idle", 100, 4, 0),
    ]
    assert target_slots(6, projects) == pytest.approx(
        {"normal": 1.0, "low": 4.0, "thin": 1.0, "idle": 0.0}
    )
    # more slots than anyone can use: each gets its capped demand and the rest stays free
    assert sum(target_slots(50, projects).values()) == pytest.approx(6.0)


def test_no_slots_means_no_targets_and_no_share() -> None:
    projects = [ProjectLoad("a", 50, 4, 0, backlog("a", 3))]
    result = allocate(0, projects)
    assert result.targets == {"a": 0.0}
    assert result.target_share("a") == 0.0
    assert result.target_share("unknown") == 0.0
    assert Allocation(4, {"a": 1.0}, {}).target_share("a") == 0.25


def test_run_priority_is_the_virtual_finish_time_or_the_arrival_once_aged() -> None:
    project = ProjectLoad("a", 50, 4, running=1)  # weight 4
    arrived = ARRIVAL_EPOCH + 200_000_000.7  # 2026-05-04
    fresh = QueuedTask("t", 50, waited_s=0.0, order=arrived)
    # finish = (running + position + 1) / weight = 2 / 4 = 0.5 -> 500 rank units
    assert run_priority(project, 0, fresh, 300.0) == AGE_BAND - 1 - 500 == 9_999_499
    # the next one in the queue: 3 / 4 = 0.75
    assert run_priority(project, 1, fresh, 300.0) == 9_999_249
    # 650 s waited, ageing after 300 s: the top of the range minus its arrival, whole seconds
    aged = replace(fresh, waited_s=650.0)
    assert run_priority(project, 0, aged, 300.0) == 2**31 - 1 - 200_000_000 == 1_947_483_647
    # ... whatever its project's share and its place in the queue
    assert run_priority(replace(project, priority=0, running=9), 7, aged, 300.0) == 1_947_483_647
    # served tasks count like running ones: 2 served + 1 running -> 4 / 4
    assert run_priority(replace(project, served=2.0), 0, fresh, 300.0) == 9_998_999
    # ageing_s 0 turns ageing off
    assert run_priority(project, 0, aged, 0.0) == 9_999_499


def test_a_project_below_its_share_goes_before_a_heavier_one_above_it() -> None:
    heavy = ProjectLoad("heavy", 50, 4, running=2, queued=backlog("heavy", 1))  # 3 / 50
    light = ProjectLoad("light", 25, 4, running=0, queued=backlog("light", 1))  # 1 / 25
    priorities = allocate(4, [heavy, light]).priorities
    assert priorities["light-0"] > priorities["heavy-0"]


def test_a_task_priority_orders_the_queue_before_arrival() -> None:
    project = ProjectLoad(
        "a",
        50,
        4,
        0,
        (
            QueuedTask("old-low", 10, 0.0, 1.0),
            QueuedTask("new-high", 90, 0.0, 3.0),
            QueuedTask("old-high", 90, 0.0, 2.0),
        ),
    )
    assert [t.task_id for t in queue_order(project)] == ["old-high", "new-high", "old-low"]
    priorities = allocate(4, [project]).priorities
    assert priorities["old-high"] > priorities["new-high"] > priorities["old-low"]


# --- a simulated run queue ---------------------------------------------------------------------
#
# Like Dagster's run queue: at each moment slots free, the queued runs are sorted by
# `dagster/priority` (highest first; ties in creation order, the sort is stable) and the first
# ones start, as many as slots freed, skipping a project at its max_parallel. The priorities
# are the policy's, computed at that moment. Jobs last one time unit.


@dataclass
class Sim:
    """A run queue with `slots` agent slots and the projects of `weights` (name -> priority)."""

    weights: Mapping[str, int]
    slots: int
    ageing_s: float
    max_parallel: int = 1_000
    stagger: bool = False  # slots free one at a time (every 1 / slots) instead of together
    now: float = 0.0
    queues: dict[str, list[QueuedTask]] = field(default_factory=dict)
    arrival: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    running: list[tuple[float, str]] = field(default_factory=list)  # (ends at, project)
    free_at: list[float] = field(default_factory=list)  # when each slot is free
    seq: int = 0

    def __post_init__(self) -> None:
        self.queues = {name: [] for name in self.weights}
        self.starts = dict.fromkeys(self.weights, 0)
        self.free_at = [i / self.slots if self.stagger else 0.0 for i in range(self.slots)]

    def add(self, project: str, at: float) -> None:
        task_id = f"{project}-{self.seq}"
        self.queues[project].append(QueuedTask(task_id, 50, 0.0, float(self.seq)))
        self.arrival[task_id] = at
        self.seq += 1

    def step(self, replenish: bool) -> None:
        """Fill the slots that free next; with `replenish`, each started task is replaced
        by a new one of its project arriving now (a constant backlog)."""
        self.now = min(self.free_at)
        freed = [i for i, at in enumerate(self.free_at) if at == self.now]
        self.running = [(end, p) for end, p in self.running if end > self.now]
        running = {name: 0 for name in self.weights}
        for _, project in self.running:
            running[project] += 1
        projects = [
            ProjectLoad(
                name,
                priority,
                self.max_parallel,
                running[name],
                tuple(
                    replace(t, waited_s=self.now - self.arrival[t.task_id])
                    for t in self.queues[name]
                ),
                served=float(self.starts[name] - running[name]),  # finished tasks, 1 unit each
            )
            for name, priority in self.weights.items()
        ]
        priorities = allocate(self.slots, projects, ageing_s=self.ageing_s).priorities
        waiting = sorted(
            ((t, name) for name, queue in self.queues.items() for t in queue),
            key=lambda item: (-priorities[item[0].task_id], item[0].order),
        )
        chosen = []
        for task, name in waiting:
            if len(chosen) == len(freed):
                break
            if running[name] < self.max_parallel:
                running[name] += 1
                chosen.append((task, name))
        for slot, (task, name) in zip(freed, chosen, strict=False):
            self.queues[name].remove(task)
            self.started[task.task_id] = self.now
            self.starts[name] += 1
            self.running.append((self.now + 1, name))
            self.free_at[slot] = self.now + 1
        for slot in freed[len(chosen) :]:
            self.free_at[slot] = self.now + 1
        if replenish:
            for _, name in chosen:
                self.add(name, self.now)

    def became_oldest(self, task_id: str) -> float:
        """When `task_id` became the oldest waiting task: when the last task that arrived
        before it started (or it arrived)."""
        arrived = self.arrival[task_id]
        older = [self.started.get(t, math.inf) for t, at in self.arrival.items() if at < arrived]
        return max([arrived, *older])


def weighted_ideal(weights: Mapping[str, int], slot_units: float) -> dict[str, float]:
    total = sum(priority_weight(w) for w in weights.values())
    return {name: slot_units * priority_weight(w) / total for name, w in weights.items()}


def share_over_window(
    weights: Mapping[str, int], slots: int, steps: int, *, stagger: bool = False
) -> Sim:
    """Every project keeps a backlog that all arrived at time 0 (so waits are equal and
    ageing is neutral) and caps never bind; run for `steps` job durations."""
    sim = Sim(weights, slots, ageing_s=DEFAULT_AGEING_S, stagger=stagger)
    for _ in range(slots + 1):
        for name in weights:
            sim.add(name, 0.0)
    while min(sim.free_at) < steps:
        sim.step(replenish=True)
    return sim


weight_maps = st.lists(st.integers(0, 100), min_size=1, max_size=6).map(
    lambda ws: {f"p{i}": w for i, w in enumerate(ws)}
)


@settings(max_examples=20, deadline=None)
@given(weights=weight_maps, slots=st.integers(1, 8), stagger=st.booleans())
def test_over_a_window_every_project_gets_at_least_its_whole_share_of_slots(
    weights: dict[str, int], slots: int, stagger: bool
) -> None:
    """What the policy achieves over a 200-step window with every project backlogged: the run
    queue is always full, and each project holds at least floor(slots * weight / total) slots
    at every moment (the lower quota of a D'Hondt apportionment), so over the window it gets at
    least steps * floor(its ideal per step). The next test holds it to the fractional part too
    (within one slot of its weighted share)."""
    steps = 200
    sim = share_over_window(weights, slots, steps, stagger=stagger)
    assert sum(sim.starts.values()) == steps * slots
    per_step = weighted_ideal(weights, slots)
    for name in weights:
        assert sim.starts[name] >= steps * math.floor(per_step[name] + EPS)


@pytest.mark.parametrize(
    ("weights", "slots"),
    [
        ({"normal": 50, "low": 25}, 4),  # 3 + 1 slots every time instead of 2.67 + 1.33
        ({"normal": 50, "low": 25}, 1),  # low never runs while normal has work
        ({"critical": 100, "low1": 25, "low2": 25, "low3": 25, "low4": 25}, 4),
    ],
)
@pytest.mark.parametrize("stagger", [False, True])
def test_over_a_window_each_project_gets_its_weighted_share_within_one_slot(
    weights: dict[str, int], slots: int, stagger: bool
) -> None:
    """No backlogged project falls more than one task behind its weighted share over the
    window; what the others lag, the rest lead by (at most the sum of the lags)."""
    steps = 200
    sim = share_over_window(weights, slots, steps, stagger=stagger)
    ideal = weighted_ideal(weights, steps * slots)
    lags = {name: ideal[name] - sim.starts[name] for name in weights}
    for name, lag in lags.items():
        assert lag <= 1.0, (name, sim.starts, ideal)
        assert -lag <= sum(max(0.0, other) for other in lags.values()) + EPS
    assert sum(sim.starts.values()) == steps * slots


def starvation_run(
    high_projects: int, slots: int, ageing_s: float, queue: int, *, stagger: bool, steps: int
) -> Sim:
    """A priority-1 project against `high_projects` priority-100 ones, all with a constant
    backlog: each start is replaced by a new task of the same project arriving then. The
    backlog that is there at the start arrived earlier at the same pace (`slots` per unit)."""
    weights = {f"high{i}": 100 for i in range(high_projects)} | {"low": 1}
    sim = Sim(weights, slots, ageing_s=ageing_s, stagger=stagger)
    initial = [name for _ in range(queue) for name in weights]
    for k, name in enumerate(initial):
        sim.add(name, -1.0 - (len(initial) - k) // slots)
    while min(sim.free_at) < steps:
        sim.step(replenish=True)
    return sim


def worst_wait_once_oldest(sim: Sim, project: str) -> tuple[float, int]:
    delays = [
        sim.started[t] - sim.became_oldest(t) for t in sim.started if t.startswith(f"{project}-")
    ]
    return max(delays, default=math.inf), len(delays)


@settings(max_examples=20, deadline=None)
@given(
    high_projects=st.integers(2, 10),
    slots=st.integers(1, 4),
    ageing_s=st.integers(8, 160).map(lambda quarters: quarters / 4),  # 2 to 40 job durations
    queue=st.integers(1, 4),
    stagger=st.booleans(),
)
def test_no_starvation_the_oldest_task_starts_within_ageing_plus_one_job(
    high_projects: int, slots: int, ageing_s: float, queue: int, stagger: bool
) -> None:
    steps = 200
    sim = starvation_run(high_projects, slots, ageing_s, queue, stagger=stagger, steps=steps)
    worst, started = worst_wait_once_oldest(sim, "low")
    assert started >= 2
    assert worst <= ageing_s + 1.0  # one job lasts 1


def test_without_ageing_the_low_priority_project_waits_for_its_small_share() -> None:
    """The contrast that shows the previous test exercises ageing: without it, a priority-1
    project against five priority-100 ones gets only its weighted share (about 1 start in 78)
    and its oldest task waits tens of job lengths; with ageing after 10, at most 11."""
    sim = starvation_run(5, 2, 0.0, 3, stagger=False, steps=200)
    ideal = weighted_ideal(sim.weights, 200 * 2)
    assert sim.starts["low"] <= ideal["low"] + 1
    worst, _ = worst_wait_once_oldest(sim, "low")
    assert worst > 30
    aged = starvation_run(5, 2, 10.0, 3, stagger=False, steps=200)
    assert worst_wait_once_oldest(aged, "low")[0] <= 11


def test_no_starvation_behind_a_burst_that_arrived_just_after() -> None:
    """A low-priority task, then 30 high-priority tasks queued 0.1 job durations later (one
    `orch task import`); one slot, ageing 5 job durations."""
    ageing_s = 5.0
    weights = {f"high{i}": 100 for i in range(3)} | {"low": 1}
    sim = Sim(weights, 1, ageing_s=ageing_s)
    sim.add("low", -0.5)
    for k in range(30):
        sim.add(f"high{k % 3}", -0.4)
    while "low-0" not in sim.started and sim.now < 200:
        sim.step(replenish=True)
    assert sim.started["low-0"] - sim.became_oldest("low-0") <= ageing_s + 1.0
