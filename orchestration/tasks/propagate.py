"""Linked follow-up tasks: a change in one project queues work in every project that depends on
it, ordered along the dependency graph and tied together by one session id."""

from __future__ import annotations

from collections.abc import Iterable

from orchestration.dependencies.graph import DependencyGraph
from orchestration.tasks.models import Task, new_task_id
from orchestration.tasks.store import TaskStore


def new_session_id() -> str:
    """A fresh linked-session id (the `orch/session` run tag of every task it links)."""
    return f"s{new_task_id()[1:]}"


def follow_up_tasks(
    store: TaskStore, graph: DependencyGraph, origin: Task, valid: Iterable[str]
) -> list[Task]:
    """A task in every transitive consumer of the origin's project, in topological order, each
    after the tasks of its own providers in the same linked session."""
    affected = graph.transitive_consumers([origin.project]) & set(valid)
    task_of = {origin.project: origin.id}
    created = []
    for consumer in graph.topological_order(affected):
        if consumer in task_of:
            continue
        prerequisites = [task_of[p] for p in graph.providers_of(consumer) if p in task_of]
        follow_up = store.add(
            consumer,
            f"Follow-up in {consumer} of task {origin.id} in {origin.project}, which a change "
            f"there may affect. Adapt {consumer} to it and keep its tests passing.\n\n"
            f"The change in {origin.project}:\n{origin.prompt}",
            priority=origin.priority,
            after=prerequisites or [origin.id],
            session=origin.session,
            source="propagate",
        )
        if follow_up is None:  # only an import with a source key can be refused
            raise RuntimeError(f"the follow-up task in {consumer} was not recorded")
        task_of[consumer] = follow_up.id
        created.append(follow_up)
    return created
