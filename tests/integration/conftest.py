"""Fixtures of the integration tests that work on a real Dagster instance: the repository's
dagster.yaml (pool granularity `run`, the run queue, the hold tag), its storage made once per
session and copied for each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir
from tests.support.webhooks import Sink

#: Where a queued run made by a test says it came from (the run queue needs one; nothing here
#: launches it).
QUEUED_RUN_ORIGIN = RemoteRepositoryOrigin(
    RegisteredCodeLocationOrigin("orchestration"), "__repository__"
).get_job_origin("__ASSET_JOB")


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance directory with the repository's dagster.yaml, its storage created once
    (creating it is the slow part); each test gets a copy."""
    home = tmp_path_factory.mktemp("dagster_template")
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home)).dispose()
    return home


@pytest.fixture
def dagster_home(template_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    shutil.copytree(template_home, home)
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    opened = dg.DagsterInstance.from_config(str(dagster_home))
    yield opened
    opened.dispose()


@pytest.fixture
def store(registry: RegistryDir) -> Iterator[TaskStore]:
    """The task database of the module's `registry` fixture (a registry in a temporary folder)."""
    opened = TaskStore.from_settings(registry.settings, environ={})
    yield opened
    opened.dispose()


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A webhook on 127.0.0.1 that records every POST."""
    started = Sink().start()
    yield started
    started.stop()
