"""`orch backup`: one consistent copy of all the orchestrator's state, checked, and put back.

What is copied: the Dagster instance (SQLite: every database of its storage directories through
SQLite's backup API; PostgreSQL: one `pg_dump` of its database), its compute logs, the task
database (inside that dump when it shares the database), every private clone as a git bundle
(task branches live only there), the agent session folders, archived projects and the registry
files. `MANIFEST.json` lists every file with its sha256 and records the state digest
(`orchestration.state.digest`) of what was copied.

Quiesced (the default): new starts are held (`hold_starts`), the backup waits for the runs in
progress to end, copies, and checks that the digest did not change while it copied; the digest
recorded is the one of the live state. Online: nothing is held, and the digest recorded is the
one of the backup restored into a scratch place, so that it always describes the files.

A restore checks every file first, refuses a target that holds state unless told to wipe it,
puts every part back, checks the digest of what it restored against the manifest's, and then
reconciles (`orchestration.state.reconcile`): what was in flight at backup time is not.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import sqlalchemy as sa
import yaml
from filelock import FileLock, Timeout

from orchestration.allocation.control import IN_PROGRESS, hold_starts, release_starts
from orchestration.control.archive import CLONE_DIR, ArchiveError, bundle_clone, unbundle_clone
from orchestration.registry import Registry, load_registry
from orchestration.settings import Settings
from orchestration.state.copies import (
    copy_closed_sqlite,
    copy_sqlite,
    copy_tree,
    extract_tar,
    is_empty_dir,
    remove_sqlite,
    remove_tree,
    sha256_file,
    tree_entries,
)
from orchestration.state.digest import ShardCounts, StateDigest, state_digest, workspace_names
from orchestration.state.layout import (
    POSTGRES,
    SQLITE,
    InstanceLayout,
    LayoutError,
    instance_layout,
    layout_of_ref,
)
from orchestration.state.parallel import each, each_by
from orchestration.state.postgres import (
    PgDatabase,
    PostgresError,
    create_database,
    drop_database,
    dump,
    empty_database,
    restore,
    table_count,
)
from orchestration.state.reconcile import ReconcileReport, reconcile_after_restore
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from orchestration.workspace.git import GitError
from orchestration.workspace.isolation import IsolationError, project_dir

#: The version of the manifest's format.
FORMAT = 1
MANIFEST = "MANIFEST.json"
#: The folders of a project's workspace kept as its sessions: the agent home, the
#: per-profile agent sessions, and task outcomes not recorded yet.
SESSION_DIRS = ("home", "agents", "outcomes")
#: Where each part lives in a backup.
DAGSTER_DIR = "dagster"
CONFIG_FILE = "dagster/dagster.yaml"
DUMP_FILE = "dagster/dagster.dump"
COMPUTE_LOGS_DIR = "dagster/compute_logs"
TASKS_SQLITE_FILE = "tasks/tasks.db"
TASKS_DUMP_FILE = "tasks/tasks.dump"
#: The databases of a SQLite instance without which nothing can be restored: `index.db` holds
#: the asset index, dynamic partitions and pool limits, which cannot be rebuilt from the runs.
REQUIRED_SQLITE = (
    "dagster/runs/runs.db",
    "dagster/events/index.db",
    "dagster/schedules/schedules.db",
)
#: The statuses of a run that has ended: its event shard is written no more.
FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]
#: How often a quiesced backup looks whether the runs in progress have ended.
QUIESCE_POLL_S = 1.0
#: How many times a quiesced backup copies again when the state changed while it copied.
COPY_ATTEMPTS = 3
#: How long a backup waits for a run to let go of a project's workspace.
WORKSPACE_LOCK_TIMEOUT_S = 60.0
#: Variables a verification reads the PostgreSQL password from (a manifest never holds it).
PASSWORD_VARIABLES = ("DAGSTER_PG_PASSWORD", "PGPASSWORD")

Progress = Callable[[str], None]
T = TypeVar("T")


def _quiet(_message: str) -> None:
    """The default progress: say nothing."""


class BackupError(Exception):
    """A backup cannot be made, checked or restored; the message says which file or step and
    what to do."""


@dataclass(frozen=True)
class BackupManifest:
    """A backup as its MANIFEST.json describes it."""

    path: Path
    name: str
    created_at: str
    mode: str
    online: bool
    quiesced: bool
    dagster_version: str
    orchestration_version: str
    #: Every file by its path in the backup: `sha256` and `size`, or `link` for a link.
    files: dict[str, dict[str, Any]]
    #: What each part holds and where: dagster, tasks, clones, sessions, archive, registry.
    parts: dict[str, Any]
    durations_s: dict[str, float]
    state_digest: StateDigest

    @property
    def bytes(self) -> int:
        return sum(int(entry.get("size", 0)) for entry in self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "created_at": self.created_at,
            "mode": self.mode,
            "online": self.online,
            "quiesced": self.quiesced,
            "dagster_version": self.dagster_version,
            "orchestration_version": self.orchestration_version,
            "parts": self.parts,
            "durations_s": self.durations_s,
            "state_digest": self.state_digest.to_dict(),
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, path: Path, data: Mapping[str, Any]) -> BackupManifest:
        try:
            if data.get("format") != FORMAT:
                raise BackupError(
                    f"{path / MANIFEST} has format {data.get('format')!r}; this orch reads "
                    f"format {FORMAT}"
                )
            return cls(
                path=path,
                name=str(data["name"]),
                created_at=str(data["created_at"]),
                mode=str(data["mode"]),
                online=bool(data["online"]),
                quiesced=bool(data["quiesced"]),
                dagster_version=str(data["dagster_version"]),
                orchestration_version=str(data["orchestration_version"]),
                files={str(k): dict(v) for k, v in dict(data["files"]).items()},
                parts=dict(data["parts"]),
                durations_s={str(k): float(v) for k, v in dict(data["durations_s"]).items()},
                state_digest=StateDigest.from_dict(data["state_digest"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(f"{path / MANIFEST} is not a backup manifest: {exc!r}") from exc

    def summary(self) -> dict[str, Any]:
        """What `orch backup create --json` prints."""
        tasks = self.parts.get("tasks", {})
        return {
            "path": str(self.path),
            "name": self.name,
            "mode": self.mode,
            "online": self.online,
            "quiesced": self.quiesced,
            "files": len(self.files),
            "bytes": self.bytes,
            "digest": self.state_digest.digest,
            "counts": self.state_digest.counts,
            "tasks": f"in {tasks['in']}" if "in" in tasks else tasks.get("file"),
            "durations_s": self.durations_s,
        }


@dataclass(frozen=True)
class VerifyReport:
    """A backup whose every file matched its manifest and whose restored copy has the digest
    the manifest records."""

    path: Path
    mode: str
    files: int
    bytes: int
    digest: str
    #: Where it was restored to be checked (a temporary directory, a scratch database); gone.
    scratch: str
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "mode": self.mode,
            "files": self.files,
            "bytes": self.bytes,
            "digest": self.digest,
            "scratch": self.scratch,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class RestoreReport:
    """What `restore_backup` put back and set right."""

    path: Path
    mode: str
    dagster_home: Path
    home: Path
    #: The digest of the restored state before reconciling: the manifest's.
    digest: str
    wiped: tuple[str, ...]
    registry: dict[str, str]
    migrated: bool
    reconcile: ReconcileReport
    duration_s: float
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "mode": self.mode,
            "dagster_home": str(self.dagster_home),
            "home": str(self.home),
            "digest": self.digest,
            "counts": self.counts,
            "wiped": list(self.wiped),
            "registry": self.registry,
            "migrated": self.migrated,
            "reconcile": self.reconcile.to_dict(),
            "duration_s": self.duration_s,
        }


# Creating ------------------------------------------------------------------------------------


def create_backup(
    settings: Settings,
    instance: dg.DagsterInstance,
    store: TaskStore,
    *,
    to: Path,
    online: bool = False,
    quiesce_timeout_s: float = 600,
    progress: Progress = _quiet,
    registry: Registry | None = None,
) -> BackupManifest:
    """Write one backup of all state to `to/<UTC timestamp>/` and return its manifest.

    Quiesced (default): new starts are held while the backup waits (up to `quiesce_timeout_s`)
    for the runs in progress to end and copies; the hold is released whatever happens.
    `online`: nothing is held; the digest recorded is the one of the backup restored into a
    scratch place. A half-written backup is deleted; a finished one appears at once (it is
    written under a hidden name and renamed).
    """
    started = time.monotonic()
    layout = _step("read where the instance keeps its state", lambda: _live_layout(instance))
    target_root = Path(to).absolute()
    _refuse_inside_state(target_root, settings, layout)
    now = datetime.now(UTC)
    name = _new_name(target_root, now)
    work = target_root / f".{name}.partial"
    durations: dict[str, float] = {}
    try:
        target_root.mkdir(parents=True, exist_ok=True)
        if online:
            progress("online backup: nothing is held; the digest is taken from a restored copy")
            mark = time.monotonic()
            parts = _write_parts(work, settings, instance, store, layout, progress)
            durations["copy"] = _since(mark)
            mark = time.monotonic()
            digest, _ = _scratch_digest(
                work, layout.mode, parts, progress, servers=_live_servers(layout, store)
            )
            durations["digest"] = _since(mark)
        else:
            registry = registry or load_registry(settings)
            progress("quiescing: holding new starts")
            try:
                _step("hold new starts", lambda: hold_starts(instance, store, registry))
                mark = time.monotonic()
                _wait_until_idle(instance, quiesce_timeout_s, progress)
                durations["quiesce"] = _since(mark)
                parts, digest = _copy_while_still(
                    work, settings, instance, store, layout, progress, durations
                )
            finally:
                _step(
                    "release the hold on new starts (until it is, no agent run starts: run "
                    "`orch backup create` again, or `orch allocation apply` after fixing the "
                    "cause)",
                    lambda: release_starts(instance, store, registry),
                )
                progress("released the hold on new starts")
        durations["total"] = _since(started)
        manifest = BackupManifest(
            path=target_root / name,
            name=name,
            created_at=now.isoformat(),
            mode=layout.mode,
            online=online,
            quiesced=not online,
            dagster_version=dg.__version__,
            orchestration_version=_orchestration_version(),
            files=_listing(work),
            parts=parts,
            durations_s=durations,
            state_digest=digest,
        )
        (work / MANIFEST).write_text(
            json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        os.rename(work, manifest.path)
    except BaseException:
        remove_tree(work)
        raise
    progress(f"backup written to {manifest.path}")
    return manifest


def _copy_while_still(
    work: Path,
    settings: Settings,
    instance: dg.DagsterInstance,
    store: TaskStore,
    layout: InstanceLayout,
    progress: Progress,
    durations: dict[str, float],
) -> tuple[dict[str, Any], StateDigest]:
    """Copy everything between two digests of the live state; copy again when they differ
    (something wrote meanwhile), so that the digest recorded describes the files."""
    changed: list[str] = []
    shards = ShardCounts()
    for attempt in range(1, COPY_ATTEMPTS + 1):
        mark = time.monotonic()
        before = _step(
            "read the state digest",
            lambda: state_digest(instance, store, settings.home, shards=shards),
        )
        durations["digest"] = _since(mark)
        mark = time.monotonic()
        parts = _write_parts(work, settings, instance, store, layout, progress)
        durations["copy"] = _since(mark)
        after = _step(
            "read the state digest",
            lambda: state_digest(instance, store, settings.home, shards=shards),
        )
        if after.digest == before.digest:
            return parts, after
        changed = before.differing(after)
        progress(
            f"the state changed while it was copied ({', '.join(changed)}); "
            f"copying again (attempt {attempt + 1} of {COPY_ATTEMPTS})"
        )
        remove_tree(work)
    raise BackupError(
        f"the state kept changing while it was copied ({', '.join(changed)}), although new "
        "starts were held; stop what writes to it (the daemon's sensors, `orch` commands) and "
        "try again, or make an online backup (`--online`)"
    )


def _wait_until_idle(instance: dg.DagsterInstance, timeout_s: float, progress: Progress) -> None:
    """Wait until no run is in progress (not started, starting, started, canceling)."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
        ids = {run.run_id for run in runs}
        if not ids:
            return
        if ids != seen:
            progress(f"waiting for {len(ids)} run(s) in progress to end: {', '.join(sorted(ids))}")
            seen = ids
        if time.monotonic() >= deadline:
            raise BackupError(
                f"{len(ids)} run(s) still in progress after {timeout_s:g} s "
                f"({', '.join(sorted(ids))}); no backup was made and new starts are released "
                "again. Wait for them to end, give more time (`--timeout`), or make an online "
                "backup (`--online`): its restore fails those runs and queues their tasks again"
            )
        time.sleep(min(QUIESCE_POLL_S, max(0.0, deadline - time.monotonic())))


def _write_parts(
    work: Path,
    settings: Settings,
    instance: dg.DagsterInstance,
    store: TaskStore,
    layout: InstanceLayout,
    progress: Progress,
) -> dict[str, Any]:
    work.mkdir(parents=True)
    parts: dict[str, Callable[[], Any]] = {
        "dagster": lambda: _copy_dagster(work, instance, layout, progress),
        "tasks": lambda: _copy_tasks(work, store, layout, progress),
        "clones": lambda: _copy_clones(work, settings.home, progress),
        "sessions": lambda: _copy_sessions(work, settings.home, progress),
        "archive": lambda: _copy_archive(work, settings.home, progress),
        "registry": lambda: _copy_registry(work, settings, progress),
    }
    # The parts at once: git processes, file copies and Python packing overlap.
    copied = each_by(lambda name: parts[name](), list(parts))
    return copied


def _copy_dagster(
    work: Path, instance: dg.DagsterInstance, layout: InstanceLayout, progress: Progress
) -> dict[str, Any]:
    info: dict[str, Any] = {"config": None, "compute_logs": layout.compute_logs_kind}
    config = Path(instance.root_directory) / "dagster.yaml"
    if config.is_file():
        (work / DAGSTER_DIR).mkdir(parents=True, exist_ok=True)
        (work / CONFIG_FILE).write_bytes(config.read_bytes())
        info["config"] = CONFIG_FILE
    if layout.mode == SQLITE:
        finished = set(instance.get_run_ids(filters=dg.RunsFilter(statuses=FINISHED)))
        databases: dict[str, list[str]] = {}
        for role, directory in layout.sqlite_dirs.items():
            names = sorted(path.name for path in directory.glob("*.db") if path.is_file())
            progress(f"dagster: copying {len(names)} {role} database(s) from {directory}")

            def copy(name: str, directory: Path = directory, role: str = role) -> None:
                source, target = directory / name, work / DAGSTER_DIR / role / name
                # The shard of a run that had ended before the copy began is written no more.
                copied = False
                if Path(name).stem in finished:  # a finished run's shard is written no more
                    copied = _step(f"copy {source}", partial(copy_closed_sqlite, source, target))
                if not copied:
                    _step(f"copy {source}", partial(copy_sqlite, source, target))

            each(copy, names)
            databases[role] = names
        info["databases"] = databases
    else:
        assert layout.postgres_url is not None
        database = PgDatabase.from_url(layout.postgres_url)
        progress(f"dagster: pg_dump of {database.describe()}")
        (work / DAGSTER_DIR).mkdir(parents=True, exist_ok=True)
        _step("dump the Dagster database", lambda: dump(database, work / DUMP_FILE))
        info |= {"dump": DUMP_FILE, "postgres": database.to_dict()}
    if layout.compute_logs is not None and layout.compute_logs.is_dir():
        progress(f"dagster: copying the compute logs from {layout.compute_logs}")
        source = layout.compute_logs
        _step(f"copy {source}", lambda: copy_tree(source, work / COMPUTE_LOGS_DIR))
        info["compute_logs_dir"] = COMPUTE_LOGS_DIR
    return info


def _copy_tasks(
    work: Path, store: TaskStore, layout: InstanceLayout, progress: Progress
) -> dict[str, Any]:
    url = sa.engine.make_url(store.url)
    if url.get_backend_name() == "sqlite":
        if not url.database:
            raise BackupError(f"the task database {store.url} is not a file; nothing to copy")
        source = Path(url.database)
        progress(f"tasks: copying {source}")
        _step(f"copy {source}", lambda: copy_sqlite(source, work / TASKS_SQLITE_FILE))
        return {"dialect": "sqlite", "file": TASKS_SQLITE_FILE}
    if url.get_backend_name() != "postgresql":
        raise BackupError(
            f"the task database is {url.get_backend_name()}; a backup copies SQLite or PostgreSQL"
        )
    database = PgDatabase.from_url(store.url)
    if layout.postgres_url and database.same_database(PgDatabase.from_url(layout.postgres_url)):
        progress("tasks: in the Dagster database, so in its dump")
        return {"dialect": "postgresql", "in": DUMP_FILE}
    progress(f"tasks: pg_dump of {database.describe()}")
    (work / "tasks").mkdir(parents=True, exist_ok=True)
    _step("dump the task database", lambda: dump(database, work / TASKS_DUMP_FILE))
    return {"dialect": "postgresql", "file": TASKS_DUMP_FILE, "postgres": database.to_dict()}


def _copy_clones(work: Path, home: Path, progress: Progress) -> dict[str, Any]:
    (work / "clones").mkdir(exist_ok=True)

    def copy(name: str) -> dict[str, Any] | None:
        root = Path(home) / "workspaces" / name
        clone = root / CLONE_DIR
        if not clone.is_dir():
            return None
        progress(f"clones: bundling {name}")
        bundle = work / "clones" / f"{name}.bundle"
        # Not verified here (a third of the cost): `orch backup verify` makes every clone again
        # from its bundle and compares its refs, and a restore does the same.
        with _workspace_lock(root):
            kept = _step(
                f"bundle the private clone {clone}",
                partial(bundle_clone, clone, bundle, verify=False),
            )
        if kept is None:
            return None  # a clone whose creation failed: the next sync makes it again
        refs = f"clones/{name}.refs"
        (work / refs).write_text(kept.refs + ("\n" if kept.refs else ""), encoding="utf-8")
        return {
            "bundle": f"clones/{name}.bundle" if kept.bundle is not None else None,
            "refs": refs,
            "object_format": kept.object_format,
            "remote": kept.remote,
        }

    copied = each_by(copy, workspace_names(home))
    return {name: clone for name, clone in copied.items() if clone is not None}


def _copy_sessions(work: Path, home: Path, progress: Progress) -> dict[str, Any]:
    def copy(name: str) -> dict[str, Any] | None:
        root = Path(home) / "workspaces" / name
        kept = [d for d in SESSION_DIRS if (root / d).is_dir() and not (root / d).is_symlink()]
        if not kept:
            return None
        for folder in kept:
            source, target = root / folder, work / "sessions" / name / folder
            _step(f"copy the sessions of {name} in {source}", partial(copy_tree, source, target))
        progress(f"sessions: copied {', '.join(kept)} of {name}")
        return {"dir": f"sessions/{name}", "dirs": kept}

    copied = each_by(copy, workspace_names(home))
    return {name: session for name, session in copied.items() if session}


def _copy_archive(work: Path, home: Path, progress: Progress) -> str | None:
    source = Path(home) / "archive"
    if not source.is_dir() or is_empty_dir(source):
        return None
    progress(f"archive: copying {source}")
    _step(f"copy {source}", lambda: copy_tree(source, work / "archive"))
    return "archive"


def _copy_registry(work: Path, settings: Settings, progress: Progress) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, source in (("projects", settings.projects_dir), ("config", settings.config_dir)):
        if source.is_dir():
            progress(f"registry: copying {source}")
            _step(f"copy {source}", partial(copy_tree, source, work / "registry" / key))
            kept[key] = f"registry/{key}"
        else:
            kept[key] = None
    return kept


# Verifying -----------------------------------------------------------------------------------


def prune_backups(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups in `root` (folders holding a manifest, named by
    their UTC time); the folders deleted. Anything else there is left alone."""
    backups = sorted(
        (entry for entry in Path(root).iterdir() if (entry / MANIFEST).is_file()),
        key=lambda entry: entry.name,
    )
    doomed = backups[:-keep] if keep > 0 else backups
    for path in doomed:
        remove_tree(path)
    return doomed


def read_manifest(path: Path) -> BackupManifest:
    """The manifest of the backup in the directory `path`."""
    path = Path(path).absolute()
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    file = path / MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BackupError(f"{path} is not a backup: it has no {MANIFEST}") from exc
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise BackupError(f"{file} is not a backup manifest")
    return BackupManifest.from_dict(path, data)


def verify_backup(path: Path, *, progress: Progress = _quiet) -> VerifyReport:
    """Check a backup: every file there with its recorded sha256, then restored into a scratch
    place (a temporary DAGSTER_HOME and ORCH_HOME; for PostgreSQL a scratch database on the
    same server, dropped afterwards) with the digest its manifest records. BackupError naming
    what is missing, changed or different otherwise."""
    started = time.monotonic()
    manifest = read_manifest(path)
    check_files(manifest, progress)
    digest, scratch = _scratch_digest(manifest.path, manifest.mode, manifest.parts, progress)
    _compare(manifest, digest, "the backup restored into a scratch place")
    progress(f"verified: digest {digest.digest}")
    return VerifyReport(
        path=manifest.path,
        mode=manifest.mode,
        files=len(manifest.files),
        bytes=manifest.bytes,
        digest=digest.digest,
        scratch=scratch,
        duration_s=_since(started),
    )


def check_files(manifest: BackupManifest, progress: Progress = _quiet) -> None:
    """Every file the manifest lists is there, unchanged, and every file a part needs is
    listed; BackupError naming each one that is not."""
    progress(f"checking {len(manifest.files)} files of {manifest.path}")
    root = manifest.path

    def status_of(relative: str) -> str | None:
        """Whether the file is "missing", "changed" or (None) as the manifest says."""
        entry = manifest.files[relative]
        file = _inside(root, relative)
        if not os.path.lexists(file):
            return "missing"
        if "link" in entry:
            same = file.is_symlink() and os.readlink(file) == entry["link"]
        else:
            same = (
                not file.is_symlink()
                and file.is_file()
                and file.stat().st_size == entry.get("size")
                and sha256_file(file) == entry.get("sha256")
            )
        return None if same else "changed"

    found = each_by(status_of, sorted(manifest.files))
    missing = [name for name, status in found.items() if status == "missing"]
    changed = [name for name, status in found.items() if status == "changed"]
    unlisted = [name for name in _required_files(manifest) if name not in manifest.files]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if changed:
        problems.append(f"changed since the backup was made: {', '.join(changed)}")
    if unlisted:
        problems.append(f"not in its manifest: {', '.join(unlisted)}")
    if problems:
        note = ""
        if any(name.endswith("/index.db") for name in missing + changed + unlisted):
            note = (
                " (index.db holds the asset index, dynamic partitions and pool limits, which "
                "cannot be rebuilt from the runs)"
            )
        raise BackupError(
            f"the backup {root} is damaged: {'; '.join(problems)}{note}; it cannot be restored"
        )


def _required_files(manifest: BackupManifest) -> list[str]:
    """The files the parts of the manifest name."""
    parts = manifest.parts
    needed: list[str] = []
    dagster_part = parts.get("dagster", {})
    if manifest.mode == SQLITE:
        needed += list(REQUIRED_SQLITE)
        for role, names in dagster_part.get("databases", {}).items():
            needed += [f"{DAGSTER_DIR}/{role}/{name}" for name in names]
    else:
        needed.append(DUMP_FILE)
    if dagster_part.get("config"):
        needed.append(CONFIG_FILE)
    if parts.get("tasks", {}).get("file"):
        needed.append(parts["tasks"]["file"])
    for clone in parts.get("clones", {}).values():
        needed += [name for name in (clone.get("bundle"), clone.get("refs")) if name]
    needed += [s["file"] for s in parts.get("sessions", {}).values() if "file" in s]
    return list(dict.fromkeys(needed))


def _compare(manifest: BackupManifest, digest: StateDigest, what: str, after: str = "") -> None:
    recorded = manifest.state_digest
    if digest.digest != recorded.digest:
        differing = recorded.differing(digest)
        counts = {
            name: (recorded.counts.get(name), digest.counts.get(name))
            for name in sorted(set(recorded.counts) | set(digest.counts))
            if recorded.counts.get(name) != digest.counts.get(name)
        }
        detail = ", ".join(f"{k}: {a} recorded, {b} found" for k, (a, b) in counts.items())
        raise BackupError(
            f"{what} differs from the state {manifest.path / MANIFEST} records, in the sections "
            f"{', '.join(differing) or '(none named)'}" + (f" ({detail})" if detail else "") + after
        )


# Restoring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Where a backup is put back: the instance, the task database, ORCH_HOME."""

    dagster_home: Path
    layout: InstanceLayout
    tasks_url: str
    home: Path

    @property
    def dagster_database(self) -> PgDatabase | None:
        return PgDatabase.from_url(self.layout.postgres_url) if self.layout.postgres_url else None

    @property
    def tasks_database(self) -> PgDatabase | None:
        """The task database when it is a PostgreSQL database of its own."""
        if sa.engine.make_url(self.tasks_url).get_backend_name() != "postgresql":
            return None
        database = PgDatabase.from_url(self.tasks_url)
        dagster = self.dagster_database
        return None if dagster and database.same_database(dagster) else database

    @property
    def tasks_file(self) -> Path | None:
        url = sa.engine.make_url(self.tasks_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            return None
        return Path(url.database)


def restore_backup(
    path: Path,
    settings: Settings,
    *,
    dagster_home: Path,
    wipe: bool = False,
    migrate: bool = False,
    progress: Progress = _quiet,
    tasks_db_url: str | None = None,
) -> RestoreReport:
    """Put a backup back: the instance of `dagster_home`, the task database (`tasks_db_url`,
    else ORCH_TASKS_DB_URL, else ORCH_HOME/tasks.db), the private clones, sessions and archive
    under ORCH_HOME, and the registry files where they are missing. Then the restored state's
    digest is checked against the manifest's and `reconcile_after_restore` runs.

    Refused, with nothing changed, when a file of the backup is missing or changed, when the
    target already holds state (unless `wipe`, which deletes it first), or when the backup was
    made with another Dagster version (unless `migrate`, which upgrades the instance after).
    """
    started = time.monotonic()
    manifest = read_manifest(path)
    check_files(manifest, progress)
    current = dg.__version__
    migrating = manifest.dagster_version != current
    if migrating and not migrate:
        raise BackupError(
            f"the backup was made with Dagster {manifest.dagster_version}, this is Dagster "
            f"{current}; restore with --migrate to upgrade the instance's schema after the "
            f"restore, or install Dagster {manifest.dagster_version}"
        )
    dagster_home = Path(dagster_home).absolute()
    home = settings.home
    config = manifest.path / CONFIG_FILE if manifest.parts["dagster"].get("config") else None
    write_config = not (dagster_home / "dagster.yaml").exists() and config is not None
    layout = _target_layout(dagster_home, config if write_config else None)
    if layout.mode != manifest.mode:
        raise BackupError(
            f"the backup is of a {manifest.mode} instance, and the instance of {dagster_home} "
            f"keeps its state in {layout.mode}; restore into a {manifest.mode} instance"
        )
    url = tasks_db_url or os.environ.get(TASKS_DB_URL_VAR) or f"sqlite:///{home / 'tasks.db'}"
    target = _Target(dagster_home, layout, url, home)
    _check_tasks_target(manifest, target)

    occupied = _step("look at the target", lambda: _occupied(target))
    if occupied and not wipe:
        raise BackupError(
            "the target already holds state: "
            + "; ".join(occupied)
            + ". Nothing was changed. Restore with --wipe to delete it first, or restore "
            "elsewhere (another DAGSTER_HOME, ORCH_HOME or database)"
        )
    if occupied:
        progress("wiping: " + "; ".join(occupied))
        _step("wipe the target", lambda: _wipe(target))
    _put_back(manifest.path, manifest.parts, target, progress, full=True)
    if write_config and config is not None:
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, dagster_home / "dagster.yaml")
    registry_status = _restore_registry(manifest, settings, wipe=wipe, progress=progress)

    if migrating:
        progress(f"migrating the instance from Dagster {manifest.dagster_version} to {current}")
        _step("migrate the instance", lambda: _migrate(dagster_home))
    digest, reconciled = _check_and_reconcile(manifest, target, settings, progress)
    return RestoreReport(
        path=manifest.path,
        mode=manifest.mode,
        dagster_home=dagster_home,
        home=home,
        digest=digest.digest,
        wiped=tuple(occupied),
        registry=registry_status,
        migrated=migrating,
        reconcile=reconciled,
        duration_s=_since(started),
        counts=digest.counts,
    )


def _check_and_reconcile(
    manifest: BackupManifest, target: _Target, settings: Settings, progress: Progress
) -> tuple[StateDigest, ReconcileReport]:
    from orchestration.instance import InstanceError, open_instance

    try:
        instance = open_instance(target.dagster_home)
    except InstanceError as exc:
        raise BackupError(f"the restored instance cannot be opened: {exc}") from exc
    store = TaskStore(target.tasks_url)
    try:
        progress("checking the digest of the restored state")
        digest = state_digest(instance, store, target.home)
        _compare(
            manifest,
            digest,
            "the restored state",
            "; it was left as restored, not reconciled (look at it, then restore again with "
            "--wipe)",
        )
        progress("reconciling: runs in flight, running tasks, clones, the backup's hold")
        reconciled = reconcile_after_restore(instance, store, load_registry(settings), target.home)
    finally:
        store.dispose()
        instance.dispose()
    return digest, reconciled


def _migrate(dagster_home: Path) -> None:
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        instance.upgrade()
    finally:
        instance.dispose()


def _target_layout(dagster_home: Path, config: Path | None) -> InstanceLayout:
    """The layout of the target instance: as its dagster.yaml says, or (when it has none yet)
    as the backup's recorded one would make it."""
    if config is None:
        return _step("read the target instance's config", lambda: instance_layout(dagster_home))
    with tempfile.TemporaryDirectory(prefix="orch-restore-") as scratch:
        shutil.copyfile(config, Path(scratch) / "dagster.yaml")
        return _step(
            "read the backup's instance config",
            lambda: instance_layout(dagster_home, config_dir=Path(scratch)),
        )


def _check_tasks_target(manifest: BackupManifest, target: _Target) -> None:
    tasks = manifest.parts["tasks"]
    dialect = sa.engine.make_url(target.tasks_url).get_backend_name()
    if "in" in tasks:
        dagster = target.dagster_database
        if (
            dialect != "postgresql"
            or dagster is None
            or not dagster.same_database(PgDatabase.from_url(target.tasks_url))
        ):
            raise BackupError(
                "the backup keeps the tasks in the Dagster database; point "
                f"{TASKS_DB_URL_VAR} at the instance's database"
                + (f" ({dagster.describe()})" if dagster else "")
                + " to restore it"
            )
        return
    wanted = "sqlite" if tasks["dialect"] == "sqlite" else "postgresql"
    if dialect != wanted:
        raise BackupError(
            f"the backup's task database is {wanted}, and the target ({TASKS_DB_URL_VAR} or "
            f"ORCH_HOME/tasks.db) is {dialect}; point {TASKS_DB_URL_VAR} at a {wanted} database"
        )


def _occupied(target: _Target) -> list[str]:
    """What state the target holds already, one description each. Compute logs are not
    counted: they are files by run id, which the restored ones join (a wipe removes them)."""
    found = []
    layout = target.layout
    if layout.mode == SQLITE:
        for directory in layout.sqlite_dirs.values():
            databases = sorted(p.name for p in directory.glob("*.db")) if directory.is_dir() else []
            if databases:
                found.append(f"{directory} holds {len(databases)} database(s)")
    else:
        database = target.dagster_database
        assert database is not None
        tables = table_count(database)
        if tables:
            found.append(f"{database.describe()} has {tables} table(s)")
    tasks_file = target.tasks_file
    if tasks_file is not None and tasks_file.exists():
        found.append(f"the task database {tasks_file} exists")
    tasks_database = target.tasks_database
    if tasks_database is not None and (tables := table_count(tasks_database)):
        found.append(f"the task {tasks_database.describe()} has {tables} table(s)")
    for name in ("workspaces", "archive"):
        if not is_empty_dir(target.home / name):
            found.append(f"{target.home / name} is not empty")
    return found


def _wipe(target: _Target) -> None:
    layout = target.layout
    if layout.mode == SQLITE:
        for directory in layout.sqlite_dirs.values():
            for file in directory.glob("*.db") if directory.is_dir() else []:
                remove_sqlite(file)
    elif (database := target.dagster_database) is not None:
        empty_database(database)
    if layout.compute_logs is not None:
        remove_tree(layout.compute_logs)
    if target.tasks_file is not None:
        remove_sqlite(target.tasks_file)
    if target.tasks_database is not None:
        empty_database(target.tasks_database)
    for name in ("workspaces", "archive"):
        remove_tree(target.home / name)


def _put_back(
    backup: Path,
    parts: Mapping[str, Any],
    target: _Target,
    progress: Progress,
    *,
    full: bool,
) -> None:
    """Restore every part but the registry into `target` (which must hold no state); without
    `full`, only what the digest reads (no compute logs, no archive): a scratch copy."""
    dagster_part = parts["dagster"]
    layout = target.layout
    if layout.mode == SQLITE:
        for role, names in dagster_part.get("databases", {}).items():
            directory = layout.sqlite_dirs.get(role)
            if directory is None:
                raise BackupError(f"the target instance has no {role} storage")
            progress(f"dagster: restoring {len(names)} {role} database(s) into {directory}")
            directory.mkdir(parents=True, exist_ok=True)

            def put(name: str, role: str = role, directory: Path = directory) -> None:
                source = _inside(backup, f"{DAGSTER_DIR}/{role}/{name}")
                _step(f"restore {name}", partial(shutil.copyfile, source, _inside(directory, name)))

            each(put, names)
    else:
        database = target.dagster_database
        assert database is not None
        progress(f"dagster: pg_restore into {database.describe()}")
        dump_file = _inside(backup, dagster_part["dump"])
        _step("restore the Dagster database", lambda: restore(database, dump_file))
    if full and dagster_part.get("compute_logs_dir") and layout.compute_logs is not None:
        logs = layout.compute_logs
        progress(f"dagster: restoring the compute logs into {logs}")
        source = _inside(backup, dagster_part["compute_logs_dir"])
        _step(f"restore the compute logs into {logs}", lambda: copy_tree(source, logs))

    tasks = parts["tasks"]
    if tasks.get("file"):
        source = _inside(backup, tasks["file"])
        tasks_file, tasks_database = target.tasks_file, target.tasks_database
        if tasks_file is not None:
            progress(f"tasks: restoring {tasks_file}")
            tasks_file.parent.mkdir(parents=True, exist_ok=True)
            _step(f"restore {tasks_file}", lambda: shutil.copyfile(source, tasks_file))
        elif tasks_database is not None:
            progress(f"tasks: pg_restore into {tasks_database.describe()}")
            _step("restore the task database", lambda: restore(tasks_database, source))

    def put_clone(item: tuple[str, Mapping[str, Any]]) -> None:
        name, clone = item
        progress(f"clones: restoring {name}")
        _restore_clone(backup, target.home, name, clone)

    def put_sessions(item: tuple[str, Mapping[str, Any]]) -> None:
        name, session = item
        folders = [str(folder) for folder in session.get("dirs", [])]
        progress(f"sessions: restoring {', '.join(folders)} of {name}")
        root = _project_root(target.home, name)
        if "file" in session:  # a tar file: a backup made before sessions were kept as folders
            tar = _inside(backup, session["file"])
            _step(f"unpack {tar}", partial(extract_tar, tar, root))
            return
        for folder in folders:
            if folder not in SESSION_DIRS:
                raise BackupError(f"the manifest names a session folder {folder!r} of {name}")
            source = _inside(backup, f"{session['dir']}/{folder}")
            _step(
                f"restore {root / folder}",
                partial(copy_tree, source, root / folder, links_within=root),
            )

    each(put_clone, sorted(parts.get("clones", {}).items()))
    each(put_sessions, sorted(parts.get("sessions", {}).items()))
    if full and parts.get("archive"):
        source = _inside(backup, parts["archive"])
        progress(f"archive: restoring {target.home / 'archive'}")
        _step("restore the archive", lambda: copy_tree(source, target.home / "archive"))


def _restore_clone(backup: Path, home: Path, name: str, clone: Mapping[str, Any]) -> None:
    root = _project_root(home, name)
    root.mkdir(parents=True, exist_ok=True)
    object_format = clone.get("object_format") or "sha1"
    if object_format not in ("sha1", "sha256"):
        raise BackupError(f"unknown object format {object_format!r} of the clone of {name}")
    bundle = _inside(backup, clone["bundle"]) if clone.get("bundle") else None
    refs_file = _inside(backup, clone["refs"])
    recorded = refs_file.read_text(encoding="utf-8").rstrip("\n")
    restored = _step(
        f"restore the private clone of {name}",
        lambda: unbundle_clone(
            root / CLONE_DIR,
            bundle,
            object_format=object_format,
            source=str(clone.get("remote") or ""),
        ),
    )
    if restored != recorded:
        raise BackupError(f"the refs of the restored clone of {name} differ from {refs_file}")


def _restore_registry(
    manifest: BackupManifest, settings: Settings, *, wipe: bool, progress: Progress
) -> dict[str, str]:
    """Put the registry files back where there are none; with `wipe`, also where there are
    others (moved aside, never deleted). What was done, per folder."""
    done: dict[str, str] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for key, target in (("projects", settings.projects_dir), ("config", settings.config_dir)):
        kept = manifest.parts.get("registry", {}).get(key)
        if not kept:
            done[key] = "not in the backup"
            continue
        source = _inside(manifest.path, kept)
        if is_empty_dir(target):
            _step(f"restore {target}", partial(copy_tree, source, target))
            done[key] = f"restored to {target}"
        elif tree_entries(target) == tree_entries(source):
            done[key] = f"{target} is the same as in the backup"
        elif wipe:
            aside = target.with_name(f"{target.name}.before-restore-{stamp}")
            _step(f"move {target} aside", partial(os.rename, target, aside))
            _step(f"restore {target}", partial(copy_tree, source, target))
            done[key] = f"restored to {target}; the files that were there are in {aside}"
        else:
            done[key] = (
                f"kept {target}: it is not empty and differs from the backup (restore with "
                "--wipe to replace it; its files are then moved aside)"
            )
        progress(f"registry: {done[key]}")
    return done


# Scratch restores ----------------------------------------------------------------------------


def _scratch_digest(
    backup: Path,
    mode: str,
    parts: Mapping[str, Any],
    progress: Progress,
    *,
    servers: Mapping[str, PgDatabase] | None = None,
) -> tuple[StateDigest, str]:
    """The digest of the backup restored into a temporary DAGSTER_HOME and ORCH_HOME (and for
    PostgreSQL, scratch databases on the servers the backup came from: those of `servers`, by
    part, else the recorded ones), all removed afterwards; and a description of where that
    was."""
    servers = servers or {}
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    token = uuid.uuid4().hex[:8]
    made: list[PgDatabase] = []
    with tempfile.TemporaryDirectory(prefix="orch-verify-") as scratch:
        scratch_home = Path(scratch) / "dagster"
        orch_home = Path(scratch) / "home"
        scratch_home.mkdir()
        config: dict[str, Any] = {"telemetry": {"enabled": False}}
        described = f"the temporary directory {scratch}"
        try:
            dagster_database = None
            if mode == POSTGRES:
                base = servers.get("dagster") or _recorded_server(parts["dagster"])
                dagster_database = base.named(f"orch_verify_{stamp}_{token}")
                progress(f"creating the scratch {dagster_database.describe()}")
                _step("create a scratch database", lambda: create_database(dagster_database))
                made.append(dagster_database)
                config["storage"] = {"postgres": {"postgres_url": dagster_database.url()}}
                described += f" and the scratch {dagster_database.describe()}"
            (scratch_home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            tasks = parts["tasks"]
            if "in" in tasks and dagster_database is not None:
                tasks_url = dagster_database.url()
            elif tasks["dialect"] == "sqlite":
                tasks_url = f"sqlite:///{orch_home / 'tasks.db'}"
            else:
                base = servers.get("tasks") or _recorded_server(tasks)
                tasks_database = base.named(f"orch_verify_{stamp}_{token}_tasks")
                _step("create a scratch database", lambda: create_database(tasks_database))
                made.append(tasks_database)
                tasks_url = tasks_database.url()
            layout = _step("read the scratch config", lambda: instance_layout(scratch_home))
            target = _Target(scratch_home, layout, tasks_url, orch_home)
            _put_back(backup, parts, target, progress, full=False)
            progress("computing the digest of the restored copy")
            digest = _digest_at(target)
        finally:
            for database in made:
                progress(f"dropping the scratch {database.describe()}")
                drop_database(database)
    return digest, described


def _digest_at(target: _Target) -> StateDigest:
    instance = dg.DagsterInstance.from_config(str(target.dagster_home))
    store = TaskStore(target.tasks_url)
    try:
        return _step("read the restored state", lambda: state_digest(instance, store, target.home))
    finally:
        store.dispose()
        instance.dispose()


def _live_servers(layout: InstanceLayout, store: TaskStore) -> dict[str, PgDatabase]:
    """The PostgreSQL databases state is copied from, by part."""
    servers = {}
    if layout.postgres_url:
        servers["dagster"] = PgDatabase.from_url(layout.postgres_url)
    if sa.engine.make_url(store.url).get_backend_name() == "postgresql":
        servers["tasks"] = PgDatabase.from_url(store.url)
    return servers


def _recorded_server(part: Mapping[str, Any]) -> PgDatabase:
    """The PostgreSQL server a part of a backup came from (the password from the
    environment: a manifest never holds it)."""
    recorded = part.get("postgres")
    if not isinstance(recorded, dict):
        raise BackupError("the manifest does not say which PostgreSQL server the backup is from")
    return PgDatabase.from_url(_url_of(recorded))


def _url_of(recorded: Mapping[str, Any]) -> str:
    password = next((os.environ[n] for n in PASSWORD_VARIABLES if os.environ.get(n)), None)
    return sa.engine.URL.create(
        "postgresql+psycopg2",
        username=str(recorded["user"]),
        password=password,
        host=str(recorded["host"]),
        port=int(recorded["port"]),
        database=str(recorded["database"]),
    ).render_as_string(hide_password=False)


# Shared --------------------------------------------------------------------------------------


def _live_layout(instance: dg.DagsterInstance) -> InstanceLayout:
    return layout_of_ref(instance.get_ref())


def _refuse_inside_state(target: Path, settings: Settings, layout: InstanceLayout) -> None:
    """A backup written into what it copies would copy itself."""
    copied = [
        settings.projects_dir,
        settings.config_dir,
        settings.home / "workspaces",
        settings.home / "archive",
        *layout.sqlite_dirs.values(),
        *([layout.compute_logs] if layout.compute_logs else []),
    ]
    resolved = target.resolve()
    for place in copied:
        if resolved == place.resolve() or resolved.is_relative_to(place.resolve()):
            raise BackupError(
                f"{target} is inside {place}, which the backup copies; write it elsewhere "
                "(the default is ORCH_HOME/backups)"
            )


def _new_name(root: Path, now: datetime) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    name, number = base, 1
    while (root / name).exists() or (root / f".{name}.partial").exists():
        number += 1
        name = f"{base}-{number}"
    return name


def _listing(work: Path) -> dict[str, dict[str, Any]]:
    return {name: entry for name, entry in tree_entries(work).items() if name != MANIFEST}


def _inside(root: Path, relative: str) -> Path:
    """`root/relative` for a path a manifest names, which must stay inside `root`."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise BackupError(f"the manifest names {relative!r}, which is not a path inside {root}")
    return root.joinpath(*parts)


def _project_root(home: Path, name: str) -> Path:
    try:
        return project_dir(home, name)
    except IsolationError as exc:
        raise BackupError(f"the manifest names a project {name!r}: {exc}") from exc


def _orchestration_version() -> str:
    try:
        return importlib.metadata.version("orchestration")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _since(mark: float) -> float:
    return round(time.monotonic() - mark, 3)


def _step(what: str, action: Callable[[], T]) -> T:
    """Run one step; its failure (a file, git, a database) as a BackupError saying what."""
    try:
        return action()
    except (OSError, GitError, PostgresError, LayoutError, ArchiveError, sqlite3.Error) as exc:
        raise BackupError(f"could not {what}: {exc}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"could not {what}: {str(getattr(exc, 'orig', None) or exc)}") from exc


@contextmanager
def _workspace_lock(root: Path) -> Iterator[None]:
    """The lock a project's runs take on its workspace, held while its clone is bundled."""
    try:
        with FileLock(root / ".lock", timeout=WORKSPACE_LOCK_TIMEOUT_S):
            yield
    except Timeout as exc:
        raise BackupError(
            f"the workspace {root} stayed in use for {WORKSPACE_LOCK_TIMEOUT_S:g} s; try again"
        ) from exc


__all__ = [
    "BackupError",
    "BackupManifest",
    "RestoreReport",
    "VerifyReport",
    "check_files",
    "create_backup",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]
