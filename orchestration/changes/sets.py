"""Change sets in the task database (`orch_changes`, revision 0007) and how one stands.

A change set's id is the session of its member tasks (`orch/session`), one task per project.
Creating one queues the tasks along the dependency graph: a consumer's task waits (`after`)
for its providers' tasks in the set, so a consumer's agent starts on its providers' new code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from orchestration.dependencies.graph import DependencyGraph
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.propagate import follow_up_tasks, new_session_id
from orchestration.tasks.store import TaskStore, as_utc, as_utc_or_none

_metadata = sa.MetaData()
#: Made by the task database's migrations (orchestration.tasks.migrations, revision 0007).
changes_table = sa.Table(
    "orch_changes",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("projects", sa.Text, nullable=False),
    sa.Column("verified", sa.Boolean),
    sa.Column("verification", sa.Text),
    sa.Column("verified_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_to", sa.String(16)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("delivery_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class ChangeError(Exception):
    """A change set that cannot be made, found, verified or delivered; the message says why."""


class ChangeStatus(StrEnum):
    IN_PROGRESS = "in_progress"  # a member's task is queued or running
    FAILED = "failed"  # a member's task failed, was cancelled or is blocked
    VERIFYING = "verifying"  # every task succeeded; the joint verification is due
    VERIFIED = "verified"  # verified together, every member passed
    VERIFICATION_FAILED = "verification_failed"  # verified together, a member failed
    DELIVERED = "delivered"


@dataclass(frozen=True)
class MemberCheck:
    """One member's part of the joint verification: its verify command's outcome on `commit`."""

    passed: bool
    commit: str | None
    summary: str = ""
    output_tail: str = ""
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "commit": self.commit,
            "summary": self.summary,
            "output_tail": self.output_tail,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class Member:
    project: str
    task: Task | None
    check: MemberCheck | None = None

    @property
    def verified(self) -> bool | None:
        """Whether the joint verification passed for this member's current commit; None when
        it has not run on it."""
        if self.check is None or self.task is None or self.check.commit != self.task.commit:
            return None
        return self.check.passed

    def as_json(self) -> dict[str, Any]:
        task = self.task
        return {
            "project": self.project,
            "task": task.id if task else None,
            "status": str(task.status) if task else None,
            "branch": task.branch if task else None,
            "commit": task.commit if task else None,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class Change:
    id: str
    prompt: str
    members: tuple[Member, ...]
    created_at: datetime
    verified_at: datetime | None = None
    delivered_to: str | None = None
    delivered_at: datetime | None = None
    delivery_error: str | None = None
    checks: dict[str, MemberCheck] = field(default_factory=dict)

    @property
    def projects(self) -> tuple[str, ...]:
        return tuple(member.project for member in self.members)

    @property
    def all_succeeded(self) -> bool:
        return all(
            m.task is not None and m.task.status is TaskStatus.SUCCEEDED for m in self.members
        )

    @property
    def all_verified(self) -> bool:
        return self.all_succeeded and all(member.verified is True for member in self.members)

    @property
    def status(self) -> ChangeStatus:
        tasks = [member.task for member in self.members]
        if any(t is None or t.status in _FAILED for t in tasks):
            return ChangeStatus.FAILED
        if not self.all_succeeded:
            return ChangeStatus.IN_PROGRESS
        if self.delivered_to is not None and self.all_verified:
            return ChangeStatus.DELIVERED
        if any(member.verified is None for member in self.members):
            return ChangeStatus.VERIFYING
        return ChangeStatus.VERIFIED if self.all_verified else ChangeStatus.VERIFICATION_FAILED

    def member(self, project: str) -> Member:
        return next(member for member in self.members if member.project == project)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "status": str(self.status),
            "members": [member.as_json() for member in self.members],
            "all_verified": self.all_verified,
            "verified_at": _iso(self.verified_at),
            "delivered_to": self.delivered_to,
            "delivered_at": _iso(self.delivered_at),
            "delivery_error": self.delivery_error,
            "created_at": _iso(self.created_at),
        }


_FAILED = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.BLOCKED)


def order_members(graph: DependencyGraph, projects: Iterable[str]) -> list[str]:
    """`projects` providers first (along the dependency graph; ties by name)."""
    wanted = set(projects)
    ordered = [p for p in graph.topological_order(wanted) if p in wanted]
    return ordered + sorted(wanted - set(ordered))


class ChangeSets:
    """The change sets, over a task store (their tasks are its tasks)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.engine = store.engine

    def create(
        self,
        prompt: str,
        projects: Sequence[str],
        graph: DependencyGraph,
        *,
        priority: int = 50,
    ) -> tuple[Change, list[Task]]:
        """A change set of one task per project, in dependency order: each task after the
        tasks of its providers in the set. ChangeError for fewer than two projects or one
        named twice."""
        if len(set(projects)) != len(projects):
            repeated = sorted({p for p in projects if list(projects).count(p) > 1})
            raise ChangeError(f"a project is named twice: {', '.join(repeated)}")
        if len(projects) < 2:
            raise ChangeError("a change set spans two projects or more; use `orch task add`")
        change_id = new_session_id()
        ordered = order_members(graph, projects)
        task_of: dict[str, str] = {}
        created: list[Task] = []
        for project in ordered:
            prerequisites = [task_of[p] for p in graph.providers_of(project) if p in task_of]
            task = self.store.add(
                project,
                member_prompt(prompt, project, ordered, change_id),
                priority=priority,
                after=prerequisites,
                session=change_id,
                source="change",
            )
            if task is None:  # only an import with a source key can be refused
                raise ChangeError(f"the task in {project} was not recorded")
            task_of[project] = task.id
            created.append(task)
        self._record(change_id, prompt, ordered)
        return self.require(change_id), created

    def propagate(
        self, origin: Task, graph: DependencyGraph, valid: Iterable[str]
    ) -> tuple[Change, list[Task]]:
        """The change set of `origin` (queued with a session id) and a follow-up task in every
        project that depends on its project; the follow-ups, in dependency order."""
        if origin.session is None:
            raise ChangeError(f"task {origin.id} has no session to make a change set of")
        follow_ups = follow_up_tasks(self.store, graph, origin, valid)
        self._record(
            origin.session, origin.prompt, [origin.project, *(t.project for t in follow_ups)]
        )
        return self.require(origin.session), follow_ups

    def _record(self, change_id: str, prompt: str, projects: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                changes_table.insert().values(
                    id=change_id,
                    prompt=prompt,
                    projects=json.dumps(list(projects)),
                    created_at=datetime.now(UTC),
                )
            )

    def get(self, change_id: str) -> Change | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(changes_table).where(changes_table.c.id == change_id)
            ).first()
        return self._change(row._mapping) if row is not None else None

    def require(self, change_id: str) -> Change:
        change = self.get(change_id)
        if change is None:
            raise ChangeError(f"no change set with id {change_id!r} (`orch change list`)")
        return change

    def all(self) -> list[Change]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(changes_table).order_by(changes_table.c.created_at)).all()
        return [self._change(row._mapping) for row in rows]

    def record_verification(self, change_id: str, checks: dict[str, MemberCheck]) -> Change:
        """The joint verification's outcome per member."""
        with self.engine.begin() as conn:
            conn.execute(
                changes_table.update()
                .where(changes_table.c.id == change_id)
                .values(
                    verified=all(check.passed for check in checks.values()),
                    verification=json.dumps({p: c.as_json() for p, c in checks.items()}),
                    verified_at=datetime.now(UTC),
                )
            )
        return self.require(change_id)

    def record_delivery(self, change_id: str, to: str, error: str | None = None) -> Change:
        values: dict[str, Any] = {"delivery_error": error}
        if error is None:
            values |= {"delivered_to": to, "delivered_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            conn.execute(
                changes_table.update().where(changes_table.c.id == change_id).values(**values)
            )
        return self.require(change_id)

    def _change(self, row: Any) -> Change:
        projects = json.loads(row["projects"])
        tasks = self.store.tasks_of_session(row["id"])
        by_project = {task.project: task for task in tasks}
        checks = {
            project: MemberCheck(**data)
            for project, data in json.loads(row["verification"] or "{}").items()
        }
        return Change(
            id=row["id"],
            prompt=row["prompt"],
            members=tuple(
                Member(project, by_project.get(project), checks.get(project))
                for project in projects
            ),
            created_at=as_utc(row["created_at"]),
            verified_at=as_utc_or_none(row["verified_at"]),
            delivered_to=row["delivered_to"],
            delivered_at=as_utc_or_none(row["delivered_at"]),
            delivery_error=row["delivery_error"],
            checks=checks,
        )


def member_prompt(prompt: str, project: str, members: Sequence[str], change_id: str) -> str:
    """The prompt of `project`'s task in a change set: the change, then which part is its."""
    others = [m for m in members if m != project]
    return (
        f"{prompt}\n\n"
        f"This is {project}'s part of change set {change_id}, which spans "
        f"{', '.join(members)}. The tasks of the projects {project} depends on come first; "
        f"their changes are under .orch/change/ in your worktree when there are any "
        f"(others in the set: {', '.join(others)})."
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
