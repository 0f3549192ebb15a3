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
from datetime import UTC
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.control.archive import CLONE_DIR, REFS_FORMAT
from orchestration.control.store import ProjectStates
from orchestration.registry.models import SLUG_PATTERN
from orchestration.state.parallel import each_by
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
    "channels",
)
#: Sections a digest has only when they hold something, so that a backup made before they
#: existed still verifies.
OPTIONAL_SECTIONS = frozenset({"channels"})
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


def state_digest(
    instance: dg.DagsterInstance,
    store: TaskStore,
    home: Path,
    *,
    shards: ShardCounts | None = None,
) -> StateDigest:
    """The digest of the state in `instance`, the task database of `store` and the private
    clones under `home` (ORCH_HOME). Digests that pass the same `shards` read the event shard
    of a finished run once."""
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
    finished = {run.run_id for run in runs if run.is_finished}
    events = _event_counts(
        instance, [run.run_id for run in runs], shards or ShardCounts(), finished
    )
    keys = list(instance.get_asset_keys())
    materializations = _all_materializations(instance, keys)
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
        "channels": _channel_events(store),
    }
    shown = [name for name in SECTIONS if content[name] or name not in OPTIONAL_SECTIONS]
    sections = {name: sha256_text(canonical_json(content[name])) for name in shown}
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
    if "channels" in sections:
        counts["channels"] = len(content["channels"])
    return StateDigest(sha256_text(canonical_json(sections)), sections, counts)


class ShardCounts:
    """Event counts read from the SQLite shards of finished runs, kept with the size and time
    of the shard and its write-ahead log: a finished run's events are written no more, so two
    digests taken by one backup count each such shard once."""

    def __init__(self) -> None:
        self._kept: dict[Path, tuple[tuple[int, ...], list[tuple[str | None, int]]]] = {}

    def read(self, shard: tuple[str, Path], *, finished: bool) -> list[tuple[str | None, int]]:
        path = shard[1]
        wal = _file_mark(path.with_name(path.name + "-wal"))
        mark = _file_mark(path) + wal
        kept = self._kept.get(path)
        if finished and kept is not None and kept[0] == mark:
            return kept[1]
        # A finished run's shard with nothing in a write-ahead log is read as immutable: no
        # locks, no -wal and -shm files made and removed, a third of the cost.
        rows = _shard_event_counts(shard, immutable=finished and wal[0] <= 0)
        if finished:
            self._kept[path] = (mark, rows)
        return rows


def _file_mark(path: Path) -> tuple[int, ...]:
    try:
        found = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (found.st_size, found.st_mtime_ns)


def _event_counts(
    instance: dg.DagsterInstance,
    run_ids: list[str],
    shards: ShardCounts | None = None,
    finished: set[str] | frozenset[str] = frozenset(),
) -> dict[str, dict[str, int]]:
    """How many events of each type every run has (`log` for messages that are no Dagster
    event). Counted in SQL where the event log is one of Dagster's SQL storages: one grouped
    query per run shard (SQLite; those of the `finished` runs through `shards`) or one for all
    runs (PostgreSQL), never deserializing an event; through the instance otherwise."""
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
        kept = shards or ShardCounts()
        paths = {run_id: Path(storage.path_for_shard(run_id)) for run_id in run_ids}
        read = each_by(
            lambda run_id: kept.read((run_id, paths[run_id]), finished=run_id in finished),
            run_ids,
        )
        for run_id, rows in read.items():
            for event_type, count in rows:
                counts[run_id][event_type or "log"] += int(count)
    else:
        query = sa.select(table.c.run_id, kind, sa.func.count()).group_by(table.c.run_id, kind)
        with storage.run_connection(None) as conn:
            for run_id, event_type, count in conn.execute(query):
                if run_id in counts:
                    counts[run_id][event_type or "log"] += int(count)
    return {run_id: dict(sorted(found.items())) for run_id, found in counts.items()}


def _shard_event_counts(
    shard: tuple[str, Path], *, immutable: bool = False
) -> list[tuple[str | None, int]]:
    """The events of one run by type, read from its SQLite shard with sqlite3: Dagster's own
    connection to a shard checks its schema first, twenty times the cost of the count. Not
    read-only: a read-only connection to a WAL database leaves its -wal and -shm files behind;
    this one removes them on closing. `immutable`: for a shard nothing writes to any more."""
    run_id, path = shard
    if not path.is_file():
        return []
    target = f"{path.absolute().as_uri()}?immutable=1" if immutable else str(path)
    with contextlib.closing(sqlite3.connect(target, timeout=30, uri=immutable)) as conn:
        return conn.execute(
            "SELECT dagster_event_type, COUNT(*) FROM event_logs WHERE run_id = ? "
            "GROUP BY dagster_event_type",
            (run_id,),
        ).fetchall()


def _logged_event_counts(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        counts[event.event_type_value if event is not None else "log"] += 1
    return dict(sorted(counts.items()))


def _all_materializations(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey]
) -> dict[str, list[list[str | None]]]:
    """Each materialization of every key in `keys` as [run id, partition], sorted, by key.

    Read with one query of the event log's index where it is one of Dagster's SQL storages (one
    call per key costs about 15 ms on PostgreSQL); the keys that were ever wiped, whose older
    events Dagster leaves out by time, and any other storage, through the instance."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log import AssetKeyTable, SqlEventLogStorageTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    by_key: dict[str, dg.AssetKey] = {key.to_string(): key for key in keys}
    found: dict[str, list[list[str | None]]] = {key.to_user_string(): [] for key in keys}
    through_api = list(keys)
    if isinstance(storage, SqlEventLogStorage):
        table, assets = SqlEventLogStorageTable, AssetKeyTable
        wiped_query = sa.select(assets.c.asset_key).where(
            sa.or_(assets.c.asset_details.is_not(None), assets.c.wipe_timestamp.is_not(None))
        )
        events_query = sa.select(table.c.asset_key, table.c.run_id, table.c.partition).where(
            table.c.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION.value
        )
        with storage.index_connection() as connection:
            wiped = {str(row[0]) for row in connection.execute(wiped_query)}
            through_api = [by_key[name] for name in wiped if name in by_key]
            for asset_key, run_id, partition in connection.execute(events_query):
                key = by_key.get(asset_key)
                if key is not None and asset_key not in wiped:
                    found[key.to_user_string()].append([run_id, partition])
    for key in through_api:
        found[key.to_user_string()] = _materializations(instance, key)
    return {
        name: sorted(items, key=lambda item: (item[0] or "", item[1] or ""))
        for name, items in found.items()
    }


def _materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[list[str | None]]:
    """Each materialization of `key` as [run id, partition], through the instance."""
    found: list[list[str | None]] = []
    cursor: str | None = None
    while True:
        result = instance.fetch_materializations(key, limit=PAGE, cursor=cursor)
        found += [[record.run_id, record.partition_key] for record in result.records]
        if not result.has_more:
            break
        cursor = result.cursor
    return found


def _dynamic_partitions(instance: dg.DagsterInstance, projects: set[str]) -> dict[str, list[str]]:
    """Every dynamic partitions definition with at least one key, and its keys, sorted: read
    with one query of the event log's index where it is one of Dagster's SQL storages (every
    definition, ours or not), else through the instance for each known project's task
    partitions."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log import DynamicPartitionsTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    found: dict[str, list[str]] = {}
    if isinstance(storage, SqlEventLogStorage):
        table = DynamicPartitionsTable
        query = sa.select(table.c.partitions_def_name, table.c.partition)
        with storage.index_connection() as connection:
            for name, key in connection.execute(query):
                found.setdefault(str(name), []).append(str(key))
    else:
        for name in sorted(tasks_partitions_name(project) for project in projects):
            found[name] = list(instance.get_dynamic_partitions(name))
    return {name: sorted(keys) for name, keys in sorted(found.items()) if keys}


def _overrides(store: TaskStore) -> dict[str, Any]:
    """The live allocation overrides (and a maintenance hold) and the provider accounts'
    pauses (`provider:<name>`, only those ever recorded), from the task database."""
    from orchestration.allocation.control import AllocationOverrides
    from orchestration.allocation.providers import ProviderStates

    providers = ProviderStates(store).all()
    return AllocationOverrides(store).all() | {
        f"provider:{name}": state.to_dict() for name, state in providers.items()
    }


def _channel_events(store: TaskStore) -> list[dict[str, Any]]:
    """The channels' ledger (every post, delivery and refusal), oldest first, its times in UTC."""
    from orchestration.channels.log import ChannelLog

    return [
        event.as_json() | {"created_at": event.created_at.astimezone(UTC).isoformat()}
        for event in ChannelLog(store).events()
    ]


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
    listed = each_by(
        lambda name: _refs_of(Path(home) / "workspaces" / name / CLONE_DIR), workspace_names(home)
    )
    return {name: refs for name, refs in listed.items() if refs is not None}


def _refs_of(path: Path) -> list[str] | None:
    """The refs of the repository at `path`, sorted; None when there is none."""
    # What git itself looks for in a bare repository, without a git process for it.
    if not ((path / "HEAD").is_file() and (path / "objects").is_dir()):
        return None
    repo = GitRepo.private_clone(path)
    text = repo.run("for-each-ref", f"--format={REFS_FORMAT}", what="list the refs")
    return sorted(line for line in text.splitlines() if line)
