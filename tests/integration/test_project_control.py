"""Project lifecycle actions (`orchestration/control/`) against a real Dagster instance made from
the repository's dagster.yaml, the real SQLite task store and a real registry: states and their
audit log, pools and holds, `orch projects ...`, the `project_control` job and the schedule's
skip. The daemon-driven behaviour (a paused project's runs wait, a stopped agent's work is kept
and continued) is in tests/system/test_project_lifecycle.py."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.test_utils import create_run_for_test

from orchestration.allocation.control import settings_now
from orchestration.cli import main
from orchestration.control.actions import ControlError, control_project
from orchestration.control.runs import REGISTRY_ASSET, hold_project_runs
from orchestration.control.states import Action, ProjectState
from orchestration.control.store import ProjectStates
from orchestration.tags import HOLD_TAG, HOLD_VALUE, PROJECT_TAG, TASK_TAG, project_pool
from orchestration.tasks.lifecycle import interrupt
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.integration.conftest import QUEUED_RUN_ORIGIN
from tests.support.registry import RegistryDir


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> RegistryDir:
    registry_dir.project("alpha", "agent:\n  max_parallel: 2\nschedule: '0 6 * * *'\n")
    registry_dir.project("beta")
    registry_dir.use_in(monkeypatch)
    return registry_dir


def act(
    action: Action,
    project: str,
    registry: RegistryDir,
    store: TaskStore,
    instance: dg.DagsterInstance | None,
    **options: object,
):  # type: ignore[no-untyped-def]
    return control_project(
        action,
        project,
        settings=registry.settings,
        registry=registry.load(),
        store=store,
        instance=instance,
        actor="tester",
        **options,  # type: ignore[arg-type]
    )


def pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}


def test_pause_and_resume_move_the_state_log_it_and_set_the_pool(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    paused = act(Action.PAUSE, "alpha", registry, store, instance, reason="release freeze")
    assert (paused.before, paused.after, paused.changed) == (
        ProjectState.ACTIVE,
        ProjectState.PAUSED,
        True,
    )
    record = ProjectStates(store).get("alpha")
    assert record.state is ProjectState.PAUSED and record.reason == "release freeze"
    assert record.actor == "tester" and record.since is not None
    assert pool_limits(instance)[project_pool("alpha")] == 0
    assert settings_now(registry.load(), store).pool_limits()[project_pool("alpha")] == 0
    assert settings_now(registry.load(), store).pool_limits()[project_pool("beta")] == 1

    again = act(Action.PAUSE, "alpha", registry, store, instance)
    assert not again.changed and "already paused" in again.message()

    act(Action.RESUME, "alpha", registry, store, instance)
    assert ProjectStates(store).get("alpha").state is ProjectState.ACTIVE
    assert pool_limits(instance)[project_pool("alpha")] == 2
    log = [(e.project, e.from_state, e.to_state, e.reason) for e in ProjectStates(store).log()]
    assert log == [
        ("alpha", "active", "paused", "release freeze"),
        ("alpha", "paused", "active", None),
    ]
    observed = instance.fetch_observations(REGISTRY_ASSET, limit=10).records
    transitions = sorted(
        (r.asset_observation.metadata["from"].value, r.asset_observation.metadata["to"].value)
        for r in observed
        if r.asset_observation is not None
    )
    assert transitions == [("active", "paused"), ("paused", "active")]


@pytest.mark.parametrize(
    ("steps", "action", "allowed"),
    [
        ((), Action.REMOVE, "archived, paused, stopped"),
        ((), Action.ARCHIVE, "paused, stopped"),
        ((Action.PAUSE,), Action.UNARCHIVE, "archived"),
        ((Action.STOP,), Action.PAUSE, "active"),
    ],
)
def test_a_transition_not_allowed_names_the_allowed_states(
    registry: RegistryDir,
    store: TaskStore,
    steps: tuple[Action, ...],
    action: Action,
    allowed: str,
) -> None:
    for step in steps:
        act(step, "alpha", registry, store, None)
    before = ProjectStates(store).log()
    with pytest.raises(ControlError, match=f"allowed only from {allowed}"):
        act(action, "alpha", registry, store, None)
    assert ProjectStates(store).log() == before  # nothing changed


def test_an_unknown_project_is_refused(registry: RegistryDir, store: TaskStore) -> None:
    with pytest.raises(ControlError, match="no project named 'ghost'.*alpha, beta"):
        act(Action.PAUSE, "ghost", registry, store, None)


def test_remove_needs_purge_and_yes(registry: RegistryDir, store: TaskStore) -> None:
    act(Action.PAUSE, "alpha", registry, store, None)
    with pytest.raises(ControlError, match="--purge --yes"):
        act(Action.REMOVE, "alpha", registry, store, None, purge=True)
    assert ProjectStates(store).get("alpha").state is ProjectState.PAUSED


def test_archive_refuses_while_a_task_runs(registry: RegistryDir, store: TaskStore) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.claim(task.id, "run-1")
    act(Action.PAUSE, "alpha", registry, store, None)
    with pytest.raises(ControlError, match=f"1 task\\(s\\) still running \\({task.id}\\)"):
        act(Action.ARCHIVE, "alpha", registry, store, None)


def test_queued_runs_of_a_paused_project_without_a_task_are_held_then_released(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    verification = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        asset_selection={dg.AssetKey(["alpha", "verification"])},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    other = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={PROJECT_TAG: "beta"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    task_run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={PROJECT_TAG: "alpha", TASK_TAG: "t123"},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    act(Action.PAUSE, "alpha", registry, store, instance)

    def hold(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.tags.get(HOLD_TAG)

    assert hold(verification.run_id) == HOLD_VALUE
    assert hold(other.run_id) is None and hold(task_run.run_id) is None  # pool holds tasks
    assert hold_project_runs(instance, {"alpha"}) == (0, 0)  # idempotent
    act(Action.RESUME, "alpha", registry, store, instance)
    assert hold(verification.run_id) not in (None, HOLD_VALUE)


def test_stop_interrupts_a_running_task_and_leaves_queued_runs_held(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    running = store.add("alpha", "long work")
    waiting = store.add("alpha", "next")
    assert running is not None and waiting is not None
    store.mark_dispatched(running.id)
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={PROJECT_TAG: "alpha", TASK_TAG: running.id},
    )
    store.claim(running.id, run.run_id)
    store.mark_dispatched(waiting.id)
    queued = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={PROJECT_TAG: "alpha", TASK_TAG: waiting.id},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )

    outcome = act(Action.STOP, "alpha", registry, store, instance, reason="bad prompt")

    assert outcome.after is ProjectState.STOPPED
    marked = store.require(running.id)
    assert marked.extra["interrupt"]["kind"] == "stopped"
    assert marked.extra["interrupt"]["reason"] == "bad prompt"
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.tags["orch/interrupted"] == "stopped"
    still = instance.get_run_by_id(queued.run_id)
    assert still is not None and still.status == dg.DagsterRunStatus.QUEUED
    assert store.require(waiting.id).status is TaskStatus.QUEUED


def test_interrupting_a_run_that_never_started_queues_its_task_at_once(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.mark_dispatched(task.id)
    run = create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.QUEUED,
        tags={PROJECT_TAG: "alpha", TASK_TAG: task.id},
        remote_job_origin=QUEUED_RUN_ORIGIN,
    )
    assert interrupt(store, instance, store.require(task.id), kind="preempted", reason="x")
    after = store.require(task.id)
    assert after.status is TaskStatus.QUEUED and not after.dispatched
    assert after.attempts == 0  # the cancelled dispatch does not count
    assert "interrupt" not in after.extra
    cancelled = instance.get_run_by_id(run.run_id)
    assert cancelled is not None and cancelled.status == dg.DagsterRunStatus.CANCELED


def test_checkpoint_requeues_the_task_with_its_session_and_history(store: TaskStore) -> None:
    task = store.add("alpha", "work")
    assert task is not None
    store.mark_dispatched(task.id)
    store.claim(task.id, "run-1")
    assert store.checkpoint(task.id, "run-1", commit="c1", session_id="s1") is None  # unasked
    store.request_interrupt(task.id, "stopped", "project stopped")
    assert store.checkpoint(task.id, "other-run", commit="c1", session_id="s1") is None
    continued = store.checkpoint(task.id, "run-1", commit="c1", session_id="s1", base="b0")
    assert continued is not None
    assert continued.status is TaskStatus.QUEUED and not continued.dispatched
    assert continued.attempts == 0 and continued.commit == "c1"
    assert continued.resume_session == "s1" and continued.extra["base"] == "b0"
    assert [(i["kind"], i["commit"], i["session"]) for i in continued.interruptions] == [
        ("stopped", "c1", "s1")
    ]
    assert "interrupt" not in continued.extra


def test_cli_lists_states_and_the_history(
    registry: RegistryDir, store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner = CliRunner()
    paused = runner.invoke(main, ["projects", "pause", "alpha", "--reason", "freeze"])
    assert paused.exit_code == 0, paused.output
    assert "alpha: active -> paused" in paused.output
    again = runner.invoke(main, ["projects", "pause", "alpha"])
    assert again.exit_code == 0 and "already paused" in again.output
    refused = runner.invoke(main, ["projects", "unarchive", "alpha"])
    assert refused.exit_code == 1
    assert "allowed only from archived" in refused.output

    listed = json.loads(runner.invoke(main, ["projects", "list", "--json"]).output)
    by_name = {row["name"]: row for row in listed}
    assert by_name["alpha"]["state"] == "paused"
    assert by_name["alpha"]["state_reason"] == "freeze"
    assert by_name["alpha"]["state_since"]
    assert by_name["beta"]["state"] == "active" and by_name["beta"]["state_since"] is None
    only = json.loads(
        runner.invoke(main, ["projects", "list", "--json", "--state", "paused"]).output
    )
    assert [row["name"] for row in only] == ["alpha"]
    table = runner.invoke(main, ["projects", "list"]).output
    assert "paused (freeze)" in table

    history = json.loads(runner.invoke(main, ["projects", "history", "alpha", "--json"]).output)
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [("active", "paused", "freeze")]


def test_the_project_control_job_pauses_and_resumes(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    from orchestration.defs.definitions import build_definitions

    defs = build_definitions(registry.load())
    job = defs.resolve_job_def("project_control")
    config = {"ops": {"control_project": {"config": {"project": "alpha", "action": "pause"}}}}
    assert job.execute_in_process(run_config=config, instance=instance).success
    record = ProjectStates(store).get("alpha")
    assert record.state is ProjectState.PAUSED and record.actor.startswith("dagster run ")

    bad = {"ops": {"control_project": {"config": {"project": "alpha", "action": "unarchive"}}}}
    failed = job.execute_in_process(run_config=bad, instance=instance, raise_on_error=False)
    assert not failed.success
    assert ProjectStates(store).get("alpha").state is ProjectState.PAUSED


def test_a_paused_project_schedule_skips(
    registry: RegistryDir, store: TaskStore, instance: dg.DagsterInstance
) -> None:
    from orchestration.defs.definitions import build_definitions

    defs = build_definitions(registry.load())
    schedule = defs.resolve_schedule_def("alpha_refresh")
    resources = defs.resources or {}
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        assert isinstance(schedule.evaluate_tick(context).run_requests, list)
        first = schedule.evaluate_tick(context)
        assert first.run_requests and not first.skip_message
        act(Action.PAUSE, "alpha", registry, store, instance, reason="freeze")
        skipped = schedule.evaluate_tick(context)
    assert not skipped.run_requests
    assert skipped.skip_message == "project paused: freeze"


def test_the_launchpad_offers_every_action() -> None:
    from orchestration.defs.control import ControlAction

    assert [a.name for a in ControlAction] == [a.value for a in Action]
