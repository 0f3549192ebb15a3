"""What each project spent and achieved, computed from task records at a given moment.

Pure functions over `Task`s and an explicit `now` (the clock is the caller's, so day rollover is
tested without waiting a day). Days are UTC days. A task's cost and tokens count at its
`finished_at`: a running task has spent nothing yet as far as these numbers go, and a task
retried keeps only its latest attempt's numbers (that is all its record holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestration.tasks.models import Task, TaskStatus

#: The statuses whose cost bought nothing.
WASTED_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
#: How far back the burn rate looks.
BURN_WINDOW = timedelta(hours=1)
#: How far back `succeeded_24h`, `failed_24h` and the queue waits look.
RECENT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class ProjectUsage:
    """One project's spending and outcomes as of one moment.

    `today`, `7d` and `30d` are the current UTC day, and it with the 6 (29) days before it;
    `month` is the current calendar month (UTC), which monthly budgets count;
    `cost_per_success_usd` is all of today's spend divided by today's succeeded tasks (None
    when none succeeded), so failures make each success dearer; `wasted_usd_today` is what
    failed and cancelled tasks cost today; `burn_rate_usd_per_h` is the cost of the tasks
    that finished in the last hour; `succeeded_24h` and `failed_24h` look back 24 hours.
    """

    project: str
    cost_today_usd: float = 0.0
    cost_7d_usd: float = 0.0
    cost_30d_usd: float = 0.0
    cost_month_usd: float = 0.0
    tokens_in_today: int = 0
    tokens_out_today: int = 0
    tasks_succeeded_today: int = 0
    tasks_failed_today: int = 0
    cost_per_success_usd: float | None = None
    wasted_usd_today: float = 0.0
    burn_rate_usd_per_h: float = 0.0
    succeeded_24h: int = 0
    failed_24h: int = 0

    @property
    def tokens_today(self) -> int:
        return self.tokens_in_today + self.tokens_out_today


@dataclass(frozen=True)
class LifetimeTotals:
    """Everything a project's task records hold, whenever it was spent."""

    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is refused (which zone it meant is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a time zone is needed to place {moment.isoformat()} in a UTC day")
    return moment.astimezone(UTC)


def day_start(now: datetime, days_back: int = 0) -> datetime:
    """Midnight UTC of the day `now` falls in, or of the day `days_back` days before it."""
    midnight = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days_back)


def month_start(now: datetime) -> datetime:
    """Midnight UTC of the first day of the month `now` falls in."""
    return day_start(now).replace(day=1)


def project_usage(project: str, tasks: Iterable[Task], now: datetime) -> ProjectUsage:
    """`project`'s usage as of `now`, from `tasks` (other projects' tasks are ignored)."""
    today, week, month = day_start(now), day_start(now, 6), day_start(now, 29)
    calendar_month = month_start(now)
    burn_since = as_utc(now) - BURN_WINDOW
    recent_since = as_utc(now) - RECENT_WINDOW
    cost_today = cost_7d = cost_30d = cost_month = wasted = burn = 0.0
    tokens_in = tokens_out = succeeded_today = failed_today = succeeded_24h = failed_24h = 0
    for task in tasks:
        if task.project != project or task.finished_at is None:
            continue
        finished = as_utc(task.finished_at)
        cost = task.cost_usd or 0.0
        if finished >= month:
            cost_30d += cost
        if finished >= calendar_month:
            cost_month += cost
        if finished >= week:
            cost_7d += cost
        if finished >= burn_since:
            burn += cost
        if finished >= recent_since:
            succeeded_24h += task.status is TaskStatus.SUCCEEDED
            failed_24h += task.status is TaskStatus.FAILED
        if finished < today:
            continue
        cost_today += cost
        tokens_in += task.tokens_in or 0
        tokens_out += task.tokens_out or 0
        succeeded_today += task.status is TaskStatus.SUCCEEDED
        failed_today += task.status is TaskStatus.FAILED
        if task.status in WASTED_STATUSES:
            wasted += cost
    return ProjectUsage(
        project=project,
        cost_today_usd=cost_today,
        cost_7d_usd=cost_7d,
        cost_30d_usd=cost_30d,
        cost_month_usd=cost_month,
        tokens_in_today=tokens_in,
        tokens_out_today=tokens_out,
        tasks_succeeded_today=succeeded_today,
        tasks_failed_today=failed_today,
        cost_per_success_usd=cost_today / succeeded_today if succeeded_today else None,
        wasted_usd_today=wasted,
        burn_rate_usd_per_h=burn * (timedelta(hours=1) / BURN_WINDOW),
        succeeded_24h=succeeded_24h,
        failed_24h=failed_24h,
    )


def usage_by_project(
    tasks: Iterable[Task], now: datetime, projects: Iterable[str] = ()
) -> dict[str, ProjectUsage]:
    """Every project's usage as of `now`: the ones named in `projects` (all zero when they
    have no task) and every project a task belongs to."""
    grouped = _by_project(tasks, projects)
    return {name: project_usage(name, own, now) for name, own in grouped.items()}


def status_counts(tasks: Iterable[Task]) -> dict[str, dict[TaskStatus, int]]:
    """How many tasks of each project are in each status now (every status present)."""
    counts: dict[str, dict[TaskStatus, int]] = {}
    for task in tasks:
        per_status = counts.setdefault(task.project, dict.fromkeys(TaskStatus, 0))
        per_status[task.status] += 1
    return counts


def lifetime_totals(tasks: Iterable[Task]) -> dict[str, LifetimeTotals]:
    """Each project's cost and tokens over all its task records."""
    sums: dict[str, tuple[float, int, int]] = {}
    for task in tasks:
        cost, tokens_in, tokens_out = sums.get(task.project, (0.0, 0, 0))
        sums[task.project] = (
            cost + (task.cost_usd or 0.0),
            tokens_in + (task.tokens_in or 0),
            tokens_out + (task.tokens_out or 0),
        )
    return {name: LifetimeTotals(*values) for name, values in sums.items()}


def queue_waits(
    tasks: Iterable[Task], now: datetime, window: timedelta = RECENT_WINDOW
) -> dict[str, tuple[float, ...]]:
    """Per project, how long each task that started within `window` before `now` waited
    between being added and starting (seconds; a retried task's wait runs to its latest
    start)."""
    since = as_utc(now) - window
    waits: dict[str, list[float]] = {}
    for task in tasks:
        if task.started_at is None or as_utc(task.started_at) < since:
            continue
        wait = (as_utc(task.started_at) - as_utc(task.created_at)).total_seconds()
        waits.setdefault(task.project, []).append(max(0.0, wait))
    return {name: tuple(values) for name, values in waits.items()}


def _by_project(tasks: Iterable[Task], projects: Iterable[str]) -> Mapping[str, list[Task]]:
    grouped: dict[str, list[Task]] = {name: [] for name in projects}
    for task in tasks:
        grouped.setdefault(task.project, []).append(task)
    return grouped
