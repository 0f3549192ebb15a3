"""What every command works on: the settings, the live registry, the task store and (only for
the commands that need it) the Dagster instance; the registry and the instance are imported
when first asked for."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from orchestration.settings import Settings

if TYPE_CHECKING:
    import dagster as dg

    from orchestration.registry.loader import Registry
    from orchestration.tasks.store import TaskStore


def current_settings() -> Settings:
    return Settings.from_env()


def current_registry(settings: Settings | None = None) -> Registry:
    """The registry as its files say now, through the same live registry the daemon uses."""
    from orchestration.registry.live import LiveRegistry  # not needed by the task commands

    return LiveRegistry.of(settings or current_settings()).current()


def task_store(settings: Settings | None = None) -> TaskStore:
    from orchestration.tasks.store import TaskStore  # SQLAlchemy: not needed by `orch deps`

    return TaskStore.from_settings(settings or current_settings())


def dagster_instance(settings: Settings) -> dg.DagsterInstance | None:
    """The instance of DAGSTER_HOME, or of ORCH_HOME/dagster when that has been set up; None
    when there is none yet (the dispatch sensor then adds what is missing). Opened under the
    instance lock, as every process of ours opens it, since the daemon may be creating its
    storage at this very moment."""
    home = os.environ.get("DAGSTER_HOME") or (
        str(settings.dagster_home) if (settings.dagster_home / "dagster.yaml").exists() else None
    )
    if not home:
        return None
    from orchestration.cli.output import fail
    from orchestration.instance import InstanceError, open_instance

    try:
        return open_instance(home)
    except InstanceError as exc:
        fail(str(exc))
