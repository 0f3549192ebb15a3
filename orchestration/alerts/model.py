"""An alert: one thing worth telling a person about, as plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestration.registry.models import AlertEvent

#: Names the sender in the generic JSON message.
SOURCE = "orchestration"


@dataclass(frozen=True)
class Alert:
    """What happened (`kind`, one of config/alerts.yaml's `events`), where (project, task, run),
    a one-line `title`, a longer `text`, JSON-able `details` and when it happened (`at`)."""

    kind: AlertEvent
    title: str
    text: str
    at: datetime
    project: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    link: str | None = None
    """Where to look in the Dagster UI (the run's page), when the webserver's URL is known."""

    def to_dict(self) -> dict[str, Any]:
        """The alert as the generic JSON webhook receives it."""
        at = self.at if self.at.tzinfo else self.at.replace(tzinfo=UTC)
        return {
            "source": SOURCE,
            "event": self.kind,
            "title": self.title,
            "text": self.text,
            "project": self.project,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "at": at.astimezone(UTC).isoformat(),
            "details": dict(self.details),
            "link": self.link,
        }
