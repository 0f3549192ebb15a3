"""What a consumer's task in a change set gets from its providers' tasks in the set: under
`.orch/change/` in its worktree, each provider's diff (`<provider>.diff`) and summary
(`<provider>.md`); and, for the agent, a read-only checkout of each provider's task commit
named by ORCH_CHANGE_<PROVIDER>."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from logging import Logger
from pathlib import Path

from orchestration.changes.sets import Change, ChangeError, ChangeSets
from orchestration.changes.verify import change_variable, member_checkouts, member_commit
from orchestration.channels.delivery import ORCH_DIR, write_files
from orchestration.delivery.deliver import DeliveryError, task_diff
from orchestration.registry.models import ProjectSpec
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.git import GitError

CHANGE_DIR = "change"


@dataclass(frozen=True)
class Handoff:
    """What a consumer's agent gets of its providers' work in its change set: the files for
    `.orch/change/` and, by variable, the checkouts of their commits."""

    change: str
    files: dict[str, bytes] = field(default_factory=dict)
    checkouts: dict[str, Path] = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, str]:
        return {change_variable(project): str(path) for project, path in self.checkouts.items()}

    def write(self, worktree: Path) -> None:
        """The files under `.orch/change/` of `worktree`, read-only."""
        if not self.files:
            return
        root = worktree / ORCH_DIR
        root.mkdir(exist_ok=True)
        folder = root / CHANGE_DIR
        write_files(folder, self.files)
        folder.chmod(0o555)


def providers_in_change(change: Change, task: Task) -> list[Task]:
    """The tasks of `change` that `task` waits for, directly or through others (its providers
    in the set), in the change's order, those that succeeded."""
    by_id = {m.task.id: m.task for m in change.members if m.task is not None}
    wanted: set[str] = set()
    todo = [t for t in task.after if t in by_id]
    while todo:
        current = todo.pop()
        if current not in wanted:
            wanted.add(current)
            todo += [t for t in by_id[current].after if t in by_id]
    return [
        m.task
        for m in change.members
        if m.task is not None and m.task.id in wanted and m.task.status is TaskStatus.SUCCEEDED
    ]


@contextmanager
def change_handoff(
    store: TaskStore,
    specs: Mapping[str, ProjectSpec],
    home: Path,
    task: Task,
    log: Logger,
) -> Iterator[Handoff | None]:
    """The handoff of `task` when it belongs to a change set and has providers there that
    succeeded (None otherwise), with their checkouts made for as long as the context lasts.
    A provider whose work cannot be read is left out, logged."""
    change = ChangeSets(store).get(task.session) if task.session else None
    providers = providers_in_change(change, task) if change is not None else []
    readable = [p for p in providers if p.project in specs]
    if change is None or not readable:
        yield None
        return
    files: dict[str, bytes] = {}
    commits: dict[str, str] = {}
    for provider in readable:
        spec = specs[provider.project]
        try:
            diff = task_diff(home, spec, provider)
            commits[provider.project] = member_commit(home, spec, provider)
        except (DeliveryError, ChangeError, GitError, OSError) as exc:
            log.warning(
                f"task {task.id}: the work of {provider.project} in change {change.id} is not "
                f"handed over: {exc}"
            )
            continue
        files[f"{provider.project}.diff"] = diff.encode("utf-8")
        files[f"{provider.project}.md"] = _summary(change, provider, commits[provider.project])
    with member_checkouts(home, specs, commits, f"handoff-{task.id}") as trees:
        yield Handoff(
            change.id, files, {project: Path(tree.path) for project, tree in trees.items()}
        )


def _summary(change: Change, provider: Task, commit: str) -> bytes:
    lines = [
        f"# {provider.project} in change set {change.id}",
        "",
        f"- task: {provider.id}",
        f"- branch: {provider.branch or '-'}",
        f"- commit: {commit}",
        f"- checkout: $ORCH_CHANGE_{provider.project.upper()} (read-only)",
        f"- diff: {provider.project}.diff beside this file",
        "",
        "## What its agent said",
        "",
        (provider.summary or "(no summary)").strip(),
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def handoff_paths(handoff: Handoff | None) -> Sequence[Path]:
    """The checkouts an agent's sandbox must let it read."""
    return list(handoff.checkouts.values()) if handoff else []
