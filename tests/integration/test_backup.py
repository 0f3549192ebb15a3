"""`orch backup` on real state (SQLite): a registry with projects, a real Dagster instance with
runs, materializations, dynamic partitions, pools and a sensor's state, tasks with branches in
real private clones, sessions, a paused project and an archived one. A backup made, checked and
restored after the state was wiped gives the same digest and the same refs; a damaged backup
or an occupied target is refused loudly and changes nothing; what was in flight at backup time
is failed and queued again on restore."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.remote_origin import RemoteInstigatorOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.test_utils import create_run_for_test

from orchestration.allocation.control import (
    MAINTENANCE_KEY,
    AllocationOverrides,
    apply_pool_limits,
    settings_now,
)
from orchestration.channels.log import ChannelLog
from orchestration.cli.main import main
from orchestration.control.archive import archive_project
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.settings import Settings
from orchestration.state.backup import (
    MANIFEST,
    BackupError,
    BackupManifest,
    create_backup,
    read_manifest,
    restore_backup,
    verify_backup,
)
from orchestration.state.copies import sha256_file
from orchestration.state.digest import SECTIONS, ShardCounts, StateDigest, state_digest
from orchestration.state.reconcile import RESTORE_MESSAGE
from orchestration.tags import PROJECT_TAG, TASK_TAG, tasks_partitions_name
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from orchestration.workspace.workspace import ProjectWorkspace
from tests.integration.conftest import QUEUED_RUN_ORIGIN
from tests.support.git import git
from tests.support.registry import RegistryDir

PROJECTS = ("alpha", "beta")
AUTHOR = ("Orchestrator", "orch@example.invalid")
PROFILE = "claude_code"
CUSTOM_POOL = "custom_pool"


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a folder that is no git repository, with the task database at its default."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(TASKS_DB_URL_VAR, raising=False)


@dataclass
class World:
    """Everything a backup covers, made for real."""

    registry_dir: RegistryDir
    dagster_home: Path
    instance: dg.DagsterInstance
    store: TaskStore
    succeeded: dict[str, str]  # project -> task id with a branch and a commit

    @property
    def settings(self) -> Settings:
        return self.registry_dir.settings

    @property
    def home(self) -> Path:
        return self.settings.home

    def digest(self) -> StateDigest:
        return state_digest(self.instance, self.store, self.home)

    def refs(self) -> dict[str, str]:
        return {
            name: git(
                self.home / "workspaces" / name / "repo.git",
                "for-each-ref",
                "--format=%(objectname) %(refname)",
            )
            for name in PROJECTS
        }

    def backup(self, tmp_path: Path, **options: object) -> BackupManifest:
        return create_backup(
            self.settings, self.instance, self.store, to=tmp_path / "backups", **options
        )  # type: ignore[arg-type]

    def wipe(self) -> None:
        """Lose all state: the instance's storage and ORCH_HOME."""
        self.instance.dispose()
        self.store.dispose()
        for name in ("history", "schedules", "storage"):
            shutil.rmtree(self.dagster_home / name, ignore_errors=True)
        shutil.rmtree(self.home)

    def reopen(self) -> None:
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        self.store = TaskStore(f"sqlite:///{self.home / 'tasks.db'}")


def project_assets(project: str) -> list[dg.AssetsDefinition]:
    @dg.asset(key=[project, "source"])
    def source() -> int:
        return 1

    @dg.asset(
        key=[project, "tasks"],
        partitions_def=dg.DynamicPartitionsDefinition(name=tasks_partitions_name(project)),
    )
    def tasks() -> int:
        return 2

    return [source, tasks]


@pytest.fixture
def world(
    registry_dir: RegistryDir, dagster_home: Path, instance: dg.DagsterInstance
) -> Iterator[World]:
    settings = registry_dir.settings
    settings.home.mkdir(parents=True)
    store = TaskStore(f"sqlite:///{settings.home / 'tasks.db'}")
    succeeded = {}
    for project in PROJECTS:
        registry_dir.project(project)
    # An archived project: its bundle and sessions live in ORCH_HOME/archive.
    gamma = registry_dir.project("gamma")
    ProjectWorkspace(settings.home, registry_dir.load().project("gamma").spec).sync()
    archive_project(settings, "gamma", gamma)
    registry = registry_dir.load()
    for project in PROJECTS:
        workspace = ProjectWorkspace(settings.home, registry.project(project).spec)
        task = store.add(project, f"work on {project}")
        assert task is not None
        instance.add_dynamic_partitions(tasks_partitions_name(project), [task.id])
        assets = project_assets(project)
        result = dg.materialize(
            assets,
            instance=instance,
            partition_key=None,
            selection=[assets[0].key],
            tags={PROJECT_TAG: project},
        )
        assert result.success
        run = dg.materialize(
            assets,
            instance=instance,
            partition_key=task.id,
            selection=[assets[1].key],
            tags={PROJECT_TAG: project, TASK_TAG: task.id},
        )
        store.mark_dispatched(task.id)
        store.claim(task.id, run.run_id)
        tree, _ = workspace.open_task_worktree(task.id)
        (tree.path / "feature.txt").write_text(f"{project}'s work\n", encoding="utf-8")
        commit = tree.commit_all("task work", author=AUTHOR)
        workspace.close_task_worktree(task.id)
        store.finish(
            task.id,
            TaskStatus.SUCCEEDED,
            branch=workspace.task_branch(task.id),
            commit=commit,
            session_id=f"session-{project}",
        )
        store.save_session(project, PROFILE, f"session-{project}", task.id)
        store.add(project, f"later work on {project}", priority=70)
        sessions = workspace.agent_config_dir(PROFILE)
        (sessions / "projects" / "s1").mkdir(parents=True)
        (sessions / "projects" / "s1" / "session.jsonl").write_text('{"turn": 1}\n', "utf-8")
        (sessions / "latest").symlink_to("projects/s1/session.jsonl")
        (workspace.prepare_home() / ".gitconfig").write_text("[user]\n\tname = agent\n", "utf-8")
        succeeded[project] = task.id
    ProjectStates(store).set(
        "beta", ProjectState.PAUSED, expected=ProjectState.ACTIVE, reason="until Monday"
    )
    apply_pool_limits(instance, settings_now(registry, store).pool_limits())
    instance.event_log_storage.set_concurrency_slots(CUSTOM_POOL, 2)
    instance.add_instigator_state(
        InstigatorState(
            RemoteInstigatorOrigin(QUEUED_RUN_ORIGIN.repository_origin, "task_dispatch"),
            InstigatorType.SENSOR,
            InstigatorStatus.RUNNING,
            SensorInstigatorData(),
        )
    )
    made = World(registry_dir, dagster_home, instance, store, succeeded)
    yield made
    made.store.dispose()
    made.instance.dispose()


def every_file(*roots: Path) -> dict[str, str]:
    """Each file below `roots` (links: their target) by path, for "nothing changed" checks."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file() and not path.name.endswith("-shm"):
                found[str(path)] = sha256_file(path)
    return found


def test_the_digest_covers_every_kind_of_state(world: World) -> None:
    digest = world.digest()

    assert digest.counts["runs"] == 4
    assert digest.counts["asset_keys"] == 4 and digest.counts["materializations"] == 4
    assert digest.counts["partitions"] == 2
    assert digest.counts["pools"] >= 4  # agents, project_alpha, project_beta, custom_pool
    assert digest.counts["instigators"] == 1
    assert digest.counts["tasks"] == 4 and digest.counts["sessions"] == 2
    assert digest.counts["lifecycle"] == 1 and digest.counts["clones"] == 2
    # Every section moves with its own kind of state.
    world.instance.add_dynamic_partitions(tasks_partitions_name("alpha"), ["t-extra"])
    world.instance.event_log_storage.set_concurrency_slots(CUSTOM_POOL, 3)
    world.store.add("alpha", "one more")
    changed = world.digest()
    assert digest.differing(changed) == ["partitions", "pools", "tasks"]


def test_the_digest_covers_the_channels_ledger_only_when_it_holds_entries(
    world: World, tmp_path: Path
) -> None:
    # No entries, no section: a backup made before the ledger existed still verifies.
    before = world.digest()
    assert list(before.sections) == [name for name in SECTIONS if name != "channels"]
    assert "channels" not in before.counts
    log = ChannelLog(world.store)
    posted = log.post("alpha", "notes", "the API moves to v2", project="alpha")
    with_post = world.digest()
    assert before.differing(with_post) == ["channels"] and with_post.counts["channels"] == 1
    log.delivered("alpha", "notes", project="beta", task=world.succeeded["beta"], upto=posted.id)
    with_delivery = world.digest()
    assert with_post.differing(with_delivery) == ["channels"]
    assert with_delivery.counts["channels"] == 2
    events = log.events()

    manifest = world.backup(tmp_path)
    assert manifest.state_digest.differing(with_delivery) == ["overrides", "pools"]
    world.wipe()
    restored = restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    assert restored.digest == manifest.state_digest.digest
    world.reopen()
    assert world.digest() == with_delivery
    assert ChannelLog(world.store).events() == events
    assert [e.id for e in ChannelLog(world.store).unread("alpha", "notes", "beta")] == []


def test_backup_verify_wipe_restore_gives_the_same_state(world: World, tmp_path: Path) -> None:
    before = world.digest()
    refs = world.refs()
    messages: list[str] = []

    manifest = world.backup(tmp_path, progress=messages.append)

    assert manifest.quiesced and not manifest.online and manifest.mode == "sqlite"
    assert manifest.path.parent == tmp_path / "backups" and manifest.path.is_dir()
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [manifest.name]
    files = set(manifest.files)
    run_ids = world.instance.get_run_ids()
    assert {
        "dagster/runs/runs.db",
        "dagster/events/index.db",
        "dagster/schedules/schedules.db",
        "tasks/tasks.db",
        "clones/alpha.bundle",
        "clones/beta.refs",
        "sessions/alpha/home/.gitconfig",
        f"sessions/alpha/agents/{PROFILE}/latest",
        "archive/gamma/repo.bundle",
        "registry/projects/alpha.yaml",
        "registry/projects/.archived/gamma.yaml",
        "registry/config/agents.yaml",
    } <= files
    assert {f"dagster/events/{run_id}.db" for run_id in run_ids} <= files
    assert any(name.startswith("dagster/compute_logs/") for name in files)
    on_disk = json.loads((manifest.path / MANIFEST).read_text(encoding="utf-8"))
    assert on_disk["state_digest"]["digest"] == manifest.state_digest.digest
    assert on_disk["dagster_version"] == dg.__version__
    assert on_disk["files"]["tasks/tasks.db"]["sha256"] == sha256_file(
        manifest.path / "tasks" / "tasks.db"
    )
    assert any("clones: bundling alpha" in m for m in messages)
    assert any("released the hold" in m for m in messages)
    # What was copied was the state with new starts held; once done, the hold is gone.
    assert manifest.state_digest.differing(before) == ["overrides", "pools"]
    assert world.digest() == before

    report = verify_backup(manifest.path)
    assert report.digest == manifest.state_digest.digest
    assert report.files == len(manifest.files) and report.bytes == manifest.bytes

    world.wipe()
    restored = restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    assert restored.digest == manifest.state_digest.digest
    assert restored.reconcile.hold_released
    assert restored.reconcile.runs_failed == () and restored.reconcile.tasks_requeued == ()
    assert sorted(restored.reconcile.clones_reset) == list(PROJECTS)
    world.reopen()
    assert world.digest() == before
    assert world.refs() == refs
    for project in PROJECTS:
        clone = world.home / "workspaces" / project / "repo.git"
        repo = world.registry_dir.load().project(project).spec.repo
        assert git(clone, "config", "remote.origin.url") == repo
        sessions = world.home / "workspaces" / project / "agents" / PROFILE
        assert os.readlink(sessions / "latest") == "projects/s1/session.jsonl"
        assert (sessions / "latest").read_text(encoding="utf-8") == '{"turn": 1}\n'
        assert (world.home / "workspaces" / project / "home" / ".gitconfig").is_file()
    assert (world.home / "archive" / "gamma" / "repo.bundle").is_file()
    assert ProjectStates(world.store).get("beta").state is ProjectState.PAUSED
    alpha = world.store.require(world.succeeded["alpha"])
    assert alpha.status is TaskStatus.SUCCEEDED and alpha.branch and alpha.commit
    assert git(world.home / "workspaces" / "alpha" / "repo.git", "rev-parse", alpha.branch) == (
        alpha.commit
    )


def test_restore_elsewhere_makes_a_new_instance_home_and_registry(
    world: World, tmp_path: Path
) -> None:
    manifest = world.backup(tmp_path)
    new = tmp_path / "elsewhere"
    settings = Settings(new / "projects", new / "config", new / "home")
    dagster_home = new / "dagster"

    report = restore_backup(manifest.path, settings, dagster_home=dagster_home)

    assert report.digest == manifest.state_digest.digest
    assert report.registry["projects"] == f"restored to {settings.projects_dir}"
    assert (dagster_home / "dagster.yaml").read_bytes() == (
        world.dagster_home / "dagster.yaml"
    ).read_bytes()
    assert (settings.projects_dir / ".archived" / "gamma.yaml").is_file()
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    store = TaskStore(f"sqlite:///{settings.home / 'tasks.db'}")
    try:
        assert state_digest(instance, store, settings.home) == world.digest()
    finally:
        store.dispose()
        instance.dispose()


def test_restore_into_a_target_that_holds_state_is_refused_and_changes_nothing(
    world: World, tmp_path: Path
) -> None:
    manifest = world.backup(tmp_path)
    world.store.add("alpha", "after the backup")
    before = every_file(world.dagster_home, world.home, world.settings.projects_dir)

    with pytest.raises(BackupError, match="already holds state") as refused:
        restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    message = str(refused.value)
    assert "history/runs holds" in message and "tasks.db exists" in message
    assert "workspaces is not empty" in message and "--wipe" in message
    assert every_file(world.dagster_home, world.home, world.settings.projects_dir) == before


def test_restore_with_wipe_replaces_the_state_that_is_there(world: World, tmp_path: Path) -> None:
    before = world.digest()
    refs = world.refs()
    manifest = world.backup(tmp_path)
    world.store.add("alpha", "after the backup")
    later = dg.materialize(project_assets("alpha")[:1], instance=world.instance)
    clone = world.home / "workspaces" / "alpha" / "repo.git"
    git(clone, "branch", "made-after-the-backup", "refs/remotes/origin/main")
    world.instance.dispose()
    world.store.dispose()

    report = restore_backup(
        manifest.path, world.settings, dagster_home=world.dagster_home, wipe=True
    )

    assert report.wiped and report.digest == manifest.state_digest.digest
    assert not (world.dagster_home / "history" / "runs" / f"{later.run_id}.db").exists()
    world.reopen()
    assert world.digest() == before
    assert world.refs() == refs


def test_verify_of_a_backup_without_index_db_fails_loudly_naming_it(
    world: World, tmp_path: Path
) -> None:
    manifest = world.backup(tmp_path)
    (manifest.path / "dagster" / "events" / "index.db").unlink()

    with pytest.raises(BackupError, match=r"missing: dagster/events/index\.db") as failed:
        verify_backup(manifest.path)
    assert "dynamic partitions and pool limits" in str(failed.value)
    with pytest.raises(BackupError, match=r"dagster/events/index\.db"):
        restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home, wipe=True)

    # Taken out of the manifest too, it is still missed.
    data = json.loads((manifest.path / MANIFEST).read_text(encoding="utf-8"))
    del data["files"]["dagster/events/index.db"]
    (manifest.path / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BackupError, match=r"not in its manifest: dagster/events/index\.db"):
        verify_backup(manifest.path)


def test_a_changed_file_fails_the_hash_check(world: World, tmp_path: Path) -> None:
    manifest = world.backup(tmp_path)
    bundle = manifest.path / "clones" / "beta.bundle"
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 0xFF
    bundle.write_bytes(bytes(data))

    with pytest.raises(
        BackupError, match=r"changed since the backup was made: clones/beta\.bundle"
    ):
        verify_backup(manifest.path)


def test_verify_compares_the_restored_state_with_the_recorded_digest(
    world: World, tmp_path: Path
) -> None:
    manifest = world.backup(tmp_path)
    # A consistent-looking backup (every hash matches) whose task database says otherwise.
    tasks_db = manifest.path / "tasks" / "tasks.db"
    with sqlite3.connect(tasks_db) as connection:
        connection.execute("UPDATE orch_tasks SET prompt = 'something else'")
    connection.close()
    data = json.loads((manifest.path / MANIFEST).read_text(encoding="utf-8"))
    data["files"]["tasks/tasks.db"] = {
        "sha256": sha256_file(tasks_db),
        "size": tasks_db.stat().st_size,
    }
    (manifest.path / MANIFEST).write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(BackupError, match=r"in the sections tasks\b"):
        verify_backup(manifest.path)


def running_task(world: World, project: str = "alpha") -> tuple[str, str]:
    """A task running in a STARTED run with its agent's session known; (task id, run id)."""
    task = world.store.add(project, "long work")
    assert task is not None
    world.store.mark_dispatched(task.id)
    run = create_run_for_test(
        world.instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={PROJECT_TAG: project, TASK_TAG: task.id},
    )
    world.store.claim(task.id, run.run_id)
    world.store.note_agent(task.id, 999_999, None, session_id="session-live")
    return task.id, run.run_id


def test_restore_fails_runs_in_flight_and_queues_their_tasks_with_the_session(
    world: World, tmp_path: Path
) -> None:
    task_id, run_id = running_task(world)

    manifest = world.backup(tmp_path, online=True)

    assert manifest.online and not manifest.quiesced
    assert "quiesce" not in manifest.durations_s
    world.wipe()
    report = restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    assert report.reconcile.runs_failed == (run_id,)
    assert report.reconcile.tasks_requeued == (task_id,)
    world.reopen()
    run = world.instance.get_run_by_id(run_id)
    assert run is not None and run.status is dg.DagsterRunStatus.FAILURE
    failures = world.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert [entry.message for entry in failures] == [RESTORE_MESSAGE]
    task = world.store.require(task_id)
    assert task.status is TaskStatus.QUEUED and not task.dispatched and task.run_id is None
    assert task.resume_session == "session-live"
    assert task.interruptions[-1]["kind"] == "restored"
    assert task.interruptions[-1]["session"] == "session-live"


def test_a_quiesced_backup_gives_up_when_runs_do_not_end_and_releases_the_hold(
    world: World, tmp_path: Path
) -> None:
    before = world.digest()
    _, run_id = running_task(world)
    with_run = world.digest()
    assert with_run != before

    with pytest.raises(BackupError, match=f"still in progress after 0.3 s \\({run_id}\\)"):
        world.backup(tmp_path, quiesce_timeout_s=0.3)

    assert MAINTENANCE_KEY not in AllocationOverrides(world.store).all()
    assert world.digest() == with_run
    assert list((tmp_path / "backups").iterdir()) == []


def test_restore_of_a_backup_from_another_dagster_version_needs_migrate(
    world: World, tmp_path: Path
) -> None:
    manifest = world.backup(tmp_path)
    data = json.loads((manifest.path / MANIFEST).read_text(encoding="utf-8"))
    data["dagster_version"] = "1.12.0"
    (manifest.path / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    world.wipe()

    with pytest.raises(BackupError, match="made with Dagster 1.12.0.*--migrate"):
        restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)
    assert not (world.dagster_home / "history").exists() and not world.home.exists()

    report = restore_backup(
        manifest.path, world.settings, dagster_home=world.dagster_home, migrate=True
    )
    assert report.migrated and report.digest == read_manifest(manifest.path).state_digest.digest


def test_the_backup_commands(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world.registry_dir.use_in(monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(world.dagster_home))
    runner = CliRunner()

    created = runner.invoke(main, ["backup", "create", "--to", str(tmp_path / "b"), "--json"])
    assert created.exit_code == 0, created.output
    summary = json.loads(created.stdout)
    assert summary["mode"] == "sqlite" and summary["quiesced"] is True
    assert summary["files"] > 0 and summary["counts"]["runs"] == 4
    assert "clones: bundling alpha" in created.stderr
    path = Path(summary["path"])

    verified = runner.invoke(main, ["backup", "verify", str(path), "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["digest"] == summary["digest"]

    refused = runner.invoke(main, ["backup", "restore", str(path)])
    assert refused.exit_code == 1
    assert "\nerror: the target already holds state" in refused.stderr

    world.wipe()
    restored = runner.invoke(main, ["backup", "restore", str(path), "--json"])
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["digest"] == summary["digest"]

    (path / "dagster" / "events" / "index.db").unlink()
    damaged = runner.invoke(main, ["backup", "verify", str(path)])
    assert damaged.exit_code == 1
    assert "error: the backup" in damaged.stderr and "dagster/events/index.db" in damaged.stderr


def test_the_scheduled_backup_materializes_verifies_and_keeps_the_newest(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.defs.backup import BACKUP_KEY
    from orchestration.defs.definitions import build_definitions

    target = tmp_path / "scheduled"
    world.registry_dir.write(
        "config/backup.yaml", f"schedule: '0 3 * * *'\nkeep: 2\nto: {target}\n"
    )
    world.registry_dir.use_in(monkeypatch)
    defs = build_definitions(world.registry_dir.load())
    assert defs.resolve_schedule_def("backup").cron_schedule == "0 3 * * *"
    job = defs.resolve_job_def("backup")
    for _ in range(3):
        assert job.execute_in_process(instance=world.instance).success
    records = world.instance.fetch_materializations(BACKUP_KEY, limit=10).records
    assert len(records) == 3
    latest = records[0].asset_materialization
    assert latest is not None
    metadata = {key: value.value for key, value in latest.metadata.items()}
    assert metadata["verified"] is True and metadata["mode"] == "sqlite"
    assert metadata["size_bytes"] > 0 and len(metadata["digest"]) == 64
    kept = sorted(p.name for p in target.iterdir())
    assert len(kept) == 2 and Path(metadata["path"]).name == kept[-1]
    assert len(metadata["deleted"]) == 1  # the third run removed the oldest


def test_without_a_backup_file_there_is_no_backup_schedule(world: World) -> None:
    from orchestration.defs.definitions import build_definitions

    defs = build_definitions(world.registry_dir.load())
    assert "backup" not in {s.name for s in defs.schedules or []}


def test_events_are_counted_in_sql_as_the_instance_reads_them(world: World) -> None:
    from orchestration.state.digest import _event_counts, _logged_event_counts

    run_ids = [run.run_id for run in world.instance.get_runs()]
    assert len(run_ids) >= 4
    counted = _event_counts(world.instance, run_ids)
    assert counted == {run_id: _logged_event_counts(world.instance, run_id) for run_id in run_ids}
    assert all(sum(counted[run_id].values()) > 5 for run_id in run_ids)


def test_materializations_and_partitions_are_read_in_sql_as_the_instance_reads_them(
    world: World,
) -> None:
    from orchestration.state.digest import (
        _all_materializations,
        _dynamic_partitions,
        _materializations,
    )

    instance = world.instance
    keys = sorted(instance.get_asset_keys(), key=lambda key: key.to_string())
    wiped = next(key for key in keys if key.path[-1] == "source")
    instance.wipe_assets([wiped])
    instance.add_dynamic_partitions("elsewhere", ["b", "a"])

    read = _all_materializations(instance, keys)

    assert read == {
        key.to_user_string(): sorted(
            _materializations(instance, key), key=lambda item: (item[0] or "", item[1] or "")
        )
        for key in keys
    }
    assert read[wiped.to_user_string()] == []
    assert sum(len(items) for items in read.values()) >= len(PROJECTS)
    assert any(partition for items in read.values() for _, partition in items)
    partitions = _dynamic_partitions(instance, set(PROJECTS))
    assert partitions["elsewhere"] == ["a", "b"]
    assert partitions == {
        name: sorted(instance.get_dynamic_partitions(name))
        for name in [*(tasks_partitions_name(p) for p in PROJECTS), "elsewhere"]
        if instance.get_dynamic_partitions(name)
    }


def test_two_digests_read_the_shard_of_a_finished_run_once_unless_it_changed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.state import digest as digest_module

    reads: list[str] = []
    original = digest_module._shard_event_counts

    def counted(
        shard: tuple[str, Path], *, immutable: bool = False
    ) -> list[tuple[str | None, int]]:
        reads.append(shard[0])
        return original(shard, immutable=immutable)

    monkeypatch.setattr(digest_module, "_shard_event_counts", counted)
    runs = world.instance.get_runs()
    assert runs and all(run.is_finished for run in runs)
    shards = ShardCounts()
    first = state_digest(world.instance, world.store, world.home, shards=shards)
    assert sorted(reads) == sorted(run.run_id for run in runs)

    reads.clear()
    assert state_digest(world.instance, world.store, world.home, shards=shards) == first
    assert reads == []

    changed = runs[0]
    world.instance.report_engine_event("one more event", changed)
    again = state_digest(world.instance, world.store, world.home, shards=shards)
    assert reads == [changed.run_id]
    assert again.counts["events"] == first.counts["events"] + 1


def test_a_link_out_of_the_workspace_in_an_agent_home_is_not_restored(
    world: World, tmp_path: Path
) -> None:
    home = world.home / "workspaces" / "alpha" / "home"
    (home / "passwd").symlink_to("/etc/passwd")
    (home / "up").symlink_to("../../../outside")
    (home / "own").symlink_to(".gitconfig")
    manifest = world.backup(tmp_path)
    assert manifest.files["sessions/alpha/home/passwd"] == {"link": "/etc/passwd"}
    world.wipe()

    restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    assert not os.path.lexists(home / "passwd") and not os.path.lexists(home / "up")
    assert os.readlink(home / "own") == ".gitconfig"
    assert (home / ".gitconfig").read_text(encoding="utf-8") == "[user]\n\tname = agent\n"
    latest = world.home / "workspaces" / "alpha" / "agents" / PROFILE / "latest"
    assert latest.read_text(encoding="utf-8") == '{"turn": 1}\n'


def test_a_backup_with_sessions_in_tar_files_is_restored(world: World, tmp_path: Path) -> None:
    manifest = world.backup(tmp_path)
    data = json.loads((manifest.path / MANIFEST).read_text(encoding="utf-8"))
    for name, session in data["parts"]["sessions"].items():
        folder = manifest.path / session.pop("dir")
        tar = manifest.path / "sessions" / f"{name}.tar"
        with tarfile.open(tar, "w") as archive:
            for kept in session["dirs"]:
                archive.add(folder / kept, arcname=kept)
        shutil.rmtree(folder)
        data["files"] = {
            k: v for k, v in data["files"].items() if not k.startswith(f"sessions/{name}/")
        }
        data["files"][f"sessions/{name}.tar"] = {
            "sha256": sha256_file(tar),
            "size": tar.stat().st_size,
        }
        session["file"] = f"sessions/{name}.tar"
    (manifest.path / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    world.wipe()

    restore_backup(manifest.path, world.settings, dagster_home=world.dagster_home)

    for project in PROJECTS:
        sessions = world.home / "workspaces" / project / "agents" / PROFILE
        assert (sessions / "latest").read_text(encoding="utf-8") == '{"turn": 1}\n'
        assert (world.home / "workspaces" / project / "home" / ".gitconfig").is_file()
