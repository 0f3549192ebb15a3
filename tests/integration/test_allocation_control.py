"""Applying the allocation to Dagster (`orchestration/allocation/control.py`) and
`orch allocation show|set|apply|rebalance`: a real Dagster instance made from a copy of the
repository's dagster.yaml (pool granularity `run`), the real SQLite task store and a real
registry in a temporary directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result
from dagster._core.test_utils import create_run_for_test

from orchestration.allocation.control import (
    PRIORITY_TAG,
    PROJECT_TAG,
    TASK_TAG,
    AllocationOverrides,
    ProjectLimits,
    apply_pool_limits,
    current_allocation,
    effective_settings,
    loads,
    rebalance,
    task_runs,
)
from orchestration.allocation.providers import (
    DEFAULT_GRACE_S,
    ProviderState,
    ProviderStatus,
    grace_seconds,
)
from orchestration.cli import main
from orchestration.tasks.lifecycle import Launch, dispatch
from orchestration.tasks.models import Task
from orchestration.tasks.store import TaskStore
from tests.integration.conftest import QUEUED_RUN_ORIGIN
from tests.support.registry import PROVIDER_POOLS, RegistryDir

Invoke = Callable[..., Result]


YAML_LIMITS = {"agents": 4, "heavy": 1, "project_alpha": 2, "project_beta": 1} | dict.fromkeys(
    PROVIDER_POOLS, 4
)


def global_slots(slots: int) -> dict[str, int]:
    """The limits that follow the global slot count when it is `slots`."""
    return {"agents": slots} | dict.fromkeys(PROVIDER_POOLS, slots)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    """alpha: priority high (75), max_parallel 2; beta: priority low (25), max_parallel 1;
    the shipped pools (agents 4, heavy 1)."""
    registry_dir.project("alpha", "priority: high\nagent:\n  max_parallel: 2\n")
    registry_dir.project("beta", "priority: low\n")
    return registry_dir


def pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}


def queue_run(instance: dg.DagsterInstance, task: Task, priority: str = "0") -> str:
    """A QUEUED run of `task`, tagged as the dispatch sensor tags it; its run id."""
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={TASK_TAG: task.id, PROJECT_TAG: task.project, PRIORITY_TAG: priority},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    return run.run_id


def start_run(instance: dg.DagsterInstance, project: str, task_id: str) -> str:
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={TASK_TAG: task_id, PROJECT_TAG: project},
    )
    return run.run_id


def priority_of(instance: dg.DagsterInstance, run_id: str) -> int:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return int(run.tags[PRIORITY_TAG])


# --- effective settings and overrides ---------------------------------------------------------


def test_effective_settings_are_the_yaml_values_without_overrides(registry: RegistryDir) -> None:
    current = effective_settings(registry.load(), {})
    assert current.slots == 4
    assert dict(current.pools) == {"agents": 4, "heavy": 1} | dict.fromkeys(PROVIDER_POOLS, 4)
    assert dict(current.projects) == {
        "alpha": ProjectLimits(priority=75, max_parallel=2),
        "beta": ProjectLimits(priority=25, max_parallel=1),
    }
    assert current.ageing_s == 3600.0
    assert current.pool_limits() == YAML_LIMITS


def test_overrides_replace_slots_priority_and_max_parallel(registry: RegistryDir) -> None:
    overrides = {"slots": 7, "priority:alpha": 10, "max_parallel:beta": 9, "priority:ghost": 5}
    current = effective_settings(registry.load(), overrides)
    assert current.slots == 7
    assert dict(current.projects) == {
        "alpha": ProjectLimits(priority=10, max_parallel=2),
        "beta": ProjectLimits(priority=25, max_parallel=9),
    }
    assert current.pool_limits() == global_slots(7) | {
        "heavy": 1,
        "project_alpha": 2,
        "project_beta": 9,
    }


def test_ageing_comes_from_the_global_pool(registry: RegistryDir) -> None:
    registry.write(
        "config/pools.yaml",
        """
        agents:
          slots: 3
          ageing_seconds: 90
        """,
    )
    current = effective_settings(registry.load(), {})
    assert (current.slots, current.ageing_s) == (3, 90.0)
    assert current.pool_limits() == global_slots(3) | {"project_alpha": 2, "project_beta": 1}


def test_a_provider_account_s_pool_follows_its_state(registry: RegistryDir) -> None:
    registry.write(
        "config/pools.yaml",
        """
        agents: {slots: 4}
        provider_anthropic: {slots: 2, grace_seconds: 10}
        """,
    )
    loaded = registry.load()
    assert effective_settings(loaded, {}).pools["provider_anthropic"] == 2
    states = {
        "anthropic": ProviderState("anthropic", ProviderStatus.PAUSED),
        "openai": ProviderState("openai", ProviderStatus.CANARY),
    }
    current = effective_settings(loaded, {"slots": 6}, providers=states)
    assert current.pools["provider_anthropic"] == 0
    assert current.pools["provider_openai"] == 1
    assert current.pools["provider_google"] == 6, "an open account's pool is the global one's"
    assert grace_seconds(loaded.pools, "anthropic") == 10.0
    assert grace_seconds(loaded.pools, "openai") == DEFAULT_GRACE_S


def test_overrides_are_shared_through_the_task_database(store: TaskStore) -> None:
    AllocationOverrides(store).set({"slots": 2, "priority:alpha": 10})
    AllocationOverrides(store).set({"priority:alpha": 90})
    other = TaskStore(store.url)
    try:
        assert AllocationOverrides(other).all() == {"slots": 2, "priority:alpha": 90}
        AllocationOverrides(other).clear()
    finally:
        other.dispose()
    assert AllocationOverrides(store).all() == {}


# --- pool limits in the instance --------------------------------------------------------------


def test_apply_pool_limits_sets_every_pool_and_then_only_what_changed(
    instance: dg.DagsterInstance, registry: RegistryDir, store: TaskStore
) -> None:
    current = effective_settings(registry.load(), {})
    shared = sorted(pool for pool in YAML_LIMITS if not pool.startswith("project_"))
    assert apply_pool_limits(instance, current.pool_limits()) == [
        *shared,
        "project_alpha",
        "project_beta",
    ]
    assert pool_limits(instance) == YAML_LIMITS
    assert apply_pool_limits(instance, current.pool_limits()) == []

    overrides = AllocationOverrides(store)
    overrides.set({"max_parallel:alpha": 5, "slots": 6})
    current = effective_settings(registry.load(), overrides.all())
    assert apply_pool_limits(instance, current.pool_limits()) == [
        *sorted(global_slots(6)),
        "project_alpha",
    ]
    assert pool_limits(instance) == YAML_LIMITS | global_slots(6) | {"project_alpha": 5}


def test_apply_pool_limits_writes_at_most_so_many_shared_pools_first(
    instance: dg.DagsterInstance, registry: RegistryDir
) -> None:
    limits = effective_settings(registry.load(), {}).pool_limits()
    shared = sorted(pool for pool in limits if not pool.startswith("project_"))
    first = apply_pool_limits(instance, limits, most=len(shared) + 1)
    assert first == [*shared, "project_alpha"]
    assert "project_beta" not in pool_limits(instance)
    assert apply_pool_limits(instance, limits, most=len(shared) + 1) == ["project_beta"]
    assert pool_limits(instance) == YAML_LIMITS
    assert apply_pool_limits(instance, limits, most=1) == []


# --- runs, loads and rebalancing --------------------------------------------------------------


def test_task_runs_and_loads_see_only_task_runs(
    instance: dg.DagsterInstance, registry: RegistryDir, store: TaskStore
) -> None:
    current = effective_settings(registry.load(), {})
    queued = store.add("alpha", "queued one", priority=60)
    unknown = store.add("beta", "queued, then deleted from view")
    extra = store.add("beta", "runnable, no run yet")
    assert queued and unknown and extra
    queue_run(instance, queued)
    queue_run(instance, unknown)
    start_run(instance, "alpha", "t000000000run")
    create_run_for_test(
        instance, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=QUEUED_RUN_ORIGIN
    )
    create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED)

    runs = task_runs(instance)
    assert len(runs.queued) == 2 and len(runs.running) == 1

    by_name = {
        load.name: load
        for load in loads(current, runs, {queued.id: queued}, 1e12, extra_queued=[extra])
    }
    assert by_name["alpha"].running == 1
    assert [t.task_id for t in by_name["alpha"].queued] == [queued.id]
    assert by_name["alpha"].queued[0].priority == 60
    assert by_name["alpha"].queued[0].waited_s > 0
    assert [t.task_id for t in by_name["beta"].queued] == [extra.id]  # the unknown one left out
    assert (by_name["alpha"].priority, by_name["alpha"].max_parallel) == (75, 2)


def test_rebalance_retags_queued_task_runs_with_the_policy_priorities(
    instance: dg.DagsterInstance, registry: RegistryDir, store: TaskStore
) -> None:
    current = effective_settings(registry.load(), {})
    tasks = [store.add(project, f"task {i}") for i, project in enumerate(["alpha"] * 3 + ["beta"])]
    runs = {task.id: queue_run(instance, task) for task in tasks if task}
    start_run(instance, "alpha", "t000000000run")
    other = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={PRIORITY_TAG: "7"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )

    expected, _, _ = current_allocation(instance, store, current)
    changed = rebalance(instance, store, current)

    assert changed == {runs[task_id]: expected.priorities[task_id] for task_id in runs}
    for task_id, run_id in runs.items():
        assert priority_of(instance, run_id) == expected.priorities[task_id]
    assert priority_of(instance, other.run_id) == 7
    alpha = [priority_of(instance, runs[t.id]) for t in tasks if t and t.project == "alpha"]
    assert alpha == sorted(alpha, reverse=True) and len(set(alpha)) == 3  # oldest first
    assert rebalance(instance, store, current) == {}  # nothing left to change


def test_a_live_priority_override_lifts_a_projects_queued_runs(
    instance: dg.DagsterInstance, registry: RegistryDir, store: TaskStore
) -> None:
    """The live change: `set` a project's priority and rebalance, and its queued runs move
    ahead of the others without restarting anything."""
    alpha = [store.add("alpha", f"alpha {i}") for i in range(2)]
    beta = [store.add("beta", f"beta {i}") for i in range(2)]
    alpha_runs = [queue_run(instance, t) for t in alpha if t]
    beta_runs = [queue_run(instance, t) for t in beta if t]
    overrides = AllocationOverrides(store)

    rebalance(instance, store, effective_settings(registry.load(), overrides.all()))
    before = {r: priority_of(instance, r) for r in alpha_runs + beta_runs}
    assert max(before[r] for r in beta_runs) < min(before[r] for r in alpha_runs)

    overrides.set({"priority:beta": 100})
    changed = rebalance(instance, store, effective_settings(registry.load(), overrides.all()))
    after = {r: priority_of(instance, r) for r in alpha_runs + beta_runs}
    assert set(beta_runs) <= set(changed)
    assert all(after[r] > before[r] for r in beta_runs)
    assert after[beta_runs[0]] > max(after[r] for r in alpha_runs)  # beta is next to start
    assert after[beta_runs[1]] > after[alpha_runs[1]]


# --- the CLI ----------------------------------------------------------------------------------


def cli_env(registry: RegistryDir, dagster_home: Path | None) -> dict[str, str | None]:
    settings = registry.settings
    return {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "ORCH_TASKS_DB_URL": None,
        "DAGSTER_HOME": str(dagster_home) if dagster_home else None,
    }


@pytest.fixture
def orch(registry: RegistryDir, dagster_home: Path) -> Invoke:
    """Run `orch ARGS...` against `registry`, with DAGSTER_HOME at the test's instance."""

    def invoke(*args: str) -> Result:
        env = cli_env(registry, dagster_home)
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_show_json(orch: Invoke, instance: dg.DagsterInstance, store: TaskStore) -> None:
    task = store.add("alpha", "queued one")
    assert task
    queue_run(instance, task)
    start_run(instance, "alpha", "t000000000run")

    result = orch("allocation", "show", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["slots"] == 4 and data["in_use"] == 1 and data["ageing_s"] == 3600.0
    assert data["pools"] == YAML_LIMITS
    assert data["holders"] == [
        {"project": "alpha", "task": "t000000000run", "run_id": data["holders"][0]["run_id"]}
    ]
    projects = {p["name"]: p for p in data["projects"]}
    assert projects["alpha"] == {
        "name": "alpha",
        "state": "active",
        "priority": 75,
        "max_parallel": 2,
        "running": 1,
        "queued": 1,
        "target_share": 0.5,  # running + queued = 2 = max_parallel, of 4 slots
        "actual_share": 0.25,
    }
    assert projects["beta"]["queued"] == 0 and projects["beta"]["target_share"] == 0.0

    # alpha: weight 8 (high), one running: finish (1 + 0 + 1) / 8 = 0.25, rank 9_999_999 - 250
    assert data["next"] == [{"task": task.id, "project": "alpha", "priority": 9_999_749}]

    # a task the dispatch sensor has not made a run of yet is queued all the same, and the
    # queue's order is by the policy: beta (low) is behind alpha (high, one running) here
    beta = store.add("beta", "not dispatched yet")
    assert beta
    data = json.loads(orch("allocation", "show", "--json").stdout)
    projects = {p["name"]: p for p in data["projects"]}
    assert (projects["alpha"]["queued"], projects["beta"]["queued"]) == (1, 1)
    assert projects["beta"]["target_share"] == 0.25
    assert [(n["task"], n["project"]) for n in data["next"]] == [
        (task.id, "alpha"),
        (beta.id, "beta"),
    ]
    assert data["next"][0]["priority"] > data["next"][1]["priority"]
    assert len(json.loads(orch("allocation", "show", "--json", "--next", "1").stdout)["next"]) == 1
    assert (
        "next in the queue (as pool limits allow): " + task.id in orch("allocation", "show").stdout
    )


def test_dispatch_creates_at_most_limit_runs_a_tick_the_highest_ranked_first(
    instance: dg.DagsterInstance, registry: RegistryDir, store: TaskStore
) -> None:
    """An import of many tasks enters the run queue a few per tick, in the policy's order: the
    high-priority project's tasks before the low one's, whatever order they were added in."""
    loaded = registry.load()
    current = effective_settings(loaded, {})
    added = [store.add(project, f"task {i}") for i in range(4) for project in ("beta", "alpha")]
    assert all(added)

    def tick() -> list[Launch]:
        """One tick, whose launches the daemon turns into queued runs."""
        launches = dispatch(
            store, instance, loaded, fingerprint="f", allocation=current, limit=3
        ).launches
        for launch in launches:
            queue_run(instance, store.require(launch.task.id), launch.tags[PRIORITY_TAG])
        return launches

    first, second, third = tick(), tick(), tick()

    assert [len(first), len(second), len(third)] == [3, 3, 2]
    requested = [r.task.id for r in [*first, *second, *third]]
    assert sorted(requested) == sorted(t.id for t in added if t)  # each once
    projects = [r.tags[PROJECT_TAG] for r in [*first, *second, *third]]
    # alpha (high, weight 8) is due at 1/8, 2/8, ...; beta (low, weight 2) at 1/2, 2/2, ...;
    # alpha's 4th and beta's 1st tie at 1/2, and the earlier task goes first
    assert projects == ["alpha"] * 3 + ["beta", "alpha"] + ["beta"] * 3
    for batch in (first, second, third):
        ranks = [int(r.tags[PRIORITY_TAG]) for r in batch]
        assert ranks == sorted(ranks, reverse=True)
    assert all(t.dispatched for t in store.tasks(ids=requested))
    assert tick() == []


def test_show_table(orch: Invoke) -> None:
    result = orch("allocation", "show")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "slots: 0 of 4 in use"
    assert lines[1].split() == [
        "PROJECT",
        "STATE",
        "PRIORITY",
        "MAX",
        "RUNNING",
        "QUEUED",
        "TARGET",
        "ACTUAL",
    ]
    assert lines[2].split() == ["alpha", "active", "75", "2", "0", "0", "0%", "0%"]


def test_set_project_priority_and_max_parallel(
    orch: Invoke, instance: dg.DagsterInstance, store: TaskStore
) -> None:
    result = orch("allocation", "set", "beta", "--priority", "high", "--max-parallel", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "set priority:beta=75, max_parallel:beta=3"
    assert "pool limits changed" in result.stderr
    assert AllocationOverrides(store).all() == {"priority:beta": 75, "max_parallel:beta": 3}
    assert pool_limits(instance) == YAML_LIMITS | {"project_beta": 3}


def test_set_slots(orch: Invoke, instance: dg.DagsterInstance, store: TaskStore) -> None:
    result = orch("allocation", "set", "--slots", "2")
    assert result.exit_code == 0, result.output
    assert AllocationOverrides(store).all() == {"slots": 2}
    assert pool_limits(instance)["agents"] == 2


def test_set_requeues_runs_by_the_new_priority(
    orch: Invoke, instance: dg.DagsterInstance, store: TaskStore
) -> None:
    alpha, beta = store.add("alpha", "a"), store.add("beta", "b")
    assert alpha and beta
    alpha_run, beta_run = queue_run(instance, alpha), queue_run(instance, beta)
    assert orch("allocation", "rebalance").exit_code == 0
    assert priority_of(instance, alpha_run) > priority_of(instance, beta_run)

    result = orch("allocation", "set", "beta", "--priority", "100")
    assert result.exit_code == 0, result.output
    assert "queued runs re-prioritised: 1" in result.stderr
    assert priority_of(instance, beta_run) > priority_of(instance, alpha_run)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gamma", "--priority", "high"], "no project named 'gamma' (known projects: alpha, beta)"),
        ([], "nothing to set: give --priority, --max-parallel or --slots"),
        (["alpha"], "nothing to set"),
        (["--priority", "high"], "--priority and --max-parallel need a PROJECT"),
        (["alpha", "--priority", "urgent"], "--priority: 'urgent' is not a priority"),
        (["alpha", "--priority", "150"], "--priority: use 0-100 or a class name"),
        (["alpha", "--priority", "-5"], "--priority: use 0-100 or a class name"),
    ],
)
def test_set_refuses_and_changes_nothing(
    orch: Invoke,
    instance: dg.DagsterInstance,
    store: TaskStore,
    args: list[str],
    message: str,
) -> None:
    assert orch("allocation", "apply").exit_code == 0
    before = pool_limits(instance)
    result = orch("allocation", "set", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert AllocationOverrides(store).all() == {}
    assert pool_limits(instance) == before == YAML_LIMITS


def test_apply_clears_overrides_and_restores_the_yaml_limits(
    orch: Invoke, instance: dg.DagsterInstance, store: TaskStore
) -> None:
    assert orch("allocation", "set", "alpha", "--max-parallel", "5").exit_code == 0
    assert orch("allocation", "set", "--slots", "9").exit_code == 0
    assert pool_limits(instance) == YAML_LIMITS | global_slots(9) | {"project_alpha": 5}

    result = orch("allocation", "apply")
    assert result.exit_code == 0, result.output
    changed = ", ".join([*sorted(global_slots(9)), "project_alpha"])  # shared pools first
    assert f"pool limits changed: {changed}" in result.stderr
    assert AllocationOverrides(store).all() == {}
    assert pool_limits(instance) == YAML_LIMITS


def test_apply_refuses_a_broken_registry(
    orch: Invoke, registry: RegistryDir, instance: dg.DagsterInstance, store: TaskStore
) -> None:
    AllocationOverrides(store).set({"slots": 9})
    registry.write("projects/broken.yaml", "name: broken\n")  # no repo
    result = orch("allocation", "apply")
    assert result.exit_code == 1
    assert "the registry has errors" in result.stderr
    assert AllocationOverrides(store).all() == {"slots": 9}
    assert pool_limits(instance) == {}


def test_rebalance_prints_the_count(
    orch: Invoke, instance: dg.DagsterInstance, store: TaskStore
) -> None:
    for i in range(2):
        task = store.add("alpha", f"task {i}")
        assert task
        queue_run(instance, task)
    result = orch("allocation", "rebalance")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "re-prioritised 2 queued run(s)"
    assert orch("allocation", "rebalance").stdout.strip() == "re-prioritised 0 queued run(s)"


def test_the_instance_under_orch_home_is_found_without_dagster_home(
    registry: RegistryDir, template_home: Path
) -> None:
    shutil.copytree(template_home, registry.settings.dagster_home)
    result = CliRunner().invoke(
        main, ["allocation", "set", "--slots", "3"], env=cli_env(registry, None)
    )
    assert result.exit_code == 0, result.output
    instance = dg.DagsterInstance.from_config(str(registry.settings.dagster_home))
    try:
        assert pool_limits(instance)["agents"] == 3
    finally:
        instance.dispose()


@pytest.mark.parametrize(
    "args",
    [
        ["show"],
        ["show", "--json"],
        ["set", "alpha", "--priority", "high"],
        ["set", "--slots", "2"],
        ["apply"],
        ["rebalance"],
    ],
)
def test_without_an_instance_the_commands_say_to_run_orch_up(
    registry: RegistryDir, args: list[str]
) -> None:
    result = CliRunner().invoke(
        main, ["allocation", *args], env=cli_env(registry, None), catch_exceptions=False
    )
    assert result.exit_code == 1
    assert "no Dagster instance yet" in result.stderr and "orch up" in result.stderr
    assert not registry.settings.dagster_home.exists()


def test_a_maintenance_hold_stops_every_start_until_released(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    from orchestration.allocation.control import hold_starts, release_starts, settings_now

    AllocationOverrides(store).set({"slots": 3})
    hold_starts(instance, store, registry.load())
    assert pool_limits(instance)["agents"] == 0
    assert settings_now(registry.load(), store).slots == 0  # every dispatch tick keeps it so
    AllocationOverrides(store).clear()  # `orch allocation apply` does not lift the hold
    assert settings_now(registry.load(), store).slots == 0
    release_starts(instance, store, registry.load())
    assert pool_limits(instance)["agents"] == 4
    assert AllocationOverrides(store).all() == {}
