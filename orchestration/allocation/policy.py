"""The allocation policy: who should get the next agent slot. Pure functions, no Dagster.

Dagster enforces the limits (pools) and starts the highest `dagster/priority` queued run whenever
a slot frees; this module only decides those priorities and the target shares they steer to:

- Weights: a project's weight doubles with every 25 points of priority, `2 ** (priority / 25)`
  (low 2, normal 4, high 8, critical 16), so a class above gets clearly ahead under contention
  while every class keeps a share.
- Target shares: weighted water-filling. Every project with work gets slots in proportion to its
  weight, never more than its `max_parallel` or its demand (running + queued); what a capped
  project cannot use is shared among the others (work-conserving), and the sum never exceeds
  the global slot count.
- Run priorities: a queued task's rank is its project's "virtual finish time" had it started
  now, (served + running + k + 1) / weight for the project's k-th queued task (highest task
  priority first, then oldest), where `served` is how many tasks the project finished in a
  recent window: the project furthest below its share goes first, and over the window every
  backlogged project starts tasks in proportion to its weight (weighted fair queueing; the
  memory of service is what makes up the fractional part of a share).
- Ageing: a task that has waited `ageing_s` outranks every task that has not, and aged tasks
  go oldest first (by arrival, to the second; Dagster keeps runs of equal priority in the
  order they were queued). So once a task is the oldest waiting one and has aged, it starts
  when the next slot of its pools frees: the lowest-priority task starts within about
  `ageing_s` plus one running task's length of becoming the oldest (no starvation). An aged
  task's priority depends only on its arrival, so it is written once, not on every look.
  Ageing is the safety net, not the normal order: under a backlog that has all waited longer
  than `ageing_s` the queue is first come first served, so the default (an hour) is longer
  than a busy queue usually takes to drain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Every aged task ranks at or above this; share ranks stay below it.
AGE_BAND = 10_000_000
#: The highest priority Dagster's pools accept (a signed 32-bit integer).
MAX_PRIORITY = 2**31 - 1
#: Aged tasks rank MAX_PRIORITY minus their arrival in seconds since this moment (2020-01-01
#: UTC), which stays above AGE_BAND until 2087.
ARRIVAL_EPOCH = 1_577_836_800
#: Resolution of share ranks: (running + k + 1) / weight is multiplied by this.
RANK_SCALE = 1_000
DEFAULT_AGEING_S = 3600.0


def priority_weight(priority: int) -> float:
    """A project's share weight: doubles every 25 points of priority, 1 at priority 0."""
    return 2.0 ** (priority / 25)


@dataclass(frozen=True)
class QueuedTask:
    task_id: str
    priority: int  # the task's own priority, 0-100
    waited_s: float  # since it was queued
    order: float  # arrival, epoch seconds (creation time); earlier first


@dataclass(frozen=True)
class ProjectLoad:
    name: str
    priority: int  # the project's priority, 0-100: its weight
    max_parallel: int
    running: int
    queued: tuple[QueuedTask, ...] = ()
    served: float = 0.0  # tasks finished in the recent window

    @property
    def weight(self) -> float:
        return priority_weight(self.priority)

    @property
    def demand(self) -> int:
        return self.running + len(self.queued)


@dataclass(frozen=True)
class Allocation:
    slots: int
    targets: Mapping[str, float]  # slots each project should hold now
    priorities: Mapping[str, int]  # task id -> dagster/priority for its run

    def target_share(self, project: str) -> float:
        return self.targets.get(project, 0.0) / self.slots if self.slots else 0.0


def target_slots(slots: int, projects: Sequence[ProjectLoad]) -> dict[str, float]:
    """Weighted water-filling of `slots` over the projects' capped demands."""
    caps = {p.name: float(min(p.max_parallel, p.demand)) for p in projects}
    targets = {p.name: 0.0 for p in projects}
    active = [p for p in projects if caps[p.name] > 0]
    remaining = float(min(slots, sum(caps.values())))
    while active and remaining > 1e-9:
        total_weight = sum(p.weight for p in active)
        level = remaining / total_weight
        capped = [p for p in active if caps[p.name] - targets[p.name] <= p.weight * level + 1e-12]
        if not capped:
            for p in active:
                targets[p.name] += p.weight * level
            break
        for p in capped:
            remaining -= caps[p.name] - targets[p.name]
            targets[p.name] = caps[p.name]
        active = [p for p in active if p not in capped]
    return targets


def queue_order(project: ProjectLoad) -> list[QueuedTask]:
    """A project's queued tasks in the order they should start: task priority, then arrival."""
    return sorted(project.queued, key=lambda t: (-t.priority, t.order, t.task_id))


def run_priority(project: ProjectLoad, position: int, task: QueuedTask, ageing_s: float) -> int:
    """`dagster/priority` for the task at `position` in its project's queue."""
    finish = (project.served + project.running + position + 1) / project.weight
    rank = max(0, AGE_BAND - 1 - int(finish * RANK_SCALE))
    if ageing_s > 0 and task.waited_s >= ageing_s:
        # Aged: oldest first, to the second; ties stay in queue order.
        return max(AGE_BAND, MAX_PRIORITY - max(0, int(task.order) - ARRIVAL_EPOCH))
    return rank


def allocate(
    slots: int, projects: Sequence[ProjectLoad], *, ageing_s: float = DEFAULT_AGEING_S
) -> Allocation:
    """Target shares and the run priority of every queued task."""
    priorities: dict[str, int] = {}
    for project in projects:
        for position, task in enumerate(queue_order(project)):
            priorities[task.task_id] = run_priority(project, position, task, ageing_s)
    return Allocation(slots, target_slots(slots, projects), priorities)
