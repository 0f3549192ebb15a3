"""The `monitoring` sensor on provider accounts, on a real instance and task store: a usage
limit recorded as a run records it (`ProviderStates.hit_limit`) makes the sensor record
`orchestration/providers`, fail its `available` check and post a provider alert to a webhook;
a resume (by hand, or the pause running out into a canary) makes the check pass again and is
alerted once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.alerts.delivery import WebhookSender
from orchestration.allocation.providers import ProviderStates, ProviderStatus
from orchestration.cli import main
from orchestration.defs.monitoring import (
    AVAILABLE_CHECK,
    PROVIDERS_KEY,
    build_monitoring_defs,
    build_monitoring_sensor,
)
from orchestration.defs.resources import AgentTasks
from orchestration.tasks.store import TaskStore
from tests.support.daemon import evaluate_sensor
from tests.support.registry import RegistryDir
from tests.support.webhooks import Sink

NOW = datetime.now(UTC).replace(microsecond=0)
RESETS_AT = NOW + timedelta(hours=2)
UNTIL = (RESETS_AT + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
LIMIT = UsageLimit(
    LimitKind.USAGE_LIMIT,
    RESETS_AT,
    "rate_limit_event",
    window="five_hour",
    message="You've hit your limit",
)


@dataclass
class Monitoring:
    registry: RegistryDir
    instance: dg.DagsterInstance
    store: TaskStore
    sender: WebhookSender
    sink: Sink
    cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        """One evaluation of a newly built sensor, its events recorded as the daemon does."""
        sensor = build_monitoring_sensor(["alpha"], lambda: NOW, self.sender)
        result = evaluate_sensor(sensor, self.instance, self.cursor, {"agent_tasks": AgentTasks()})
        self.cursor = result.cursor
        return result

    def recorded(self) -> list[dict[str, Any]]:
        """The metadata of each materialization of orchestration/providers, oldest first."""
        records = self.instance.fetch_materializations(PROVIDERS_KEY, limit=100).records
        return [
            {k: v.value for k, v in r.asset_materialization.metadata.items()}  # type: ignore[union-attr]
            for r in reversed(records)
        ]

    def checks(self) -> list[tuple[bool, str]]:
        """Each evaluation of `available`, oldest first: passed, and its description."""
        history = self.instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(PROVIDERS_KEY, AVAILABLE_CHECK), limit=100
        )
        found = []
        for record in reversed(history):
            evaluation = record.event.dagster_event.event_specific_data  # type: ignore[union-attr]
            assert isinstance(evaluation, dg.AssetCheckEvaluation)
            found.append((evaluation.passed, evaluation.description or ""))
        return found

    def alerts(self) -> list[dict[str, Any]]:
        assert self.sender.wait_idle(30)
        return [post.body for post in self.sink.posts]


@pytest.fixture
def monitoring(
    registry_dir: RegistryDir,
    instance: dg.DagsterInstance,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Monitoring]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.delenv("ORCH_CLOCK_OFFSET_S", raising=False)
    registry_dir.project("alpha")
    registry_dir.write(
        "config/alerts.yaml",
        json.dumps(
            {"webhooks": [{"name": "ops", "url": sink.url + "/providers", "events": ["provider"]}]}
        ),
    )
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Monitoring(registry_dir, instance, store, WebhookSender(log=logging.getLogger("t")), sink)
    store.dispose()


def test_the_providers_asset_and_its_check_are_declared() -> None:
    defs = build_monitoring_defs(["alpha"])
    graph = defs.resolve_asset_graph()
    assert graph.get(PROVIDERS_KEY).group_name == "orchestration"
    assert "usage limit" in (graph.get(PROVIDERS_KEY).description or "")
    assert dg.AssetCheckKey(PROVIDERS_KEY, AVAILABLE_CHECK) in graph.asset_check_keys


def test_a_pause_fails_available_and_alerts_then_a_resume_passes_it(
    monitoring: Monitoring,
) -> None:
    monitoring.tick()  # the first tick records the accounts, all open
    [first] = monitoring.recorded()
    assert first["anthropic_paused"] == 0 and first["paused"] == 0
    assert first["anthropic_limit"] == 4
    assert monitoring.checks() == [(True, "all 4 provider account(s) open")]

    task = monitoring.store.add("alpha", "work")
    assert task is not None
    ProviderStates(monitoring.store).hit_limit(
        "anthropic", LIMIT, task=task.id, now=NOW, grace_s=90.0
    )
    monitoring.tick()
    paused = monitoring.recorded()[-1]
    assert (paused["anthropic_paused"], paused["anthropic_limit"], paused["paused"]) == (1, 0, 1)
    rows = {row.data["account"]: row.data for row in paused["accounts"].records}
    assert rows["anthropic"]["status"] == "paused" and rows["anthropic"]["until"] == UNTIL
    assert rows["anthropic"]["source_task"] == task.id
    assert rows["openai"]["status"] == "open"
    passed, text = monitoring.checks()[-1]
    assert not passed
    assert f"anthropic paused until {UNTIL} (five_hour, from task {task.id})" in text
    assert "You've hit your limit" in text
    [pause] = monitoring.alerts()
    assert pause["event"] == "provider" and pause["task_id"] == task.id
    assert pause["title"] == (
        f"provider anthropic: paused until {UNTIL} (five_hour, from task {task.id})"
    )
    assert (pause["details"]["before"], pause["details"]["status"]) == ("open", "paused")

    # Another run in flight hitting the same limit changes nothing: nothing recorded again.
    ProviderStates(monitoring.store).hit_limit(
        "anthropic", LIMIT, task="other", now=NOW, grace_s=90.0
    )
    monitoring.tick()
    assert len(monitoring.recorded()) == 2 and len(monitoring.checks()) == 2
    assert len(monitoring.alerts()) == 1

    # The summary of the portfolio names the paused account with its end.
    [portfolio] = monitoring.instance.fetch_materializations(
        dg.AssetKey(["orchestration", "portfolio"]), limit=1
    ).records
    summary = portfolio.asset_materialization.metadata["summary"].value  # type: ignore[union-attr]
    assert f"**Providers paused**: anthropic until {UNTIL}" in str(summary)

    settings = monitoring.registry.settings
    resumed = CliRunner().invoke(
        main,
        ["providers", "resume", "anthropic"],
        env={
            "ORCH_PROJECTS_DIR": str(settings.projects_dir),
            "ORCH_CONFIG_DIR": str(settings.config_dir),
            "ORCH_HOME": str(settings.home),
            "DAGSTER_HOME": None,
        },
        catch_exceptions=False,
    )
    assert resumed.exit_code == 0, resumed.output
    monitoring.tick()
    assert monitoring.recorded()[-1]["anthropic_paused"] == 0
    assert monitoring.checks()[-1] == (True, "all 4 provider account(s) open")
    titles = [alert["title"] for alert in monitoring.alerts()]
    assert titles[1:] == ["provider anthropic: open again"]
    assert monitoring.alerts()[-1]["details"]["before"] == "paused"

    monitoring.tick()
    assert len(monitoring.alerts()) == 2 and len(monitoring.checks()) == 3


def test_a_pause_that_runs_out_is_a_resume_and_a_failed_canary_a_new_pause(
    monitoring: Monitoring,
) -> None:
    states = ProviderStates(monitoring.store)
    states.hit_limit("openai", LIMIT, task=None, now=NOW, grace_s=0.0)
    monitoring.tick()
    assert monitoring.checks()[-1][0] is False

    # The dispatch sensor moves the state on once the pause is over: one canary slot.
    [canary] = states.advance(RESETS_AT + timedelta(seconds=1))
    assert canary.status is ProviderStatus.CANARY
    monitoring.tick()
    passed, text = monitoring.checks()[-1]
    assert passed and text == "none paused; trying one task again: openai"
    assert monitoring.recorded()[-1]["openai_limit"] == 1

    # The canary hits the limit again: paused anew, alerted anew.
    states.hit_limit(
        "openai",
        UsageLimit(LimitKind.USAGE_LIMIT, None, "codex_text", window="five_hour"),
        task=None,
        now=RESETS_AT + timedelta(seconds=30),
        grace_s=0.0,
    )
    monitoring.tick()
    assert monitoring.checks()[-1][0] is False
    titles = [alert["title"] for alert in monitoring.alerts()]
    assert titles[0].startswith("provider openai: paused until ")
    assert titles[1] == "provider openai: pause over, one task tries it again"
    assert titles[2].startswith("provider openai: paused until ")
    assert len(titles) == 3
