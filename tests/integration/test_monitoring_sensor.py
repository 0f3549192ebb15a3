"""The `monitoring` sensor on a real instance and task store, with its clock set by the test:
each project's `usage` recorded when a task ended and at midnight, the `within_budget` check,
a project whose daily budget is spent paused (reason `budget`) and resumed by itself at the next
day, a budget alert posted to a webhook, and the portfolio's table of every project."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration.alerts.delivery import WebhookSender
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.defs.monitoring import (
    BUDGET_CHECK,
    PORTFOLIO_KEY,
    build_monitoring_sensor,
    usage_key,
)
from orchestration.defs.resources import AgentTasks
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.daemon import evaluate_sensor
from tests.support.registry import RegistryDir
from tests.support.webhooks import Sink

#: The tasks finish at the real time (the store stamps them), so the test's clock moves within
#: the real day: its noon, the last seconds before its midnight, the first after.
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
NOON = TODAY + timedelta(hours=12)


@dataclass
class Monitoring:
    registry: RegistryDir
    instance: dg.DagsterInstance
    store: TaskStore
    sender: WebhookSender
    now: datetime = NOON
    cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        """One evaluation at `now` of a newly built sensor, its events recorded as the daemon
        records a sensor's."""
        sensor = build_monitoring_sensor(["alpha", "beta"], lambda: self.now, self.sender)
        result = evaluate_sensor(sensor, self.instance, self.cursor, {"agent_tasks": AgentTasks()})
        self.cursor = result.cursor
        return result

    def finish(self, project: str, cost: float, status: TaskStatus = TaskStatus.SUCCEEDED) -> None:
        task = self.store.add(project, "work")
        assert task is not None
        self.store.claim(task.id, f"run-{task.id}")
        self.store.finish(task.id, status, run_id=f"run-{task.id}", cost_usd=cost)

    def usage(self, project: str) -> list[dict[str, float]]:
        records = self.instance.fetch_materializations(usage_key(project), limit=100).records
        return [
            {k: v.value for k, v in r.asset_materialization.metadata.items()}  # type: ignore[union-attr]
            for r in reversed(records)
        ]

    def budget_checks(self) -> list[tuple[bool, str]]:
        history = self.instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(usage_key("alpha"), BUDGET_CHECK), limit=100
        )
        found = []
        for record in reversed(history):
            evaluation = record.event.dagster_event.event_specific_data  # type: ignore[union-attr]
            found.append((evaluation.passed, str(evaluation.metadata["level"].value)))
        return found

    def state(self, project: str) -> tuple[ProjectState, str | None]:
        record = ProjectStates(self.store).get(project)
        return record.state, record.reason


@pytest.fixture
def monitoring(
    registry_dir: RegistryDir,
    instance: dg.DagsterInstance,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Monitoring]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    registry_dir.project("alpha", "budget: {daily_usd: 10}\n")
    registry_dir.project("beta")
    registry_dir.write(
        "config/alerts.yaml",
        json.dumps(
            {"webhooks": [{"name": "ops", "url": sink.url + "/budget", "events": ["budget"]}]}
        ),
    )
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Monitoring(registry_dir, instance, store, WebhookSender(log=logging.getLogger("t")))
    store.dispose()


def test_usage_budget_pause_and_resume_across_midnight(monitoring: Monitoring, sink: Sink) -> None:
    if datetime.now(UTC) - TODAY > timedelta(hours=23, minutes=58):
        pytest.skip("the real day ends within the test: its tasks would finish on the next one")
    monitoring.finish("alpha", 2.0)
    monitoring.tick()
    assert [u["cost_today_usd"] for u in monitoring.usage("alpha")] == [2.0]
    assert monitoring.usage("alpha")[0]["budget_used_pct"] == 20.0
    assert [u["cost_today_usd"] for u in monitoring.usage("beta")] == [0.0]
    assert monitoring.budget_checks() == [(True, "ok")]

    monitoring.now = NOON + timedelta(minutes=1)
    monitoring.tick()  # nothing ended: nothing recorded
    assert len(monitoring.usage("alpha")) == 1

    monitoring.finish("alpha", 6.5, TaskStatus.FAILED)
    monitoring.tick()
    assert monitoring.usage("alpha")[-1]["wasted_usd_today"] == 6.5
    assert monitoring.budget_checks()[-1] == (False, "warn")
    assert monitoring.state("alpha") == (ProjectState.ACTIVE, None)

    monitoring.finish("alpha", 1.5)
    monitoring.tick()
    assert monitoring.budget_checks()[-1] == (False, "exceeded")
    assert monitoring.state("alpha") == (ProjectState.PAUSED, "budget")
    assert monitoring.state("beta")[0] is ProjectState.ACTIVE
    assert monitoring.sender.wait_idle(30)
    titles = [post.body["title"] for post in sink.posts]
    assert titles == ["alpha: budget warn", "alpha: budget exceeded"]
    assert sink.posts[-1].body["details"]["resets_at"] == (TODAY + timedelta(days=1)).isoformat()

    monitoring.now = TODAY + timedelta(hours=23, minutes=59, seconds=30)
    monitoring.tick()
    assert monitoring.state("alpha") == (ProjectState.PAUSED, "budget")

    monitoring.now = TODAY + timedelta(days=1, seconds=30)
    monitoring.tick()
    assert monitoring.state("alpha")[0] is ProjectState.ACTIVE
    assert monitoring.budget_checks()[-1] == (True, "ok")
    assert monitoring.usage("alpha")[-1]["cost_today_usd"] == 0.0  # the day's first record
    assert monitoring.usage("alpha")[-1]["cost_7d_usd"] == 10.0
    assert len(monitoring.usage("beta")) == 2  # at midnight every project's usage


def test_the_portfolio_shows_every_project_and_is_recorded_on_change(
    monitoring: Monitoring,
) -> None:
    monitoring.finish("beta", 1.25)
    monitoring.tick()

    records = monitoring.instance.fetch_materializations(PORTFOLIO_KEY, limit=10).records
    assert len(records) == 1
    metadata = records[0].asset_materialization.metadata  # type: ignore[union-attr]
    rows = {row.data["project"]: row.data for row in metadata["projects"].value.records}
    assert set(rows) == {"alpha", "beta"}
    assert rows["beta"]["cost_today_usd"] == 1.25 and rows["beta"]["succeeded_24h"] == 1
    assert rows["alpha"]["budget_used_pct"] == 0.0 and rows["beta"]["budget_used_pct"] is None
    assert "- beta: $1.25" in metadata["summary"].value

    monitoring.now += timedelta(minutes=1)
    monitoring.tick()
    assert len(monitoring.instance.fetch_materializations(PORTFOLIO_KEY, limit=10).records) == 1
    ProjectStates(monitoring.store).set("beta", ProjectState.PAUSED, expected=ProjectState.ACTIVE)
    monitoring.tick()
    assert len(monitoring.instance.fetch_materializations(PORTFOLIO_KEY, limit=10).records) == 2
