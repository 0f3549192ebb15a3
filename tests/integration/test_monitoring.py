"""`orch status` on real things: tasks moved through their states by the real SQLite task
store, a paused project, verifications recorded in a real Dagster instance (one materialized
by a run, as the factory's verification asset records it; one runless; one without a verify
command), task runs in progress and pool limits set in the instance. Its numbers must agree
with `orch task list --json`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result
from dagster._core.test_utils import create_run_for_test

from orchestration.allocation.control import apply_pool_limits
from orchestration.cli import main
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.defs.metadata import verification_metadata
from orchestration.tags import PROJECT_TAG, TASK_TAG
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.verification.runner import VerificationResult
from tests.integration.conftest import QUEUED_RUN_ORIGIN
from tests.support.registry import PROVIDER_POOLS, RegistryDir

Invoke = Callable[..., Result]


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    registry_dir.project("alpha", "priority: high\n")
    registry_dir.project("beta", "priority: low\n")
    registry_dir.project("gamma")
    return registry_dir


def cli(registry: RegistryDir, dagster_home: Path | None) -> Invoke:
    settings = registry.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "ORCH_TASKS_DB_URL": None,
        "DAGSTER_HOME": str(dagster_home) if dagster_home else None,
    }

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def orch(registry: RegistryDir, dagster_home: Path) -> Invoke:
    """`orch ARGS...` against `registry`, with DAGSTER_HOME at the test's instance."""
    return cli(registry, dagster_home)


def finished(
    store: TaskStore, project: str, status: TaskStatus, cost: float, tokens: tuple[int, int]
) -> Task:
    """A task that ran (claimed by a run) and ended with `status`, its agent's numbers kept."""
    task = store.add(project, f"work that {status}")
    assert task is not None
    run_id = f"run-{task.id}"
    store.claim(task.id, run_id)
    return store.finish(
        task.id,
        status,
        run_id=run_id,
        cost_usd=cost,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
    )


def added(store: TaskStore, project: str) -> Task:
    task = store.add(project, "work to do")
    assert task is not None
    return task


@pytest.fixture
def busy(store: TaskStore, instance: dg.DagsterInstance) -> dict[str, Task]:
    """alpha: one succeeded, one failed, one running (its run in progress), one queued (its
    run queued), one cancelled, one blocked; beta (paused): one succeeded, one queued."""
    tasks = {
        "ok": finished(store, "alpha", TaskStatus.SUCCEEDED, 1.25, (100, 10)),
        "failed": finished(store, "alpha", TaskStatus.FAILED, 0.5, (40, 4)),
        "running": added(store, "alpha"),
        "queued": added(store, "alpha"),
        "cancelled": added(store, "alpha"),
        "blocked": added(store, "alpha"),
        "beta_ok": finished(store, "beta", TaskStatus.SUCCEEDED, 2.0, (7, 3)),
        "beta_queued": added(store, "beta"),
    }
    store.claim(tasks["running"].id, "run-running")
    store.cancel(tasks["cancelled"].id)
    assert store.block(tasks["blocked"].id, "a prerequisite failed")
    ProjectStates(store).set(
        "beta", ProjectState.PAUSED, expected=ProjectState.ACTIVE, reason="maintenance"
    )
    create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={TASK_TAG: tasks["running"].id, PROJECT_TAG: "alpha"},
    )
    create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={TASK_TAG: tasks["queued"].id, PROJECT_TAG: "alpha"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    return tasks


def verification_result(passed: bool) -> VerificationResult:
    return VerificationResult(
        argv=("pytest", "-q"),
        passed=passed,
        exit_code=0 if passed else 1,
        tests_passed=11,
        tests_failed=0 if passed else 1,
        tests_skipped=0,
        runner="pytest",
        duration_s=1.5,
        timed_out=False,
        output_tail="1 failed, 11 passed" if not passed else "11 passed",
    )


def materialize_verification(instance: dg.DagsterInstance, project: str, passed: bool) -> None:
    """A run that records `<project>/verification` as the factory's asset does: the
    materialization with `verification_metadata`, then the `verify_passed` check."""
    key = dg.AssetKey([project, "verification"])

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("verify_passed", asset=key)])
    def verification() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        result = verification_result(passed)
        yield dg.MaterializeResult(asset_key=key, metadata=verification_metadata(result))
        yield dg.AssetCheckResult(asset_key=key, check_name="verify_passed", passed=passed)

    assert dg.materialize([verification], instance=instance).success


@pytest.fixture
def verified(instance: dg.DagsterInstance) -> None:
    """alpha: failed in a run (its check says so); beta: a runless materialization that
    passed (no check); gamma: materialized without a verify command."""
    materialize_verification(instance, "alpha", passed=False)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=["beta", "verification"],
            metadata=verification_metadata(verification_result(True)),
        )
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=["gamma", "verification"], metadata={"configured": False})
    )


def test_status_json_agrees_with_task_list(
    orch: Invoke, busy: dict[str, Task], verified: None
) -> None:
    status = orch("status", "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    listed = orch("task", "list", "--json")
    assert listed.exit_code == 0, listed.output
    tasks = json.loads(listed.stdout)
    counts = Counter((task["project"], task["status"]) for task in tasks)
    today = datetime.fromisoformat(data["at"]).date()
    rows = {row["name"]: row for row in data["projects"]}
    assert set(rows) == {"alpha", "beta", "gamma"}
    for name, row in rows.items():
        assert row["running"] == counts[name, "running"]
        assert row["queued"] == counts[name, "queued"]
        assert row["blocked"] == counts[name, "blocked"]
        # every task here finished a moment ago
        assert row["succeeded_24h"] == counts[name, "succeeded"]
        assert row["failed_24h"] == counts[name, "failed"]
        spent = [
            task
            for task in tasks
            if task["project"] == name
            and task["finished_at"]
            and datetime.fromisoformat(task["finished_at"]).date() == today
        ]
        assert row["cost_today_usd"] == pytest.approx(sum(t["cost_usd"] or 0 for t in spent))
        assert row["tokens_today"] == sum(
            (t["tokens_in"] or 0) + (t["tokens_out"] or 0) for t in spent
        )
        assert row["budget_used_pct"] is None

    alpha, beta, gamma = rows["alpha"], rows["beta"], rows["gamma"]
    assert (alpha["running"], alpha["queued"], alpha["blocked"]) == (1, 1, 1)
    assert (alpha["succeeded_24h"], alpha["failed_24h"]) == (1, 1)
    assert (alpha["cost_today_usd"], alpha["cost_7d_usd"], alpha["tokens_today"]) == (
        1.75,
        1.75,
        154,
    )
    assert (alpha["state"], alpha["priority"]) == ("active", 75)
    assert (beta["state"], beta["state_reason"], beta["priority"]) == ("paused", "maintenance", 25)
    assert (beta["queued"], beta["cost_today_usd"]) == (1, 2.0)

    assert alpha["last_verification"]["passed"] is False
    assert beta["last_verification"]["passed"] is True
    assert 0 <= alpha["last_verification"]["age_s"] < 120
    assert gamma["last_verification"] is None

    # the run in progress holds a slot of the global pool; the queued one holds nothing
    assert data["slots"] == {
        "agents": {"limit": 4, "in_use": 1},
        "heavy": {"limit": 1, "in_use": 0},
    } | {pool: {"limit": 4, "in_use": 0} for pool in PROVIDER_POOLS}
    assert [(p["name"], p["status"], p["paused"]) for p in data["providers"]] == [
        (pool.removeprefix("provider_"), "open", False) for pool in PROVIDER_POOLS
    ]


def test_pool_limits_are_the_instance_s(
    orch: Invoke, busy: dict[str, Task], instance: dg.DagsterInstance
) -> None:
    apply_pool_limits(instance, {"agents": 2})
    data = json.loads(orch("status", "--json").stdout)
    assert data["slots"]["agents"] == {"limit": 2, "in_use": 1}
    assert data["slots"]["heavy"] == {"limit": 1, "in_use": 0}  # not set in the instance yet


def test_status_table(orch: Invoke, busy: dict[str, Task], verified: None) -> None:
    result = orch("status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["PROJECT", "STATE", "PRIORITY"]
    alpha = next(line for line in lines if line.startswith("alpha"))
    assert alpha.split()[:8] == ["alpha", "active", "75", "1", "1", "1", "1", "1"]
    assert "1.75" in alpha and "FAILED" in alpha
    beta = next(line for line in lines if line.startswith("beta"))
    assert "paused (maintenance)" in beta and "passed" in beta
    assert "slots in use: agents 1 of 4, heavy 0 of 1" in result.stdout
    assert "spent today (UTC): $3.75, of which $0.50 on failed or cancelled" in result.stdout


def test_status_without_an_instance(registry: RegistryDir, store: TaskStore) -> None:
    finished(store, "alpha", TaskStatus.SUCCEEDED, 1.0, (1, 1))
    orch = cli(registry, None)
    data = json.loads(orch("status", "--json").stdout)
    assert data["slots"] == {
        "agents": {"limit": 4, "in_use": 0},
        "heavy": {"limit": 1, "in_use": 0},
    } | {pool: {"limit": 4, "in_use": 0} for pool in PROVIDER_POOLS}
    assert {row["name"]: row["succeeded_24h"] for row in data["projects"]} == {
        "alpha": 1,
        "beta": 0,
        "gamma": 0,
    }
    assert all(row["last_verification"] is None for row in data["projects"])
    result = orch("status")
    assert result.exit_code == 0
    assert "no Dagster instance yet" in result.stderr


def test_an_archived_project_keeps_its_row(
    orch: Invoke, registry: RegistryDir, store: TaskStore
) -> None:
    finished(store, "gamma", TaskStatus.SUCCEEDED, 3.0, (1, 1))
    archived = registry.root / "projects" / ".archived"
    archived.mkdir()
    (registry.root / "projects" / "gamma.yaml").rename(archived / "gamma.yaml")
    data = json.loads(orch("status", "--json").stdout)
    gamma = next(row for row in data["projects"] if row["name"] == "gamma")
    assert (gamma["state"], gamma["priority"], gamma["cost_today_usd"]) == ("archived", None, 3.0)


def test_a_later_check_evaluation_decides(
    orch: Invoke, verified: None, instance: dg.DagsterInstance
) -> None:
    """alpha's verification failed in its run; its check, evaluated again afterwards (runless,
    as a later part records checks), passed: the latest evaluation is the verdict."""
    row = next(
        r for r in json.loads(orch("status", "--json").stdout)["projects"] if r["name"] == "alpha"
    )
    assert row["last_verification"]["passed"] is False
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(["alpha", "verification"]),
            check_name="verify_passed",
            passed=True,
        )
    )
    row = next(
        r for r in json.loads(orch("status", "--json").stdout)["projects"] if r["name"] == "alpha"
    )
    assert row["last_verification"]["passed"] is True
