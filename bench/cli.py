"""CLI benchmark: how long `orch` commands take as whole processes, against importing the
libraries they cannot do without.

A small registry and a SQLite task store with 1,000 tasks are written to a temporary directory;
then each round runs the baseline (`python -c "import sqlalchemy, pydantic, yaml, click"`) and
each command once, as fresh processes, in an order that rotates from round to round, so drift in
the machine's load falls on all of them alike. Run it from the repository root:

    .venv/bin/python -m bench.cli --quick

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import os
import shutil
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

from bench.machine import discard, finish, machine, progress

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "cli.json"
TASKS = 1000
PROJECTS = 5
#: `orch task list` over 1,000 tasks may take at most this many times the baseline (medians).
GOAL_RATIO = 2.0
BASELINE = "baseline"
BASELINE_IMPORTS = "import sqlalchemy, pydantic, yaml, click"


def write_registry(root: Path) -> dict[str, str]:
    """A registry of a few projects (one with a schedule) under `root`; returns the ORCH_*
    variables that point at it. Every `repo` is one empty directory: nothing here runs git."""
    projects = root / "projects"
    shutil.copytree(REPO_ROOT / "config", root / "config")
    (projects / "templates").mkdir(parents=True)
    (root / "repos" / "shared").mkdir(parents=True)
    for index in range(PROJECTS):
        lines = [f"name: p{index}", "repo: ../repos/shared", "priority: normal"]
        if index == 0:
            lines.append('schedule: "0 6 * * 1-5"')
        (projects / f"p{index}.yaml").write_text("\n".join(lines) + "\n")
    return {
        "ORCH_PROJECTS_DIR": str(projects),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(root / "home"),
    }


def write_tasks(environ: dict[str, str], count: int) -> list[str]:
    """`count` queued tasks, spread over the projects, through the task store itself."""
    from orchestration.settings import Settings
    from orchestration.tasks.store import TaskStore

    store = TaskStore.from_settings(Settings.from_env(environ), environ={})
    try:
        ids = []
        for index in range(count):
            prompt = f"Task {index}: " + "fix the flaky test and explain why it failed " * (
                1 + index % 4
            )
            task = store.add(f"p{index % PROJECTS}", prompt, priority=index % 101)
            assert task is not None
            ids.append(task.id)
        return ids
    finally:
        store.dispose()


def cases(task_id: str) -> dict[str, list[str]]:
    """Name -> argv of every process timed, the baseline first."""
    orch = Path(sys.executable).with_name("orch")
    if not orch.exists():
        raise click.ClickException(f"no `orch` script beside {sys.executable}: pip install -e .")
    return {
        BASELINE: [sys.executable, "-c", BASELINE_IMPORTS],
        "orch --help": [str(orch), "--help"],
        f"orch task list ({TASKS} tasks)": [str(orch), "task", "list"],
        "orch task show ID": [str(orch), "task", "show", task_id],
        "orch validate": [str(orch), "validate"],
        "orch projects list": [str(orch), "projects", "list"],
    }


def clean_environment(orch_vars: dict[str, str]) -> dict[str, str]:
    """This process's environment without any Dagster instance or task database, plus
    `orch_vars`."""
    drop = {"DAGSTER_HOME", "ORCH_TASKS_DB_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop} | orch_vars


def check(argv: Sequence[str], env: dict[str, str], cwd: Path, name: str) -> str:
    """Run once untimed (warms the page cache and bytecode) and make sure it works."""
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"{name} failed: {result.stderr.strip()}")
    return result.stdout


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one whole process, its output discarded."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


def summarise(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    base = samples[BASELINE]
    base_median, base_p90 = statistics.median(base), p90(base)
    rows = []
    for name, values in samples.items():
        median, high = statistics.median(values), p90(values)
        rows.append(
            {
                "case": name,
                "median_s": round(median, 4),
                "p90_s": round(high, 4),
                "median_ratio": round(median / base_median, 2),
                "p90_ratio": round(high / base_p90, 2),
            }
        )
    return rows


def render_table(results: dict[str, Any]) -> str:
    lines = [
        f"Whole-process wall time, {results['rounds']} interleaved rounds; baseline: "
        f'`python -c "{BASELINE_IMPORTS}"`',
        "",
        "| command | median s | p90 s | median / baseline | p90 / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['case']} | {row['median_s']:.3f} | {row['p90_s']:.3f} | "
            f"{row['median_ratio']:.2f}x | {row['p90_ratio']:.2f}x |"
        )
    goal = results["goal"]
    verdict = "met" if goal["met"] else "NOT met"
    lines.append(
        f"\n- {goal['case']}: {goal['ratio']:.2f}x the baseline (goal at most "
        f"{GOAL_RATIO:.0f}x): {verdict}"
    )
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="5 rounds instead of 21 (about 20 seconds).")
@click.option("--rounds", type=click.IntRange(2, 1000), default=None, help="Rounds (default 21).")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary registry and task store.")
def main(quick: bool, rounds: int | None, output: Path, keep: bool) -> None:
    """Time `orch` commands against the baseline imports, interleaved."""
    rounds = rounds if rounds is not None else 5 if quick else 21
    root = Path(tempfile.mkdtemp(prefix="orch-bench-cli-"))
    results: dict[str, Any] = {
        "machine": machine(
            orchestration=version("orchestration"),
            click=version("click"),
            sqlalchemy=version("sqlalchemy"),
            pydantic=version("pydantic"),
        ),
        "quick": quick,
        "rounds": rounds,
        "tasks": TASKS,
        "projects": PROJECTS,
    }
    began = time.monotonic()
    try:
        env = clean_environment(write_registry(root))
        progress(f"writing {TASKS} tasks to {env['ORCH_HOME']}/tasks.db")
        ids = write_tasks(env, TASKS)
        argvs = cases(ids[TASKS // 2])
        for name, argv in argvs.items():
            out = check(argv, env, root, name)
            if name.startswith("orch task list"):
                listed = len(out.splitlines()) - 1  # the header
                if listed != TASKS:
                    raise click.ClickException(f"{name} listed {listed} tasks, not {TASKS}")
        names = list(argvs)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(timed(argvs[name], env, root))
            if (index + 1) % 5 == 0 or index + 1 == rounds:
                progress(f"round {index + 1} of {rounds}")
        results["samples"] = {
            name: [round(s, 4) for s in values] for name, values in samples.items()
        }
        results["rows"] = summarise(samples)
        task_list = next(r for r in results["rows"] if r["case"].startswith("orch task list"))
        results["goal"] = {
            "case": task_list["case"],
            "ratio": task_list["median_ratio"],
            "met": task_list["median_ratio"] <= GOAL_RATIO,
        }
    finally:
        discard(root, keep)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
