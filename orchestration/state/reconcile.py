"""What a restore sets right: a backup holds the state of a moment, and what was in flight at
that moment is not running on the restored system.

Runs that were in progress are failed (no process is behind them); their tasks go back to the
queue to continue their agent session, the interruption recorded as a stop or a preemption
is; each private clone gets its configuration back from the registry and forgets the worktrees
its bundle did not carry; and the hold a quiesced backup put on new starts is lifted.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.allocation.control import (
    IN_PROGRESS,
    MAINTENANCE_KEY,
    AllocationOverrides,
    release_starts,
)
from orchestration.control.archive import CLONE_DIR
from orchestration.registry.loader import Registry
from orchestration.state.copies import remove_tree
from orchestration.state.digest import workspace_names
from orchestration.state.parallel import each_by
from orchestration.tags import TASK_TAG
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.git import GitError, GitRepo

#: The message on a run failed by a restore, and the reason on its task.
RESTORE_MESSAGE = "interrupted by restore"
#: The kind of interruption a restore records on a task.
RESTORE_KIND = "restored"
WORKTREES_DIR = "worktrees"


@dataclass(frozen=True)
class ReconcileReport:
    """What `reconcile_after_restore` changed."""

    runs_failed: tuple[str, ...] = ()
    tasks_requeued: tuple[str, ...] = ()
    clones_reset: tuple[str, ...] = ()
    #: Clones whose project is not in the registry: their recorded remote was kept.
    clones_unknown: tuple[str, ...] = ()
    worktrees_removed: int = 0
    hold_released: bool = False
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs_failed": list(self.runs_failed),
            "tasks_requeued": list(self.tasks_requeued),
            "clones_reset": list(self.clones_reset),
            "clones_unknown": list(self.clones_unknown),
            "worktrees_removed": self.worktrees_removed,
            "hold_released": self.hold_released,
            "problems": list(self.problems),
        }


def reconcile_after_restore(
    instance: dg.DagsterInstance, store: TaskStore, registry: Registry, home: Path
) -> ReconcileReport:
    """Make a just-restored state runnable: fail every run that was in progress, put every task
    that was running (or dispatched to such a run) back in the queue with its session kept,
    reset each private clone's configuration from the registry and drop the worktrees no
    longer there, and lift a backup's hold on new starts."""
    in_flight = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    for run in in_flight:
        instance.report_run_failed(run, message=RESTORE_MESSAGE)
        # The pool slots the run held are given back now, not when run monitoring gets to it.
        with suppress(NotImplementedError):
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    flown = {run.tags[TASK_TAG] for run in in_flight if TASK_TAG in run.tags}

    requeued = []
    for task in store.tasks(statuses=[TaskStatus.RUNNING, TaskStatus.QUEUED]):
        interrupted = task.status is TaskStatus.RUNNING or (task.dispatched and task.id in flown)
        if not interrupted:
            continue
        store.request_interrupt(task.id, RESTORE_KIND, RESTORE_MESSAGE)
        session = task.extra.get("agent_session")
        if store.checkpoint(
            task.id, task.run_id, commit=None, session_id=str(session) if session else None
        ):
            requeued.append(task.id)

    names = workspace_names(home)
    clones = each_by(lambda name: _reconcile_clone(home / "workspaces" / name, registry), names)
    reset = [name for name, (outcome, _) in clones.items() if outcome == "reset"]
    unknown = [name for name, (outcome, _) in clones.items() if outcome == "unknown"]
    problems = [
        f"{name}: {outcome}"
        for name, (outcome, _) in clones.items()
        if outcome not in ("reset", "unknown", "")
    ]
    removed = sum(count for _, count in clones.values())

    held = MAINTENANCE_KEY in AllocationOverrides(store).all()
    if held:
        release_starts(instance, store, registry)
    return ReconcileReport(
        runs_failed=tuple(run.run_id for run in in_flight),
        tasks_requeued=tuple(requeued),
        clones_reset=tuple(reset),
        clones_unknown=tuple(unknown),
        worktrees_removed=removed,
        hold_released=held,
        problems=tuple(problems),
    )


def _reconcile_clone(root: Path, registry: Registry) -> tuple[str, int]:
    """Drop the worktrees of the project workspace at `root` and reset its private clone's
    configuration from the registry: "reset", "unknown" (no such project: the recorded
    remote is kept), "" (no clone) or what failed; and how many worktrees were removed."""
    removed = 0
    worktrees = root / WORKTREES_DIR
    if worktrees.is_dir():
        removed = sum(1 for _ in worktrees.iterdir())
        remove_tree(worktrees)
    clone = root / CLONE_DIR
    repo = GitRepo.private_clone(clone)
    if not clone.is_dir() or not repo.is_repository():
        return "", removed
    spec = registry.spec(root.name)
    try:
        if spec is not None:
            repo.reset_clone_config(spec.repo)
        repo.prune_worktrees()
    except GitError as exc:
        return str(exc), removed
    return ("reset" if spec is not None else "unknown"), removed
