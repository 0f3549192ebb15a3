"""Where a Dagster instance keeps its state, read from its configuration (`dagster.yaml`) without
opening it, so a restore can look at a target before anything is created there.

SQLite: the run storage's `runs.db`, the event log's `index.db` with one `<run_id>.db` per run,
the schedule storage's `schedules.db`, each in the directory its storage is configured with.
PostgreSQL: one database for runs, events and schedules. Either way the compute logs are plain
files under the compute log manager's directory when it is the local one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

SQLITE = "sqlite"
POSTGRES = "postgres"
#: The class names of the storages whose files or database a backup knows how to copy.
SQLITE_STORAGES = {
    "run": "SqliteRunStorage",
    "event": "SqliteEventLogStorage",
    "schedule": "SqliteScheduleStorage",
}
POSTGRES_STORAGES = {
    "run": "PostgresRunStorage",
    "event": "PostgresEventLogStorage",
    "schedule": "PostgresScheduleStorage",
}
LOCAL_COMPUTE_LOGS = "LocalComputeLogManager"
#: The keys of dagster.yaml that say where the state lives (replaced in a scratch copy).
STORAGE_KEYS = (
    "storage",
    "run_storage",
    "event_log_storage",
    "schedule_storage",
    "compute_logs",
    "local_artifact_storage",
)


class LayoutError(Exception):
    """The instance keeps its state somewhere a backup cannot copy; the message says where."""


@dataclass(frozen=True)
class InstanceLayout:
    """Where one instance's state is: `mode` is `sqlite` or `postgres`; for SQLite the
    directory of each storage's databases (`runs` holds runs.db, `events` index.db and the run
    shards, `schedules` schedules.db); for PostgreSQL the database's SQLAlchemy URL; and the
    local compute log directory (None when the logs are kept elsewhere, `compute_logs_kind`
    says where)."""

    mode: str
    runs: Path | None
    events: Path | None
    schedules: Path | None
    postgres_url: str | None
    compute_logs: Path | None
    compute_logs_kind: str

    @property
    def sqlite_dirs(self) -> dict[str, Path]:
        """The SQLite directories by role: `runs`, `events`, `schedules`."""
        found = {"runs": self.runs, "events": self.events, "schedules": self.schedules}
        return {role: path for role, path in found.items() if path is not None}


def instance_layout(dagster_home: Path, config_dir: Path | None = None) -> InstanceLayout:
    """The layout of the instance of `dagster_home` as its dagster.yaml (in `config_dir`, by
    default `dagster_home` itself) configures it; nothing is opened or created."""
    try:
        ref = InstanceRef.from_dir(
            str(dagster_home), config_dir=str(config_dir) if config_dir else None
        )
    except Exception as exc:
        where = config_dir or dagster_home
        raise LayoutError(f"cannot read the Dagster instance config in {where}: {exc}") from exc
    return layout_of_ref(ref)


def layout_of_ref(ref: InstanceRef) -> InstanceLayout:
    """The layout an instance reference describes."""
    storages = {
        "run": ref.run_storage_data,
        "event": ref.event_storage_data,
        "schedule": ref.schedule_storage_data,
    }
    if any(data is None for data in storages.values()):
        storages = _from_combined(ref.storage_data)
    classes = {role: data.class_name for role, data in storages.items() if data is not None}
    compute_logs, kind = _compute_logs(ref.compute_logs_data)
    if classes == SQLITE_STORAGES:
        dirs = {role: Path(_base_dir(data)) for role, data in storages.items() if data}
        return InstanceLayout(
            SQLITE, dirs["run"], dirs["event"], dirs["schedule"], None, compute_logs, kind
        )
    if classes == POSTGRES_STORAGES:
        urls = {role: _postgres_url(data) for role, data in storages.items() if data}
        if len(set(urls.values())) != 1:
            raise LayoutError(
                "the instance keeps runs, events and schedules in different PostgreSQL "
                "databases; a backup needs them in one (deploy/dagster.yaml `storage: postgres`)"
            )
        return InstanceLayout(POSTGRES, None, None, None, urls["run"], compute_logs, kind)
    raise LayoutError(
        "the instance's storage is neither Dagster's SQLite storage nor PostgreSQL (run, event "
        f"and schedule storage: {', '.join(sorted(set(classes.values()))) or 'unknown'}); "
        "`orch backup` copies only those"
    )


def _from_combined(data: ConfigurableClassData | None) -> dict[str, ConfigurableClassData | None]:
    """The three storages of a combined `storage:` entry whose base directory comes from the
    environment (Dagster then leaves the per-storage entries out)."""
    if data is None or data.class_name != "DagsterSqliteStorage":
        return {"run": None, "event": None, "schedule": None}
    base = Path(_base_dir(data))
    made = {
        "run": ("dagster._core.storage.runs", "SqliteRunStorage", base / "history"),
        "event": (
            "dagster._core.storage.event_log",
            "SqliteEventLogStorage",
            base / "history" / "runs",
        ),
        "schedule": (
            "dagster._core.storage.schedules",
            "SqliteScheduleStorage",
            base / "schedules",
        ),
    }
    return {
        role: ConfigurableClassData(module, name, yaml.safe_dump({"base_dir": str(path)}))
        for role, (module, name, path) in made.items()
    }


def _compute_logs(data: ConfigurableClassData) -> tuple[Path | None, str]:
    if data.class_name != LOCAL_COMPUTE_LOGS:
        return None, data.class_name
    return Path(_base_dir(data)), "local"


def _config(data: ConfigurableClassData) -> dict[str, Any]:
    value = yaml.safe_load(data.config_yaml) or {}
    if not isinstance(value, dict):
        raise LayoutError(f"the config of {data.class_name} is not a mapping")
    resolved = _resolve_env(value)
    assert isinstance(resolved, dict)
    return resolved


def _base_dir(data: ConfigurableClassData) -> str:
    base = _config(data).get("base_dir")
    if not isinstance(base, str) or not base:
        raise LayoutError(f"{data.class_name} has no `base_dir` in the instance config")
    return os.path.abspath(base)


def _postgres_url(data: ConfigurableClassData) -> str:
    from dagster_postgres.utils import pg_url_from_config

    config = _config(data)
    try:
        return str(pg_url_from_config(config))
    except Exception as exc:
        raise LayoutError(f"cannot tell the PostgreSQL database of the instance: {exc}") from exc


def _resolve_env(value: Any) -> Any:
    """A config value with every `{env: NAME}` replaced by the variable's value, as Dagster
    does when it loads the storage."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = str(value["env"])
            if name not in os.environ:
                raise LayoutError(f"the instance config reads ${name}, which is not set")
            return os.environ[name]
        return {key: _resolve_env(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_env(item) for item in value]
    return value
