"""Loading a registry of 10,000 projects split over code locations, against one of 1,000 in one.

Every reload of a code location (the UI's button, the daemon's workspace refresh, a new project,
a changed dependency graph) pays that location's load again. Measured as whole processes,
`dagster definitions validate` (interpreter, imports, the registry, the definitions, Dagster's
repository and validation), each run as a child of this one so its own peak resident memory
comes from `wait4`:

- an empty registry: the imports alone (time and memory every location pays regardless);
- 1,000 projects in one code location (the shipped `workspace.yaml`), three times;
- 10,000 projects in N shards (`deploy/workspace.sharded.yaml`'s layout, N = ceil(projects /
  1,000) by default): every shard's location once, then the largest three times more, with the
  parsed project files kept by an earlier process (`registry/cache.py`, as every reload but the
  first after a file changed), and once with that cache removed (the first load after a change);
- the whole sharded workspace through one `dagster definitions validate -w`, once;
- with `--unsplit`, the 10,000 projects in one code location, once (what sharding replaces).

    .venv/bin/python -m bench.scale_load            # about 8 minutes on 2 cores
    .venv/bin/python -m bench.scale_load --quick    # 200 against 2,000 projects
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from bench.load import project_name, registry_env, write_registry
from bench.machine import discard, finish, machine, progress
from orchestration.registry.cache import CACHE_DIR
from orchestration.sharding import DEFINITIONS_MODULE, Shard, workspace_document

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "scale_load.json"
DAGSTER = str(Path(sys.executable).parent / "dagster")
PER_SHARD = 1000


def validate(root: Path, target: Sequence[str]) -> dict[str, float]:
    """One `dagster definitions validate TARGET` over the registry at `root`: wall and CPU
    seconds and the process's peak resident memory (MB)."""
    argv = [DAGSTER, "definitions", "validate", *target]
    began = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            argv, env=registry_env(root), cwd=root, stdout=subprocess.DEVNULL, stderr=errors
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - began
        if process.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-3000:]
            raise click.ClickException(f"validate {' '.join(target)} failed:\n{tail}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def location_target(shard: Shard) -> list[str]:
    return ["-m", DEFINITIONS_MODULE, "-a", shard.attribute]


def _median(runs: Sequence[dict[str, float]], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 3)


def measure(small: int, large: int, shards: int, repeat: int, unsplit: bool, keep: bool) -> dict:
    results: dict[str, Any] = {"small": small, "large": large, "shards": shards}
    root = Path(tempfile.mkdtemp(prefix="bench-scale-load-"))
    try:
        empty, one, many = root / "empty", root / "small", root / "large"
        write_registry(empty, 0)
        write_registry(one, small)
        progress(f"writing {large} projects")
        write_registry(many, large)
        whole = location_target(Shard())

        progress("imports alone (an empty registry)")
        results["imports"] = validate(empty, whole)
        progress(f"{small} projects, one code location, {repeat} times")
        results["small_runs"] = [validate(one, whole) for _ in range(repeat)]

        every = [Shard(index, shards) for index in range(shards)]
        counts = {
            shard.index: sum(1 for i in range(large) if shard.holds(project_name(i)))
            for shard in every
        }
        results["projects_per_shard"] = counts
        (many / "home" / CACHE_DIR).parent.mkdir(parents=True, exist_ok=True)
        progress(f"{large} projects: each of {shards} shards once")
        results["shard_runs"] = {}
        for shard in every:
            results["shard_runs"][str(shard.index)] = validate(many, location_target(shard))
            progress(f"  shard {shard}: {results['shard_runs'][str(shard.index)]}")
        largest = max(every, key=lambda s: (counts[s.index], -s.index))
        results["largest"] = {"shard": str(largest), "projects": counts[largest.index]}
        progress(f"the largest, shard {largest} ({counts[largest.index]} projects), {repeat} times")
        results["largest_runs"] = [validate(many, location_target(largest)) for _ in range(repeat)]
        shutil.rmtree(many / "home" / CACHE_DIR, ignore_errors=True)
        progress("the largest without the parsed files kept (the first load after a change)")
        results["largest_cold"] = validate(many, location_target(largest))

        workspace = many / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump(workspace_document(shards, str(REPO_ROOT)), sort_keys=False)
        )
        progress(f"the whole workspace of {shards} locations, one validate")
        results["workspace"] = validate(many, ["-w", str(workspace)])
        if unsplit:
            progress(f"{large} projects in one code location")
            results["unsplit"] = validate(many, whole)
    finally:
        discard(root, keep)
    return _with_goals(results)


def _with_goals(results: dict[str, Any]) -> dict[str, Any]:
    small = _median(results["small_runs"], "wall_s")
    largest = _median(results["largest_runs"], "wall_s")
    base = results["imports"]["rss_mb"]
    small_rss = max(run["rss_mb"] for run in results["small_runs"])
    shard_rss = [run["rss_mb"] for run in results["shard_runs"].values()]
    results["goals"] = {
        "reload_ratio": round(largest / small, 2),
        "reload_ratio_cold": round(results["largest_cold"]["wall_s"] / small, 2),
        "reload_met": largest / small <= 2.0,
        "memory_above_imports_small_mb": round(small_rss - base, 1),
        "memory_above_imports_all_shards_mb": round(sum(rss - base for rss in shard_rss), 1),
        "memory_ratio": round(sum(rss - base for rss in shard_rss) / (small_rss - base), 2),
        "memory_ratio_largest_location": round((max(shard_rss) - base) / (small_rss - base), 2),
    }
    results["goals"]["memory_met"] = (
        results["goals"]["memory_ratio"] <= results["large"] / results["small"]
    )
    return results


def render_table(results: dict[str, Any]) -> str:
    small, large, shards = results["small"], results["large"], results["shards"]
    goals = results["goals"]
    shard_runs = results["shard_runs"]
    rows = [
        ("imports alone (empty registry)", results["imports"], 0),
        (f"{small} projects, 1 location (median of {len(results['small_runs'])})", None, small),
        (
            f"{large} projects, largest of {shards} locations, parsed files kept "
            f"(median of {len(results['largest_runs'])})",
            None,
            results["largest"]["projects"],
        ),
        (
            f"{large} projects, largest of {shards} locations, first load after a change",
            results["largest_cold"],
            results["largest"]["projects"],
        ),
        (
            f"{large} projects, all {shards} locations in one validate -w",
            results["workspace"],
            large,
        ),
    ]
    if "unsplit" in results:
        rows.append((f"{large} projects, 1 location", results["unsplit"], large))

    def cells(run: dict[str, float] | None, runs: Sequence[dict[str, float]] = ()) -> str:
        if run is None:
            return (
                f"{_median(runs, 'wall_s')} | {_median(runs, 'cpu_s')} | "
                f"{max(r['rss_mb'] for r in runs)}"
            )
        return f"{run['wall_s']} | {run['cpu_s']} | {run['rss_mb']}"

    lines = [
        "| what loads | projects in it | wall s | CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, run, count in rows:
        runs = results["small_runs"] if run is None and count == small else results["largest_runs"]
        lines.append(f"| {label} | {count} | {cells(run, runs)} |")
    lines += [
        "",
        "| shard | projects | wall s | CPU s | peak RSS MB |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {index} | {results['projects_per_shard'][int(index)]} | {run['wall_s']} | "
            f"{run['cpu_s']} | {run['rss_mb']} |"
            for index, run in shard_runs.items()
        ),
        "",
        f"Reload of the largest location with {large} projects / load of {small} projects in "
        f"one: {goals['reload_ratio']}x (goal <= 2x: {'met' if goals['reload_met'] else 'missed'}"
        f"); the first load after a change: {goals['reload_ratio_cold']}x.",
        f"Memory above the imports: {goals['memory_above_imports_small_mb']} MB for {small} "
        f"projects, {goals['memory_above_imports_all_shards_mb']} MB over all {shards} "
        f"locations for {large}: {goals['memory_ratio']}x for {large // small}x the projects "
        f"(goal <= {large // small}x: {'met' if goals['memory_met'] else 'missed'}); the "
        f"largest location alone {goals['memory_ratio_largest_location']}x.",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="200 against 2,000 projects, one run each.")
@click.option("--small", type=int, default=1000, show_default=True)
@click.option("--large", type=int, default=10000, show_default=True)
@click.option("--shards", type=int, default=None, help="Default: ceil(large / 1000).")
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--unsplit", is_flag=True, help="Also load the large registry in one location.")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directory.")
def main(
    quick: bool,
    small: int,
    large: int,
    shards: int | None,
    repeat: int,
    unsplit: bool,
    output: Path,
    keep: bool,
) -> None:
    """Load of the largest shard of a large registry against a small registry in one."""
    if quick:
        small, large, repeat = 200, 2000, 1
    shards = shards or math.ceil(large / PER_SHARD)
    began = time.monotonic()
    results = {"machine": machine()} | measure(small, large, shards, repeat, unsplit, keep)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
