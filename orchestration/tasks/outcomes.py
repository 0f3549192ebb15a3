"""Outcomes kept on disk when the task database would not take them.

After an agent has run, its work (the commit, the cost, the session) must be recorded. When the
database still refuses the write after the store's retries, the outcome is written to
`ORCH_HOME/workspaces/<project>/outcomes/<task>.json` beside the worktrees, and recorded by the
next dispatch tick, before it looks for runs that ended without recording their task.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.isolation import path_inside

OUTCOMES_DIR = "outcomes"


@dataclass(frozen=True)
class PendingOutcome:
    """What `TaskStore.finish` would have recorded, and for which run."""

    task_id: str
    run_id: str
    status: str
    reason: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    session: tuple[str, str, str] | None = None  # (project, profile, session id)


def save_pending(project_root: Path, outcome: PendingOutcome) -> Path:
    """Write `outcome` atomically under the project's state directory; its path."""
    directory = path_inside(project_root, OUTCOMES_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    target = path_inside(directory, f"{outcome.task_id}.json")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{outcome.task_id}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(asdict(outcome), out, default=str)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, target)
    return target


def record_pending(store: TaskStore, home: Path) -> list[str]:
    """Record every outcome left on disk whose run still owns its task; the task ids recorded.

    A file is removed once recorded, or when its task has moved on (retried by a new run).
    A file that cannot be read is left for a person to look at.
    """
    recorded: list[str] = []
    for path in sorted((home / "workspaces").glob(f"*/{OUTCOMES_DIR}/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            outcome = PendingOutcome(
                task_id=data["task_id"],
                run_id=data["run_id"],
                status=data["status"],
                reason=data.get("reason"),
                fields=data.get("fields") or {},
                session=tuple(data["session"]) if data.get("session") else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if store.record_outcome(
            outcome.task_id,
            outcome.run_id,
            TaskStatus(outcome.status),
            outcome.reason,
            **outcome.fields,
        ):
            if outcome.session is not None:
                store.save_session(*outcome.session, outcome.task_id)
            recorded.append(outcome.task_id)
        path.unlink(missing_ok=True)
    return recorded
