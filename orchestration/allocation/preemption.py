"""Preemption by priority, the decision: which running task gives its slot to which waiting
task. Pure functions over plain data, no Dagster; `preempting.py` gathers the data and applies
the decisions.

The rule (`preemption:` in pools.yaml, off when absent): when a task at or above `min_priority`
has waited longer than `after` and every slot it could use is held by tasks of lower priority,
the lowest-priority running task (the most recently started on a tie) is checkpointed (work
committed, session kept, task queued again) and the waiting task takes its slot. A task is
preempted at most `max_per_task` times, so nothing livelocks. The terms:

- Rank: the pair (project priority, task priority), compared lexicographically: the order of a
  run's base `dagster/priority`, project * 1000 + task (`tasks/dispatch.py`). Only a strictly
  lower rank is ever preempted, so tasks of equal rank never preempt each other.
- A waiting task (queued, not running) qualifies when its project's priority or its own is at
  least `min_priority` and it has waited longer than `after` since it last joined the queue
  (its creation, or the end of its last interruption).
- Its blocking pools: among the pools it needs (`agents`, `project_<name>`, its profile's pool),
  those whose usage has reached their limit. None: it is not blocked and starts by itself, so
  nothing is preempted for it. A pool of limit 0 (a held project) never frees: nothing is
  preempted for a task that needs one.
- Usage is projected: a running task already being interrupted (preempted, stopped, its run
  ending) is counted as gone, and a waiting task with a preemption in flight (a running task
  is being interrupted for it) as started; so is each decision of this pass as it is made. A
  slot that is about to free is therefore never bought twice.
- Its victim: a running task that holds every blocking pool (a task holds `agents`, its
  project's pool and its profile's pool), of strictly lower rank, preempted fewer than
  `max_per_task` times and not already being interrupted: the lowest rank, then the most
  recently started (it has the least work to lose).
- One victim per waiting task per pass, a victim picked at most once per pass, and a waiting
  task with a preemption in flight gets no new one. Waiting tasks are served highest rank
  first, then longest waiting first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestration.registry.models import PRIORITY_CLASSES, Preemption

#: (project priority, task priority), both 0-100; compared as a tuple.
Rank = tuple[int, int]


@dataclass(frozen=True)
class Waiting:
    """A task that is queued and not running."""

    id: str
    project: str
    rank: Rank
    pools: frozenset[str]  # every pool its run needs
    queued_at: float  # epoch seconds: when it last joined the queue


@dataclass(frozen=True)
class Candidate:
    """A running task: its run holds a slot of each of its `pools`."""

    id: str
    project: str
    rank: Rank
    pools: frozenset[str]
    started_at: float  # epoch seconds
    times_preempted: int = 0
    interrupting: bool = False  # being interrupted already, or its run is ending
    interrupt_for: str | None = None  # the waiting task a preemption in flight makes room for


@dataclass(frozen=True)
class Decision:
    """Interrupt `victim` so that `waiting` takes its slot; `reason` is recorded on both."""

    victim: str
    waiting: str
    reason: str
    waited_s: float


def usage_of(running: Iterable[Candidate]) -> dict[str, int]:
    """How many slots of each pool the running tasks hold."""
    usage: dict[str, int] = {}
    for task in running:
        for pool in task.pools:
            usage[pool] = usage.get(pool, 0) + 1
    return usage


def priority_label(priority: int) -> str:
    """`critical` for 100 and the other class names for theirs, else `priority N`."""
    for name, value in PRIORITY_CLASSES.items():
        if value == priority:
            return name
    return f"priority {priority}"


def qualifies(task: Waiting, rule: Preemption, now: float) -> bool:
    """Whether `task` may preempt at all: high enough, and waited long enough."""
    return max(task.rank) >= rule.min_priority and now - task.queued_at > rule.after


def blocking_pools(
    task: Waiting, limits: Mapping[str, int], usage: Mapping[str, int]
) -> frozenset[str]:
    """The pools `task` needs that are full. A pool without a limit here never blocks."""
    return frozenset(
        pool for pool in task.pools if pool in limits and usage.get(pool, 0) >= limits[pool]
    )


def decide(
    waiting: Sequence[Waiting],
    running: Sequence[Candidate],
    limits: Mapping[str, int],
    usage: Mapping[str, int],
    rule: Preemption | None,
    now: float,
) -> list[Decision]:
    """Which running task to interrupt for which waiting task now (see the module docstring).

    `limits`: pool -> slots; `usage`: pool -> slots held now (`usage_of(running)` when task
    runs are the only runs in the pools)."""
    if rule is None:
        return []
    waiting_ids = {task.id for task in waiting}
    in_flight = {c.interrupt_for for c in running if c.interrupting and c.interrupt_for}
    projected = dict(usage)
    for busy in running:
        if busy.interrupting:
            _add(projected, busy.pools, -1)  # its run is ending: the slot frees by itself
    for queued in waiting:
        if queued.id in in_flight:
            _add(projected, queued.pools, +1)  # it takes the slot being freed for it

    picked: set[str] = set()
    decisions: list[Decision] = []
    order = sorted(waiting, key=lambda t: (-t.rank[0], -t.rank[1], t.queued_at, t.id))
    for task in order:
        if task.id in in_flight or not qualifies(task, rule, now):
            continue
        if any(limits.get(pool) == 0 for pool in task.pools):
            continue  # a held project, or a pool switched off: it cannot start anyway
        blocking = blocking_pools(task, limits, projected)
        if not blocking:
            continue
        victims = [
            c
            for c in running
            if c.id not in picked
            and c.id not in waiting_ids
            and not c.interrupting
            and c.times_preempted < rule.max_per_task
            and c.rank < task.rank
            and blocking <= c.pools
        ]
        if not victims:
            continue
        victim = min(victims, key=lambda c: (c.rank, -c.started_at, c.id))
        picked.add(victim.id)
        _add(projected, victim.pools, -1)
        _add(projected, task.pools, +1)
        waited = now - task.queued_at
        label = priority_label(max(task.rank))
        decisions.append(
            Decision(
                victim=victim.id,
                waiting=task.id,
                reason=f"preempted by task {task.id} ({label}, waited {waited:.0f} s)",
                waited_s=waited,
            )
        )
    return decisions


def _add(usage: dict[str, int], pools: Iterable[str], delta: int) -> None:
    for pool in pools:
        usage[pool] = usage.get(pool, 0) + delta
