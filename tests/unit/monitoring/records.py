"""Hand-made task records and the fixed clock the monitoring tests share."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from orchestration.tasks.models import Task, TaskStatus

NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
_ids = itertools.count()


def task(
    status: TaskStatus = TaskStatus.SUCCEEDED,
    *,
    project: str = "alpha",
    finished: datetime | None = None,
    cost: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    created: datetime | None = None,
    started: datetime | None = None,
) -> Task:
    created = created or (finished or NOW) - timedelta(hours=1)
    return Task(
        id=f"t{next(_ids):08d}",
        project=project,
        prompt="do it",
        status=status,
        priority=50,
        created_at=created,
        updated_at=finished or created,
        cost_usd=cost,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        started_at=started,
        finished_at=finished,
    )


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, *, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)
