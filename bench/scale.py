"""Scale-out benchmarks, one subcommand each (see bench/README.md for the results):

    .venv/bin/python -m bench.scale throughput --quick   # (a) 1 Celery run worker against 2
    .venv/bin/python -m bench.scale load --quick         # (b) the largest shard of 10,000 projects
    .venv/bin/python -m bench.scale start --quick        # (c) request -> agent start, 100 vs 10,000
    .venv/bin/python -m bench.scale tick --quick         # (d) one dispatch tick, 10,000/2,000

(a) Task throughput on one Celery run worker against two of the same concurrency, in the same
run, through the real daemon, run queue and pools, the shipped deploy/dagster.celery.yaml on the
loopback PostgreSQL, RabbitMQ and Redis. Each configuration gets a fresh instance database,
registry and task database; its tasks are the stand-in `claude` sleeping S seconds (no CPU), so
the ratio says how much a second worker adds, not how fast this machine computes. The agent
slots are twice the concurrency in both, so the pool never limits: one worker's pool does.
(b), (c) and (d) live in bench/scale_load.py, bench/scale_start.py and bench/tick.py.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
import yaml

from bench.machine import discard, finish, machine, progress
from tests.support.agent_log import events
from tests.support.celery import CELERY_CONFIG, instance_env, start_worker, stop_worker
from tests.support.daemon import daemon_environment, running_daemon, write_workspace
from tests.support.orchestrator import LOG_VAR, Orchestrator, write_registry
from tests.support.paths import path_with_fakes
from tests.support.postgres import throwaway_database

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "scale.json"
PROJECTS = 6


def throughput(root: Path, workers: int, tasks: int, seconds: float, concurrency: int) -> dict:
    """`tasks` tasks of `seconds` through `workers` workers of `concurrency`: the wall time
    from the first task added to the last agent's end, and tasks per minute."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    (root / "agents").mkdir(parents=True)
    projects = {f"p{i}": ("normal", tasks) for i in range(PROJECTS)}
    env = write_registry(root, projects, slots=workers * concurrency)
    with throwaway_database("orch_bench_scale") as database:
        env |= instance_env(root / "dagster_home", database)
        config = yaml.safe_load(CELERY_CONFIG.read_text())
        config["run_launcher"]["config"]["default_queue"] = queue
        (root / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(config))
        env[LOG_VAR] = str(root / "agents" / "fake_claude.jsonl")
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)  # this process opens the instance too
        daemon_env = daemon_environment(
            env, path=path_with_fakes(os.environ["PATH"]), sandbox=False
        )
        try:
            with running_daemon(root, write_workspace(root), daemon_env) as (daemon, log):
                started = [
                    start_worker(
                        daemon_env, root / f"w{n}.log", f"w{n}@%h", queue, concurrency=concurrency
                    )
                    for n in range(workers)
                ]
                system = Orchestrator(root, env, daemon, log)
                try:
                    began = time.time()
                    ids = []
                    for i in range(tasks):
                        task = system.store.add(f"p{i % PROJECTS}", f"SLEEP{seconds} task {i}")
                        assert task is not None
                        ids.append(task.id)
                    done = system.wait_finished(*ids, timeout_s=60 + tasks * seconds * 2)
                    failed = [t.id for t in done if t.status.value != "succeeded"]
                    ends = [entry["time"] for entry in events("end", Path(env[LOG_VAR]))]
                    wall = max(ends) - began
                    system.wait_idle()
                finally:
                    system.close()
                    for worker in started:
                        stop_worker(worker)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "tasks_per_min": round(tasks / wall * 60, 2),
        "failed": failed,
    }


def render_table(results: dict[str, Any]) -> str:
    runs = results["throughput"]
    one, two = runs["1"], runs["2"]
    lines = [
        f"{results['tasks']} tasks of {results['seconds']} s, worker concurrency "
        f"{results['concurrency']}, slots = workers x concurrency",
        "",
        "| workers | wall (s) | tasks / min | failed |",
        "|---:|---:|---:|---:|",
        *(
            f"| {run['workers']} | {run['wall_s']} | {run['tasks_per_min']} "
            f"| {len(run['failed'])} |"
            for run in (one, two)
        ),
        "",
        f"2 workers / 1 worker throughput: {two['tasks_per_min'] / one['tasks_per_min']:.2f}x "
        "(goal >= 1.7x)",
    ]
    return "\n".join(lines)


@click.command("throughput")
@click.option("--quick", is_flag=True, help="12 tasks of 2 s (about 2 minutes).")
@click.option("--tasks", type=click.IntRange(2, 1000), default=None, help="Default 60.")
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=None, help="Default 5.")
@click.option("--concurrency", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directories.")
def throughput_command(
    quick: bool,
    tasks: int | None,
    seconds: float | None,
    concurrency: int,
    output: Path,
    keep: bool,
) -> None:
    """Throughput of 1 Celery run worker against 2 of the same concurrency."""
    import tempfile

    tasks = tasks or (12 if quick else 60)
    seconds = seconds or (2 if quick else 5)
    began = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "tasks": tasks,
        "seconds": seconds,
        "concurrency": concurrency,
        "throughput": {},
    }
    for workers in (1, 2):
        root = Path(tempfile.mkdtemp(prefix=f"bench-scale-{workers}-"))
        progress(f"{workers} worker(s): {tasks} tasks of {seconds} s")
        try:
            results["throughput"][str(workers)] = throughput(
                root, workers, tasks, seconds, concurrency
            )
        finally:
            discard(root, keep)
    finish(results, render_table, output, began)


@click.group()
def main() -> None:
    """Scale-out benchmarks: (a) throughput, (b) load, (c) start, (d) tick."""


def _add_commands() -> None:
    from bench import scale_load, scale_start, tick

    main.add_command(throughput_command)
    main.add_command(scale_load.main, "load")
    main.add_command(scale_start.main, "start")
    main.add_command(tick.main, "tick")


_add_commands()

if __name__ == "__main__":
    main()
