"""Run workers on Celery, on this machine's loopback services: the shipped instance config
(deploy/dagster.celery.yaml: PostgreSQL storage, runs launched through RabbitMQ, their state in
Redis), `orch worker start` refusing a config that would fall back to defaults, and task runs
of two projects pinned to a queue carried out inside a real worker's pool processes, the
daemon's run queue and pools deciding when."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.placement import QUEUES_VAR, run_queue
from orchestration.registry.models import ProjectSpec
from orchestration.settings import HEARTBEAT_STALE_VAR, HEARTBEAT_VAR
from orchestration.tags import CELERY_QUEUE_TAG
from orchestration.tasks.lifecycle import NO_HEARTBEAT, RUN_WORKER_DIED
from orchestration.tasks.models import TaskStatus
from tests.support.agent_log import events
from tests.support.celery import (
    BACKEND,
    BROKER,
    CELERY_CONFIG,
    WORKER_CONFIG,
    instance_env,
    start_worker,
    stop_worker,
)
from tests.support.daemon import daemon_environment, running_daemon, write_workspace
from tests.support.orchestrator import LOG_VAR, Monitor, Orchestrator, write_registry
from tests.support.paths import path_with_fakes
from tests.support.postgres import Database, throwaway_database
from tests.system.test_postgres import DEPLOY_CONFIG

pytestmark = pytest.mark.postgres

#: A fast task heartbeat, so that a dead worker's run is caught in seconds.
HEARTBEAT = {HEARTBEAT_VAR: "2", HEARTBEAT_STALE_VAR: "10"}
#: Run monitoring's poll interval in these tests (seconds).
MONITORING_S = 3


@pytest.fixture
def database() -> Iterator[Database]:
    with throwaway_database("orch_celery") as made:
        yield made


def test_the_celery_config_is_the_deploy_config_with_a_celery_launcher() -> None:
    celery = yaml.safe_load(CELERY_CONFIG.read_text())
    launcher = celery.pop("run_launcher")
    assert celery == yaml.safe_load(DEPLOY_CONFIG.read_text())
    assert launcher == {
        "module": "dagster_celery.launcher",
        "class": "CeleryRunLauncher",
        "config": {
            "broker": {"env": "ORCH_CELERY_BROKER"},
            "backend": {"env": "ORCH_CELERY_BACKEND"},
            "default_queue": "dagster",
        },
    }
    worker = yaml.safe_load(WORKER_CONFIG.read_text())
    assert worker == {
        "execution": {"config": {k: launcher["config"][k] for k in ("broker", "backend")}}
    }


def test_the_celery_instance_loads_against_the_installed_dagster(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in instance_env(tmp_path / "dagster_home", database).items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.get()
    try:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "CeleryRunLauncher"
        assert (launcher.broker, launcher.backend) == (BROKER, BACKEND)  # type: ignore[attr-defined]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    finally:
        instance.dispose()


@pytest.mark.parametrize(
    ("config", "env", "says"),
    [
        (
            "broker: amqp://guest:guest@127.0.0.1:5672//\nbackend: redis://127.0.0.1:6379/5\n",
            {},
            "no execution.config mapping (found at the top: backend, broker)",
        ),
        (
            "execution:\n  config:\n    broker: amqp://guest:guest@127.0.0.1:5672//\n",
            {},
            "execution.config.backend is 'rpc://'",
        ),
        (
            "execution:\n  config:\n    broker: {env: ORCH_CELERY_BROKER}\n"
            "    backend: redis://127.0.0.1:6379/5\n",
            {"ORCH_CELERY_BROKER": ""},
            "reads the variable ORCH_CELERY_BROKER, which is not set",
        ),
        (
            "execution:\n  config:\n    broker: amqp://guest:secret@127.0.0.1:1//\n"
            "    backend: redis://127.0.0.1:6379/5\n",
            {},
            "the broker amqp://guest:***@127.0.0.1:1// does not answer",
        ),
        (
            "execution:\n  config:\n    broker: amqp://guest:guest@127.0.0.1:5672//\n"
            "    backend: redis://127.0.0.1:1/5\n",
            {},
            "the backend redis://127.0.0.1:1/5 does not answer",
        ),
    ],
    ids=["flat", "rpc-backend", "unset-variable", "broker-down", "backend-down"],
)
def test_a_worker_with_a_config_that_would_fall_back_refuses_to_start(
    tmp_path: Path, config: str, env: dict[str, str], says: str
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(config)
    environment = {"DAGSTER_HOME": str(tmp_path), **env}
    result = CliRunner().invoke(
        main, ["worker", "start", "--queue", "q", "--config", str(path)], env=environment
    )
    assert result.exit_code == 1, result.output
    assert says in result.output
    assert "starting:" not in result.output  # nothing was started


def test_the_shipped_worker_config_passes_with_the_services_up() -> None:
    env = {"ORCH_CELERY_BROKER": BROKER, "ORCH_CELERY_BACKEND": BACKEND}
    result = CliRunner().invoke(main, ["worker", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert "broker and backend answer" in result.output


@pytest.mark.slow
def test_task_runs_are_carried_out_inside_a_celery_worker(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = f"host-{uuid.uuid4().hex[:8]}"
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, {"alpha": ("high", 2), "beta": ("normal", 2)}, slots=3)
    for project in ("alpha", "beta"):
        path = Path(env["ORCH_PROJECTS_DIR"]) / f"{project}.yaml"
        path.write_text(path.read_text() + f"placement: {queue}\n")
    instance = instance_env(tmp_path / "dagster_home", database)
    for name, value in instance.items():  # this process opens the instance too
        monkeypatch.setenv(name, value)
    env |= instance
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)
    worker_log = tmp_path / "worker.log"
    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        worker = start_worker(daemon_env, worker_log, "worker-a@%h", queue)
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            tasks = [system.add(p, f"SLEEP1 step {i}") for p in ("alpha", "beta") for i in range(2)]
            done = system.wait_finished(*tasks, timeout_s=240)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done), (
                system.explain("celery") + worker_log.read_text()[-3000:]
            )
            for task in tasks:
                (run,) = system.task_runs(task)
                assert run.tags[CELERY_QUEUE_TAG] == queue
                assert run.tags.get("dagster-celery/task_id")
            system.wait_idle()
        finally:
            system.close()
            stop_worker(worker)
    # Each agent ran below a Celery worker's pool process, not the daemon's code server.
    starts = events("start", Path(env[LOG_VAR]))
    assert len(starts) == len(tasks)
    for start in starts:
        commands = [" ".join(a["cmdline"]) for a in start["ancestors"]]
        assert any("celery" in c and "worker" in c for c in commands), commands


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["whole worker", "pool process"])
def test_a_killed_worker_is_caught_and_its_task_resumes_on_the_other(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill: str
) -> None:
    """A whole Celery worker killed goes unnoticed by Dagster (its task stays STARTED in the
    backend): the task heartbeat catches it, and the run fails `no heartbeat from worker`. A
    killed pool process is seen by run monitoring (Celery reports the worker lost). Either way
    the run's slots are freed and the task (an unpinned project's, on the shared queue) is
    queued again and succeeds on the other worker, continuing its session."""
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    (tmp_path / "agents" / "release").mkdir(parents=True)
    env = write_registry(tmp_path, {"alpha": ("normal", 1)}, slots=2)
    instance = instance_env(tmp_path / "dagster_home", database)
    for name, value in instance.items():
        monkeypatch.setenv(name, value)
    env |= instance | HEARTBEAT
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)
    # The launcher sends an unpinned project's runs to its default queue: both workers take it.
    config = yaml.safe_load(CELERY_CONFIG.read_text())
    config["run_launcher"]["config"]["default_queue"] = shared
    config["run_monitoring"]["poll_interval_seconds"] = MONITORING_S
    (tmp_path / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(config))
    logs = {name: tmp_path / f"worker-{name}.log" for name in ("a", "b")}
    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        workers = {
            name: start_worker(daemon_env, logs[name], f"worker-{name}@%h", shared)
            for name in ("a", "b")
        }
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            task = system.add("alpha", "HOLDafterkill work")
            system.wait_started(task, timeout_s=180)
            (first,) = system.task_runs(task)
            start = events("start", Path(env[LOG_VAR]))[0]
            chain = " ".join(" ".join(a["cmdline"]) for a in start["ancestors"])
            victim = "a" if "worker-a@" in chain else "b"
            assert f"worker-{victim}@" in chain, chain
            killed_at = time.monotonic()
            if kill == "whole worker":
                os.killpg(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait(timeout=30)
            else:  # the pool process the run works in: the first celery ancestor
                pool = next(a for a in start["ancestors"] if "celery" in " ".join(a["cmdline"]))
                os.kill(int(pool["pid"]), signal.SIGKILL)
            system.release("afterkill")

            def reaped() -> bool:
                run = system.instance.get_run_by_id(first.run_id)
                return run is not None and run.status is dg.DagsterRunStatus.FAILURE

            system.wait_for("the dead worker's run failed", reaped, timeout_s=120)
            caught_s = time.monotonic() - killed_at
            print(f"dead worker's run failed {caught_s:.1f} s after the kill")
            records = system.instance.get_records_for_run(
                first.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
            ).records
            messages = [r.event_log_entry.dagster_event.message or "" for r in records]  # type: ignore[union-attr]
            if kill == "whole worker":
                assert any(NO_HEARTBEAT in m for m in messages), messages
                # within the stale bound plus two dispatch ticks
                assert caught_s < float(HEARTBEAT[HEARTBEAT_STALE_VAR]) + 30, caught_s
            else:
                assert any(RUN_WORKER_DIED in m for m in messages), messages
                assert caught_s < 2 * MONITORING_S + 10, caught_s

            (done,) = system.wait_finished(task, timeout_s=180)
            assert done.status is TaskStatus.SUCCEEDED, system.explain("resume")
            runs = system.task_runs(task)
            assert len(runs) == 2
            survivor = "b" if victim == "a" else "a"
            second = events("start", Path(env[LOG_VAR]))[-1]
            chain = " ".join(" ".join(a["cmdline"]) for a in second["ancestors"])
            if kill == "whole worker":
                assert f"worker-{survivor}@" in chain, chain
            assert second["options"].get("resume") == start["session_id"]
            system.wait_idle()
        finally:
            system.close()
            for worker in workers.values():
                stop_worker(worker)


@pytest.mark.slow
def test_two_workers_on_two_queues_keep_slots_priorities_and_placement(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, each on its own queue; 3 agent slots; 12 tasks over 3 projects: one pinned
    to each queue, one placed by the hash over ORCH_CELERY_QUEUES. All succeed, no sample sees
    more than 3 runs in progress, the critical project's tasks start first, and each project's runs
    carry its queue and are carried out by that queue's worker."""
    tag = uuid.uuid4().hex[:6]
    queues = {"a": f"host-a-{tag}", "b": f"host-b-{tag}"}
    projects = {"urgent": ("critical", 3), "normal": ("normal", 3), "later": ("low", 3)}
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, projects, slots=3)
    for project, queue in (("urgent", queues["a"]), ("normal", queues["b"])):
        path = Path(env["ORCH_PROJECTS_DIR"]) / f"{project}.yaml"
        path.write_text(path.read_text() + f"placement: {queue}\n")
    instance = instance_env(tmp_path / "dagster_home", database)
    for name, value in instance.items():
        monkeypatch.setenv(name, value)
    env |= instance | {QUEUES_VAR: f"{queues['a']},{queues['b']}"}
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)
    hashed = "a" if run_queue(spec_of(env, "later"), tuple(queues.values())) == queues["a"] else "b"
    expected_worker = {"urgent": "a", "normal": "b", "later": hashed}
    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        workers = {
            name: start_worker(
                daemon_env, tmp_path / f"worker-{name}.log", f"worker-{name}@%h", queue
            )
            for name, queue in queues.items()
        }
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            with Monitor(system) as monitor:
                tasks = {
                    project: [system.add(project, f"SLEEP2 {project} {i}") for i in range(4)]
                    for project in projects
                }
                every = [t for ids in tasks.values() for t in ids]
                done = system.wait_finished(*every, timeout_s=300)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done), system.explain("queues")
            peak = max(sample.in_use for sample in monitor.samples)
            assert 1 <= peak <= 3, peak
            calls = system.calls()
            starts = {p: sorted(calls[t].start for t in ids) for p, ids in tasks.items()}
            # The critical project's tasks all start before the others' (below it, the policy's
            # fair share may let a waiting low project in between normal tasks, by design).
            assert starts["urgent"][-1] < min(starts["normal"][0], starts["later"][0]), starts
            assert starts["normal"][0] < starts["later"][0], starts
            for project, ids in tasks.items():
                for task in ids:
                    (run,) = system.task_runs(task)
                    assert run.tags[CELERY_QUEUE_TAG] == queues[expected_worker[project]]
            system.wait_idle()
        finally:
            system.close()
            for worker in workers.values():
                stop_worker(worker)
    for entry in events("start", Path(env[LOG_VAR])):
        project = Path(entry["cwd"]).parent.parent.name
        chain = " ".join(" ".join(a["cmdline"]) for a in entry["ancestors"])
        assert f"worker-{expected_worker[project]}@" in chain, (project, chain)


def spec_of(env: dict[str, str], project: str) -> ProjectSpec:
    data = yaml.safe_load((Path(env["ORCH_PROJECTS_DIR"]) / f"{project}.yaml").read_text())
    return ProjectSpec.model_validate(data)
