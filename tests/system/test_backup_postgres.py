"""`orch backup` with the production layout on the real PostgreSQL server: deploy/dagster.yaml,
and the task tables in the same database as Dagster's, so one `pg_dump` holds both. A backup
restored into the database dropped and made again gives the same digest; verification restores
into a scratch database and drops it; an occupied database is refused unless wiped."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from psycopg2 import sql

from orchestration.allocation.control import apply_pool_limits, settings_now
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.settings import Settings
from orchestration.state.backup import BackupError, create_backup, restore_backup, verify_backup
from orchestration.state.digest import StateDigest, state_digest
from orchestration.tags import PROJECT_TAG, TASK_TAG, tasks_partitions_name
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from orchestration.workspace.workspace import ProjectWorkspace
from tests.support.git import git
from tests.support.postgres import PG_HOST, PG_PORT, admin_connection
from tests.support.registry import RegistryDir
from tests.system.test_postgres import DEPLOY_CONFIG

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROJECT = "alpha"
AUTHOR = ("Orchestrator", "orch@example.invalid")


@dataclass
class Server:
    """A throwaway database that a test may drop and make again."""

    name: str
    user: str

    def execute(self, statement: sql.Composable) -> None:
        _, admin = admin_connection()
        try:
            with admin.cursor() as cursor:
                cursor.execute(statement)
        finally:
            admin.close()

    def create(self) -> None:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def drop(self) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
        )

    def databases(self, prefix: str) -> list[str]:
        _, admin = admin_connection()
        try:
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
                )
                return [row[0] for row in cursor.fetchall()]
        finally:
            admin.close()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@{PG_HOST}:{PG_PORT}/{self.name}"


@pytest.fixture
def server() -> Iterator[Server]:
    user, admin = admin_connection()
    admin.close()
    made = Server(f"orch_test_{uuid.uuid4().hex[:12]}", user)
    made.create()
    try:
        yield made
    finally:
        made.drop()


@dataclass
class World:
    settings: Settings
    dagster_home: Path
    server: Server
    instance: dg.DagsterInstance
    store: TaskStore

    def digest(self) -> StateDigest:
        return state_digest(self.instance, self.store, self.settings.home)

    def refs(self) -> str:
        clone = self.settings.home / "workspaces" / PROJECT / "repo.git"
        return git(clone, "for-each-ref", "--format=%(objectname) %(refname)")

    def close(self) -> None:
        self.store.dispose()
        self.instance.dispose()

    def reopen(self) -> None:
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        self.store = TaskStore(self.server.url)


@pytest.fixture
def world(
    server: Server, registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    for name, value in {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": server.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": server.name,
        TASKS_DB_URL_VAR: server.url,
    }.items():
        monkeypatch.setenv(name, value)
    registry_dir.project(PROJECT)
    settings = registry_dir.settings
    registry = registry_dir.load()
    instance = dg.DagsterInstance.from_config(str(home))
    store = TaskStore(server.url)

    task = store.add(PROJECT, "work")
    assert task is not None
    instance.add_dynamic_partitions(tasks_partitions_name(PROJECT), [task.id])

    @dg.asset(key=[PROJECT, "source"])
    def source() -> int:
        return 1

    result = dg.materialize(
        [source], instance=instance, tags={PROJECT_TAG: PROJECT, TASK_TAG: task.id}
    )
    workspace = ProjectWorkspace(settings.home, registry.project(PROJECT).spec)
    store.mark_dispatched(task.id)
    store.claim(task.id, result.run_id)
    tree, _ = workspace.open_task_worktree(task.id)
    (tree.path / "feature.txt").write_text("work\n", encoding="utf-8")
    commit = tree.commit_all("task work", author=AUTHOR)
    workspace.close_task_worktree(task.id)
    store.finish(
        task.id, TaskStatus.SUCCEEDED, branch=workspace.task_branch(task.id), commit=commit
    )
    store.save_session(PROJECT, "claude_code", "session-1", task.id)
    ProjectStates(store).set(PROJECT, ProjectState.PAUSED, expected=ProjectState.ACTIVE)
    apply_pool_limits(instance, settings_now(registry, store).pool_limits())
    made = World(settings, home, server, instance, store)
    yield made
    made.close()


def test_round_trip_through_a_dropped_database(world: World, tmp_path: Path) -> None:
    before = world.digest()
    refs = world.refs()
    assert before.counts["tasks"] == 1 and before.counts["runs"] == 1

    manifest = create_backup(world.settings, world.instance, world.store, to=tmp_path / "b")

    assert manifest.mode == "postgres" and manifest.quiesced
    assert manifest.parts["tasks"] == {"dialect": "postgresql", "in": "dagster/dagster.dump"}
    assert "dagster/dagster.dump" in manifest.files
    assert not any(name.startswith("tasks/") for name in manifest.files)
    assert manifest.parts["dagster"]["postgres"]["database"] == world.server.name
    assert world.digest() == before  # the hold is released

    messages: list[str] = []
    report = verify_backup(manifest.path, progress=messages.append)
    assert report.digest == manifest.state_digest.digest
    assert "orch_verify_" in report.scratch
    scratch = [m for m in messages if m.startswith("creating the scratch database")]
    assert len(scratch) == 1
    assert world.server.databases("orch_verify_") == []

    with pytest.raises(BackupError, match=r"has \d+ table\(s\)"):
        restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    world.close()
    world.server.drop()
    world.server.create()
    shutil.rmtree(world.settings.home)
    restored = restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    assert restored.digest == manifest.state_digest.digest and restored.reconcile.hold_released
    world.reopen()
    assert world.digest() == before
    assert world.refs() == refs


def test_an_online_backup_restores_over_a_wiped_database(world: World, tmp_path: Path) -> None:
    before = world.digest()
    manifest = create_backup(
        world.settings, world.instance, world.store, to=tmp_path / "b", online=True
    )
    assert manifest.online and manifest.state_digest == before
    assert world.server.databases("orch_verify_") == []
    world.store.add(PROJECT, "after the backup")
    world.close()

    report = restore_backup(
        manifest.path, world.settings, dagster_home=world.dagster_home, wipe=True
    )

    assert any("table(s)" in wiped for wiped in report.wiped)
    world.reopen()
    assert world.digest() == before
