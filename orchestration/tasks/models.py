"""A task and its states, as plain frozen data."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

TASK_ID_PATTERN = re.compile(r"^t[0-9a-z]{8,24}$")
#: A task whose runs keep failing before its agent starts (the clone or the database is not
#: available) is queued again until it has been dispatched this many times, then failed.
EARLY_FAILURE_ATTEMPTS = 3
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The kind of interruption of a task taken back from a run that stopped sending heartbeats
#: (its worker, code server or host died): queued to continue its session, like a stopped one.
LOST = "lost"
#: The kind of interruption of a task whose agent stopped at its provider's usage limit: queued
#: to continue its session once the account reopens, that attempt not counted.
USAGE_LIMIT = "usage_limit"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def new_task_id() -> str:
    """A short, time-ordered id that is also a valid branch segment, path and partition key."""
    return (
        "t"
        + _base36(int(time.time() * 1000))
        + "".join(secrets.choice(_ALPHABET) for _ in range(4))
    )


def _base36(number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 36)
        digits = _ALPHABET[rest] + digits
    return digits or "0"


def is_task_id(text: str) -> bool:
    return bool(TASK_ID_PATTERN.fullmatch(text))


@dataclass(frozen=True)
class Task:
    """One unit of agent work in one project."""

    id: str
    project: str
    prompt: str
    status: TaskStatus
    priority: int
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    after: tuple[str, ...] = ()
    profile: str | None = None
    source: str = "cli"
    session: str | None = None
    dispatched: bool = False
    attempts: int = 0
    run_id: str | None = None
    branch: str | None = None
    commit: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    duration_s: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    turns: int | None = None
    summary: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    """When the run working on the task last said it was alive (every few seconds while it
    runs, from its claim to its outcome): a running task whose heartbeat stops is reaped."""
    delivered_to: str | None = None
    delivered_at: datetime | None = None
    delivery_error: str | None = None
    dispatches: int = 0
    """Runs requested for the task, interrupted and cancelled ones included (`attempts` leaves
    those out): a new run's key is `<id>.<dispatches>`, never one used before."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def may_retry_early_failure(self) -> bool:
        """True when a run of this task failed before its agent started (nothing of the
        agent's can be lost) and it has been dispatched fewer than EARLY_FAILURE_ATTEMPTS times:
        it goes back to the queue rather than failing."""
        return not self.extra.get("agent_pgid") and self.attempts < EARLY_FAILURE_ATTEMPTS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["after"] = list(self.after)
        for key in TIME_FIELDS:
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data

    @property
    def interruptions(self) -> list[dict[str, Any]]:
        """Each time the task was interrupted (its project stopped, preempted, or its run lost):
        kind, reason, when, the commit of the work so far, the session kept."""
        return list(self.extra.get("interruptions", []))

    @property
    def times_preempted(self) -> int:
        return sum(1 for item in self.interruptions if item.get("kind") == "preempted")

    @property
    def times_lost(self) -> int:
        """How often the task was taken back from a run whose heartbeat had stopped."""
        return sum(1 for item in self.interruptions if item.get("kind") == LOST)

    @property
    def resume_session(self) -> str | None:
        """The agent session an interrupted task continues, if one was kept."""
        value = self.extra.get("resume_session")
        return str(value) if value else None


#: The Task fields that hold a moment in time.
TIME_FIELDS = (
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "delivered_at",
)
#: What a task's `extra` keeps from one attempt to the next: its interruption history (a new
#: attempt's outcome replaces the rest).
KEPT_EXTRA = ("interruptions", "preempted_others")
