"""Tasks already written in a project's repository: unchecked items of Agent OS task lists.

Each `- [ ] ...` line of `.agent-os/specs/*/tasks.md` on the project's branch becomes one task,
once: the item's file and text are its source key, so importing again adds nothing. An item
whose prompt no agent could be given (a NUL character, too large) is skipped with a warning
that names its file and line.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from orchestration.registry.models import ProjectSpec
from orchestration.tasks.models import Task
from orchestration.tasks.prompts import prompt_problem
from orchestration.tasks.store import TaskStore
from orchestration.workspace.workspace import ProjectWorkspace

TASK_LIST_GLOB = ".agent-os/specs/*/tasks.md"
UNCHECKED_ITEM = re.compile(r"^\s*[-*+]\s+\[ \]\s+(?P<text>\S.*?)\s*$")


@dataclass(frozen=True)
class TaskListItem:
    path: str
    line: int
    text: str

    def source_key(self, project: str) -> str:
        digest = hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]
        return f"agent-os:{project}:{self.path}:{digest}"

    @property
    def prompt(self) -> str:
        return f"{self.text}\n\n(Task from {self.path}, line {self.line}.)"


def unchecked_items(path: str, text: str) -> Iterator[TaskListItem]:
    """The unchecked items of one task list, in order."""
    for number, line in enumerate(text.splitlines(), start=1):
        match = UNCHECKED_ITEM.match(line)
        if match:
            yield TaskListItem(path, number, match.group("text"))


def import_task_lists(
    spec: ProjectSpec,
    workspace: ProjectWorkspace,
    store: TaskStore,
    *,
    warn: Callable[[str], None] | None = None,
) -> list[Task]:
    """Add a task for every unchecked item not imported before; the new tasks.

    `warn` is told about each item skipped because its prompt cannot be given to an agent
    (default: this module's logger).
    """
    warn = warn or logging.getLogger(__name__).warning
    repo = workspace.sync()
    ref = workspace.upstream_ref
    if repo.resolve(ref) is None:
        return []
    added: list[Task] = []
    for path in repo.list_files(ref):
        if not PurePosixPath(path).match(TASK_LIST_GLOB):
            continue
        for item in unchecked_items(path, repo.read_file(ref, path)):
            problem = prompt_problem(item.prompt)
            if problem:
                warn(f"{spec.name}: {item.path}:{item.line}: item skipped: {problem}")
                continue
            task = store.add(
                spec.name,
                item.prompt,
                source="agent-os",
                source_key=item.source_key(spec.name),
            )
            if task is not None:
                added.append(task)
    return added
