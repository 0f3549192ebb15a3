"""The canonical digest of all the orchestrator's state: what "the same state" means when a
backup is checked or restored.

Each section is a canonical, order-independent JSON document (keys sorted, lists sorted) of one
kind of state, read through the public API of the store that holds it, and hashed on its own,
so a difference is reported by section. Nothing that only says where the state lives (paths,
database names) or when a row was last touched (`updated_at`) is in it: a restored copy
elsewhere has the same digest as its original.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.control.archive import CLONE_DIR, REFS_FORMAT
from orchestration.control.store import ProjectStates
from orchestration.registry.models import SLUG_PATTERN
from orchestration.tags import PROJECT_TAG, tasks_partitions_name
from orchestration.tasks.store import TaskStore
from orchestration.workspace.git import GitRepo

#: The sections, in the order they are reported.
SECTIONS = (
    "runs",
    "events",
    "materializations",
    "partitions",
    "pools",
    "instigators",
    "tasks",
    "sessions",
    "lifecycle",
    "overrides",
    "clones",
)
#: How many materializations are read per query.
PAGE = 1000
#: A task's fields left out of the digest: when the row was last written, and when its run last
#: said it was alive, say nothing of the state.
VOLATILE_TASK_FIELDS = ("updated_at", "heartbeat_at")


@dataclass(frozen=True)
class StateDigest:
    """The digest of all state: `digest` is the sha256 of the canonical JSON of the per-section
    digests in `sections`; `counts` says how much of each kind there was."""

    digest: str
    sections: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def differing(self, other: StateDigest) -> list[str]:
        """The sections whose digests differ (present in only one of the two included)."""
        names = sorted(set(self.sections) | set(other.sections))
        return [name for name in names if self.sections.get(name) != other.sections.get(name)]

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "sections": dict(self.sections), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateDigest:
        return cls(
            str(data["digest"]),
            {str(k): str(v) for k, v in dict(data.get("sections", {})).items()},
            {str(k): int(v) for k, v in dict(data.get("counts", {})).items()},
        )


def canonical_json(value: Any) -> str:
    """`value` as JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_digest(instance: dg.DagsterInstance, store: TaskStore, home: Path) -> StateDigest:
    """The digest of the state in `instance`, the task database of `store` and the private
    clones under `home` (ORCH_HOME)."""
    runs = instance.get_runs()
    run_section = sorted(
        [
            run.run_id,
            run.status.value,
            run.job_name,
            sorted([str(key), str(value)] for key, value in run.tags.items()),
        ]
        for run in runs
    )
    events = _event_counts(instance, [run.run_id for run in runs])
    keys = list(instance.get_asset_keys())
    materializations = {key.to_user_string(): _materializations(instance, key) for key in keys}
    tasks = store.tasks()
    states = ProjectStates(store).all()
    projects = (
        {str(run.tags[PROJECT_TAG]) for run in runs if PROJECT_TAG in run.tags}
        | {key.path[0] for key in keys if len(key.path) > 1}
        | {task.project for task in tasks}
        | set(states)
        | set(workspace_names(home))
    )
    partitions = _dynamic_partitions(instance, projects)
    pools = {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}
    instigators = {
        state.selector_id: state.status.value for state in instance.all_instigator_state()
    }
    task_rows = {
        task.id: {k: v for k, v in task.to_dict().items() if k not in VOLATILE_TASK_FIELDS}
        for task in tasks
    }
    sessions = sorted(
        (dict(row) for row in store.sessions()), key=lambda row: (row["project"], row["profile"])
    )
    lifecycle = {name: record.to_dict() for name, record in states.items()}
    clones = _clone_refs(home)
    content: dict[str, Any] = {
        "runs": run_section,
        "events": events,
        "materializations": materializations,
        "partitions": partitions,
        "pools": pools,
        "instigators": instigators,
        "tasks": task_rows,
        "sessions": sessions,
        "lifecycle": lifecycle,
        "overrides": _overrides(store),
        "clones": clones,
    }
    sections = {name: sha256_text(canonical_json(content[name])) for name in SECTIONS}
    counts = {
        "runs": len(run_section),
        "events": sum(sum(per_run.values()) for per_run in events.values()),
        "asset_keys": len(materializations),
        "materializations": sum(len(items) for items in materializations.values()),
        "partitions": sum(len(items) for items in partitions.values()),
        "pools": len(pools),
        "instigators": len(instigators),
        "tasks": len(task_rows),
        "sessions": len(sessions),
        "lifecycle": len(lifecycle),
        "overrides": len(content["overrides"]),
        "clones": len(clones),
        "refs": sum(len(refs) for refs in clones.values()),
    }
    return StateDigest(sha256_text(canonical_json(sections)), sections, counts)


def _event_counts(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """How many events of each type every run has (`log` for messages that are no Dagster
    event). Counted in SQL where the event log is one of Dagster's SQL storages: one grouped
    query per run shard (SQLite) or one for all runs (PostgreSQL), never deserializing an
    event; through the instance otherwise."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log import SqlEventLogStorageTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return {run_id: _logged_event_counts(instance, run_id) for run_id in run_ids}
    table = SqlEventLogStorageTable
    kind = table.c.dagster_event_type
    counts: dict[str, Counter[str]] = {run_id: Counter() for run_id in run_ids}
    if isinstance(storage, SqliteEventLogStorage):  # one database file per run
        # Read each shard with sqlite3: Dagster's own connection to a shard checks its schema
        # first, twenty times the cost of the count. Not read-only: a read-only connection to a
        # WAL database leaves its -wal and -shm files behind; this one removes them on closing.
        for run_id in run_ids:
            shard = Path(storage.path_for_shard(run_id))
            if not shard.is_file():
                continue
            with contextlib.closing(sqlite3.connect(shard, timeout=30)) as conn:
                rows = conn.execute(
                    "SELECT dagster_event_type, COUNT(*) FROM event_logs WHERE run_id = ? "
                    "GROUP BY dagster_event_type",
                    (run_id,),
                ).fetchall()
            for event_type, count in rows:
                counts[run_id][event_type or "log"] += int(count)
    else:
        query = sa.select(table.c.run_id, kind, sa.func.count()).group_by(table.c.run_id, kind)
        with storage.run_connection(None) as conn:
            for run_id, event_type, count in conn.execute(query):
                if run_id in counts:
                    counts[run_id][event_type or "log"] += int(count)
    return {run_id: dict(sorted(found.items())) for run_id, found in counts.items()}


def _logged_event_counts(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        counts[event.event_type_value if event is not None else "log"] += 1
    return dict(sorted(counts.items()))


def _materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[list[str | None]]:
    """Each materialization of `key` as [run id, partition], sorted."""
    found: list[list[str | None]] = []
    cursor: str | None = None
    while True:
        result = instance.fetch_materializations(key, limit=PAGE, cursor=cursor)
        found += [[record.run_id, record.partition_key] for record in result.records]
        if not result.has_more:
            break
        cursor = result.cursor
    return sorted(found, key=lambda item: (item[0] or "", item[1] or ""))


def _dynamic_partitions(instance: dg.DagsterInstance, projects: set[str]) -> dict[str, list[str]]:
    """Every dynamic partitions definition with at least one key, and its keys, sorted. The
    names come from the event log's index where it is a SQL database (every definition, ours
    or not), and are at least each known project's task partitions."""
    names = {tasks_partitions_name(project) for project in projects}
    names |= _partitions_names_in_index(instance)
    found = {name: sorted(instance.get_dynamic_partitions(name)) for name in sorted(names)}
    return {name: keys for name, keys in found.items() if keys}


def _partitions_names_in_index(instance: dg.DagsterInstance) -> set[str]:
    """The names of the dynamic partitions definitions in the event log's index; empty when the
    storage is not one of Dagster's SQL storages."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log import DynamicPartitionsTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return set()
    query = sa.select(DynamicPartitionsTable.c.partitions_def_name).distinct()
    with storage.index_connection() as connection:
        return {str(row[0]) for row in connection.execute(query)}


def _overrides(store: TaskStore) -> dict[str, int]:
    """The live allocation overrides (and a maintenance hold), from the task database."""
    from orchestration.allocation.control import AllocationOverrides

    return AllocationOverrides(store).all()


def workspace_names(home: Path) -> list[str]:
    """The projects with a workspace directory under `home/workspaces`."""
    root = Path(home) / "workspaces"
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if SLUG_PATTERN.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
    )


def _clone_refs(home: Path) -> dict[str, list[str]]:
    """Every private clone's refs (`<sha> <ref>`, sorted), by project."""
    clones: dict[str, list[str]] = {}
    for name in workspace_names(home):
        path = Path(home) / "workspaces" / name / CLONE_DIR
        repo = GitRepo.private_clone(path)
        if not path.is_dir() or not repo.is_repository():
            continue
        text = repo.run("for-each-ref", f"--format={REFS_FORMAT}", what="list the refs")
        clones[name] = sorted(line for line in text.splitlines() if line)
    return clones
