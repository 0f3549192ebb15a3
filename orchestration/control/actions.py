"""Carrying out a lifecycle action on a project: the state change with its audit entry, and what
the new state means for the project's tasks, runs, pool and files.

The same function serves `orch projects ...`, the `project_control` job (the UI's Launchpad and
`dagster job launch`) and the tests. The dispatch sensor keeps the pools and holds in line on
every tick as well, so a state set while no Dagster instance is reachable takes effect as soon
as one is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.channels.log import ChannelLog
from orchestration.control.states import RULES, Action, ProjectState, TransitionError, check
from orchestration.control.store import ProjectStates, StateChanged, default_actor
from orchestration.registry.loader import Registry
from orchestration.settings import Settings
from orchestration.tags import project_pool
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError, TaskStore

if TYPE_CHECKING:
    import dagster as dg

#: The reason recorded when a `stop` gives none.
STOPPED_REASON = "project stopped"


class ControlError(Exception):
    """A lifecycle action that cannot be carried out; the message says why and what to do."""


@dataclass(frozen=True)
class ControlOutcome:
    """What one action did."""

    project: str
    action: Action
    before: ProjectState
    after: ProjectState | None  # None: removed
    changed: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> str:
        if not self.changed:
            return f"{self.project} is already {self.before}; nothing to do"
        to = str(self.after) if self.after is not None else "removed"
        text = f"{self.project}: {self.before} -> {to}"
        return text + "".join(f"\n  {note}" for note in self.notes)

    def to_dict(self) -> dict[str, object]:
        return {
            "project": self.project,
            "action": str(self.action),
            "from": str(self.before),
            "to": str(self.after) if self.after is not None else "removed",
            "changed": self.changed,
            "notes": list(self.notes),
        }


def control_project(
    action: Action,
    project: str,
    *,
    settings: Settings,
    registry: Registry,
    store: TaskStore,
    instance: dg.DagsterInstance | None,
    reason: str | None = None,
    actor: str | None = None,
    purge: bool = False,
    confirmed: bool = False,
) -> ControlOutcome:
    """Move `project` by `action`; ControlError (or TransitionError, a kind of it for the
    caller) when it cannot be done. Idempotent: an action whose state the project is already in
    changes nothing."""
    states = ProjectStates(store)
    current = states.get(project).state
    if not _known(project, registry, current):
        known = ", ".join(registry.names) or "none"
        raise ControlError(f"no project named {project!r} (known projects: {known})")
    try:
        if not check(project, action, current):
            return ControlOutcome(project, action, current, current, changed=False)
    except TransitionError as exc:
        raise ControlError(str(exc)) from None
    actor = actor or default_actor()
    notes: list[str] = []
    step = _Step(project, settings, registry, store, instance, notes)
    if action in (Action.ARCHIVE, Action.REMOVE):
        step.require_idle(action)
    if action is Action.REMOVE and not (purge and confirmed):
        raise ControlError(
            f"remove deletes {project}'s private clone, worktrees, tasks, sessions and asset "
            "history for good (never its own repository): give --purge --yes to do it"
        )
    if action is Action.ARCHIVE:
        step.archive_files()
        step.cancel_waiting("project archived")
    elif action is Action.UNARCHIVE:
        step.unarchive_files()
    elif action is Action.REMOVE:
        step.purge()

    target = RULES[action].to
    try:
        states.set(project, target, expected=current, reason=reason, actor=actor)
    except StateChanged as exc:
        raise ControlError(f"{exc}; look again with `orch projects list`") from None
    step.apply_state(target, states.held())
    if action is Action.STOP:
        step.interrupt_running(reason or STOPPED_REASON)
    if instance is not None:
        from orchestration.control.runs import record_transition

        record_transition(
            instance,
            project,
            str(current),
            str(target) if target else "removed",
            reason,
            actor,
            states.all().values(),
        )
    return ControlOutcome(project, action, current, target, changed=True, notes=tuple(notes))


def _known(project: str, registry: Registry, current: ProjectState) -> bool:
    return (
        project in registry.names
        or project in registry.broken_names
        or project in registry.archived
        or current is not ProjectState.ACTIVE
    )


@dataclass
class _Step:
    """The parts of a transition that touch tasks, runs and files."""

    project: str
    settings: Settings
    registry: Registry
    store: TaskStore
    instance: dg.DagsterInstance | None
    notes: list[str]

    def require_idle(self, action: Action) -> None:
        running = self.store.tasks(project=self.project, statuses=[TaskStatus.RUNNING])
        if running:
            ids = ", ".join(task.id for task in running)
            raise ControlError(
                f"cannot {action} {self.project}: {len(running)} task(s) still running ({ids}); "
                f"wait for them, or `orch projects stop {self.project}` first"
            )
        if self.instance is not None:
            from orchestration.control.runs import in_progress_runs

            runs = in_progress_runs(self.instance, self.project)
            if runs:
                raise ControlError(
                    f"cannot {action} {self.project}: run(s) "
                    f"{', '.join(run.run_id for run in runs)} still in progress; wait for them"
                )

    def apply_state(self, target: ProjectState | None, held: set[str]) -> None:
        """The pool and holds the new state asks for, now rather than at the next tick."""
        if self.instance is None:
            return
        from orchestration.control.runs import hold_project_runs, set_project_pool

        if target is None or target is ProjectState.ARCHIVED:
            self.instance.event_log_storage.delete_concurrency_limit(project_pool(self.project))
        elif target.holds_tasks:
            set_project_pool(self.instance, self.project, 0)
            self.notes.append("its pool is 0: queued tasks wait, running agents finish")
        elif self.project in self.registry.names:
            from orchestration.allocation.control import settings_now

            limits = settings_now(self.registry, self.store).pool_limits()
            set_project_pool(self.instance, self.project, limits[project_pool(self.project)])
        held_runs, released = hold_project_runs(self.instance, held)
        if held_runs:
            self.notes.append(f"{held_runs} queued run(s) held")
        if released:
            self.notes.append(f"{released} queued run(s) released")

    def interrupt_running(self, reason: str) -> None:
        """Interrupt every agent of the project now at work: its work so far is committed on
        its branch and the task queued to continue its session."""
        active = self.store.tasks(
            project=self.project, statuses=[TaskStatus.RUNNING, TaskStatus.QUEUED]
        )
        if self.instance is None:
            return
        import dagster as dg

        from orchestration.tasks.lifecycle import current_run, interrupt

        for task in active:
            if task.status is TaskStatus.QUEUED:
                if not task.dispatched:
                    continue
                run = current_run(self.instance, task)
                if run is None or run.status == dg.DagsterRunStatus.QUEUED or run.is_finished:
                    continue  # held by the pool; nothing started
            ended = interrupt(self.store, self.instance, task, kind="stopped", reason=reason)
            if ended:
                self.notes.append(f"task {task.id}: interrupting run {ended}")

    def cancel_waiting(self, reason: str) -> None:
        """Cancel the project's tasks that have not started, and their queued runs."""
        from orchestration.tasks.lifecycle import cancel

        waiting = self.store.tasks(
            project=self.project, statuses=[TaskStatus.QUEUED, TaskStatus.BLOCKED]
        )
        for task in waiting:
            try:
                cancel(self.store, self.instance, task.id, reason)
            except TaskError:
                continue  # it ended meanwhile
        if waiting:
            self.notes.append(f"{len(waiting)} waiting task(s) cancelled ({reason})")
        if self.instance is not None:
            import dagster as dg

            from orchestration.control.runs import run_project

            queued = self.instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])
            )
            for run in queued:
                if run_project(run) == self.project:
                    self.instance.run_coordinator.cancel_run(run.run_id)

    def _project_file(self) -> Path:
        try:
            return self.registry.project(self.project).path
        except KeyError:
            return self.settings.projects_dir / f"{self.project}.yaml"

    def archive_files(self) -> None:
        from orchestration.control.archive import ArchiveError, archive_project

        try:
            record = archive_project(self.settings, self.project, self._project_file())
        except ArchiveError as exc:
            raise ControlError(f"cannot archive {self.project}: {exc}") from None
        self.notes.append(f"archived to {record}")

    def unarchive_files(self) -> None:
        from orchestration.control.archive import ArchiveError, unarchive_project

        try:
            path = unarchive_project(self.settings, self.project)
        except ArchiveError as exc:
            raise ControlError(f"cannot unarchive {self.project}: {exc}") from None
        self.notes.append(f"restored {path}")

    def purge(self) -> None:
        """Delete the project's files first (refused, with nothing deleted, should its own
        repository lie among them), then its history in Dagster and its records."""
        from orchestration.control.archive import (
            ArchiveError,
            purge_project_files,
            purge_project_history,
        )

        self.cancel_waiting("project removed")
        spec = self.registry.spec(self.project)
        protect = [Path(spec.repo)] if spec is not None and not spec.is_remote else []
        try:
            deleted = purge_project_files(
                self.settings, self.project, project_file=self._project_file(), protect=protect
            )
        except ArchiveError as exc:
            raise ControlError(f"cannot remove {self.project}: {exc}") from None
        if self.instance is not None:
            counts = purge_project_history(self.instance, self.project)
            self.notes.append(
                "deleted from Dagster: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            )
        tasks = self.store.delete_project(self.project)
        entries = ChannelLog(self.store).forget_project(self.project)
        self.notes.append(
            f"deleted {tasks} task(s), {entries} channel ledger entries and {len(deleted)} path(s)"
        )
