"""State benchmark: what `orch backup` costs (create, verify, restore) against copying the same
state with plain tools, and what the task heartbeat costs the dispatch tick.

The state of a busy installation is generated in a temporary directory: N projects with real
git repositories and private clones holding one task branch per finished task, the task rows,
sessions, one Dagster run per task with its events and the materialization of its task
partition, the dynamic partitions, pool limits and agent session folders. It is measured twice:
with the shipped SQLite instance (dagster.yaml, tasks in ORCH_HOME/tasks.db) and with the
production layout on PostgreSQL (deploy/dagster.yaml, tasks in the same database), each against
the floor measured in the same run (`cp -a` of the state; `pg_dump`/`pg_restore` plus `cp -a`).
Run it from the repository root:

    .venv/bin/python -m bench.state --quick

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click

from bench.machine import discard, finish, machine, progress
from tests.support.git import git

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "state.json"
FULL_PROJECTS, FULL_TASKS = 100, 2000
QUICK_PROJECTS, QUICK_TASKS = 20, 200
SEED = 20261129
PROFILE = "claude_code"
JOB_NAME = "__ASSET_JOB"
#: backup / floor and restore / floor: the goal.
GOAL_RATIO = 2.0
#: Heartbeat writes may add at most this share to the tick (median, writers on / off).
HEARTBEAT_GOAL = 0.10
#: The heartbeat simulation: this many running tasks, each beating every HEARTBEAT_EVERY_S.
RUNNING_TASKS = 20
HEARTBEAT_EVERY_S = 0.5
#: Pause between two measured ticks (the real tick comes every 5 s; back to back the tick
#: thread would hold the GIL and starve the writers).
TICK_PAUSE_S = 0.05
#: Ticks of one variant in a row; the variants alternate round by round, so that drift in the
#: machine's load falls on all of them alike.
TICKS_PER_ROUND = 5
#: How often each floor copy is made (the backup's all before ours, the restore's once before
#: ours and the rest after); the median is kept.
FLOOR_RUNS = 3
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")
#: What a generated file of a source repository holds, roughly.
WORDS = (
    "task agent branch commit queue slot pool run partition session clone bundle digest "
    "restore backup verify worker daemon sensor schedule project registry profile prompt"
).split()


# --------------------------------------------------------------------------------------------
# The plan: what every copy of the state holds


@dataclass(frozen=True)
class TaskPlan:
    id: str
    project: str
    run_id: str
    session_id: str
    created_at: datetime
    started_at: datetime
    finished_at: datetime
    branch: str
    commit: str = ""


@dataclass
class Plan:
    projects: list[str]
    tasks: list[TaskPlan]
    registry: Path  # holds projects/ and config/
    files: Path  # a template ORCH_HOME holding only workspaces/
    generation: dict[str, float] = field(default_factory=dict)

    def by_project(self) -> dict[str, list[TaskPlan]]:
        found: dict[str, list[TaskPlan]] = {p: [] for p in self.projects}
        for task in self.tasks:
            found[task.project].append(task)
        return found


def plan_tasks(projects: Sequence[str], total: int, rng: random.Random) -> list[TaskPlan]:
    """`total` finished tasks spread evenly over the projects, over the last few days."""
    from orchestration.tasks.models import new_task_id

    now = datetime.now(UTC)
    seen: set[str] = set()
    tasks = []
    for index in range(total):
        project = projects[index % len(projects)]
        task_id = new_task_id()
        while task_id in seen:
            task_id = new_task_id()
        seen.add(task_id)
        created = now - timedelta(hours=72) + timedelta(seconds=index * 100)
        started = created + timedelta(seconds=rng.randint(5, 60))
        finished = started + timedelta(seconds=rng.randint(60, 1800))
        tasks.append(
            TaskPlan(
                id=task_id,
                project=project,
                run_id=str(uuid.uuid4()),
                session_id=str(uuid.uuid4()),
                created_at=created,
                started_at=started,
                finished_at=finished,
                branch=f"orch/{project}/{task_id}",
            )
        )
    return tasks


def _text(rng: random.Random, lines: int) -> str:
    return "".join(" ".join(rng.choices(WORDS, k=12)) + "\n" for _ in range(lines))


def _blob(path: str, text: str) -> bytes:
    data = text.encode()
    return b"M 100644 inline " + path.encode() + b"\ndata %d\n" % len(data) + data + b"\n"


def _commit(ref: str, mark: int, when: datetime, message: str, parent: str | None) -> bytes:
    stamp = f"{int(when.timestamp())} +0000"
    data = message.encode()
    head = (
        f"commit {ref}\nmark :{mark}\n"
        f"author Orchestrator <orch@example.invalid> {stamp}\n"
        f"committer Orchestrator <orch@example.invalid> {stamp}\n"
    ).encode()
    head += b"data %d\n" % len(data) + data + b"\n"
    if parent:
        head += f"from {parent}\n".encode()
    return head


def make_source_repo(path: Path, project: str, seed: int) -> None:
    """A repository of a small project (about 20 files, 40 KB), one commit on `main`, written
    with one `git fast-import` and checked out."""
    rng = random.Random(f"{seed}-{project}")
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    files = {"README.md": f"# {project}\n\n" + _text(rng, 10), "pyproject.toml": "[project]\n"}
    for index in range(12):
        files[f"src/{project}/module_{index}.py"] = "# " + _text(rng, 30)
    for index in range(4):
        files[f"tests/test_{index}.py"] = "# " + _text(rng, 15)
    files["docs/index.md"] = _text(rng, 20)
    when = datetime(2026, 11, 1, tzinfo=UTC)
    stream = _commit("refs/heads/main", 1, when, "initial\n", None)
    stream += b"".join(_blob(name, text) for name, text in sorted(files.items())) + b"\n"
    git(path, "fast-import", "--quiet", stdin=stream)
    git(path, "reset", "-q", "--hard")


def add_task_branches(clone: Path, tasks: Sequence[TaskPlan], seed: int) -> dict[str, str]:
    """One commit per task on its branch in the private clone, made from the project's main
    branch with one `git fast-import`; task id -> commit."""
    rng = random.Random(f"{seed}-{clone}")
    stream = b""
    for mark, task in enumerate(tasks, start=1):
        message = f"{task.id}: work done by the agent\n"
        stream += _commit(
            f"refs/heads/{task.branch}", mark, task.finished_at, message, "refs/remotes/origin/main"
        )
        module = f"src/{task.project}/module_{rng.randrange(12)}.py"
        stream += _blob(module, "# " + _text(rng, 32))
        stream += _blob(f"notes/{task.id}.md", _text(rng, 8)) + b"\n"
    marks = clone / "bench-marks"
    git(clone, "fast-import", "--quiet", f"--export-marks={marks}", stdin=stream)
    shas = dict(line.split() for line in marks.read_text().splitlines())
    marks.unlink()
    return {task.id: shas[f":{mark}"] for mark, task in enumerate(tasks, start=1)}


def write_sessions(workspace: Path, tasks: Sequence[TaskPlan], seed: int) -> None:
    """The agent's folders of one project: a session transcript per task (about 2 KB each), a
    link to the latest, and the agent's home."""
    rng = random.Random(f"{seed}-{workspace.name}-sessions")
    sessions = workspace / "agents" / PROFILE / "projects" / "workspace"
    sessions.mkdir(parents=True)
    for task in tasks:
        lines = [f'{{"turn": {turn}, "text": "{_text(rng, 1).strip()}"}}\n' for turn in range(16)]
        (sessions / f"{task.session_id}.jsonl").write_text("".join(lines), encoding="utf-8")
    (workspace / "agents" / PROFILE / "latest").symlink_to(
        f"projects/workspace/{tasks[-1].session_id}.jsonl"
    )
    home = workspace / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = agent\n", encoding="utf-8")


def generate(root: Path, projects: int, tasks: int, seed: int) -> Plan:
    """The registry, the source repositories, and a template ORCH_HOME with the private clones
    (task branches in them) and session folders; the database state is written per mode."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestration.registry import load_registry
    from orchestration.settings import Settings
    from orchestration.workspace.workspace import ProjectWorkspace

    rng = random.Random(seed)
    names = [f"p{index:03d}" for index in range(projects)]
    plan = Plan(names, plan_tasks(names, tasks, rng), root / "registry", root / "files" / "home")
    timings = plan.generation

    mark = time.perf_counter()
    shutil.copytree(REPO_ROOT / "config", plan.registry / "config")
    (plan.registry / "projects" / "templates").mkdir(parents=True)
    for name in names:
        repo = root / "repos" / name
        (plan.registry / "projects" / f"{name}.yaml").write_text(
            f"name: {name}\nrepo: {repo}\n", encoding="utf-8"
        )
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: make_source_repo(root / "repos" / n, n, seed), names))
    timings["source_repositories_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    settings = Settings(plan.registry / "projects", plan.registry / "config", plan.files)
    registry = load_registry(settings)
    if registry.broken_names or len(registry.names) != projects:
        raise click.ClickException(f"the generated registry does not load: {registry.broken_names}")
    by_project = plan.by_project()
    commits: dict[str, str] = {}

    def clone(name: str) -> None:
        workspace = ProjectWorkspace(plan.files, registry.project(name).spec)
        workspace.sync()
        commits.update(add_task_branches(workspace.clone_path, by_project[name], seed))
        write_sessions(workspace.root, by_project[name], seed)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(clone, names))
    plan.tasks = [TaskPlan(**{**task.__dict__, "commit": commits[task.id]}) for task in plan.tasks]
    timings["clones_s"] = time.perf_counter() - mark
    return plan


# --------------------------------------------------------------------------------------------
# One copy of the state, in SQLite or PostgreSQL


@dataclass
class Place:
    """Where one copy of all state lives."""

    mode: str
    root: Path
    dagster_home: Path
    home: Path
    projects_dir: Path
    config_dir: Path
    tasks_url: str

    @property
    def settings(self) -> Any:
        from orchestration.settings import Settings

        return Settings(self.projects_dir, self.config_dir, self.home)

    def storage_dirs(self) -> list[Path]:
        """What the floor copies: DAGSTER_HOME's storage (not its dagster.yaml), ORCH_HOME and
        the registry."""
        found = [p for p in sorted(self.dagster_home.iterdir()) if p.is_dir()]
        return [*found, self.home, self.projects_dir, self.config_dir]


def make_place(root: Path, mode: str, config: Path, tasks_url: str | None) -> Place:
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(config, dagster_home / "dagster.yaml")
    home = root / "home"
    return Place(
        mode,
        root,
        dagster_home,
        home,
        root / "projects",
        root / "config",
        tasks_url or f"sqlite:///{home / 'tasks.db'}",
    )


def populate(place: Place, plan: Plan, instance: Any, store: Any) -> dict[str, float]:
    """Write the database state of `plan` into the instance and the task store of `place`:
    task rows and sessions (bulk), one SUCCESS run per task with its events, the
    materializations of the task partitions, the dynamic partitions and pool limits."""
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from orchestration.allocation.control import apply_pool_limits, settings_now
    from orchestration.registry import load_registry
    from orchestration.tags import RUN_KEY_TAG, tasks_partitions_name
    from orchestration.tasks.lifecycle import task_run_tags
    from orchestration.tasks.store import tasks_table

    timings: dict[str, float] = {}
    rng = random.Random(SEED)
    registry = load_registry(place.settings)

    mark = time.perf_counter()
    rows = []
    for task in plan.tasks:
        rows.append(
            {
                "id": task.id,
                "project": task.project,
                "prompt": f"Task {task.id}: " + " ".join(rng.choices(WORDS, k=40)),
                "status": "succeeded",
                "priority": 50,
                "after": "[]",
                "profile": None,
                "source": "cli",
                "dispatched": True,
                "attempts": 1,
                "dispatches": 1,
                "run_id": task.run_id,
                "branch": task.branch,
                "commit": task.commit,
                "session_id": task.session_id,
                "cost_usd": round(rng.uniform(0.05, 3.0), 4),
                "duration_s": (task.finished_at - task.started_at).total_seconds(),
                "tokens_in": rng.randint(10_000, 400_000),
                "tokens_out": rng.randint(1_000, 40_000),
                "turns": rng.randint(3, 60),
                "summary": " ".join(rng.choices(WORDS, k=60)),
                "extra": "{}",
                "created_at": task.created_at,
                "updated_at": task.finished_at,
                "started_at": task.started_at,
                "finished_at": task.finished_at,
                "heartbeat_at": task.finished_at - timedelta(seconds=5),
            }
        )
    with store.engine.begin() as connection:
        connection.execute(tasks_table.insert(), rows)
    for project, tasks in plan.by_project().items():
        store.save_session(project, PROFILE, tasks[-1].session_id, tasks[-1].id)
    timings["tasks_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    by_id = {task.id: task for task in store.tasks()}
    for task in plan.tasks:
        spec = registry.spec(task.project)
        assert spec is not None
        tags = task_run_tags(by_id[task.id], spec) | {
            RUN_KEY_TAG: f"{task.id}.1",
            "dagster/partition": task.id,
        }
        create_run_for_test(
            instance,
            job_name=JOB_NAME,
            run_id=task.run_id,
            status=dg.DagsterRunStatus.SUCCESS,
            tags=tags,
            asset_selection={dg.AssetKey([task.project, "tasks"])},
        )
    timings["runs_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    if place.mode == "sqlite":
        _sqlite_events(instance, plan)
    else:
        _postgres_events(instance, plan)
    timings["events_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    for project, tasks in plan.by_project().items():
        instance.add_dynamic_partitions(tasks_partitions_name(project), [t.id for t in tasks])
    apply_pool_limits(instance, settings_now(registry, store).pool_limits())
    timings["partitions_pools_s"] = time.perf_counter() - mark
    return timings


def _events(task: TaskPlan) -> list[Any]:
    """RUN_START, the materialization of the task's partition, RUN_SUCCESS."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    def entry(kind: DagsterEventType, when: datetime, data: Any = None) -> EventLogEntry:
        event = DagsterEvent(
            event_type_value=kind.value,
            job_name=JOB_NAME,
            event_specific_data=data,
            step_key=None if data is None else "tasks",
        )
        return EventLogEntry(
            error_info=None,
            level=logging.INFO if data is None else logging.DEBUG,
            user_message="",
            run_id=task.run_id,
            timestamp=when.timestamp(),
            dagster_event=event,
            job_name=JOB_NAME,
            step_key=event.step_key,
        )

    materialization = dg.AssetMaterialization(
        asset_key=[task.project, "tasks"],
        partition=task.id,
        metadata={"branch": task.branch, "commit": task.commit},
    )
    return [
        entry(DagsterEventType.RUN_START, task.started_at),
        entry(
            DagsterEventType.ASSET_MATERIALIZATION,
            task.finished_at,
            StepMaterializationData(materialization),
        ),
        entry(DagsterEventType.RUN_SUCCESS, task.finished_at + timedelta(seconds=1)),
    ]


def _sqlite_events(instance: Any, plan: Plan) -> None:
    """Each run's events in its own shard database (`<run id>.db`, a copy of an empty shard
    Dagster made), their asset and run-status events mirrored in `index.db` in one transaction,
    as `SqliteEventLogStorage.store_event` would write them one by one (about 30 times
    slower)."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    with tempfile.TemporaryDirectory(prefix="orch-bench-shard-") as scratch:
        empty = SqliteEventLogStorage(scratch)
        with empty.run_connection("template"):
            pass
        empty.dispose()
        template = Path(scratch) / "template.db"
        statuses, materializations = [], []
        for task in plan.tasks:
            events = _events(task)
            path = storage.path_for_shard(task.run_id)
            shutil.copyfile(template, path)
            engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
            with engine.begin() as connection:
                connection.execute(storage.prepare_insert_event_batch(events))
            engine.dispose()
            statuses += [events[0], events[2]]
            materializations.append(events[1])
    with storage.index_connection() as connection:
        connection.execute(storage.prepare_insert_event_batch(statuses))
        for project in plan.projects:
            events = [m for m in materializations if m.dagster_event.asset_key.path[0] == project]
            connection.execute(storage.prepare_insert_event_batch(events))
            last = connection.execute(sa.select(sa.func.max(SqlEventLogStorageTable.c.id)))
            storage._store_asset_event(connection, events[-1], int(last.scalar()))


def _postgres_events(instance: Any, plan: Plan) -> None:
    """Run-status events in one insert; each project's materializations in one
    `store_event_batch` (what Dagster does with a batch of materializations)."""
    storage = instance.event_log_storage
    statuses = []
    materializations: dict[str, list[Any]] = {}
    for task in plan.tasks:
        events = _events(task)
        statuses += [events[0], events[2]]
        materializations.setdefault(task.project, []).append(events[1])
    with storage._connect() as connection:
        connection.execute(storage.prepare_insert_event_batch(statuses))
    for events in materializations.values():
        storage.store_event_batch(events)


# --------------------------------------------------------------------------------------------
# Measuring


def tree_bytes(*paths: Path) -> int:
    """Apparent size of every regular file below `paths`."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
            continue
        for directory, _subdirectories, files in os.walk(path):
            for name in files:
                full = os.path.join(directory, name)
                if not os.path.islink(full):
                    total += os.lstat(full).st_size
    return total


def tree_listing(*paths: Path) -> dict[str, int]:
    """Every regular file below `paths` by path, with its size."""
    found = {}
    for path in paths:
        for directory, _subdirectories, files in os.walk(path):
            for name in files:
                full = os.path.join(directory, name)
                if not os.path.islink(full):
                    found[full] = os.lstat(full).st_size
    return found


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def cp_a(sources: Sequence[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", *map(str, sources), str(target)], check=True)


#: The steps of orch backup timed by `Probe`: (module, function) as the code calls them.
PROBED = {
    "orchestration.state.backup": (
        "load_registry",
        "hold_starts",
        "_wait_until_idle",
        "state_digest",
        "_copy_dagster",
        "_copy_tasks",
        "_copy_clones",
        "_copy_sessions",
        "_copy_archive",
        "_copy_registry",
        "release_starts",
        "_listing",
        "check_files",
        "_scratch_digest",
        "_put_back",
        "_restore_clone",
        "_restore_registry",
        "reconcile_after_restore",
    ),
    "orchestration.state.digest": (
        "_event_counts",
        "_all_materializations",
        "_dynamic_partitions",
        "_clone_refs",
    ),
    "orchestration.instance": ("open_instance",),
}


class Probe:
    """Wall time and calls of the steps in PROBED while a backup, a verification or a restore
    runs: each function is wrapped in place for the duration (nested steps count in their
    callers too, e.g. `state_digest` holds `_event_counts`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.each: dict[str, list[float]] = {}

    @contextmanager
    def watching(self) -> Iterator[Probe]:
        import importlib

        originals = []
        for module_name, names in PROBED.items():
            module = importlib.import_module(module_name)
            for name in names:
                original = getattr(module, name)
                originals.append((module, name, original))
                setattr(module, name, self._wrap(name, original))
        try:
            yield self
        finally:
            for module, name, original in originals:
                setattr(module, name, original)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.seconds[name] = self.seconds.get(name, 0.0) + took
                self.calls[name] = self.calls.get(name, 0) + 1
                self.each.setdefault(name, []).append(took)

        return timed_call

    def steps(self) -> dict[str, dict[str, Any]]:
        """Per step: total seconds, calls, and each call's seconds when there are few."""
        found: dict[str, dict[str, Any]] = {}
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            found[name] = {"s": round(seconds, 3), "calls": self.calls[name]}
            if 1 < self.calls[name] <= 4:
                found[name]["each_s"] = [round(s, 3) for s in self.each[name]]
        return found


def quiet_log() -> logging.Logger:
    log = logging.getLogger("bench.state")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(statistics.quantiles(ordered, n=10, method="inclusive")[-1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def measure_backup_restore(
    place: Place,
    instance: Any,
    store: Any,
    *,
    restore_place: Place,
    floor_dump: Callable[[Path], None] | None = None,
    floor_restore: Callable[[Path, int], None] | None = None,
    before_restore: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """create_backup, verify_backup and restore_backup, once each, and their floors
    FLOOR_RUNS times each (the median is kept): `cp -a` of the state directories to a new
    place, all before the backup (which may leave files in the state: they are recorded, not
    copied by the floor), and from the first copy to another place, once before the restore
    and the other times after; for PostgreSQL the floor also runs `floor_dump` (to a file) and
    `floor_restore` (the file, the attempt)."""
    from orchestration.state.backup import create_backup, restore_backup, verify_backup

    work = place.root.parent / f"{place.mode}-work"
    result: dict[str, Any] = {}
    sources = place.storage_dirs()
    if place.mode == "sqlite":
        result["state_bytes"] = tree_bytes(*sources)
    else:
        result["state_bytes"] = tree_bytes(place.home, place.projects_dir, place.config_dir)
    floor_backups: list[float] = []
    floor_restores: list[float] = []

    def floor_backup() -> None:
        copy = work / f"floor-copy-{len(floor_backups)}"

        def run() -> None:
            if floor_dump is not None:
                copy.mkdir(parents=True)
                floor_dump(copy / "database.dump")
            cp_a(sources, copy)

        seconds, _ = timed(run)
        floor_backups.append(seconds)
        result["floor_backup_bytes"] = tree_bytes(copy)
        progress(
            f"{place.mode}: floor backup {len(floor_backups)} (cp -a of "
            f"{', '.join(p.name for p in sources)}"
            + (", pg_dump" if floor_dump else "")
            + f"): {seconds:.2f}s, {result['floor_backup_bytes'] / 1e6:.1f} MB"
        )
        if len(floor_backups) > 1:
            shutil.rmtree(copy)

    def floor_restore_once() -> None:
        copy = work / "floor-copy-0"
        back = work / f"floor-restored-{len(floor_restores)}"

        def run() -> None:
            if floor_restore is not None:
                floor_restore(copy / "database.dump", len(floor_restores))
            cp_a([p for p in sorted(copy.iterdir()) if p.is_dir()], back)

        seconds, _ = timed(run)
        floor_restores.append(seconds)
        progress(
            f"{place.mode}: floor restore {len(floor_restores)} (cp -a back"
            + (", pg_restore" if floor_restore else "")
            + f"): {seconds:.2f}s"
        )
        shutil.rmtree(back)

    for _ in range(FLOOR_RUNS):
        floor_backup()
    before = tree_listing(*sources)
    progress(f"{place.mode}: create_backup (quiesced)")
    with Probe().watching() as probe:
        backup_s, manifest = timed(
            lambda: create_backup(place.settings, instance, store, to=work / "backups")
        )
    result["backup_bytes"] = manifest.bytes
    result["backup_files"] = len(manifest.files)
    result["backup_durations_s"] = manifest.durations_s
    result["backup_steps"] = probe.steps()
    result["digest_counts"] = manifest.state_digest.counts
    progress(
        f"  ... {backup_s:.2f}s, {manifest.bytes / 1e6:.1f} MB in {len(manifest.files)} files "
        f"({manifest.durations_s})"
    )
    after = tree_listing(*sources)
    added = sorted(set(after) - set(before))
    result["state_changed_by_backup"] = {
        "files_added": len(added),
        "bytes_added": sum(after[name] for name in added),
        "files_removed": len(set(before) - set(after)),
        "files_resized": sum(1 for name in set(before) & set(after) if before[name] != after[name]),
        "added_sample": [os.path.relpath(name, place.root) for name in added[:5]],
    }
    if added:
        progress(
            f"  the backup left {len(added)} new files in the state "
            f"({result['state_changed_by_backup']['bytes_added'] / 1e6:.1f} MB), e.g. "
            f"{result['state_changed_by_backup']['added_sample'][:2]}"
        )

    progress(f"{place.mode}: verify_backup")
    with Probe().watching() as probe:
        verify_s, report = timed(lambda: verify_backup(manifest.path))
    result["verify_steps"] = probe.steps()
    if report.digest != manifest.state_digest.digest:
        raise click.ClickException("verify_backup gave another digest")
    progress(f"  ... {verify_s:.2f}s")

    floor_restore_once()
    if before_restore is not None:
        before_restore()
    progress(f"{place.mode}: restore_backup into a fresh place")
    with Probe().watching() as probe:
        restore_s, restored = timed(
            lambda: restore_backup(
                manifest.path,
                restore_place.settings,
                dagster_home=restore_place.dagster_home,
                tasks_db_url=restore_place.tasks_url,
            )
        )
    if restored.digest != manifest.state_digest.digest:
        raise click.ClickException("the restored state has another digest")
    result["restore_steps"] = probe.steps()
    result["restore_reconcile"] = {
        key: (len(value) if isinstance(value, list) else value)
        for key, value in restored.reconcile.to_dict().items()
    }
    progress(f"  ... {restore_s:.2f}s (digest as backed up)")
    for _ in range(FLOOR_RUNS - 1):
        floor_restore_once()
    floor_backup_s = statistics.median(floor_backups)
    floor_restore_s = statistics.median(floor_restores)
    result |= {
        "floor_backup_runs_s": [round(s, 3) for s in floor_backups],
        "floor_restore_runs_s": [round(s, 3) for s in floor_restores],
        "floor_backup_s": round(floor_backup_s, 3),
        "backup_s": round(backup_s, 3),
        "verify_s": round(verify_s, 3),
        "floor_restore_s": round(floor_restore_s, 3),
        "restore_s": round(restore_s, 3),
        "backup_ratio": round(backup_s / floor_backup_s, 2),
        "restore_ratio": round(restore_s / floor_restore_s, 2),
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def beat_loop(
    store: Any,
    task_id: str,
    run_id: str,
    stop: threading.Event,
    offset: float,
    sink: list[float],
    lock: threading.Lock,
) -> None:
    """What a task run's heartbeat does, every HEARTBEAT_EVERY_S (after `offset`, to spread
    the writers over the interval) until `stop`: `TaskStore.beat`; each write's time to
    `sink`."""
    stop.wait(offset)
    while not stop.is_set():
        start = time.perf_counter()
        if not store.beat(task_id, run_id):
            raise RuntimeError(f"task {task_id} is no longer held by run {run_id}")
        took = time.perf_counter() - start
        with lock:
            sink.append(took)
        stop.wait(max(0.0, HEARTBEAT_EVERY_S - took))


@contextmanager
def beating_threads(
    url: str, running: Sequence[tuple[str, str]], sink: list[float]
) -> Iterator[None]:
    """One thread per running task, each beating through a TaskStore of its own (as each run
    worker has one), in this process; going when entered."""
    from orchestration.tasks.store import TaskStore

    stores = [TaskStore(url) for _ in running]
    stop, lock = threading.Event(), threading.Lock()
    threads = [
        threading.Thread(
            target=beat_loop,
            args=(own, task_id, run_id, stop, i * HEARTBEAT_EVERY_S / len(running), sink, lock),
            daemon=True,
        )
        for i, (own, (task_id, run_id)) in enumerate(zip(stores, running, strict=True))
    ]
    for thread in threads:
        thread.start()
    time.sleep(2 * HEARTBEAT_EVERY_S)  # every writer going
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for own in stores:
            own.dispose()


@contextmanager
def beating_process(
    url: str, running: Sequence[tuple[str, str]], sink: list[float], cpu: list[float]
) -> Iterator[None]:
    """The same threads in a process of their own (`--heartbeat-writers`), as the run workers
    are: they share the CPU with the tick, not its interpreter lock. Appends to `cpu` the
    process's CPU seconds per wall second while the tick ran (its start-up left out)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.state", "--heartbeat-writers"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({"url": url, "running": list(running)}) + "\n")
    process.stdin.flush()
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise click.ClickException("the heartbeat writer process did not start")
    try:
        yield
    finally:
        process.stdin.close()
        output = process.stdout.read()
        if process.wait(timeout=60) != 0:
            raise click.ClickException("the heartbeat writer process failed")
        report = json.loads(output)
        sink += report["beats"]
        cpu.append(report["cpu_s"] / report["wall_s"])


def writers_worker() -> None:
    """`--heartbeat-writers`: read {"url", "running"} from stdin, beat in threads, say `ready`,
    stop when stdin closes, and print the beats' times as JSON."""
    request = json.loads(sys.stdin.readline())
    beats: list[float] = []
    with beating_threads(request["url"], [tuple(p) for p in request["running"]], beats):
        print("ready", flush=True)
        cpu, wall = time.process_time(), time.perf_counter()
        sys.stdin.read()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"beats": beats, "cpu_s": cpu, "wall_s": wall}), flush=True)


class RunLookups:
    """Time spent in `instance.get_run_by_id` (one per claimed task in a tick), counted while
    entered."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.seconds = 0.0
        self.calls = 0

    @contextmanager
    def counting(self) -> Iterator[RunLookups]:
        original = self.instance.get_run_by_id

        def counted(run_id: str) -> Any:
            start = time.perf_counter()
            try:
                return original(run_id)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        self.instance.get_run_by_id = counted
        try:
            yield self
        finally:
            del self.instance.get_run_by_id


#: The variants of the tick with tasks running: label, what the writers are.
VARIANTS = {
    "running": f"{RUNNING_TASKS} running, no writes",
    "running_with_writers": f"{RUNNING_TASKS} running, heartbeats from threads here",
    "running_with_writer_process": f"{RUNNING_TASKS} running, heartbeats from another process",
}


def measure_heartbeat(
    place: Place, instance: Any, store: Any, plan: Plan, ticks: int, rounds: int
) -> dict[str, Any]:
    """`reconcile_ended_runs` timed with no running task, then with RUNNING_TASKS claimed tasks
    whose STARTED runs beat, in alternating rounds: no writes, RUNNING_TASKS threads of this
    process writing a heartbeat each every HEARTBEAT_EVERY_S, and the same threads in another
    process."""
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from orchestration.registry import load_registry
    from orchestration.tags import RUN_KEY_TAG, tasks_partitions_name
    from orchestration.tasks.lifecycle import reconcile_ended_runs, task_run_tags
    from orchestration.tasks.models import TaskStatus
    from orchestration.tasks.store import TaskStore

    log = quiet_log()
    home = place.home
    if not hasattr(TaskStore, "beat"):
        raise click.ClickException("TaskStore has no `beat` (the heartbeat is not in this tree)")

    def tick_samples(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            reconcile_ended_runs(store, instance, log, home)
            samples.append(time.perf_counter() - start)
            time.sleep(TICK_PAUSE_S)
        return samples

    tick_samples(3)  # warm: the store's and the instance's connections
    progress(f"{place.mode}: heartbeat: {ticks} ticks with no running task")
    idle = tick_samples(ticks)

    registry = load_registry(place.settings)
    running = []
    for index in range(RUNNING_TASKS):
        project = plan.projects[index % len(plan.projects)]
        task = store.add(project, f"running task {index}")
        assert task is not None and store.mark_dispatched(task.id)
        instance.add_dynamic_partitions(tasks_partitions_name(project), [task.id])
        spec = registry.spec(project)
        assert spec is not None
        run = create_run_for_test(
            instance,
            job_name=JOB_NAME,
            status=dg.DagsterRunStatus.STARTED,
            tags=task_run_tags(task, spec) | {RUN_KEY_TAG: f"{task.id}.1"},
        )
        store.claim(task.id, run.run_id)
        running.append((task.id, run.run_id))

    samples: dict[str, list[float]] = {key: [] for key in VARIANTS}
    beats: dict[str, list[float]] = {"running_with_writers": [], "running_with_writer_process": []}
    lookups = RunLookups(instance)
    writer_cpu: list[float] = []
    per_round = max(1, ticks // rounds)
    tick_samples(3)
    for index in range(rounds):
        for task_id, run_id in running:
            store.beat(task_id, run_id)  # fresh, as if they had just beaten
        progress(
            f"{place.mode}: heartbeat round {index + 1}/{rounds}: {per_round} ticks each with "
            f"{RUNNING_TASKS} running and no writes, writer threads, a writer process"
        )
        with lookups.counting():
            samples["running"] += tick_samples(per_round)
        with beating_threads(place.tasks_url, running, beats["running_with_writers"]):
            samples["running_with_writers"] += tick_samples(per_round)
        with beating_process(
            place.tasks_url, running, beats["running_with_writer_process"], writer_cpu
        ):
            samples["running_with_writer_process"] += tick_samples(per_round)
    still = store.tasks(ids=[task_id for task_id, _ in running])
    if any(task.status is not TaskStatus.RUNNING for task in still):
        raise click.ClickException("a running task was reaped during the heartbeat measurement")
    result: dict[str, Any] = {
        "idle": summary(idle),
        **{key: summary(values) for key, values in samples.items()},
        "run_lookups": {
            "calls_per_tick": round(lookups.calls / len(samples["running"]), 1),
            "ms_per_tick": round(lookups.seconds / len(samples["running"]) * 1000, 2),
            "tick_mean_ms": round(statistics.mean(samples["running"]) * 1000, 2),
        },
        "beats": {
            key: summary(values) | {"per_second": round(RUNNING_TASKS / HEARTBEAT_EVERY_S, 1)}
            for key, values in beats.items()
        },
        # CPU of the writer process (one core = 1.0), median over the rounds.
        "writer_process_cpu": round(statistics.median(writer_cpu), 4),
        "samples_ms": {
            "idle": [round(s * 1000, 3) for s in idle],
            **{key: [round(s * 1000, 3) for s in values] for key, values in samples.items()},
        },
    }
    for key in ("running_with_writers", "running_with_writer_process"):
        result[f"{key}_adds"] = {
            "median": round(result[key]["median_ms"] / result["running"]["median_ms"] - 1, 3),
            "p90": round(result[key]["p90_ms"] / result["running"]["p90_ms"] - 1, 3),
        }
    progress(
        f"  ... tick median {result['idle']['median_ms']} / "
        + " / ".join(str(result[key]["median_ms"]) for key in VARIANTS)
        + f" ms; of which run lookups {result['run_lookups']}"
    )
    return result


# --------------------------------------------------------------------------------------------
# The two modes


def _open(place: Place) -> tuple[Any, Any]:
    """The instance and the task store of `place`, as a fresh `orch` process opens them."""
    import dagster as dg

    from orchestration.tasks.store import TaskStore

    place.home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.from_config(str(place.dagster_home)), TaskStore(place.tasks_url)


def write_state(place: Place, plan: Plan) -> dict[str, float]:
    """The files (registry, clones, sessions) and the database state of `plan` in `place`,
    written through an instance of its own: on PostgreSQL with pooled connections
    (`optimize_for_webserver`; Dagster's storages otherwise open a connection per call)."""
    timings: dict[str, float] = {"files_s": _copy_files(plan, place)}
    progress(f"{place.mode}: writing {len(plan.tasks)} tasks, runs and events")
    mark = time.perf_counter()
    instance, store = _open(place)
    try:
        if place.mode == "postgres":
            instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        timings |= populate(place, plan, instance, store)
    finally:
        store.dispose()
        instance.dispose()
    timings["total_s"] = time.perf_counter() - mark + timings["files_s"]
    progress(f"  ... {timings['total_s']:.1f}s ({_rounded(timings)})")
    return timings


def _copy_files(plan: Plan, place: Place) -> float:
    """The registry and the template ORCH_HOME (clones, sessions) into `place`."""
    start = time.perf_counter()
    cp_a([plan.registry / "projects", plan.registry / "config"], place.root)
    cp_a([plan.files], place.root)
    return time.perf_counter() - start


def run_sqlite(root: Path, plan: Plan, ticks: int, rounds: int) -> dict[str, Any]:
    config = REPO_ROOT / "dagster.yaml"
    place = make_place(root / "sqlite" / "live", "sqlite", config, None)
    setup = write_state(place, plan)
    instance, store = _open(place)
    try:
        target = make_place(root / "sqlite" / "restored", "sqlite", config, None)
        result = measure_backup_restore(place, instance, store, restore_place=target)
        result["heartbeat"] = measure_heartbeat(place, instance, store, plan, ticks, rounds)
    finally:
        store.dispose()
        instance.dispose()
    result["setup_s"] = _rounded(setup)
    return result


@dataclass(frozen=True)
class Server:
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}@{PG_HOST}:{PG_PORT}/{database}"

    def database(self, name: str) -> Any:
        from orchestration.state.postgres import PgDatabase

        return PgDatabase.from_url(self.url(name))


def find_server() -> tuple[Server | None, str]:
    """The PostgreSQL server on PG_HOST:PG_PORT as the first role it lets in; None and why
    when it does not answer."""
    import sqlalchemy as sa

    problems = []
    for user in PG_USERS:
        engine = sa.create_engine(
            Server(user).url("postgres"),
            poolclass=sa.pool.NullPool,
            connect_args={"connect_timeout": 5},
        )
        try:
            with engine.connect() as connection:
                text = connection.execute(sa.text("SHOW server_version")).scalar()
            return Server(user), str(text)
        except sa.exc.SQLAlchemyError as exc:
            problems.append(f"as {user}: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    return None, "; ".join(problems)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_postgres(root: Path, plan: Plan, server: Server, ticks: int, rounds: int) -> dict[str, Any]:
    from orchestration.state.postgres import create_database, drop_database, dump, restore

    token = uuid.uuid4().hex[:8]
    names = {
        "live": f"orch_bench_state_{token}",
        "restored": f"orch_bench_state_{token}_restored",
        **{f"floor{i}": f"orch_bench_state_{token}_floor{i}" for i in range(FLOOR_RUNS)},
    }
    databases = {key: server.database(name) for key, name in names.items()}
    pg_env = {
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": server.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": names["live"],
    }
    config = REPO_ROOT / "deploy" / "dagster.yaml"
    made = []
    try:
        for database in databases.values():
            create_database(database)
            made.append(database)
        with environment(pg_env):
            place = make_place(
                root / "postgres" / "live", "postgres", config, server.url(names["live"])
            )
            setup = write_state(place, plan)
            instance, store = _open(place)
            try:
                target = make_place(
                    root / "postgres" / "restored",
                    "postgres",
                    config,
                    server.url(names["restored"]),
                )
                # The restored instance reads its database from DAGSTER_PG_DB, as it would on a
                # new host: pointed at the fresh database for the restore only.
                result = measure_backup_restore(
                    place,
                    instance,
                    store,
                    restore_place=target,
                    floor_dump=lambda file: dump(databases["live"], file),
                    floor_restore=lambda file, i: restore(databases[f"floor{i}"], file),
                    before_restore=lambda: os.environ.update(DAGSTER_PG_DB=names["restored"]),
                )
                os.environ["DAGSTER_PG_DB"] = names["live"]
                result["database_bytes"] = _database_bytes(server, names["live"])
                result["state_bytes"] += result["database_bytes"]
                result["heartbeat"] = measure_heartbeat(place, instance, store, plan, ticks, rounds)
            finally:
                store.dispose()
                instance.dispose()
    finally:
        for database in made:
            drop_database(database)
        leftover = _databases_like(server, f"orch_bench_state_{token}")
        if leftover:
            progress(f"postgres: databases left behind: {leftover}")
    result["setup_s"] = _rounded(setup)
    result["databases"] = list(names.values())
    result["server_user"] = server.user
    return result


def _database_bytes(server: Server, name: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(server.url(name), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            size = connection.execute(sa.text("SELECT pg_database_size(current_database())"))
            return int(size.scalar() or 0)
    finally:
        engine.dispose()


def _databases_like(server: Server, prefix: str) -> list[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(server.url("postgres"), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                {"p": prefix + "%"},
            )
            return [str(row[0]) for row in rows]
    finally:
        engine.dispose()


def _rounded(values: Mapping[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in values.items()}


# --------------------------------------------------------------------------------------------
# The table


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f}"


def _calls(step: Mapping[str, Any]) -> str:
    if "each_s" in step:
        return " (" + " + ".join(f"{s:.2f}" for s in step["each_s"]) + ")"
    return f" ({step['calls']}x)" if step["calls"] > 1 else ""


def render_table(results: dict[str, Any]) -> str:
    generation = results["generation"]
    lines = [
        f"State: {results['projects']} projects, {results['tasks']} finished tasks "
        f"({results['tasks'] // results['projects']} per project, a branch each), "
        f"{results['tasks']} runs. Files generated in {generation['total_s']:.1f} s "
        f"(source repositories {generation['source_repositories_s']:.1f} s, private clones "
        f"with task branches and session folders {generation['clones_s']:.1f} s); "
        f"load average {results['machine']['loadavg_at_start']} at the start, "
        f"{results['machine'].get('loadavg_at_end')} at the end.",
        "",
        "| mode | step | ours s | floor s | ours / floor | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    modes = [(m, results[m]) for m in ("sqlite", "postgres") if isinstance(results.get(m), dict)]
    floor_names = {
        "sqlite": ("`cp -a` of the state", "`cp -a` back"),
        "postgres": ("`pg_dump -Fc` + `cp -a`", "`pg_restore` + `cp -a` back"),
    }
    for mode, r in modes:
        if "skipped" in r:
            continue
        backup_floor, restore_floor = floor_names[mode]
        for step, ours, floor, ratio in (
            (
                f"backup (floor: {backup_floor})",
                r["backup_s"],
                r["floor_backup_s"],
                r["backup_ratio"],
            ),
            (
                f"restore (floor: {restore_floor})",
                r["restore_s"],
                r["floor_restore_s"],
                r["restore_ratio"],
            ),
        ):
            verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
            lines.append(
                f"| {mode} | {step} | {ours:.2f} | {floor:.2f} | {ratio:.1f}x | "
                f"<= {GOAL_RATIO:.0f}x: {verdict} |"
            )
        lines.append(f"| {mode} | verify_backup | {r['verify_s']:.2f} | - | - | (reported) |")
    lines += [
        "",
        "| mode | state MB | backup MB (files) | floor copy MB | backup / state | setup s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, r in modes:
        if "skipped" in r:
            lines.append(f"| {mode} | skipped: {r['skipped']} | | | | |")
            continue
        lines.append(
            f"| {mode} | {_mb(r['state_bytes'])} | {_mb(r['backup_bytes'])} ({r['backup_files']}) "
            f"| {_mb(r['floor_backup_bytes'])} | {r['backup_bytes'] / r['state_bytes']:.2f} | "
            f"{r['setup_s']['total_s']:.1f} |"
        )
    for mode, r in modes:
        changed = r.get("state_changed_by_backup")
        if changed and (changed["files_added"] or changed["files_removed"]):
            lines.append(
                f"\n- {mode}: the backup left {changed['files_added']} new files "
                f"({changed['bytes_added'] / 1e6:.1f} MB) in the state it copied and removed "
                f"{changed['files_removed']}, e.g. {', '.join(changed['added_sample'][:2])}"
            )
    lines += [
        "",
        "Where ours spends its time (seconds and calls of the steps of orchestration/state; "
        "a step's time includes the steps it calls: `state_digest` holds `_event_counts`, "
        "`_scratch_digest` holds `_put_back` and `state_digest`):",
        "",
    ]
    for mode, r in modes:
        if "skipped" in r:
            continue
        for what in ("backup", "verify", "restore"):
            steps = ", ".join(
                f"{name} {step['s']:.2f}" + _calls(step)
                for name, step in r[f"{what}_steps"].items()
                if step["s"] >= 0.05
            )
            lines.append(f"- {mode} {what} ({r[what + '_s']:.2f} s): {steps}")
    lines += [
        "",
        f"Dispatch tick (`reconcile_ended_runs`), {RUNNING_TASKS} running tasks, each heartbeat "
        f"written every {HEARTBEAT_EVERY_S} s through a TaskStore of its own:",
        "",
        "| mode | variant | ticks | median ms | p90 ms | median / no writes | p90 / no writes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode, r in modes:
        if "skipped" in r:
            continue
        h = r["heartbeat"]
        base = h["running"]
        for key, label in (("idle", "0 running"), *VARIANTS.items()):
            s = h[key]
            lines.append(
                f"| {mode} | {label} | {s['n']} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | "
                f"{s['median_ms'] / base['median_ms']:.2f}x | {s['p90_ms'] / base['p90_ms']:.2f}x |"
            )
    lines.append("")
    for mode, r in modes:
        if "skipped" in r:
            continue
        h = r["heartbeat"]
        lookups = h["run_lookups"]
        lines.append(
            f"- {mode}: with {RUNNING_TASKS} running and no writes, "
            f"{lookups['calls_per_tick']:.0f} `get_run_by_id` per tick take "
            f"{lookups['ms_per_tick']:.1f} ms of the tick's {lookups['tick_mean_ms']:.1f} ms "
            "(means)"
        )
        for key, where in (
            ("running_with_writers", "threads in this process"),
            ("running_with_writer_process", "threads in another process"),
        ):
            adds, beat = h[f"{key}_adds"], h["beats"][key]
            verdict = "met" if adds["median"] < HEARTBEAT_GOAL else "NOT met"
            lines.append(
                f"- {mode}: heartbeat writes from {where} add {adds['median']:+.1%} to the "
                f"median tick ({adds['p90']:+.1%} at p90; goal < {HEARTBEAT_GOAL:.0%}: "
                f"{verdict}); {beat['n']} beats, each {beat['median_ms']:.1f} ms median, "
                f"{beat['p90_ms']:.1f} ms p90, {beat['max_ms']:.1f} ms max"
            )
        share = h["writer_process_cpu"]
        rate = h["beats"]["running_with_writer_process"]["per_second"]
        lines.append(
            f"- {mode}: the writer process used {share:.1%} of one core for {rate:.0f} beats "
            f"per second ({share / rate * 1000:.2f} ms of CPU per beat)"
        )
    for mode, r in modes:
        if "skipped" not in r:
            for what in ("backup", "restore"):
                ratio = r[f"{what}_ratio"]
                verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
                lines.append(
                    f"- {mode} {what}: {ratio:.1f}x the floor (goal at most "
                    f"{GOAL_RATIO:.0f}x): {verdict}"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def _tool_version(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None


@click.command()
@click.option(
    "--quick", is_flag=True, help=f"{QUICK_PROJECTS} projects / {QUICK_TASKS} tasks, fewer ticks."
)
@click.option("--projects", type=click.IntRange(1, 10_000), default=None)
@click.option("--tasks", type=click.IntRange(1, 1_000_000), default=None, help="Finished tasks.")
@click.option("--ticks", type=click.IntRange(4, 10_000), default=None, help="Ticks per variant.")
@click.option("--no-postgres", is_flag=True, help="Skip the PostgreSQL mode.")
@click.option("--seed", type=int, default=SEED, show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary directory.")
@click.option("--heartbeat-writers", is_flag=True, hidden=True)
def main(
    quick: bool,
    projects: int | None,
    tasks: int | None,
    ticks: int | None,
    no_postgres: bool,
    seed: int,
    output: Path,
    keep: bool,
    heartbeat_writers: bool,
) -> None:
    """Time backup, verify and restore of a large state against plain copies, and the task
    heartbeat's cost on the dispatch tick."""
    if heartbeat_writers:
        writers_worker()
        return
    projects = projects or (QUICK_PROJECTS if quick else FULL_PROJECTS)
    tasks = tasks or (QUICK_TASKS if quick else FULL_TASKS)
    if tasks < projects:
        raise click.BadParameter("at least one task per project", param_hint="--tasks")
    ticks = ticks or (20 if quick else 40)
    rounds = max(1, ticks // TICKS_PER_ROUND)
    os.environ.pop("ORCH_TASKS_DB_URL", None)
    # Stopped from outside: clean up all the same (the databases made, the temporary folder).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    root = Path(tempfile.mkdtemp(prefix="orch-bench-state-"))
    results: dict[str, Any] = {
        "machine": machine(
            dagster=version("dagster"),
            git=_tool_version(["git", "--version"]),
            pg_dump=_tool_version(["pg_dump", "--version"]),
        ),
        "quick": quick,
        "projects": projects,
        "tasks": tasks,
        "ticks": ticks,
        "heartbeat_rounds": rounds,
        "running_tasks": RUNNING_TASKS,
        "heartbeat_every_s": HEARTBEAT_EVERY_S,
        "seed": seed,
    }
    began = time.monotonic()
    try:
        progress(f"generating {projects} projects, {tasks} tasks under {root}")
        mark = time.perf_counter()
        plan = generate(root, projects, tasks, seed)
        plan.generation["total_s"] = time.perf_counter() - mark
        results["generation"] = _rounded(plan.generation)
        progress(f"  ... {results['generation']}")
        results["sqlite"] = run_sqlite(root, plan, ticks, rounds)
        if no_postgres:
            results["postgres"] = {"skipped": "--no-postgres"}
        else:
            server, detail = find_server()
            if server is None:
                message = f"PostgreSQL on {PG_HOST}:{PG_PORT} does not answer ({detail})"
                progress(f"postgres: skipped: {message}")
                results["postgres"] = {"skipped": message}
            else:
                results["machine"]["postgres_server"] = detail
                results["postgres"] = run_postgres(root, plan, server, ticks, rounds)
    finally:
        discard(root, keep)
    finish(results, render_table, output, began)


if __name__ == "__main__":
    main()
