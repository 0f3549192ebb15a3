"""Dispatch tick benchmark: what one evaluation of the `task_dispatch` sensor costs with many
projects and a long queue, against ten times fewer of both, in the same run.

The real sensor function (`build_dispatch_sensor`) is evaluated in this process against a real
instance (SQLite on a temporary DAGSTER_HOME, the shipped dagster.yaml), the real task database
under ORCH_HOME and a synthetic registry (`bench.load.write_registry`). Each size runs in a fresh
interpreter, the sizes alternating which goes first. Run it from the repository root:

    .venv/bin/python -m bench.tick --quick

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click

from bench.machine import finish, machine, print_profile, progress

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "tick.json"
#: (projects, queued tasks): the small size first; the ratio is the last over the first.
FULL_SIZES = ((1000, 200), (10000, 2000))
QUICK_SIZES = ((100, 20), (1000, 200))
#: The issue's goal: the large tick takes at most this many times the small one.
RATIO_GOAL = 11.0
SEED = 20240601
#: What share of the tasks get which task priority (the rest keep the default, 50).
TASK_PRIORITIES = ((0.05, 100), (0.15, 80), (0.10, 20))
#: Share of tasks run by another profile than their project's (the stand-in `claude` on PATH).
OTHER_PROFILE_SHARE = 0.25
OTHER_PROFILE = "claude_code"
#: Share of tasks that wait for an earlier queued task (`after`): never runnable in the bench.
AFTER_SHARE = 0.05
#: The worker's log lines are cut to this many characters (the first tick names every pool).
STDERR_WIDTH = 300
#: The rule `--preemption` adds to pools.yaml: preemption is then part of every tick.
PREEMPTION_RULE = "preemption:\n  after: 1h\n  min_priority: critical\n"


# --------------------------------------------------------------------------------------------
# One size, in a fresh process


def measure(projects: int, tasks: int, ticks: int, profile_to: Path | None) -> dict[str, Any]:
    """Queue `tasks` tasks over the registry the ORCH_* variables name, then evaluate the
    dispatch sensor `ticks` + 1 times (the first, which sets every pool limit, apart)."""
    began = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore")
    import dagster as dg

    from orchestration.defs.resources import AgentTasks
    from orchestration.defs.sensors import build_dispatch_sensor
    from orchestration.instance import open_instance
    from orchestration.tags import PROJECT_TAG, ROLE_TAG, tasks_partitions_name
    from orchestration.tasks.lifecycle import MAX_NEW_RUNS_PER_TICK

    import_s = time.perf_counter() - began

    began = time.perf_counter()
    agent_tasks = AgentTasks()
    registry = agent_tasks.registry()  # the process's live registry, which the ticks reuse
    if registry.errors or len(registry.projects) != projects:
        raise SystemExit(
            f"the synthetic registry did not load cleanly: {len(registry.projects)} of "
            f"{projects} projects, errors: {[str(e) for e in registry.errors[:5]]}"
        )
    registry_s = time.perf_counter() - began

    began = time.perf_counter()
    instance = open_instance(os.environ["DAGSTER_HOME"])
    store = agent_tasks.store()
    queued = queue_tasks(store, registry.names, tasks)
    runnable = sum(1 for task in queued if not task.after)
    queue_s = time.perf_counter() - began
    progress(f"    N={projects}: registry {registry_s:.1f}s, queued {tasks} in {queue_s:.1f}s")

    sensor = build_dispatch_sensor(registry.names, dg.AssetSelection.tag(ROLE_TAG, "tasks"))
    expected = min(MAX_NEW_RUNS_PER_TICK, runnable)

    def tick() -> float:
        context = dg.build_sensor_context(instance=instance, resources={"agent_tasks": agent_tasks})
        started = time.perf_counter()
        result = sensor(context)
        elapsed = time.perf_counter() - started
        requests = result.run_requests if isinstance(result, dg.SensorResult) else None
        if not requests or len(requests) != expected:
            raise SystemExit(f"the tick asked for {len(requests or [])} runs, not {expected}")
        # Untimed: back to the state before the tick. The requested runs are never submitted
        # (no daemon), so their tasks go back in the queue and their partitions are deleted.
        for request in requests:
            task_id = request.partition_key
            assert task_id is not None
            if not store.requeue(task_id, "bench: put back", uncount=True):
                raise SystemExit(f"task {task_id} could not be put back in the queue")
            project = request.tags[PROJECT_TAG]
            instance.delete_dynamic_partition(tasks_partitions_name(project), task_id)
        return elapsed

    # Untimed: the first ticks set every pool limit, at most POOL_WRITES_PER_TICK a tick; the
    # timed ticks are the steady state that follows.
    first_s = tick()
    setting = [first_s]
    while len(instance.event_log_storage.get_pool_limits()) < len(registry.names):
        setting.append(tick())
    progress(
        f"    N={projects}: {len(setting)} tick(s) set the pool limits "
        f"({sum(setting):.1f}s, the first {first_s:.2f}s)"
    )
    profiler = None
    if profile_to is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    samples = []
    for index in range(ticks):
        samples.append(tick())
        progress(f"    N={projects}: tick {index + 1}/{ticks} {samples[-1]:.3f}s")
    if profiler is not None and profile_to is not None:
        profiler.disable()
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(profile_to))
    pools = len(instance.event_log_storage.get_pool_limits())
    store.dispose()
    instance.dispose()
    return {
        "projects": projects,
        "tasks": tasks,
        "runnable": runnable,
        "launched_per_tick": expected,
        "pool_limits": pools,
        "import_s": round(import_s, 3),
        "registry_s": round(registry_s, 3),
        "queue_s": round(queue_s, 3),
        "first_tick_s": round(first_s, 4),
        "pool_setting_ticks_s": [round(t, 3) for t in setting],
        "ticks_s": [round(s, 4) for s in samples],
        "median_s": round(statistics.median(samples), 4),
        "peak_rss_mb": _max_rss_mb(),
    }


def queue_tasks(store: Any, names: Sequence[str], count: int) -> list[Any]:
    """`count` tasks spread at random (seeded) over the projects `names`, some with a task
    priority, some run by another profile, some waiting for an earlier task."""
    rng = random.Random(SEED + count)
    added: list[Any] = []
    for index in range(count):
        draw = rng.random()
        priority = 50
        for share, value in TASK_PRIORITIES:
            if draw < share:
                priority = value
                break
            draw -= share
        after = [rng.choice(added).id] if added and rng.random() < AFTER_SHARE else []
        profile = OTHER_PROFILE if rng.random() < OTHER_PROFILE_SHARE else None
        task = store.add(
            rng.choice(names), f"NOOP task {index}", priority=priority, after=after, profile=profile
        )
        added.append(task)
    return added


def _max_rss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def worker_env(registry_root: Path, state: Path) -> dict[str, str]:
    """The worker's environment: this machine's without its ORCH_/DAGSTER_ settings, the
    registry under `registry_root`, fresh state under `state`, the stand-in CLIs on PATH."""
    from tests.support.daemon import daemon_environment, write_instance
    from tests.support.paths import path_with_fakes

    state.mkdir(parents=True)
    env = {
        "ORCH_PROJECTS_DIR": str(registry_root / "projects"),
        "ORCH_CONFIG_DIR": str(registry_root / "config"),
        "ORCH_HOME": str(state / "home"),
        "DAGSTER_HOME": str(write_instance(state, {})),  # the shipped dagster.yaml
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(REPO_ROOT),
    }
    return daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)


def run_worker(
    registry_root: Path, state: Path, size: tuple[int, int], ticks: int, profile_to: Path | None
) -> dict[str, Any]:
    """Run `measure` in a fresh interpreter so imports and caches never carry over."""
    projects, tasks = size
    argv = [sys.executable, "-m", "bench.tick", "--worker", f"{projects}:{tasks}"]
    argv += ["--ticks", str(ticks)]
    if profile_to is not None:
        argv += ["--worker-profile", str(profile_to)]
    with subprocess.Popen(
        argv,
        env=worker_env(registry_root, state),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:
        assert worker.stdout is not None and worker.stderr is not None
        for line in worker.stderr:  # passed on as it comes, long lines cut (every pool's name)
            line = line.rstrip("\n")
            click.echo(
                line if len(line) <= STDERR_WIDTH else line[:STDERR_WIDTH] + " ...", err=True
            )
        output = worker.stdout.read()  # one line of JSON, well within the pipe's buffer
    if worker.returncode != 0:
        raise click.ClickException(f"the worker for {projects} projects failed (see above)")
    result: dict[str, Any] = json.loads(output)
    return result


# --------------------------------------------------------------------------------------------
# The whole benchmark


def run_benchmark(
    sizes: Sequence[tuple[int, int]], rounds: int, ticks: int, profile: bool, preemption: bool
) -> dict[str, Any]:
    from bench.load import write_registry

    results: dict[str, Any] = {
        "machine": machine(dagster=version("dagster")),
        "sizes": [list(size) for size in sizes],
        "rounds": rounds,
        "ticks_per_round": ticks,
        "preemption": preemption,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="orch-bench-tick-") as tmp:
        roots = {}
        for projects, _ in sizes:
            roots[projects] = Path(tmp) / f"registry{projects}"
            progress(f"writing a registry of {projects} projects under {roots[projects]}")
            write_registry(roots[projects], projects)
            if preemption:
                with (roots[projects] / "config" / "pools.yaml").open("a") as pools:
                    pools.write(PREEMPTION_RULE)
        for attempt in range(rounds):
            order = sizes if attempt % 2 == 0 else sizes[::-1]
            for size in order:
                progress(f"round {attempt + 1}/{rounds}: {size[0]} projects, {size[1]} tasks")
                state = Path(tmp) / f"state{size[0]}_{attempt}"
                run = run_worker(roots[size[0]], state, size, ticks, None)
                run["round"] = attempt + 1
                results["runs"].append(run)
                progress(f"  ... median tick {run['median_s']:.3f}s, {run['peak_rss_mb']:.0f} MB")
        if profile:
            size = sizes[-1]
            target = RESULTS_FILE.parent / f"tick_{size[0]}.prof"
            progress(f"profiling {size[0]} projects into {target}")
            run_worker(roots[size[0]], Path(tmp) / "profile", size, ticks, target)
            results["profile"] = str(target)
            print_profile(target, limit=30)
    results["rows"] = _rows(results["runs"], sizes)
    small, large = results["rows"][0], results["rows"][-1]
    ratio = round(large["median_s"] / small["median_s"], 2)
    results["goal"] = {"ratio": ratio, "goal": f"<= {RATIO_GOAL}", "met": ratio <= RATIO_GOAL}
    return results


def _rows(runs: list[dict[str, Any]], sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    rows = []
    for projects, tasks in sizes:
        mine = [run for run in runs if run["projects"] == projects]
        every = [tick for run in mine for tick in run["ticks_s"]]
        rows.append(
            {
                "projects": projects,
                "tasks": tasks,
                "ticks": len(every),
                "median_s": round(statistics.median(every), 4),
                "min_s": min(every),
                "max_s": max(every),
                "round_medians_s": [run["median_s"] for run in mine],
                "first_tick_s": round(statistics.median(r["first_tick_s"] for r in mine), 3),
                "setting_ticks": max(len(r["pool_setting_ticks_s"]) for r in mine),
                "pool_limits": mine[0]["pool_limits"],
                "peak_rss_mb": max(run["peak_rss_mb"] for run in mine),
                "registry_s": round(statistics.median(r["registry_s"] for r in mine), 2),
            }
        )
    return rows


def render_table(results: dict[str, Any]) -> str:
    lines = [
        "| projects | queued tasks | ticks | median tick s | min s | max s | first tick s | "
        "ticks setting pools | pool limits | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['projects']} | {row['tasks']} | {row['ticks']} | {row['median_s']:.3f} | "
            f"{row['min_s']:.3f} | {row['max_s']:.3f} | {row['first_tick_s']:.2f} | "
            f"{row['setting_ticks']} | {row['pool_limits']} | {row['peak_rss_mb']:.0f} |"
        )
    goal = results["goal"]
    small, large = results["rows"][0], results["rows"][-1]
    verdict = "met" if goal["met"] else "NOT met"
    lines.append(
        f"\n- {large['projects']}/{large['tasks']} against {small['projects']}/{small['tasks']}: "
        f"{goal['ratio']}x (goal {goal['goal']}): {verdict}"
    )
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    projects, _, tasks = text.partition(":")
    return int(projects), int(tasks)


@click.command()
@click.option("--quick", is_flag=True, help="100/20 against 1000/200 (about a minute).")
@click.option(
    "--sizes",
    default=None,
    help="Comma-separated PROJECTS:TASKS pairs, the baseline first (default 1000:200,10000:2000).",
)
@click.option("--rounds", default=2, show_default=True, help="Fresh processes per size.")
@click.option("--ticks", default=5, show_default=True, help="Timed ticks per process.")
@click.option("--profile", is_flag=True, help="Also cProfile the ticks of the largest size.")
@click.option(
    "--preemption", is_flag=True, help="With a `preemption:` rule in pools.yaml (off by default)."
)
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--worker", "worker_size", default=None, hidden=True)
@click.option("--worker-profile", type=click.Path(path_type=Path), hidden=True)
def main(
    quick: bool,
    sizes: str | None,
    rounds: int,
    ticks: int,
    profile: bool,
    preemption: bool,
    output: Path,
    worker_size: str | None,
    worker_profile: Path | None,
) -> None:
    """Time one dispatch tick at two sizes of registry and queue; report their ratio."""
    if worker_size is not None:
        projects, tasks = _size(worker_size)
        click.echo(json.dumps(measure(projects, tasks, ticks, worker_profile)))
        return
    chosen = (
        tuple(_size(s) for s in sizes.split(",")) if sizes else QUICK_SIZES if quick else FULL_SIZES
    )
    began = time.monotonic()
    results = run_benchmark(chosen, rounds, ticks, profile, preemption)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
