"""Where the CLI finds the Dagster instance: DAGSTER_HOME, else the one `orch up` uses."""

from __future__ import annotations

import os

import dagster as dg

from orchestration.settings import Settings


def dagster_instance(settings: Settings) -> dg.DagsterInstance | None:
    """The instance of DAGSTER_HOME, or of ORCH_HOME/dagster when that has been set up; None
    when there is none yet (the dispatch sensor then adds what is missing)."""
    home = os.environ.get("DAGSTER_HOME") or (
        str(settings.dagster_home) if (settings.dagster_home / "dagster.yaml").exists() else None
    )
    if not home:
        return None
    return dg.DagsterInstance.from_config(home)
