"""`orch worker`: a Celery run worker on this host (deploy/), started only once its config is
nested right and its broker and backend answer (orchestration.workers)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestration.cli.output import fail


@click.group()
def worker() -> None:
    """Celery run workers, for a deployment over several hosts (deploy/README.md)."""


CONFIG_OPTION = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The worker's YAML (default: deploy/celery-worker.yaml).",
)


@worker.command("check")
@CONFIG_OPTION
def check(config: Path | None) -> None:
    """Check a worker config: `execution.config` nesting, broker and backend set (variables
    resolved), a backend every host reads, and both answering. Exit 1 with the reason."""
    from orchestration.workers import DEFAULT_WORKER_CONFIG, WorkerConfigError, check_worker_config

    try:
        checked = check_worker_config(config or DEFAULT_WORKER_CONFIG)
    except WorkerConfigError as exc:
        fail(str(exc))
    click.echo(f"{checked.path}: broker and backend answer")


@worker.command("start")
@CONFIG_OPTION
@click.option(
    "--queue",
    "queues",
    multiple=True,
    required=True,
    help="A queue to take runs from (one to four; a project's `placement`, or one of "
    "ORCH_CELERY_QUEUES).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=2,
    show_default=True,
    help="Runs at once on this worker.",
)
@click.option("--name", help="The worker's name (default: dagster-<host>).")
def start(config: Path | None, queues: tuple[str, ...], concurrency: int, name: str | None) -> None:
    """Start a run worker in the foreground, after `orch worker check`: it takes the runs sent
    to QUEUE (`dagster-celery worker start`). DAGSTER_HOME must hold the shared instance
    config (deploy/dagster.celery.yaml)."""
    from orchestration.workers import (
        DEFAULT_WORKER_CONFIG,
        WorkerConfigError,
        check_worker_config,
        worker_command,
    )

    if not os.environ.get("DAGSTER_HOME"):
        fail("DAGSTER_HOME is not set: a run worker needs the shared instance (deploy/README.md)")
    path = config or DEFAULT_WORKER_CONFIG
    try:
        check_worker_config(path)
        argv = worker_command(path, queues, concurrency, name)
    except WorkerConfigError as exc:
        fail(str(exc))
    click.echo(f"starting: {' '.join(argv)}", err=True)
    os.execvp(argv[0], argv)
