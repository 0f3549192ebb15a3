"""Archiving, unarchiving and purging a project's files with real git repositories: the private
clone kept as a verified bundle and made again with the same refs, the agent home and sessions
kept, the project file moved aside and back, failures that leave everything as it was, purges
that never reach the user's repository, and the project's history deleted from a real Dagster
instance."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from orchestration.control.archive import (
    ArchiveError,
    archive_dir,
    archive_project,
    purge_project_files,
    purge_project_history,
    unarchive_project,
)
from orchestration.dependencies.detection import DetectionCache
from orchestration.tags import project_pool, tasks_partitions_name
from orchestration.workspace.workspace import ProjectWorkspace
from tests.support.git import git
from tests.support.registry import RegistryDir

TASK = "T0000000001"
AUTHOR = ("Orchestrator", "orch@example.invalid")


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a folder that is no git repository, so no git command can reach another one."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@dataclass
class Project:
    """A project with a private clone, a task branch, an agent home and agent sessions."""

    registry_dir: RegistryDir
    name: str
    yaml: Path
    repo: Path
    workspace: ProjectWorkspace

    @property
    def archived_yaml(self) -> Path:
        return self.registry_dir.settings.projects_dir / ".archived" / f"{self.name}.yaml"

    @property
    def archive(self) -> Path:
        return archive_dir(self.registry_dir.settings.home, self.name)

    def refs(self) -> str:
        return git(self.workspace.clone_path, "for-each-ref", "--format=%(objectname) %(refname)")


def make_project(registry_dir: RegistryDir, name: str = "alpha", *, sync: bool = True) -> Project:
    yaml = registry_dir.project(name)
    spec = registry_dir.load().project(name).spec
    workspace = ProjectWorkspace(registry_dir.settings.home, spec)
    project = Project(registry_dir, name, yaml, Path(spec.repo), workspace)
    if not sync:
        return project
    workspace.sync()
    tree, _ = workspace.open_task_worktree(TASK)
    (tree.path / "feature.txt").write_text("the agent's work\n", encoding="utf-8")
    assert tree.commit_all("task work", author=AUTHOR) is not None
    workspace.close_task_worktree(TASK)
    sessions = workspace.agent_config_dir("claude_code")
    (sessions / "projects" / "s1").mkdir(parents=True)
    (sessions / "projects" / "s1" / "session.jsonl").write_text('{"turn": 1}\n', "utf-8")
    (sessions / "latest").symlink_to("projects/s1/session.jsonl")
    (sessions / "outside").symlink_to("/nonexistent/target")  # kept as a link, never followed
    os.mkfifo(sessions / "socket-like")  # not a file: left out, and no copy hangs on it
    home = workspace.prepare_home()
    (home / ".gitconfig").write_text("[user]\n\tname = agent\n", encoding="utf-8")
    return project


def test_archive_keeps_the_clone_and_sessions_and_takes_the_project_out(
    registry_dir: RegistryDir, tmp_path: Path
) -> None:
    project = make_project(registry_dir)
    other = make_project(registry_dir, "beta", sync=False)
    refs = project.refs()
    assert f"refs/heads/orch/alpha/{TASK}" in refs and "refs/remotes/origin/main" in refs

    record = archive_project(registry_dir.settings, "alpha", project.yaml)

    assert not project.workspace.root.exists()
    assert not project.yaml.exists() and project.archived_yaml.is_file()
    assert record.archive == project.archive and record.bundle == project.archive / "repo.bundle"
    assert record.kept == ("home", "agents")
    assert (project.archive / "refs.txt").read_text(encoding="utf-8") == refs + "\n"
    scratch = tmp_path / "scratch"
    git(tmp_path, "init", "-q", str(scratch))
    git(scratch, "bundle", "verify", str(record.bundle))
    assert f"refs/heads/orch/alpha/{TASK}" in git(
        scratch, "bundle", "list-heads", str(record.bundle)
    )
    sessions = project.archive / "agents" / "claude_code"
    assert (sessions / "projects" / "s1" / "session.jsonl").read_text("utf-8") == '{"turn": 1}\n'
    assert os.readlink(sessions / "latest") == "projects/s1/session.jsonl"
    assert os.readlink(sessions / "outside") == "/nonexistent/target"
    assert not (sessions / "socket-like").exists()
    assert (project.archive / "home" / ".gitconfig").is_file()
    manifest = json.loads((project.archive / "archive.json").read_text(encoding="utf-8"))
    assert manifest["project"] == "alpha" and manifest["bundle"] is True
    assert manifest["original_yaml"] == str(project.yaml.resolve())
    assert manifest["refs_sha256"] == record.refs_digest
    assert project.repo.is_dir() and git(project.repo, "status", "--porcelain") == ""

    registry = registry_dir.load()
    assert registry.names == ("beta",) and registry.archived == ("alpha",)
    assert registry.errors == ()
    with pytest.raises(KeyError, match="`orch projects unarchive alpha` brings it back"):
        registry.project("alpha")
    assert other.yaml.is_file()


def test_unarchive_restores_refs_sessions_and_file(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    refs = project.refs()
    archive_project(registry_dir.settings, "alpha", project.yaml)

    restored = unarchive_project(registry_dir.settings, "alpha")

    assert restored == project.yaml and project.yaml.is_file()
    assert not project.archived_yaml.exists() and not project.archive.exists()
    assert project.refs() == refs
    clone_url = git(project.workspace.clone_path, "config", "remote.origin.url")
    assert clone_url == str(project.repo)
    sessions = project.workspace.root / "agents" / "claude_code"
    assert (sessions / "projects" / "s1" / "session.jsonl").read_text("utf-8") == '{"turn": 1}\n'
    assert os.readlink(sessions / "latest") == "projects/s1/session.jsonl"
    assert (project.workspace.home_dir / ".gitconfig").is_file()
    registry = registry_dir.load()
    assert registry.names == ("alpha",) and registry.archived == () and registry.errors == ()
    # The task continues on its branch in the restored clone.
    workspace = ProjectWorkspace(registry_dir.settings.home, registry.project("alpha").spec)
    tree, _ = workspace.open_task_worktree(TASK)
    assert (tree.path / "feature.txt").read_text(encoding="utf-8") == "the agent's work\n"
    workspace.close_task_worktree(TASK)


def test_a_relative_repo_is_resolved_from_the_projects_directory(
    registry_dir: RegistryDir,
) -> None:
    project = make_project(registry_dir)
    project.yaml.write_text("name: alpha\nrepo: ../repos/alpha\n", encoding="utf-8")
    refs = project.refs()
    archive_project(registry_dir.settings, "alpha", project.yaml)

    unarchive_project(registry_dir.settings, "alpha")

    assert project.refs() == refs
    clone_url = git(project.workspace.clone_path, "config", "remote.origin.url")
    assert clone_url == str(project.repo.resolve())
    assert registry_dir.load().project("alpha").spec.repo == clone_url


def test_a_project_never_synced_archives_and_comes_back(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir, sync=False)

    record = archive_project(registry_dir.settings, "alpha", project.yaml)
    assert record.bundle is None and record.kept == ()
    assert (record.archive / "refs.txt").read_text(encoding="utf-8") == ""
    assert unarchive_project(registry_dir.settings, "alpha") == project.yaml
    assert registry_dir.load().names == ("alpha",)
    assert not project.workspace.clone_path.exists()


def test_archive_refuses_when_an_archived_file_is_there(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    refs = project.refs()
    project.archived_yaml.parent.mkdir()
    project.archived_yaml.write_text("name: alpha\nrepo: elsewhere\n", encoding="utf-8")

    with pytest.raises(ArchiveError, match=r"\.archived/alpha\.yaml already exists"):
        archive_project(registry_dir.settings, "alpha", project.yaml)

    assert project.yaml.is_file() and project.refs() == refs
    assert project.archived_yaml.read_text(encoding="utf-8") == "name: alpha\nrepo: elsewhere\n"
    assert not project.archive.exists()
    assert (project.workspace.root / "agents" / "claude_code" / "latest").is_symlink()


def test_a_failed_move_of_the_file_undoes_the_archive(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    refs = project.refs()
    # `.archived` is a file, so the project file cannot be moved there (after the bundle and
    # the copies were made).
    (registry_dir.settings.projects_dir / ".archived").write_text("", encoding="utf-8")

    with pytest.raises(ArchiveError, match="could not move .*alpha.yaml.*nothing was deleted"):
        archive_project(registry_dir.settings, "alpha", project.yaml)

    assert project.yaml.is_file() and not project.archive.exists()
    assert project.refs() == refs and project.workspace.home_dir.is_dir()
    assert registry_dir.load().names == ("alpha",)


def test_a_clone_that_cannot_be_bundled_is_left_as_it_was(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    objects = project.workspace.clone_path / "objects"
    for path in objects.rglob("*"):
        if path.is_file() and path.parent.name not in ("info", "pack"):
            path.unlink()  # loose objects gone: the refs point at nothing
    for path in (objects / "pack").glob("*"):
        path.unlink()

    with pytest.raises(ArchiveError, match="could not bundle the private clone"):
        archive_project(registry_dir.settings, "alpha", project.yaml)

    assert project.yaml.is_file() and not project.archive.exists()
    assert project.workspace.clone_path.is_dir() and project.workspace.home_dir.is_dir()


def test_pending_outcomes_are_not_archived_away(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    outcomes = project.workspace.root / "outcomes"
    outcomes.mkdir()
    (outcomes / f"{TASK}.json").write_text("{}", encoding="utf-8")

    with pytest.raises(ArchiveError, match="not recorded yet"):
        archive_project(registry_dir.settings, "alpha", project.yaml)
    assert project.yaml.is_file() and not project.archive.exists()


def test_unarchive_refuses_while_the_project_file_is_back(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    archive_project(registry_dir.settings, "alpha", project.yaml)
    project.yaml.write_text(f"name: alpha\nrepo: {project.repo}\n", encoding="utf-8")

    with pytest.raises(ArchiveError, match=r"alpha\.yaml exists"):
        unarchive_project(registry_dir.settings, "alpha")

    assert project.archived_yaml.is_file() and (project.archive / "repo.bundle").is_file()
    assert not project.workspace.root.exists()


def test_a_failed_unarchive_leaves_the_archive_intact(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    record = archive_project(registry_dir.settings, "alpha", project.yaml)
    assert record.bundle is not None
    kept = sorted(p.relative_to(project.archive) for p in project.archive.rglob("*"))
    record.bundle.write_bytes(record.bundle.read_bytes()[:200])  # truncated

    with pytest.raises(ArchiveError, match="(?s)could not restore the private clone.*intact"):
        unarchive_project(registry_dir.settings, "alpha")

    assert sorted(p.relative_to(project.archive) for p in project.archive.rglob("*")) == kept
    assert project.archived_yaml.is_file() and not project.yaml.exists()
    assert not project.workspace.root.exists()
    with pytest.raises(ArchiveError, match="has no archive"):
        unarchive_project(registry_dir.settings, "beta")


def test_purge_deletes_the_project_files_and_never_the_repository(
    registry_dir: RegistryDir,
) -> None:
    project = make_project(registry_dir)
    other = make_project(registry_dir, "beta")
    cache = DetectionCache(registry_dir.settings.home)
    for name in ("alpha", "beta"):
        scan = cache.scans_dir / name / "0123abcd.json"
        scan.parent.mkdir(parents=True)
        scan.write_text("{}", encoding="utf-8")

    deleted = purge_project_files(registry_dir.settings, "alpha")

    assert set(deleted) == {project.yaml, project.workspace.root, cache.scans_dir / "alpha"}
    assert not project.yaml.exists() and not project.workspace.root.exists()
    assert not (cache.scans_dir / "alpha").exists() and (cache.scans_dir / "beta").is_dir()
    assert git(project.repo, "rev-parse", "--verify", "main")  # the user's repository is whole
    assert other.yaml.is_file() and other.workspace.clone_path.is_dir()
    assert registry_dir.load().names == ("beta",)
    assert purge_project_files(registry_dir.settings, "alpha") == []


def test_purge_of_an_archived_project(registry_dir: RegistryDir) -> None:
    project = make_project(registry_dir)
    archive_project(registry_dir.settings, "alpha", project.yaml)

    deleted = purge_project_files(registry_dir.settings, "alpha")

    assert set(deleted) == {project.archived_yaml, project.archive}
    assert not project.archive.exists() and not project.archived_yaml.exists()
    assert registry_dir.load().archived == ()
    assert project.repo.is_dir()


def test_purge_refuses_when_the_repository_lies_in_orch_home(registry_dir: RegistryDir) -> None:
    home = registry_dir.settings.home
    mine = home / "workspaces" / "alpha" / "mine"
    mine.mkdir(parents=True)
    git(mine, "init", "-q")
    yaml = registry_dir.project("alpha", repo="${ORCH_HOME}/workspaces/alpha/mine")
    assert registry_dir.load().names == ("alpha",)

    with pytest.raises(ArchiveError, match="refusing to delete .*workspaces/alpha.*nothing"):
        purge_project_files(registry_dir.settings, "alpha")

    assert yaml.is_file() and (mine / ".git").is_dir()


def test_purge_refuses_a_protected_path_and_a_file_of_another_project(
    registry_dir: RegistryDir,
) -> None:
    project = make_project(registry_dir)
    with pytest.raises(ArchiveError, match="refusing to delete"):
        purge_project_files(
            registry_dir.settings, "alpha", protect=[project.workspace.home_dir / "x"]
        )
    assert project.yaml.is_file() and project.workspace.clone_path.is_dir()

    stray = registry_dir.write("projects/gamma.yaml", "name: alpha_two\nrepo: .\n")
    with pytest.raises(ArchiveError, match="defines project 'alpha_two', not 'gamma'"):
        purge_project_files(registry_dir.settings, "gamma")
    assert stray.is_file()


# --- the Dagster instance ---------------------------------------------------------------------


def project_assets(project: str) -> list[dg.AssetsDefinition]:
    partitions = dg.DynamicPartitionsDefinition(name=tasks_partitions_name(project))

    @dg.asset(key=[project, "source"])
    def source() -> int:
        return 1

    @dg.asset(key=[project, "tasks"], partitions_def=partitions)
    def tasks() -> int:
        return 1

    return [source, tasks]


def test_purge_history_deletes_runs_assets_partitions_and_pool() -> None:
    with dg.instance_for_test() as instance:
        for project in ("alpha", "beta"):
            source, tasks = project_assets(project)
            tags = {"project": project}
            instance.add_dynamic_partitions(tasks_partitions_name(project), ["T1", "T2"])
            assert dg.materialize([source], instance=instance, tags=tags).success
            for key in ("T1", "T2"):
                done = dg.materialize([tasks], instance=instance, tags=tags, partition_key=key)
                assert done.success
            instance.event_log_storage.set_concurrency_slots(project_pool(project), 2)

        counts = purge_project_history(instance, "alpha")

        assert counts == {"assets": 2, "partitions": 2, "runs": 3, "pools": 1}
        alpha = dg.RunsFilter(tags={"project": "alpha"})
        beta = dg.RunsFilter(tags={"project": "beta"})
        assert instance.get_runs_count(alpha) == 0 and instance.get_runs_count(beta) == 3
        keys = set(instance.get_asset_keys())
        assert dg.AssetKey(["alpha", "source"]) not in keys
        assert {dg.AssetKey(["beta", "source"]), dg.AssetKey(["beta", "tasks"])} <= keys
        assert instance.get_dynamic_partitions(tasks_partitions_name("alpha")) == []
        assert list(instance.get_dynamic_partitions(tasks_partitions_name("beta"))) == [
            "T1",
            "T2",
        ]
        pools = instance.event_log_storage.get_concurrency_keys()
        assert project_pool("alpha") not in pools and project_pool("beta") in pools
        assert purge_project_history(instance, "alpha") == {
            "assets": 0,
            "partitions": 0,
            "runs": 0,
            "pools": 0,
        }
