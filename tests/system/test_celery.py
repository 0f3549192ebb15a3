"""Run workers on Celery, on this machine's loopback services: the shipped instance config
(deploy/dagster.celery.yaml: PostgreSQL storage, runs launched through RabbitMQ, their state in
Redis), `orch worker start` refusing a config that would fall back to defaults, and task runs
of two projects pinned to a queue carried out inside a real worker's pool processes, the
daemon's run queue and pools deciding when."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner
from psycopg2 import sql

from orchestration.cli import main
from orchestration.tags import CELERY_QUEUE_TAG
from orchestration.tasks.models import TaskStatus
from tests.support.daemon import daemon_environment, running_daemon, write_workspace
from tests.support.orchestrator import LOG_VAR, Orchestrator, write_registry
from tests.support.paths import REPO_ROOT, path_with_fakes
from tests.system.test_postgres import DEPLOY_CONFIG, PG_HOST, PG_PORT, Database, admin_connection

pytestmark = pytest.mark.postgres

CELERY_CONFIG = REPO_ROOT / "deploy" / "dagster.celery.yaml"
WORKER_CONFIG = REPO_ROOT / "deploy" / "celery-worker.yaml"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/5"


@pytest.fixture
def database() -> Iterator[Database]:
    user, admin = admin_connection()
    name = f"orch_celery_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield Database(name, user)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


def instance_env(home: Path, database: Database) -> dict[str, str]:
    """DAGSTER_HOME holding deploy/dagster.celery.yaml, and the variables it reads."""
    home.mkdir()
    (home / "dagster.yaml").write_text(CELERY_CONFIG.read_text())
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": database.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database.name,
        "ORCH_CELERY_BROKER": BROKER,
        "ORCH_CELERY_BACKEND": BACKEND,
    }


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
        assert launcher.broker == BROKER and launcher.backend == BACKEND
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
        with worker_log.open("wb") as sink:
            worker = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "orch"),
                    "worker",
                    "start",
                    "--queue",
                    queue,
                    "--concurrency",
                    "2",
                ],
                cwd=REPO_ROOT,
                env=daemon_env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
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
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    # Each agent ran below a Celery worker's pool process, not the daemon's code server.
    import json

    starts = [
        json.loads(line)
        for line in Path(env[LOG_VAR]).read_text().splitlines()
        if json.loads(line)["event"] == "start"
    ]
    assert len(starts) == len(tasks)
    for start in starts:
        commands = [" ".join(a["cmdline"]) for a in start["ancestors"]]
        assert any("celery" in c and "worker" in c for c in commands), commands
