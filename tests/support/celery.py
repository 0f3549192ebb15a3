"""Celery run workers on the loopback RabbitMQ and Redis, for the tests and benchmarks of the
deployment over several hosts (deploy/dagster.celery.yaml, `orch worker start`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO_ROOT
from tests.support.postgres import PG_HOST, PG_PORT, Database

CELERY_CONFIG = REPO_ROOT / "deploy" / "dagster.celery.yaml"
WORKER_CONFIG = REPO_ROOT / "deploy" / "celery-worker.yaml"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/5"


def instance_env(home: Path, database: Database) -> dict[str, str]:
    """DAGSTER_HOME (made at `home`) holding deploy/dagster.celery.yaml, and the variables it
    reads: `database` on the loopback server, the loopback broker and backend."""
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


def start_worker(
    env: dict[str, str], log: Path, name: str, *queues: str, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """`orch worker start` in a process group of its own (the worker and its pool), its
    output appended to `log`."""
    argv = [str(Path(sys.executable).parent / "orch"), "worker", "start"]
    argv += ["--concurrency", str(concurrency), "--name", name]
    for queue in queues:
        argv += ["--queue", queue]
    with log.open("ab") as sink:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """End the worker's whole process group, politely first."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if worker.poll() is not None:
            return
        os.killpg(worker.pid, signum)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
