"""Materialising a project's repository assets on a real git repository and a test instance.

The user's repository is only read: its status, files and git metadata must be byte-for-byte
the same afterwards, and the private clone lives under `<home>/workspaces/<project>/repo.git`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import REFRESH_JOB, ProjectKeys
from orchestration.defs.orchestration_assets import DEPENDENCIES_KEY, REGISTRY_KEY
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from tests.support.git import commit, git, make_git_repo
from tests.support.registry import RegistryDir

PROJECT = "calc"
VERIFY = "verify: [python3, -m, unittest, discover, -s, tests, -t, .]\n"
PYPROJECT = '[project]\nname = "Calc_Tools.Core"\nversion = "0.1.0"\n'
PASSING_TEST = """\
import unittest


class Adds(unittest.TestCase):
    def test_adds(self):
        self.assertEqual(1 + 1, 2)
"""
FAILING_TEST = """\
import unittest


class Breaks(unittest.TestCase):
    def test_breaks(self):
        self.assertEqual(1 + 1, 3)
"""


def tree_state(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file below `repo`, `.git` included, with its size and modification time."""
    return {
        str(path.relative_to(repo)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(repo.rglob("*"))
        if path.is_file()
    }


@dataclass
class Project:
    """A registered project on a real repository, and a test instance to materialise into."""

    repo: Path
    home: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    keys: ProjectKeys

    def refresh(self) -> dg.ExecuteInProcessResult:
        """Materialise source, manifest and verification, leaving the user's repo untouched."""
        status, files = git(self.repo, "status", "--porcelain"), tree_state(self.repo)
        assert isinstance(self.defs.resources["workspaces"], ProjectWorkspaces)
        result = dg.materialize(
            [self.defs.get_assets_def(self.keys.source)],
            selection=self.keys.repository,
            instance=self.instance,
            resources={"workspaces": ProjectWorkspaces(home=str(self.home))},
        )
        assert result.success
        assert git(self.repo, "status", "--porcelain") == status
        assert tree_state(self.repo) == files, "the user's repository was written to"
        return result

    def metadata(self, key: dg.AssetKey) -> dict[str, object]:
        """The latest materialisation's metadata of `key`, as stored in the instance."""
        event = self.instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def verify_check(self, result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
        (evaluation,) = [
            e
            for e in result.get_asset_check_evaluations()
            if e.asset_check_key == dg.AssetCheckKey(self.keys.verification, "verify_passed")
        ]
        return evaluation


@pytest.fixture
def project(
    registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    repo = make_git_repo(
        tmp_path / "user" / PROJECT,
        {
            "pyproject.toml": PYPROJECT,
            "tests/__init__.py": "",
            "tests/test_adds.py": PASSING_TEST,
        },
    )
    registry_dir.project(PROJECT, VERIFY, repo=str(repo))
    # The assets read the registry where the environment says, at run time.
    registry_dir.use_in(monkeypatch)
    registry = registry_dir.load()
    assert registry.errors == ()
    with dg.instance_for_test() as instance:
        yield Project(
            repo=repo,
            home=tmp_path / "orch_home",
            defs=build_definitions(registry),
            instance=instance,
            keys=ProjectKeys(PROJECT),
        )


def test_clean_repository(project: Project) -> None:
    result = project.refresh()

    head = git(project.repo, "rev-parse", "HEAD")
    source = project.metadata(project.keys.source)
    assert source["branch_sha"] == head
    assert source["head_sha"] == head
    assert source["head_branch"] == "main"
    assert source["dirty"] is False
    assert source["remote"] is False

    manifest = project.metadata(project.keys.manifest)
    assert manifest["commit"] == head
    assert manifest["provides"] == ["calc-tools-core"]  # PEP 503 normalised
    assert manifest["problems"] == []

    verification = project.metadata(project.keys.verification)
    assert (verification["passed"], verification["failed"]) == (1, 0)
    assert verification["exit_code"] == 0
    assert verification["runner"] == "unittest"
    check = project.verify_check(result)
    assert check.passed is True
    assert check.metadata["failed"].value == 0

    clone = project.home / "workspaces" / PROJECT / "repo.git"
    assert git(clone, "rev-parse", "--is-bare-repository") == "true"
    assert git(clone, "rev-parse", "refs/remotes/origin/main") == head
    assert not list((clone.parent / "worktrees").iterdir()), "the verify worktree was left behind"


def test_uncommitted_changes_make_source_dirty_but_do_not_reach_verification(
    project: Project,
) -> None:
    project.refresh()
    (project.repo / "tests" / "test_breaks.py").write_text(FAILING_TEST, encoding="utf-8")

    result = project.refresh()

    assert project.metadata(project.keys.source)["dirty"] is True
    verification = project.metadata(project.keys.verification)
    assert (verification["passed"], verification["failed"]) == (1, 0)
    assert project.verify_check(result).passed is True


def test_committed_failing_test_fails_the_check(project: Project) -> None:
    project.refresh()
    head = commit(project.repo, {"tests/test_breaks.py": FAILING_TEST}, message="a failing test")

    result = project.refresh()

    source = project.metadata(project.keys.source)
    assert source["branch_sha"] == head == git(project.repo, "rev-parse", "HEAD")
    assert source["dirty"] is False
    verification = project.metadata(project.keys.verification)
    assert (verification["passed"], verification["failed"]) == (1, 1)
    assert verification["exit_code"] != 0
    check = project.verify_check(result)
    assert check.passed is False
    assert check.metadata["failed"].value == 1


def test_refresh_job_runs_every_repository_asset_and_the_registry(
    project: Project, registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped job as the webserver runs it: resources from the environment at run time."""
    settings = registry_dir.settings
    monkeypatch.setenv(PROJECTS_DIR_VAR, str(settings.projects_dir))
    monkeypatch.setenv(CONFIG_DIR_VAR, str(settings.config_dir))
    monkeypatch.setenv(HOME_VAR, str(project.home))

    result = project.defs.resolve_job_def(REFRESH_JOB).execute_in_process(instance=project.instance)

    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {*project.keys.repository, REGISTRY_KEY, DEPENDENCIES_KEY}
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"verify_passed": True, "all_projects_valid": True, "acyclic": True}
    assert (project.home / "workspaces" / PROJECT / "repo.git").is_dir()
