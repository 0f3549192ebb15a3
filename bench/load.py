"""Load benchmark: what the code server pays to serve N projects to the webserver, ours vs naive.

For each size N a synthetic registry (projects/*.yaml, templates, copies of config/) is written
to a temporary directory, then each case runs in a fresh subprocess that loads the registry,
builds the definitions, and builds and serializes the repository snapshot the way the gRPC code
server does for the webserver. `--validate` times whole processes instead: `dagster definitions
validate` over ours and over the naive factory, and the webserver's asset-list GraphQL query.
Run it from the repository root:

    .venv/bin/python -m bench.load --quick
    .venv/bin/python -m bench.load --validate --quick

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.machine import loadavg, machine, print_profile, progress

if TYPE_CHECKING:
    import dagster as dg

    from orchestration.registry import Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "load.json"
FULL_SIZES = (10, 100, 1000)
QUICK_SIZES = (10, 100)
FACTORIES = ("ours", "naive")
#: Cases up to this many projects are repeated and the median kept; bigger ones run once.
SMALL_CASE_MAX = 100
SEED = 20240601
SPEEDUP_GOAL = 4.0  # naive / ours at the largest size
GROWTH_GOAL = 12.0  # ours at 1000 / ours at 100
#: The phases that make up the reported time; `import` is measured but reported apart.
TIMED_PHASES = ("registry", "definitions", "snapshot", "webserver")
VALIDATE_RESULTS_FILE = REPO_ROOT / "bench" / "results" / "load_validate.json"
VALIDATE_SIZES = (100, 1000)
QUICK_VALIDATE_SIZES = (100,)
VALIDATE_SPEEDUP_GOAL = 6.0  # naive / ours, whole `dagster definitions validate`, at 1000
QUERY_GROWTH_GOAL = 12.0  # the asset-list query at 1000 / at 100
WEBSERVER_LOAD_TIMEOUT_S = 900
#: The code location the naive factory is served from, written next to the registry.
NAIVE_MODULE = "naive_definitions.py"
NAIVE_MODULE_TEXT = '''"""The naive factory of bench/load.py as a code location."""

import dagster as dg

from bench.load import build_naive_definitions
from orchestration.registry import load_registry


@dg.definitions
def defs() -> dg.Definitions:
    return build_naive_definitions(load_registry())
'''
#: What the UI's asset catalog asks for every asset: key, group, kinds, owners, tags,
#: description, partitioning, checks, jobs, lineage and the code location.
ASSET_LIST_QUERY = """
query AssetList {
  assetNodes {
    id
    assetKey { path }
    groupName
    kinds
    owners {
      ... on TeamAssetOwner { team }
      ... on UserAssetOwner { email }
    }
    tags { key value }
    description
    isPartitioned
    isExecutable
    hasAssetChecks
    jobNames
    dependencyKeys { path }
    repository { id name location { id name } }
  }
}
"""


# --------------------------------------------------------------------------------------------
# The synthetic registry


def write_registry(root: Path, count: int, seed: int = SEED) -> Path:
    """A registry of `count` projects under `root`; returns the projects directory.

    Each project depends on 0-3 earlier ones, about one in ten has a `schedule`, a third extend
    a template. Every local `repo` points at one shared empty directory: loading never runs git.
    """
    rng = random.Random(seed + count)
    projects = root / "projects"
    shutil.copytree(REPO_ROOT / "config", root / "config")
    (projects / "templates").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "projects" / "_defaults.yaml", projects / "_defaults.yaml")
    for template in (REPO_ROOT / "projects" / "templates").glob("*.yaml"):
        shutil.copy(template, projects / "templates" / template.name)
    (root / "repos" / "shared").mkdir(parents=True)
    (root / "home").mkdir()

    templates = [None, None, "python_service", "python_library"]
    priorities = ["low", "normal", "normal", "high", "critical"]
    for index in range(count):
        name = project_name(index)
        earlier = list(range(index))
        depends = sorted(rng.sample(earlier, min(len(earlier), rng.randint(0, 3))))
        lines = [
            f"name: {name}",
            f"description: Synthetic project {index} of {count} for the load benchmark.",
            "repo: ../repos/shared",
            f"priority: {rng.choice(priorities)}",
            f"owners: [team:t{index % 17}]",
            f"tags: {{domain: d{index % 23}}}",
        ]
        template = rng.choice(templates)
        if template:
            lines.append(f"extends: {template}")
        elif rng.random() < 0.5:
            lines.append("verify: [node, --test]")
        if depends:
            lines.append(f"depends_on: [{', '.join(project_name(d) for d in depends)}]")
        if index % 10 == 3:
            lines.append(f'schedule: "{index % 60} {index % 24} * * *"')
        (projects / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return projects


def project_name(index: int) -> str:
    return f"p{index:04d}"


# --------------------------------------------------------------------------------------------
# The naive baseline: what a straightforward per-project factory looks like


def build_naive_definitions(registry: Registry) -> dg.Definitions:
    """Per project: six assets, one job over its group, one sensor and one schedule."""
    import dagster as dg

    from orchestration.defs.orchestration_assets import build_registry_defs
    from orchestration.defs.resources import ProjectWorkspaces

    return dg.Definitions.merge(
        *(_naive_project_defs(project.spec) for project in registry.projects),
        build_registry_defs(registry.errors, len(registry.projects)),
        dg.Definitions(resources={"workspaces": ProjectWorkspaces()}),  # as definitions.py
    )


def _naive_project_defs(spec: Any) -> dg.Definitions:
    import dagster as dg

    name = spec.name
    common: dict[str, Any] = {
        "group_name": name,
        "required_resource_keys": {"workspaces"},
        "owners": list(spec.owners),
        "tags": {**spec.tags, "project": name, "priority": spec.priority_class},
    }

    def key(project: str, asset: str) -> dg.AssetKey:
        return dg.AssetKey([project, asset])

    @dg.asset(key=key(name, "source"), kinds={"git"}, description=f"State of {spec.repo}", **common)
    def source(context) -> None:
        context.resources.workspaces.observe(spec)

    @dg.asset(
        key=key(name, "manifest"),
        deps=[key(name, "source")],
        kinds={"git"},
        description=f"Dependency manifests of {name}",
        **common,
    )
    def manifest(context) -> None:
        context.resources.workspaces.scan_manifests(spec)

    @dg.asset(
        key=key(name, "verification"),
        deps=[key(name, "source"), *(key(dep, "source") for dep in spec.depends_on)],
        kinds={"git"},
        description=f"Test command of {name}",
        check_specs=(
            [dg.AssetCheckSpec("verify_passed", asset=key(name, "verification"))]
            if spec.verify
            else []
        ),
        **common,
    )
    def verification(context):
        context.resources.workspaces.verify(spec)

    @dg.asset(
        key=key(name, "tasks"),
        deps=[key(name, "source")],
        partitions_def=dg.DynamicPartitionsDefinition(name=f"{name}_tasks"),
        kinds={"agent"},
        description=f"Coding-agent work on {name}",
        **common,
    )
    def tasks() -> None:
        raise dg.Failure("not in the benchmark")

    @dg.asset(
        key=key(name, "lint"),
        deps=[key(name, "source")],
        kinds={"git"},
        description=f"Lint of {name}",
        **common,
    )
    def lint() -> None:
        return None

    @dg.asset(
        key=key(name, "docs"),
        deps=[key(name, "manifest")],
        kinds={"git"},
        description=f"Docs of {name}",
        **common,
    )
    def docs() -> None:
        return None

    job = dg.define_asset_job(f"{name}_job", selection=dg.AssetSelection.groups(name))

    @dg.sensor(name=f"{name}_sensor", job=job)
    def sensor() -> Any:
        return dg.SkipReason("not in the benchmark")

    @dg.schedule(name=f"{name}_schedule", job=job, cron_schedule=spec.schedule or "0 0 * * *")
    def schedule() -> Any:
        return dg.SkipReason("not in the benchmark")

    return dg.Definitions(
        assets=[source, manifest, verification, tasks, lint, docs],
        jobs=[job],
        sensors=[sensor],
        schedules=[schedule],
    )


# --------------------------------------------------------------------------------------------
# One measurement, in a fresh process


def measure(factory: str, expected: int, profile_to: Path | None = None) -> dict[str, Any]:
    """Time each phase the code server goes through; the registry comes from ORCH_* variables."""
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()

    def lap(phase: str) -> None:
        nonlocal started, cpu_started
        now, cpu_now = time.perf_counter(), time.process_time()
        phases[phase], cpu[phase] = now - started, cpu_now - cpu_started
        started, cpu_started = now, cpu_now
        progress(f"    {factory}: {phase} {phases[phase]:.2f}s")

    import warnings

    warnings.filterwarnings("ignore")
    import dagster as dg  # noqa: F401
    from dagster._core.remote_representation.external_data import (
        JobDataSnap,
        RepositorySnap,
        extract_serialized_job_snap_from_serialized_job_data_snap,
    )
    from dagster._core.snap import JobSnap
    from dagster._serdes import deserialize_value, serialize_value

    from orchestration.defs.definitions import build_definitions
    from orchestration.registry import load_registry

    build = build_definitions if factory == "ours" else build_naive_definitions
    lap("import")
    rss_after_import = _max_rss_mb(resource)

    profiler = None
    if profile_to is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    # What `orchestration.defs.definitions.defs` does when the code server imports it.
    registry = load_registry()
    if registry.errors or len(registry.projects) != expected:
        raise SystemExit(
            f"the synthetic registry did not load cleanly: {len(registry.projects)} of "
            f"{expected} projects, errors: {[str(e) for e in registry.errors[:5]]}"
        )
    lap("registry")

    # What LoadedRepositories does with the loaded target (dagster/_grpc/server.py).
    repo_def = build(registry).get_repository_def()
    repo_def.load_all_definitions()
    lap("definitions")

    # The ExternalRepository call (defer_snapshots=True, as the webserver asks for it), then one
    # ExternalJob call per job ref (dagster/_api/snapshot_repository.py).
    repo_snap = serialize_value(RepositorySnap.from_def(repo_def, defer_snapshots=True))
    jobs = repo_def.get_all_jobs()
    job_snaps = [
        serialize_value(JobDataSnap.from_job_def(job, include_parent_snapshot=True)) for job in jobs
    ]
    lap("snapshot")

    # The webserver's side: deserializing what the code server sent.
    snap = deserialize_value(repo_snap, RepositorySnap)
    for serialized in job_snaps:
        deserialize_value(
            extract_serialized_job_snap_from_serialized_job_data_snap(serialized), JobSnap
        )
    lap("webserver")

    if profiler is not None and profile_to is not None:
        profiler.disable()
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(profile_to))

    return {
        "factory": factory,
        "projects": expected,
        "phases_s": phases,
        "time_s": sum(phases[p] for p in TIMED_PHASES),
        "cpu_s": sum(cpu[p] for p in TIMED_PHASES),
        "peak_rss_mb": _max_rss_mb(resource),
        "rss_after_import_mb": rss_after_import,
        "snapshot_bytes": len(repo_snap) + sum(len(s) for s in job_snaps),
        "asset_nodes": len(snap.asset_nodes),
        "jobs": len(jobs),
        "job_names_sample": sorted(job.name for job in jobs)[:5],
        "schedules": len(snap.schedules),
        "sensors": len(snap.sensors),
    }


def _max_rss_mb(resource: Any) -> float:
    # Linux reports kilobytes, macOS bytes.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def registry_env(root: Path) -> dict[str, str]:
    """The environment that points the code at the registry written under `root`."""
    return {
        **os.environ,
        "ORCH_PROJECTS_DIR": str(root / "projects"),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(root / "home"),
        "DAGSTER_HOME": str(root / "home"),
        "PYTHONHASHSEED": "0",
        # It runs in the generated directory, as a code server runs next to its projects, and
        # finds this package (`python -m bench.load`) from the repository root.
        "PYTHONPATH": str(REPO_ROOT),
    }


def run_worker(factory: str, root: Path, count: int, profile_to: Path | None) -> dict[str, Any]:
    """Run `measure` in a fresh interpreter so imports and caches never carry over."""
    argv = [sys.executable, "-m", "bench.load", "--worker", factory]
    argv += ["--worker-count", str(count)]
    if profile_to is not None:
        argv += ["--worker-profile", str(profile_to)]
    done = subprocess.run(
        argv,
        env=registry_env(root),
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise click.ClickException(f"{factory} worker for {count} projects failed (see stderr)")
    return json.loads(done.stdout)


# --------------------------------------------------------------------------------------------
# Whole processes: `dagster definitions validate`, and the webserver's asset list


def code_location_args(factory: str, root: Path) -> list[str]:
    """The dagster CLI's arguments that load `factory`'s definitions of the registry at `root`."""
    if factory == "ours":
        return ["-m", "orchestration.defs.definitions"]
    module = root / NAIVE_MODULE
    if not module.is_file():
        module.write_text(NAIVE_MODULE_TEXT)
    return ["-f", str(module)]


def time_validate(factory: str, root: Path) -> dict[str, float]:
    """One `dagster definitions validate` over `factory`'s code location: wall and CPU seconds
    of the whole process (interpreter start, imports, loading, validation)."""
    argv = [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"]
    argv += code_location_args(factory, root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        argv,
        env=registry_env(root),
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=1800,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise click.ClickException(f"validate of {factory} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def _post_graphql(url: str, query: str, timeout: float = 600.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
    if answer.get("errors"):
        raise click.ClickException(f"GraphQL errors: {str(answer['errors'])[:500]}")
    return answer["data"]


def time_asset_list(root: Path, count: int, repeat: int) -> dict[str, Any]:
    """Serve ours over the registry at `root` with `dagster-webserver`, wait until the code
    location is loaded, then time the asset-list query `repeat` times after one untimed."""
    from tests.support.webserver import WORKSPACE_QUERY, serving

    target = [*code_location_args("ours", root)]
    with serving(
        target,
        registry_env(root),
        root / "webserver.log",
        cwd=root,
        timeout_s=WEBSERVER_LOAD_TIMEOUT_S,
    ) as served:
        url = f"{served.url}/graphql"
        workspace = _post_graphql(url, WORKSPACE_QUERY, timeout=10)["workspaceOrError"]
        errors = [
            entry
            for entry in workspace.get("locationEntries") or []
            if entry["locationOrLoadError"]["__typename"] == "PythonError"
        ]
        if errors:
            raise click.ClickException(f"the code location did not load: {errors}")
        loaded_s = served.loaded_s
        first = _timed_query(url)
        samples = [_timed_query(url) for _ in range(repeat)]
    nodes = first["nodes"]
    if any(sample["nodes"] != nodes for sample in samples) or nodes < 4 * count:
        raise click.ClickException(f"the asset list had {nodes} assets for {count} projects")
    return {
        "projects": count,
        "webserver_loaded_s": round(loaded_s, 3),
        "first_query_s": first["s"],
        "query_s": [sample["s"] for sample in samples],
        "query_median_s": round(statistics.median(sample["s"] for sample in samples), 4),
        "response_bytes": first["bytes"],
        "asset_nodes": nodes,
    }


def _timed_query(url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": ASSET_LIST_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = response.read()
    elapsed = time.perf_counter() - began
    answer = json.loads(body)
    if answer.get("errors"):
        raise click.ClickException(f"GraphQL errors: {str(answer['errors'])[:500]}")
    return {"s": round(elapsed, 4), "bytes": len(body), "nodes": len(answer["data"]["assetNodes"])}


def run_validate_benchmark(sizes: Sequence[int], repeat: int) -> dict[str, Any]:
    """Per size: `repeat` rounds of validate over ours and over the naive factory (their order
    alternating each round), then the asset-list query against a webserver serving ours."""
    results: dict[str, Any] = {
        "machine": machine(dagster=version("dagster")),
        "sizes": list(sizes),
        "validate": [],
        "asset_list": [],
    }
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        for count in sizes:
            root = Path(tmp) / f"n{count}"
            progress(f"writing a registry of {count} projects under {root}")
            write_registry(root, count)
            samples: dict[str, list[dict[str, float]]] = {factory: [] for factory in FACTORIES}
            for attempt in range(repeat):
                order = FACTORIES if attempt % 2 == 0 else FACTORIES[::-1]
                for factory in order:
                    sample = time_validate(factory, root)
                    samples[factory].append(sample)
                    progress(
                        f"  validate {factory} N={count} round {attempt + 1}/{repeat}: "
                        f"{sample['wall_s']:.2f}s wall, {sample['cpu_s']:.2f}s CPU"
                    )
            row: dict[str, Any] = {"projects": count, "runs": repeat, "samples": samples}
            for factory in FACTORIES:
                for measure_name in ("wall_s", "cpu_s"):
                    values = [sample[measure_name] for sample in samples[factory]]
                    row[f"{factory}_{measure_name}"] = round(statistics.median(values), 3)
            row["speedup_wall"] = round(row["naive_wall_s"] / row["ours_wall_s"], 2)
            row["speedup_cpu"] = round(row["naive_cpu_s"] / row["ours_cpu_s"], 2)
            results["validate"].append(row)
            progress(f"  asset-list query N={count}: starting dagster-webserver")
            listing = time_asset_list(root, count, repeat)
            progress(
                f"  ... loaded in {listing['webserver_loaded_s']:.1f}s, query median "
                f"{listing['query_median_s']:.3f}s ({listing['asset_nodes']} assets)"
            )
            results["asset_list"].append(listing)
    results["machine"]["loadavg_at_end"] = loadavg()
    results["goals"] = _validate_goals(results)
    return results


def _validate_goals(results: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    rows = {row["projects"]: row for row in results["validate"]}
    if 1000 in rows:
        speedup = rows[1000]["speedup_wall"]
        goals["validate_speedup_at_1000"] = {
            "value": speedup,
            "goal": f">= {VALIDATE_SPEEDUP_GOAL}",
            "met": speedup >= VALIDATE_SPEEDUP_GOAL,
        }
    listing = {row["projects"]: row for row in results["asset_list"]}
    if 100 in listing and 1000 in listing:
        growth = round(listing[1000]["query_median_s"] / listing[100]["query_median_s"], 2)
        goals["asset_list_growth_100_to_1000"] = {
            "value": growth,
            "goal": f"<= {QUERY_GROWTH_GOAL}",
            "met": growth <= QUERY_GROWTH_GOAL,
        }
    return goals


def render_validate_table(results: dict[str, Any]) -> str:
    lines = [
        "| projects | ours s | ours CPU s | naive s | naive CPU s | naive / ours (wall) | "
        "naive / ours (CPU) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["validate"]:
        lines.append(
            f"| {row['projects']} | {row['ours_wall_s']:.2f} | {row['ours_cpu_s']:.2f} | "
            f"{row['naive_wall_s']:.2f} | {row['naive_cpu_s']:.2f} | "
            f"{row['speedup_wall']:.1f}x | {row['speedup_cpu']:.1f}x |"
        )
    lines += [
        "",
        "| projects | webserver loaded s | first query s | query median s | assets | response KB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["asset_list"]:
        lines.append(
            f"| {row['projects']} | {row['webserver_loaded_s']:.1f} | "
            f"{row['first_query_s']:.3f} | {row['query_median_s']:.3f} | {row['asset_nodes']} | "
            f"{row['response_bytes'] / 1024:.0f} |"
        )
    for name, goal in results["goals"].items():
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(f"\n- {name}: {goal['value']} (goal {goal['goal']}): {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The whole benchmark


def run_benchmark(sizes: Sequence[int], repeat: int, profile: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(dagster=version("dagster")),
        "sizes": list(sizes),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        for count in sizes:
            root = Path(tmp) / f"n{count}"
            progress(f"writing a registry of {count} projects under {root}")
            write_registry(root, count)
            runs_wanted = repeat if count <= SMALL_CASE_MAX else 1
            for factory in FACTORIES:
                runs = []
                for attempt in range(runs_wanted):
                    progress(f"  {factory} N={count} run {attempt + 1}/{runs_wanted}")
                    began = time.perf_counter()
                    runs.append(run_worker(factory, root, count, None))
                    progress(f"  ... {time.perf_counter() - began:.1f}s wall")
                results["cases"].append(_summarise(factory, count, runs))
            if profile and count == max(sizes):
                for factory in FACTORIES:
                    target = RESULTS_FILE.parent / f"load_{factory}_{count}.prof"
                    progress(f"  profiling {factory} N={count} into {target}")
                    run_worker(factory, root, count, target)
                    results.setdefault("profiles", {})[f"{factory}_{count}"] = str(target)
                    print_profile(target)
    results["machine"]["loadavg_at_end"] = loadavg()
    results["rows"] = _rows(results["cases"], sizes)
    results["goals"] = _goals(results["rows"])
    return results


def _summarise(factory: str, count: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    return {
        "factory": factory,
        "projects": count,
        "runs": len(runs),
        "time_s": median([r["time_s"] for r in runs]),
        "cpu_s": median([r["cpu_s"] for r in runs]),
        "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
        "import_s": median([r["phases_s"]["import"] for r in runs]),
        "rss_after_import_mb": median([r["rss_after_import_mb"] for r in runs]),
        "phases_s": {p: median([r["phases_s"][p] for r in runs]) for p in TIMED_PHASES},
        "snapshot_bytes": runs[0]["snapshot_bytes"],
        "asset_nodes": runs[0]["asset_nodes"],
        "jobs": runs[0]["jobs"],
        "schedules": runs[0]["schedules"],
        "sensors": runs[0]["sensors"],
        "all_runs": runs,
    }


def _rows(cases: list[dict[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    by_key = {(c["factory"], c["projects"]): c for c in cases}
    rows = []
    for count in sizes:
        ours, naive = by_key[("ours", count)], by_key[("naive", count)]
        rows.append(
            {
                "projects": count,
                "ours_s": ours["time_s"],
                "ours_mb": ours["peak_rss_mb"],
                "naive_s": naive["time_s"],
                "naive_mb": naive["peak_rss_mb"],
                "speedup": round(naive["time_s"] / ours["time_s"], 2),
                "ours_growth_from_previous": None,
            }
        )
    for previous, row in zip(rows, rows[1:], strict=False):
        row["ours_growth_from_previous"] = round(row["ours_s"] / previous["ours_s"], 2)
    return rows


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_n = {row["projects"]: row for row in rows}
    goals: dict[str, Any] = {}
    if 1000 in by_n:
        speedup = by_n[1000]["speedup"]
        goals["speedup_at_1000"] = {
            "value": speedup,
            "goal": f">= {SPEEDUP_GOAL}",
            "met": speedup >= SPEEDUP_GOAL,
        }
    if 100 in by_n and 1000 in by_n:
        growth = round(by_n[1000]["ours_s"] / by_n[100]["ours_s"], 2)
        goals["ours_growth_100_to_1000"] = {
            "value": growth,
            "goal": f"<= {GROWTH_GOAL}",
            "met": growth <= GROWTH_GOAL,
        }
    return goals


def render_table(results: dict[str, Any]) -> str:
    lines = [
        "| projects | ours s | ours MB | naive s | naive MB | speedup (naive/ours) | ours growth |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        growth = row["ours_growth_from_previous"]
        lines.append(
            f"| {row['projects']} | {row['ours_s']:.3f} | {row['ours_mb']:.0f} | "
            f"{row['naive_s']:.3f} | {row['naive_mb']:.0f} | {row['speedup']:.1f}x | "
            f"{f'{growth:.1f}x' if growth is not None else '-'} |"
        )
    for name, goal in results["goals"].items():
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(f"\n- {name}: {goal['value']} (goal {goal['goal']}): {verdict}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--sizes",
    default=None,
    help="Comma-separated project counts (default 10,100,1000; with --validate 100,1000).",
)
@click.option("--quick", is_flag=True, help="Only 10 and 100 projects (with --validate, only 100).")
@click.option(
    "--validate",
    "whole_process",
    is_flag=True,
    help="Time `dagster definitions validate` (ours, naive) and the webserver's asset list.",
)
@click.option(
    "--repeat", default=3, show_default=True, help="Runs of each case up to 100 projects."
)
@click.option("--profile", is_flag=True, help="Also cProfile both factories at the largest size.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Where the results go (default {RESULTS_FILE.relative_to(REPO_ROOT)}, with "
    f"--validate {VALIDATE_RESULTS_FILE.relative_to(REPO_ROOT)}).",
)
@click.option("--worker", type=click.Choice(FACTORIES), hidden=True)
@click.option("--worker-count", type=int, hidden=True)
@click.option("--worker-profile", type=click.Path(path_type=Path), hidden=True)
def main(
    sizes: str | None,
    quick: bool,
    repeat: int,
    whole_process: bool,
    profile: bool,
    output: Path | None,
    worker: str | None,
    worker_count: int | None,
    worker_profile: Path | None,
) -> None:
    """Time loading N synthetic projects into definitions and a webserver snapshot."""
    if worker is not None:
        if worker_count is None:
            raise click.UsageError("--worker needs --worker-count")
        result = measure(worker, worker_count, worker_profile)
        click.echo(json.dumps(result))
        return
    if whole_process:
        chosen = (
            tuple(int(s) for s in sizes.split(","))
            if sizes
            else QUICK_VALIDATE_SIZES
            if quick
            else VALIDATE_SIZES
        )
        results = run_validate_benchmark(chosen, repeat)
        output = output or VALIDATE_RESULTS_FILE
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        progress(f"results written to {output}")
        click.echo(render_validate_table(results))
        return
    chosen = (
        tuple(int(s) for s in sizes.split(",")) if sizes else QUICK_SIZES if quick else FULL_SIZES
    )
    results = run_benchmark(chosen, repeat, profile)
    output = output or RESULTS_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    progress(f"results written to {output}")
    click.echo(render_table(results))


if __name__ == "__main__":
    main()
