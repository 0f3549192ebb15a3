"""Durable task records and agent sessions, in one SQL database.

By default a SQLite file `ORCH_HOME/tasks.db` (WAL mode, so the daemon, run workers and the CLI
can use it at once); `ORCH_TASKS_DB_URL` points it anywhere SQLAlchemy reaches, such as the
production PostgreSQL server. State changes are single conditional UPDATEs, so two processes can
never both move a task out of the same state: that is what keeps a task from running twice.

The tables are made and upgraded by the alembic revisions in `orchestration.tasks.migrations`
when a store opens; the definitions here are what the queries are built from.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa

from orchestration.settings import Settings
from orchestration.tasks.migrations import ensure_schema
from orchestration.tasks.models import (
    LOST,
    TIME_FIELDS,
    USAGE_LIMIT,
    Task,
    TaskStatus,
    new_task_id,
)

TASKS_DB_URL_VAR = "ORCH_TASKS_DB_URL"

_metadata = sa.MetaData()

tasks_table = sa.Table(
    "orch_tasks",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project", sa.String(63), nullable=False, index=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("after", sa.Text, nullable=False, default="[]"),
    sa.Column("profile", sa.String(63)),
    sa.Column("source", sa.String(32), nullable=False, default="cli"),
    sa.Column("source_key", sa.String(512), unique=True),
    sa.Column("session", sa.String(63), index=True),
    sa.Column("dispatched", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("run_id", sa.String(64)),
    sa.Column("branch", sa.String(255)),
    sa.Column("commit", sa.String(64)),
    sa.Column("session_id", sa.String(255)),
    sa.Column("cost_usd", sa.Float),
    sa.Column("duration_s", sa.Float),
    sa.Column("tokens_in", sa.Integer),
    sa.Column("tokens_out", sa.Integer),
    sa.Column("turns", sa.Integer),
    sa.Column("summary", sa.Text),
    sa.Column("extra", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_to", sa.String(16)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("delivery_error", sa.Text),
    sa.Column("dispatches", sa.Integer, nullable=False, server_default="0"),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)

sessions_table = sa.Table(
    "orch_sessions",
    _metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("profile", sa.String(63), primary_key=True),
    sa.Column("session_id", sa.String(255), nullable=False),
    sa.Column("task_id", sa.String(32)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

holds_table = sa.Table(
    "orch_holds",
    _metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("task_id", sa.String(32)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

#: How long one SQLite statement waits for a lock another process holds.
BUSY_TIMEOUT_S = 30.0
#: How long the bookkeeping after an agent has run keeps retrying a write the database
#: refuses (locked, busy, unreachable): the agent's work is done and must be recorded.
WRITE_RETRY_S = 180.0
#: How long a connection keeps trying to switch a brand-new SQLite file to WAL.
WAL_SWITCH_TIMEOUT_S = 30.0

#: Statuses from which a run may take a task (a failed task may be run again from the UI).
CLAIMABLE = (TaskStatus.QUEUED, TaskStatus.FAILED)
#: What a task's `extra` holds only while one attempt runs: dropped when it is interrupted.
_ATTEMPT_EXTRA = ("interrupt", "agent_pgid", "agent_started", "agent_session")
#: Statuses `retry` puts back in the queue.
RETRYABLE = (TaskStatus.FAILED, TaskStatus.BLOCKED, TaskStatus.CANCELLED)
#: One attempt fewer, never below 0 (an attempt that is not counted after all), in SQL that
#: SQLite and PostgreSQL both take (PostgreSQL has no two-argument `max`).
_UNCOUNTED = sa.case((tasks_table.c.attempts > 0, tasks_table.c.attempts - 1), else_=0)


Method = TypeVar("Method", bound=Callable[..., Any])


def retried_when_refused(method: Method) -> Method:
    """Retry a write with backoff while the database refuses it (locked, busy, unreachable),
    for up to the store's `write_retry_s`; then the error goes to the caller."""

    @functools.wraps(method)
    def retrying(self: TaskStore, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.write_retry_s
        delay = 0.25
        while True:
            try:
                return method(self, *args, **kwargs)
            except sa.exc.OperationalError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    return cast(Method, retrying)


class TaskError(Exception):
    """A task operation that cannot be done; the message says why."""


class TaskLost(TaskError):
    """A run went to record its task's outcome and no longer holds the task: it was taken back
    from the run (its heartbeat had stopped) or moved on. Nothing was recorded."""


def _now() -> datetime:
    return datetime.now(UTC)


class TaskStore:
    """Tasks and sessions in a SQL database."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        write_retry_s: float = 0.0,
    ) -> None:
        """`write_retry_s`: how long the recording writes (`finish`, `fail_run`,
        `note_agent`, `save_session`) retry a refused write; a run that has work to record
        passes WRITE_RETRY_S, a sensor tick keeps the default and tries again next tick."""
        self.url = url
        self.write_retry_s = write_retry_s
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            timeout_ms = int(busy_timeout_s * 1000)
            sa.event.listen(
                self.engine,
                "connect",
                lambda connection, _record: _sqlite_pragmas(connection, timeout_ms),
            )
        ensure_schema(self.engine)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        *,
        write_retry_s: float = 0.0,
    ) -> TaskStore:
        """The store ORCH_TASKS_DB_URL names, else SQLite at ORCH_HOME/tasks.db."""
        env = os.environ if environ is None else environ
        url = env.get(TASKS_DB_URL_VAR)
        if not url:
            settings.home.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(settings.home) / 'tasks.db'}"
        return cls(url, write_retry_s=write_retry_s)

    def dispose(self) -> None:
        self.engine.dispose()

    # Tasks -----------------------------------------------------------------------------------

    def add(
        self,
        project: str,
        prompt: str,
        *,
        priority: int = 50,
        after: Sequence[str] = (),
        profile: str | None = None,
        source: str = "cli",
        source_key: str | None = None,
        session: str | None = None,
    ) -> Task | None:
        """Record a queued task. With a `source_key` already recorded, nothing is added and
        None is returned: imports are idempotent."""
        now = _now()
        row = {
            "id": new_task_id(),
            "project": project,
            "prompt": prompt,
            "status": TaskStatus.QUEUED.value,
            "priority": priority,
            "after": json.dumps(list(after)),
            "profile": profile,
            "source": source,
            "source_key": source_key,
            "session": session,
            "dispatched": False,
            "attempts": 0,
            "dispatches": 0,
            "extra": "{}",
            "created_at": now,
            "updated_at": now,
        }
        if source_key is not None:
            with self.engine.connect() as conn:
                exists = conn.execute(
                    sa.select(tasks_table.c.id).where(tasks_table.c.source_key == source_key)
                ).first()
            if exists:
                return None
        try:
            with self.engine.begin() as conn:
                conn.execute(tasks_table.insert().values(**row))
        except sa.exc.IntegrityError:
            if source_key is None:
                raise
            return None  # another process imported the same item a moment ago
        return self.get(str(row["id"]))

    def get(self, task_id: str) -> Task | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks_table).where(tasks_table.c.id == task_id)).first()
        return _task(row._mapping) if row else None

    def require(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task is None:
            raise TaskError(f"no task with id {task_id!r}")
        return task

    def tasks_of_session(self, session: str) -> list[Task]:
        """The tasks linked by `session` (a change set's members), oldest first."""
        query = (
            sa.select(tasks_table)
            .where(tasks_table.c.session == session)
            .order_by(tasks_table.c.created_at, tasks_table.c.id)
        )
        with self.engine.connect() as conn:
            return [_task(row._mapping) for row in conn.execute(query).all()]

    def tasks(
        self,
        *,
        project: str | None = None,
        statuses: Iterable[TaskStatus] | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[Task]:
        query = sa.select(tasks_table).order_by(tasks_table.c.created_at, tasks_table.c.id)
        if project is not None:
            query = query.where(tasks_table.c.project == project)
        if statuses is not None:
            query = query.where(tasks_table.c.status.in_([s.value for s in statuses]))
        if ids is not None:
            query = query.where(tasks_table.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            return [_task(row._mapping) for row in conn.execute(query)]

    def _transition(
        self,
        task_id: str,
        from_statuses: Iterable[TaskStatus],
        values: Mapping[str, Any],
        *,
        extra_where: Any = None,
    ) -> bool:
        """Move one task out of one of `from_statuses`; True when this call did it."""
        condition = sa.and_(
            tasks_table.c.id == task_id,
            tasks_table.c.status.in_([s.value for s in from_statuses]),
        )
        if extra_where is not None:
            condition = sa.and_(condition, extra_where)
        values = {**values, "updated_at": _now()}
        if isinstance(values.get("status"), TaskStatus):
            values["status"] = values["status"].value
        with self.engine.begin() as conn:
            return (
                conn.execute(tasks_table.update().where(condition).values(**values)).rowcount == 1
            )

    def mark_dispatched(self, task_id: str) -> bool:
        """Note that a run was requested for a queued task; False if someone else did first."""
        return self._transition(
            task_id,
            [TaskStatus.QUEUED],
            {
                "dispatched": True,
                "attempts": tasks_table.c.attempts + 1,
                "dispatches": tasks_table.c.dispatches + 1,
            },
            extra_where=tasks_table.c.dispatched.is_(False),
        )

    def claim(self, task_id: str, run_id: str) -> Task:
        """Take a task for the run `run_id`: queued or failed -> running. TaskError otherwise."""
        task = self.require(task_id)
        if task.status is TaskStatus.RUNNING and task.run_id == run_id:
            return task  # the same run retried its step
        moved = self._transition(
            task_id,
            CLAIMABLE,
            {
                "status": TaskStatus.RUNNING,
                "run_id": run_id,
                "reason": None,
                "dispatched": True,
                "started_at": _now(),
                "finished_at": None,
                "heartbeat_at": _now(),
            },
        )
        if not moved:
            current = self.require(task_id)
            held = f" by run {current.run_id}" if current.run_id else ""
            raise TaskError(
                f"task {task_id} is {current.status}{held}; only a queued or failed task can run"
            )
        return self.require(task_id)

    def beat(self, task_id: str, run_id: str) -> bool:
        """The heartbeat of the run `run_id` working on the task: now, written only while the
        task is that run's (running under it, or with the outcome it recorded, while it
        delivers the work); False when it is not, or no longer (taken back, retried)."""
        condition = sa.and_(tasks_table.c.id == task_id, tasks_table.c.run_id == run_id)
        with self.engine.begin() as conn:
            updated = conn.execute(
                tasks_table.update().where(condition).values(heartbeat_at=_now())
            ).rowcount
        return updated == 1

    @retried_when_refused
    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        reason: str | None = None,
        *,
        run_id: str | None = None,
        **fields: Any,
    ) -> Task:
        """Record the outcome of a running (or dispatched) task. With `run_id`, the run that
        claimed it: only while that run still holds it; TaskLost, and nothing changed, when the
        task was taken back from the run or has moved on."""
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"])
        moved = self._transition(
            task_id,
            [TaskStatus.RUNNING] if run_id else [TaskStatus.RUNNING, TaskStatus.QUEUED],
            {"status": status, "reason": reason, "finished_at": _now(), **fields},
            extra_where=tasks_table.c.run_id == run_id if run_id else None,
        )
        if run_id and not moved:
            current = self.require(task_id)
            held = f" under run {current.run_id}" if current.run_id else ""
            raise TaskLost(
                f"task {task_id} is no longer held by run {run_id} (it is {current.status}"
                f"{held}: {current.reason or 'no reason recorded'}); its outcome ({status}) "
                "is not recorded"
            )
        return self.require(task_id)

    def record_outcome(
        self, task_id: str, run_id: str, status: TaskStatus, reason: str | None, **fields: Any
    ) -> bool:
        """Record an outcome kept on disk while the database refused it: only if the run
        `run_id` still owns the task (running, or failed for having ended without recording
        it); False when the task has moved on."""
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"])
        return self._transition(
            task_id,
            [TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.QUEUED],
            {"status": status, "reason": reason, "finished_at": _now(), **fields},
            extra_where=tasks_table.c.run_id == run_id,
        )

    @retried_when_refused
    def note_agent(
        self,
        task_id: str,
        process_group: int,
        started: float | None,
        session_id: str | None = None,
        *,
        base: str | None = None,
        run_id: str | None = None,
    ) -> bool:
        """Record the running agent's process group (and the leader's start time, to tell it
        from a later process with the same id), so it can be stopped if its run dies, the
        session it works in when that is known before it answers, and `base`, the commit the
        task's work started from (kept should the run be lost). With `run_id`: only while that
        run holds the task; False when it does not."""
        values: dict[str, Any] = {"agent_pgid": process_group, "agent_started": started}
        if session_id:
            values["agent_session"] = session_id
        if base:
            values["base"] = base
        if run_id:
            return self._update_extra(
                task_id,
                lambda extra: {**extra, **values},
                [TaskStatus.RUNNING],
                extra_where=tasks_table.c.run_id == run_id,
            )
        return self._update_extra(task_id, lambda extra: {**extra, **values}, list(TaskStatus))

    def note_committing(self, task_id: str, run_id: str, parent: str) -> bool:
        """Announce, while the run `run_id` still holds the task, that it is about to commit its
        result on top of `parent`: should it die before recording the outcome, the run that
        continues the task folds that commit into its own (`result_pending`), so the task ends
        with one result commit. False, and nothing written, when the run no longer holds it."""
        pending = {"run": run_id, "parent": parent}
        return self._update_extra(
            task_id,
            lambda extra: {**extra, "result_pending": pending},
            [TaskStatus.RUNNING],
            extra_where=tasks_table.c.run_id == run_id,
        )

    @retried_when_refused
    def fail_run(self, task_id: str, run_id: str | None, reason: str) -> bool:
        """A run ended without recording its task: running (or dispatched) -> failed."""
        where = tasks_table.c.run_id == run_id if run_id else None
        return self._transition(
            task_id,
            [TaskStatus.RUNNING, TaskStatus.QUEUED],
            {"status": TaskStatus.FAILED, "reason": reason, "finished_at": _now()},
            extra_where=where,
        )

    def requeue(
        self,
        task_id: str,
        reason: str,
        *,
        uncount: bool = False,
        run_id: str | None = None,
        dispatch: int | None = None,
    ) -> bool:
        """Put a dispatched task whose run never started back in the queue; `uncount`: that
        dispatch does not count as an attempt (its run was cancelled before it started);
        `run_id`: only while that run holds the task, or none does; `dispatch`: only while
        the task is queued, unclaimed, with that many dispatches (its run key's number)."""
        values: dict[str, Any] = {
            "status": TaskStatus.QUEUED,
            "dispatched": False,
            "reason": reason,
            "run_id": None,
        }
        if uncount:
            values["attempts"] = _UNCOUNTED
        statuses = [TaskStatus.QUEUED, TaskStatus.RUNNING]
        conditions = []
        if run_id:
            conditions.append(
                sa.or_(tasks_table.c.run_id.is_(None), tasks_table.c.run_id == run_id)
            )
        if dispatch is not None:
            statuses = [TaskStatus.QUEUED]
            conditions += [tasks_table.c.run_id.is_(None), tasks_table.c.dispatches == dispatch]
        return self._transition(
            task_id,
            statuses,
            values,
            extra_where=sa.and_(*conditions) if conditions else None,
        )

    def _update_extra(
        self,
        task_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        from_statuses: Iterable[TaskStatus],
        values: Mapping[str, Any] | None = None,
        extra_where: Any = None,
    ) -> bool:
        """Replace a task's `extra` with `change(extra)`, and set `values`, in one compare-and-
        set on the stored text (tried again while another process changes it meanwhile); False
        when the task is not in one of `from_statuses` or does not match `extra_where`."""
        statuses = [s.value for s in from_statuses]
        for _ in range(50):
            with self.engine.connect() as conn:
                stored = conn.execute(
                    sa.select(tasks_table.c.extra).where(
                        tasks_table.c.id == task_id, tasks_table.c.status.in_(statuses)
                    )
                ).scalar()
            if stored is None:
                return False
            condition = sa.and_(
                tasks_table.c.id == task_id,
                tasks_table.c.status.in_(statuses),
                tasks_table.c.extra == stored,
            )
            if extra_where is not None:
                condition = sa.and_(condition, extra_where)
            row = dict(values or {})
            if isinstance(row.get("status"), TaskStatus):
                row["status"] = row["status"].value
            row |= {"extra": json.dumps(change(json.loads(stored or "{}"))), "updated_at": _now()}
            with self.engine.begin() as conn:
                if conn.execute(tasks_table.update().where(condition).values(**row)).rowcount:
                    return True
                unchanged = conn.execute(
                    sa.select(tasks_table.c.id).where(
                        tasks_table.c.id == task_id, tasks_table.c.extra == stored
                    )
                ).first()
            if unchanged:
                return False  # it is `extra_where` that does not hold
        return False

    # Interruption: `orch projects stop` and preemption ----------------------------------------

    def request_interrupt(
        self, task_id: str, kind: str, reason: str, by: str | None = None
    ) -> bool:
        """Mark a running (or dispatched) task to be interrupted: its run, when it is ended,
        commits the work so far and puts the task back in the queue instead of failing it.
        `kind` is `stopped` or `preempted`; `by` the task a preemption makes room for."""
        request = {"kind": kind, "reason": reason, "at": _now().isoformat(), "by": by}
        return self._update_extra(
            task_id,
            lambda extra: {**extra, "interrupt": request},
            [TaskStatus.RUNNING, TaskStatus.QUEUED],
        )

    @retried_when_refused
    def checkpoint(
        self,
        task_id: str,
        run_id: str | None,
        *,
        commit: str | None,
        session_id: str | None,
        branch: str | None = None,
        base: str | None = None,
    ) -> Task | None:
        """An interrupted task's run ended: the task goes back to the queue, that attempt not
        counted, to continue `session_id` on its branch (at `commit`, the work so far). The
        interruption is kept in its history. None when the task was not asked to be
        interrupted or another run owns it."""
        task = self.get(task_id)
        if task is None or "interrupt" not in task.extra:
            return None
        where = tasks_table.c.run_id == run_id if run_id else None
        return self._continue_later(
            task,
            dict(task.extra["interrupt"]),
            commit=commit,
            session=session_id or task.resume_session,
            branch=branch,
            base=base,
            extra_where=where,
        )

    def limited(
        self,
        task_id: str,
        run_id: str | None,
        *,
        reason: str,
        limit: Mapping[str, Any],
        commit: str | None,
        session_id: str | None,
        branch: str | None = None,
        base: str | None = None,
    ) -> Task | None:
        """The task's agent stopped at its provider's usage limit: the task goes back to the
        queue, that attempt not counted, to continue `session_id` on its branch (at `commit`,
        the work so far) once the account reopens; the limit is kept in its history (kind
        `usage_limit`). None when the run `run_id` no longer holds it."""
        task = self.get(task_id)
        if task is None:
            return None
        request = {"kind": USAGE_LIMIT, "reason": reason, "at": _now().isoformat(), "by": None}
        return self._continue_later(
            task,
            request | {"limit": dict(limit)},
            commit=commit,
            session=session_id or task.resume_session,
            branch=branch,
            base=base,
            extra_where=tasks_table.c.run_id == run_id if run_id else None,
        )

    def reap(
        self,
        task_id: str,
        run_id: str,
        *,
        stale_before: datetime,
        reason: str,
        give_up_after: int,
    ) -> Task | None:
        """Take a running task back from the run `run_id`, whose heartbeat (or, before its
        first, its claim) is older than `stale_before`: its worker is dead. The task goes back
        to the queue to continue its agent's session on its branch, that attempt not counted,
        the loss kept in its history (kind `lost`); once it has been lost `give_up_after`
        times it fails instead. The task as it is now; None when the run no longer holds it
        or its heartbeat is fresh (this is decided in the one UPDATE, never on a stale read)."""
        task = self.get(task_id)
        if task is None or task.status is not TaskStatus.RUNNING or task.run_id != run_id:
            return None
        request = {"kind": LOST, "reason": reason, "at": _now().isoformat(), "by": None}
        still_stale = sa.and_(
            tasks_table.c.run_id == run_id,
            sa.func.coalesce(tasks_table.c.heartbeat_at, tasks_table.c.started_at) < stale_before,
        )
        session = task.extra.get("agent_session") or task.resume_session
        if task.times_lost + 1 < give_up_after:
            return self._continue_later(
                task, request, commit=None, session=session, extra_where=still_stale
            )
        entry = {**request, "ended_at": _now().isoformat(), "commit": None, "session": session}
        moved = self._update_extra(
            task_id,
            lambda extra: {
                **extra,
                "interruptions": [*extra.get("interruptions", []), entry],
            },
            [TaskStatus.RUNNING],
            {
                "status": TaskStatus.FAILED,
                "reason": f"{reason}; its run was lost {task.times_lost + 1} times, so it is not "
                f"continued again (`orch task retry {task_id}` runs it anew)",
                "finished_at": _now(),
            },
            extra_where=still_stale,
        )
        return self.get(task_id) if moved else None

    def _continue_later(
        self,
        task: Task,
        request: Mapping[str, Any],
        *,
        commit: str | None,
        session: str | None,
        branch: str | None = None,
        base: str | None = None,
        extra_where: Any = None,
    ) -> Task | None:
        """An interrupted (or lost) task back in the queue, that attempt not counted, to
        continue `session` on its branch (at `commit`, the work so far), the interruption
        `request` kept in its history; None when it is not running or queued, or does not
        match `extra_where`."""
        entry = {**request, "ended_at": _now().isoformat(), "commit": commit, "session": session}

        def change(extra: dict[str, Any]) -> dict[str, Any]:
            kept = {k: v for k, v in extra.items() if k not in _ATTEMPT_EXTRA}
            kept["interruptions"] = [*extra.get("interruptions", []), entry]
            if session:
                kept["resume_session"] = session
            if base:
                kept.setdefault("base", base)
            return kept

        label = request.get("reason") or request.get("kind")
        values: dict[str, Any] = {
            "status": TaskStatus.QUEUED,
            "dispatched": False,
            "run_id": None,
            "reason": f"interrupted ({label}); queued to continue"
            + (f" session {session}" if session else ""),
            "attempts": _UNCOUNTED,
        }
        if commit:
            values["commit"] = commit
        if branch:
            values["branch"] = branch
        if session:
            values["session_id"] = session
        moved = self._update_extra(
            task.id,
            change,
            [TaskStatus.RUNNING, TaskStatus.QUEUED],
            values,
            extra_where=extra_where,
        )
        return self.get(task.id) if moved else None

    def note_preempted(self, task_id: str, victim: str) -> bool:
        """Record on a waiting task that `victim` was preempted to make room for it."""
        entry = {"task": victim, "at": _now().isoformat()}
        return self._update_extra(
            task_id,
            lambda extra: {
                **extra,
                "preempted_others": [*extra.get("preempted_others", []), entry],
            },
            list(TaskStatus),
        )

    # Delivery --------------------------------------------------------------------------------

    @retried_when_refused
    def record_delivery(self, task_id: str, to: str | None, error: str | None = None) -> Task:
        """Where the task's branch was delivered (`to`, now), or why it could not be (`error`,
        which leaves an earlier delivery recorded)."""
        values: dict[str, Any] = {"delivery_error": error, "updated_at": _now()}
        if error is None:
            values |= {"delivered_to": to, "delivered_at": _now()}
        with self.engine.begin() as conn:
            conn.execute(tasks_table.update().where(tasks_table.c.id == task_id).values(**values))
        return self.require(task_id)

    def retry(self, task_id: str) -> Task:
        """Put a failed, blocked or cancelled task back in the queue as a new attempt."""
        task = self.require(task_id)
        if task.status not in RETRYABLE:
            raise TaskError(
                f"task {task_id} is {task.status}; only a failed, blocked or cancelled task can "
                "be retried"
            )
        moved = self._update_extra(
            task_id,
            lambda extra: {k: v for k, v in extra.items() if k != "interrupt"},
            RETRYABLE,
            {
                "status": TaskStatus.QUEUED,
                "dispatched": False,
                "reason": None,
                "run_id": None,
                "finished_at": None,
            },
        )
        if not moved:
            raise TaskError(f"task {task_id} changed state meanwhile; look again")
        return self.require(task_id)

    def note_waiting(self, task_id: str, reason: str) -> bool:
        """Say why a queued task is not dispatched yet (it stays queued)."""
        return self._transition(
            task_id,
            [TaskStatus.QUEUED],
            {"reason": reason},
            extra_where=sa.and_(
                tasks_table.c.dispatched.is_(False),
                sa.or_(tasks_table.c.reason.is_(None), tasks_table.c.reason != reason),
            ),
        )

    def requeue_failed_start(self, task_id: str, run_id: str, cause: str) -> str | None:
        """Put back in the queue a task whose run `run_id` failed before its agent started,
        saying why; the reason, or None when the task had moved on (another run holds it)."""
        reason = f"run {run_id} failed before its agent started: {cause}"
        return reason if self.requeue(task_id, reason, run_id=run_id) else None

    def block(self, task_id: str, reason: str) -> bool:
        return self._transition(
            task_id, [TaskStatus.QUEUED], {"status": TaskStatus.BLOCKED, "reason": reason}
        )

    def cancel(self, task_id: str, reason: str = "cancelled by user") -> Task:
        task = self.require(task_id)
        if task.status.finished:
            raise TaskError(f"task {task_id} already {task.status}; nothing to cancel")
        self._transition(
            task_id,
            [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.BLOCKED],
            {"status": TaskStatus.CANCELLED, "reason": reason, "finished_at": _now()},
        )
        return self.require(task_id)

    def delete_project(self, project: str) -> int:
        """Forget every task and session of `project` (it is being removed); the tasks deleted."""
        with self.engine.begin() as conn:
            conn.execute(sessions_table.delete().where(sessions_table.c.project == project))
            return int(
                conn.execute(tasks_table.delete().where(tasks_table.c.project == project)).rowcount
            )

    def service_since(self, since: datetime) -> list[tuple[str, datetime, datetime | None]]:
        """(project, started_at, finished_at) of every task that ran after `since`."""
        query = sa.select(
            tasks_table.c.project, tasks_table.c.started_at, tasks_table.c.finished_at
        ).where(
            tasks_table.c.started_at.is_not(None),
            sa.or_(tasks_table.c.finished_at.is_(None), tasks_table.c.finished_at >= since),
        )
        with self.engine.connect() as conn:
            return [
                (str(row.project), as_utc(row.started_at), as_utc_or_none(row.finished_at))
                for row in conn.execute(query)
            ]

    # Holds ---------------------------------------------------------------------------------

    def hold(self, name: str, fingerprint: str, reason: str, task_id: str | None = None) -> None:
        """Hold back what `name` stands for (say `profile:claude_code`) while the state it was
        found in (`fingerprint`) lasts."""
        with self.engine.begin() as conn:
            conn.execute(holds_table.delete().where(holds_table.c.name == name))
            conn.execute(
                holds_table.insert().values(
                    name=name,
                    fingerprint=fingerprint,
                    reason=reason,
                    task_id=task_id,
                    created_at=_now(),
                )
            )

    def holding(self, name: str, fingerprint: str) -> str | None:
        """The reason `name` is held in the state `fingerprint`; None when it is not (a hold
        taken in another state is dropped)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(holds_table).where(holds_table.c.name == name)).first()
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                conn.execute(holds_table.delete().where(holds_table.c.name == name))
                return None
            return str(row.reason)

    # Sessions --------------------------------------------------------------------------------

    @retried_when_refused
    def save_session(self, project: str, profile: str, session_id: str, task_id: str) -> None:
        values = {"session_id": session_id, "task_id": task_id, "updated_at": _now()}
        with self.engine.begin() as conn:
            updated = conn.execute(
                sessions_table.update()
                .where(sessions_table.c.project == project, sessions_table.c.profile == profile)
                .values(**values)
            ).rowcount
            if not updated:
                conn.execute(
                    sessions_table.insert().values(project=project, profile=profile, **values)
                )

    def last_session(self, project: str, profile: str) -> str | None:
        """The last session id of `project` with `profile`; never another project's."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sessions_table.c.session_id).where(
                    sessions_table.c.project == project, sessions_table.c.profile == profile
                )
            ).scalar()

    def sessions(self, project: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(sessions_table).order_by(sessions_table.c.project)
        if project is not None:
            query = query.where(sessions_table.c.project == project)
        with self.engine.connect() as conn:
            return [
                {**row._mapping, "updated_at": row.updated_at.isoformat()}
                for row in conn.execute(query)
            ]


def _sqlite_pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
    # Switching a new file to WAL needs it to itself; SQLite answers "database is locked" at
    # once, without waiting out the busy timeout, when another process is reading it or
    # switching it too. The mode is kept in the file, so this only races while it is new.
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def as_utc(value: datetime) -> datetime:
    """A time read back from the task database: SQLite hands back naive datetimes, and every
    time written there is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _task(row: sa.RowMapping | Mapping[str, Any]) -> Task:
    data = dict(row)
    data.pop("source_key", None)
    data["status"] = TaskStatus(data["status"])
    data["after"] = tuple(json.loads(data["after"] or "[]"))
    data["extra"] = json.loads(data["extra"] or "{}")
    data["dispatched"] = bool(data["dispatched"])
    for key in TIME_FIELDS:
        value = data[key]
        if value is not None and value.tzinfo is None:
            data[key] = value.replace(tzinfo=UTC)
    return Task(**data)
