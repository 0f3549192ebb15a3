"""A budget that stops spending, through the real `dagster-daemon`: a project whose daily budget
is spent is paused by the `monitoring` sensor (reason `budget`), none of its agents starts while
it is paused, another project goes on working, and at midnight the project resumes by itself
and its queued tasks all run.

The daemon's budget clock is shifted (`ORCH_CLOCK_OFFSET_S`) to a little before the next UTC
midnight, so the rollover comes within minutes. Projects: `spender` (budget 1 USD a day, one
agent at a time) and `other` (no budget); stand-in agents report `COST<x>` USD each.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates, Transition
from orchestration.defs.monitoring import BUDGET_CHECK, usage_key
from orchestration.settings import CLOCK_OFFSET_VAR
from orchestration.tasks.models import TaskStatus
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import (
    INSTANCE_CHANGES,
    LOG_VAR,
    Orchestrator,
    starts,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

PROJECTS = {"spender": ("normal", 1), "other": ("normal", 1)}
#: How long after the daemon starts the shifted clock reaches midnight: time for two tasks to
#: spend the budget and for the monitoring sensor (every 30 s) to see it.
LEAD_S = 180
COST = 0.6  # two tasks spend the 1 USD budget


def transitions(system: Orchestrator, project: str) -> list[Transition]:
    return ProjectStates(system.store).log([project])


def test_a_spent_budget_pauses_the_project_until_midnight(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now < timedelta(minutes=15):
        pytest.skip("a real midnight is too close: the day of the task records would change")
    offset = (midnight - now).total_seconds() - LEAD_S

    (tmp_path / "agents" / "release").mkdir(parents=True)
    env = write_registry(tmp_path, PROJECTS, slots=2)
    spender = Path(env["ORCH_PROJECTS_DIR"]) / "spender.yaml"
    spec = yaml.safe_load(spender.read_text()) | {"budget": {"daily_usd": 1.0}}
    spender.write_text(yaml.safe_dump(spec, sort_keys=False))
    env["DAGSTER_HOME"] = str(write_instance(tmp_path, INSTANCE_CHANGES))
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    env[CLOCK_OFFSET_VAR] = str(offset)
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)

    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            spending = [
                system.add("spender", f"NOOP SLEEP4 COST{COST} step {i}") for i in range(10)
            ]

            def paused() -> bool:
                return ProjectStates(system.store).get("spender").state is ProjectState.PAUSED

            system.wait_for("spender paused by its budget", paused, timeout_s=LEAD_S)
            record = ProjectStates(system.store).get("spender")
            assert (record.reason, record.actor) == ("budget", "budget")
            waiting = system.store.tasks(ids=spending, statuses=[TaskStatus.QUEUED])
            assert waiting, "every task had started before the pause: nothing was held back"

            # Another project works on while the spender waits.
            others = [system.add("other", f"NOOP COST{COST}") for _ in range(2)]
            assert all(t.status is TaskStatus.SUCCEEDED for t in system.wait_finished(*others))
            assert paused(), "the spender was resumed before midnight"

            def resumed() -> bool:
                return ProjectStates(system.store).get("spender").state is ProjectState.ACTIVE

            system.wait_for("spender resumed at midnight", resumed, timeout_s=LEAD_S + 120)
            done = system.wait_finished(*spending, timeout_s=300)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done), system.explain("spender")
            system.wait_idle()
            instance = system.instance
            checks = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(usage_key("spender"), BUDGET_CHECK), limit=50
            )
        finally:
            system.close()

    pause, resume = (t for t in transitions(system, "spender") if t.actor == "budget")
    assert (pause.to_state, resume.to_state) == ("paused", "active")
    spender_starts = [e["time"] for e in starts(system) if "/spender/" in e["cwd"]]
    during = [t for t in spender_starts if pause.at.timestamp() <= t <= resume.at.timestamp()]
    assert during == [], "a spender agent started while its budget was spent"
    assert len(spender_starts) == len(spending)
    assert any(
        pause.at.timestamp() <= e["time"] <= resume.at.timestamp()
        for e in starts(system)
        if "/other/" in e["cwd"]
    )
    levels = [
        str(record.event.dagster_event.event_specific_data.metadata["level"].value)  # type: ignore[union-attr]
        for record in reversed(checks)
    ]
    assert "exceeded" in levels and levels[-1] == "ok", levels
