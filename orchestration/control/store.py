"""Project states and their audit log, kept in the task database beside the tasks.

A project with no row is `active`. Each change is one transaction: the row is moved only from
the state the caller saw (so two commands racing cannot both act on the same transition) and
one log row records who moved it, when, from what, to what, and why.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orchestration.control.states import ProjectState
from orchestration.tasks.store import TaskStore, as_utc

_metadata = sa.MetaData()
#: Made by the task database's migrations (orchestration.tasks.migrations, revision 0003).
states_table = sa.Table(
    "orch_project_states",
    _metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)
log_table = sa.Table(
    "orch_project_state_log",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(63), nullable=False, index=True),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
#: The `to_state` logged when a project is removed for good.
REMOVED = "removed"


@dataclass(frozen=True)
class StateRecord:
    """A project's state now: since when, why, and who set it."""

    project: str
    state: ProjectState
    reason: str | None = None
    actor: str | None = None
    since: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "state_reason": self.reason,
            "state_since": self.since.isoformat() if self.since else None,
            "state_actor": self.actor,
        }


@dataclass(frozen=True)
class Transition:
    """One audit log entry."""

    project: str
    from_state: str
    to_state: str
    reason: str | None
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at.isoformat(),
        }


class StateChanged(Exception):
    """Another process changed the project's state meanwhile."""


def default_actor() -> str:
    """Who runs this process: the login name (with the host, for the audit log)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


class ProjectStates:
    """The states of all projects, in the task database of `store`."""

    def __init__(self, store: TaskStore) -> None:
        self.engine = store.engine  # opening the store made (or upgraded) the tables

    def get(self, project: str) -> StateRecord:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(states_table).where(states_table.c.project == project)
            ).first()
        return _record(row._mapping) if row else StateRecord(project, ProjectState.ACTIVE)

    def all(self) -> dict[str, StateRecord]:
        """Every project whose state was ever set (a project with no record is active)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(states_table)).all()
        return {row.project: _record(row._mapping) for row in rows}

    def states(self) -> dict[str, ProjectState]:
        return {name: record.state for name, record in self.all().items()}

    def held(self) -> set[str]:
        """The projects none of whose tasks may start now (paused, stopped, archived)."""
        return {name for name, state in self.states().items() if state.holds_tasks}

    def set(
        self,
        project: str,
        to: ProjectState | None,
        *,
        expected: ProjectState,
        reason: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Move `project` from `expected` to `to` (None: forget it, logged as removed) and log
        it; StateChanged when it is no longer in `expected`."""
        now = datetime.now(UTC)
        actor = actor or default_actor()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(states_table.c.state).where(states_table.c.project == project)
            ).first()
            current = ProjectState(row.state) if row else ProjectState.ACTIVE
            if current is not expected:
                raise StateChanged(f"project {project!r} is {current} now (was {expected})")
            condition = states_table.c.project == project
            if row is not None:
                moved = conn.execute(
                    states_table.delete().where(condition, states_table.c.state == row.state)
                ).rowcount
                if not moved:
                    raise StateChanged(f"project {project!r} changed state meanwhile")
            if to is not None:
                conn.execute(
                    states_table.insert().values(
                        project=project, state=str(to), reason=reason, actor=actor, since=now
                    )
                )
            conn.execute(
                log_table.insert().values(
                    project=project,
                    from_state=str(current),
                    to_state=str(to) if to is not None else REMOVED,
                    reason=reason,
                    actor=actor,
                    at=now,
                )
            )

    def log(self, projects: Iterable[str] | None = None) -> list[Transition]:
        """The audit log, oldest first, of some or all projects."""
        query = sa.select(log_table).order_by(log_table.c.id)
        if projects is not None:
            query = query.where(log_table.c.project.in_(list(projects)))
        with self.engine.connect() as conn:
            return [
                Transition(
                    row.project,
                    row.from_state,
                    row.to_state,
                    row.reason,
                    row.actor,
                    as_utc(row.at),
                )
                for row in conn.execute(query)
            ]


def _record(row: Any) -> StateRecord:
    return StateRecord(
        row["project"],
        ProjectState(row["state"]),
        row["reason"],
        row["actor"],
        as_utc(row["since"]),
    )
