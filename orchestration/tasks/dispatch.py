"""Which queued tasks may start now, and which can never start: a pure function of the records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestration.placement import placement_tags
from orchestration.registry.models import ProjectSpec
from orchestration.tags import (
    MAX_RETRIES_TAG,
    MAX_RUNTIME_TAG,
    PRIORITY_TAG,
    PROJECT_TAG,
    SESSION_TAG,
    TASK_TAG,
)
from orchestration.tasks.models import Task, TaskStatus

#: Time a task run may take beyond its agent's and its tests' timeouts (git, bookkeeping).
RUN_OVERHEAD_S = 600


@dataclass(frozen=True)
class DispatchPlan:
    """Tasks to launch now (in order), tasks to mark blocked with a reason, and tasks that stay
    queued for a reason that may go away."""

    runnable: tuple[Task, ...]
    blocked: tuple[tuple[Task, str], ...]
    waiting: tuple[tuple[Task, str], ...] = ()


def plan_dispatch(
    queued: Iterable[Task],
    known: Mapping[str, Task],
    projects: Iterable[str],
    broken: Iterable[str] = (),
) -> DispatchPlan:
    """Pick the queued, not yet dispatched tasks whose `after` tasks all succeeded.

    A task whose prerequisite failed, was cancelled or is blocked, or whose prerequisite or
    project does not exist, is blocked with the reason. A task of a project whose file has
    errors (`broken`) waits: fixing the file lets it run. Runnable tasks come highest priority
    first, then oldest first.
    """
    valid_projects = set(projects)
    broken_projects = set(broken)
    runnable: list[Task] = []
    blocked: list[tuple[Task, str]] = []
    waiting: list[tuple[Task, str]] = []
    for task in queued:
        if task.status is not TaskStatus.QUEUED or task.dispatched:
            continue
        if task.project in broken_projects and task.project not in valid_projects:
            waiting.append(
                (task, f"project {task.project!r} has registry errors; see orch validate")
            )
            continue
        if task.project not in valid_projects:
            blocked.append((task, f"project {task.project!r} is not in the registry"))
            continue
        reason = _blocking_reason(task, known)
        if reason:
            blocked.append((task, reason))
        elif all(known[p].status is TaskStatus.SUCCEEDED for p in task.after):
            runnable.append(task)
    runnable.sort(key=lambda t: (-t.priority, t.created_at, t.id))
    return DispatchPlan(tuple(runnable), tuple(blocked), tuple(waiting))


def _blocking_reason(task: Task, known: Mapping[str, Task]) -> str | None:
    """Why `task` can never start, or None while it still can."""
    for prerequisite_id in task.after:
        prerequisite = known.get(prerequisite_id)
        if prerequisite is None:
            return f"prerequisite task {prerequisite_id} does not exist"
        if prerequisite.status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.BLOCKED):
            return f"prerequisite task {prerequisite_id} {prerequisite.status}"
    return None


def run_priority(project_priority: int, task_priority: int) -> int:
    """The `dagster/priority` of a task's run: the project's priority first, then the task's."""
    return project_priority * 1000 + task_priority


def task_run_tags(
    task: Task,
    spec: ProjectSpec,
    priority: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags every run of a task carries, however it was launched: among them the Celery
    queue of its project (`placement`, with ORCH_CELERY_QUEUES from `environ`, default this
    process's environment)."""
    tags = {
        PROJECT_TAG: spec.name,
        TASK_TAG: task.id,
        PRIORITY_TAG: str(
            priority if priority is not None else run_priority(spec.priority, task.priority)
        ),
        # Run monitoring ends a run that outlives its agent and tests by far, even when its
        # worker died unseen (the default launcher cannot check a worker's health).
        MAX_RUNTIME_TAG: str(spec.agent.timeout + spec.verify_timeout + RUN_OVERHEAD_S),
        MAX_RETRIES_TAG: "0",
    }
    if task.session:
        tags[SESSION_TAG] = task.session
    return tags | placement_tags(spec, environ)
