"""What to alert, decided over plain data (no Dagster, no database): the tasks that failed, the
verifications that failed and the runs that are stuck since the last look, and the cursor that
makes each of them alert exactly once, across ticks and restarts.

The cursor (JSON, kept by the `alerts` sensor in the Dagster instance) holds:
- `since`: when alerting started; nothing that happened before is alerted;
- `tasks_until` and `tasks_seen`: the last look at failed tasks, and the failures already
  alerted within LOOKBACK_S of it (a failure recorded a little late is still caught, once);
- `verified`: per project, the last verification check execution dealt with;
- `stuck`: the runs in progress already alerted as stuck (forgotten once they end).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from orchestration.alerts.model import Alert

#: How far before the last look a failed task is still looked for: its record may be written a
#: little after the moment it carries (a slow commit, a worker whose clock is a bit behind).
LOOKBACK_S = 600.0
#: How much of a task's prompt an alert quotes.
PROMPT_CHARS = 200
#: How much of a reason or an error an alert quotes.
TEXT_CHARS = 2000


@dataclass(frozen=True)
class FailedTask:
    """A task whose status is `failed`, with what an alert says about it."""

    id: str
    project: str
    finished_at: float
    """When it failed (epoch seconds); a task failed again after a retry is a new failure."""
    reason: str | None = None
    run_id: str | None = None
    prompt: str = ""
    attempts: int = 0
    profile: str | None = None
    cost_usd: float | None = None

    @property
    def key(self) -> str:
        return f"{self.id}@{self.finished_at:.6f}"


class VerificationState(StrEnum):
    """Where one execution of a project's `verify_passed` check stands."""

    PASSED = "passed"
    FAILED = "failed"
    """The check ran and failed: the tests failed."""
    PENDING = "pending"
    """Planned, and its run has not ended yet."""
    RUN_FAILED = "run_failed"
    """Planned, and its run failed before the check ran (the verification could not run)."""
    NOT_RUN = "not_run"
    """Planned, and its run ended otherwise without it (cancelled, or skipped)."""

    @property
    def alerts(self) -> bool:
        return self in (VerificationState.FAILED, VerificationState.RUN_FAILED)


@dataclass(frozen=True)
class VerificationRecord:
    """One execution of a project's verification check: `id` grows with each execution."""

    project: str
    id: int
    run_id: str
    created: float
    """When the execution was planned (epoch seconds)."""
    state: VerificationState
    message: str | None = None
    """The check's description (the test output's tail) or the run's error."""
    details: dict[str, Any] = field(default_factory=dict)
    at: float | None = None
    """When it ended, if known."""


@dataclass(frozen=True)
class ActiveRun:
    """A run in progress (starting, started or cancelling)."""

    run_id: str
    started: float
    """When it started, or was created when it has not started yet (epoch seconds)."""
    job: str
    status: str
    project: str | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class AlertCursor:
    """What has been alerted already; see the module's docstring."""

    since: float
    tasks_until: float
    tasks_seen: frozenset[str] = frozenset()
    verified: Mapping[str, int] = field(default_factory=dict)
    stuck: frozenset[str] = frozenset()

    @classmethod
    def start(cls, now: float) -> AlertCursor:
        """The cursor of a first look: only what happens from `now` on is alerted."""
        return cls(since=now, tasks_until=now)

    @classmethod
    def parse(cls, text: str | None) -> AlertCursor | None:
        """The cursor `to_json` wrote; None when there is none or it cannot be read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                since=float(data["since"]),
                tasks_until=float(data["tasks_until"]),
                tasks_seen=frozenset(str(key) for key in data.get("tasks_seen", [])),
                verified={str(k): int(v) for k, v in data.get("verified", {}).items()},
                stuck=frozenset(str(run) for run in data.get("stuck", [])),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "tasks_until": self.tasks_until,
                "tasks_seen": sorted(self.tasks_seen),
                "verified": dict(sorted(self.verified.items())),
                "stuck": sorted(self.stuck),
            },
            separators=(",", ":"),
        )

    def wants_verifications(self, project: str, latest_id: int, latest_created: float) -> bool:
        """Whether a project whose newest check execution is `latest_id` has executions not
        dealt with yet (then its recent history is read)."""
        return latest_id > self.verified.get(project, 0) and latest_created >= self.since_second

    @property
    def since_second(self) -> float:
        """`since` to the second: the instance keeps when a check execution was planned only to
        the second, so one planned just after the first look may carry an earlier time."""
        return float(math.floor(self.since))


@dataclass(frozen=True)
class Selection:
    """The alerts to post now, and the cursor to keep once they are on their way."""

    alerts: tuple[Alert, ...]
    cursor: AlertCursor


def select_alerts(
    cursor: AlertCursor,
    now: float,
    *,
    failed_tasks: Iterable[FailedTask] = (),
    verifications: Mapping[str, Sequence[VerificationRecord]] | None = None,
    projects: Collection[str] = (),
    active_runs: Iterable[ActiveRun] = (),
    stuck_after_s: float = 3600,
    ui_url: str | None = None,
) -> Selection:
    """The alerts for what happened since `cursor`, and the cursor after them.

    `verifications`: the recent check executions of the projects `cursor.wants_verifications`
    named; `projects`: every project with a verification check now (the cursor forgets the
    others);
    `active_runs`: every run in progress now; `ui_url`: the webserver, for links to runs.
    """
    tasks, tasks_until, tasks_seen = _failed_tasks(cursor, now, list(failed_tasks), ui_url)
    checks, verified = _verifications(cursor, verifications or {}, projects, ui_url)
    stuck, still_stuck = _stuck_runs(cursor, now, list(active_runs), stuck_after_s, ui_url)
    return Selection(
        alerts=(*tasks, *checks, *stuck),
        cursor=AlertCursor(
            since=cursor.since,
            tasks_until=tasks_until,
            tasks_seen=tasks_seen,
            verified=verified,
            stuck=still_stuck,
        ),
    )


def _failed_tasks(
    cursor: AlertCursor, now: float, failed: list[FailedTask], ui_url: str | None
) -> tuple[list[Alert], float, frozenset[str]]:
    lower = max(cursor.tasks_until - LOOKBACK_S, cursor.since)
    new = sorted(
        (t for t in failed if t.finished_at >= lower and t.key not in cursor.tasks_seen),
        key=lambda task: (task.finished_at, task.id),
    )
    until = max(cursor.tasks_until, now)
    # Every failure the next look may still see (it looks from `until - LOOKBACK_S` on) is
    # remembered, the ones alerted now and the ones alerted before.
    seen = frozenset(t.key for t in failed if t.finished_at >= until - LOOKBACK_S)
    return [_task_alert(task, ui_url) for task in new], until, seen


def _task_alert(task: FailedTask, ui_url: str | None) -> Alert:
    prompt = task.prompt.strip().splitlines()[0] if task.prompt.strip() else ""
    return Alert(
        kind="task_failed",
        title=f"Task {task.id} of {task.project} failed",
        text=_cut(task.reason or "no reason was recorded", TEXT_CHARS),
        at=_time(task.finished_at),
        project=task.project,
        task_id=task.id,
        run_id=task.run_id,
        details={
            "prompt": _cut(prompt, PROMPT_CHARS),
            "attempts": task.attempts,
            "profile": task.profile,
            "cost_usd": task.cost_usd,
        },
        link=_run_link(ui_url, task.run_id),
    )


def _verifications(
    cursor: AlertCursor,
    records: Mapping[str, Sequence[VerificationRecord]],
    projects: Collection[str],
    ui_url: str | None,
) -> tuple[list[Alert], dict[str, int]]:
    alerts: list[Alert] = []
    verified = {p: last for p, last in cursor.verified.items() if p in projects}
    for project in sorted(records):
        last = verified.get(project, 0)
        for record in sorted(records[project], key=lambda r: r.id):
            if record.id <= last:
                continue
            if record.created < cursor.since_second:
                last = record.id  # before alerting started
                continue
            if record.state is VerificationState.PENDING:
                break  # wait for it: a later execution is dealt with after this one
            if record.state.alerts:
                alerts.append(_verification_alert(record, ui_url))
            last = record.id
        if last:
            verified[project] = last
    return alerts, verified


def _verification_alert(record: VerificationRecord, ui_url: str | None) -> Alert:
    failed = record.state is VerificationState.FAILED
    return Alert(
        kind="verification_failed",
        title=(
            f"Verification of {record.project} failed"
            if failed
            else f"Verification of {record.project} could not run"
        ),
        text=_cut(
            record.message
            or ("the verify command failed" if failed else "its run failed before the check"),
            TEXT_CHARS,
        ),
        at=_time(record.at if record.at is not None else record.created),
        project=record.project,
        run_id=record.run_id,
        details=dict(record.details),
        link=_run_link(ui_url, record.run_id),
    )


def _stuck_runs(
    cursor: AlertCursor,
    now: float,
    runs: list[ActiveRun],
    stuck_after_s: float,
    ui_url: str | None,
) -> tuple[list[Alert], frozenset[str]]:
    new = sorted(
        (
            run
            for run in runs
            if now - run.started > stuck_after_s and run.run_id not in cursor.stuck
        ),
        key=lambda run: (run.started, run.run_id),
    )
    active = {run.run_id for run in runs}
    still = (cursor.stuck | {run.run_id for run in new}) & active
    return [_stuck_alert(run, now, stuck_after_s, ui_url) for run in new], frozenset(still)


def _stuck_alert(run: ActiveRun, now: float, stuck_after_s: float, ui_url: str | None) -> Alert:
    running = now - run.started
    what = (
        f"task {run.task_id} of {run.project}"
        if run.task_id and run.project
        else (f"{run.job} of {run.project}" if run.project else run.job)
    )
    return Alert(
        kind="run_stuck",
        title=f"Run {run.run_id[:8]} ({what}) in progress for {duration_text(running)}",
        text=(
            f"It has been in progress ({run.status}) since {_time(run.started).isoformat()}, "
            f"longer than stuck_after_s ({duration_text(stuck_after_s)}, config/alerts.yaml)."
        ),
        at=_time(now),
        project=run.project,
        task_id=run.task_id,
        run_id=run.run_id,
        details={"job": run.job, "status": run.status, "running_s": round(running)},
        link=_run_link(ui_url, run.run_id),
    )


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `2 h 05 min`."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _run_link(ui_url: str | None, run_id: str | None) -> str | None:
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if ui_url and run_id else None


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
