"""Tests for orchestration.samples: the shipped sample projects become real, working git repos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest

from orchestration.samples import (
    SAMPLE_AUTHOR_EMAIL,
    SAMPLE_PROJECTS,
    SampleRepoError,
    ensure_sample_repos,
    examples_dir,
)


@pytest.fixture(scope="module")
def sample_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three sample repositories, built once for the read-only tests in this module."""
    return ensure_sample_repos(tmp_path_factory.mktemp("samples"))


def _head_shas(repos: dict[str, Path]) -> dict[str, str]:
    shas: dict[str, str] = {}
    for name, path in repos.items():
        with git.Repo(path) as repo:
            shas[name] = repo.head.commit.hexsha
    return shas


def test_examples_ship_every_sample_with_tasks() -> None:
    for name in SAMPLE_PROJECTS:
        tasks = examples_dir() / name / ".agent-os/specs/2026-01-01-first-steps/tasks.md"
        text = tasks.read_text(encoding="utf-8")
        assert "- [ ] " in text, name
        assert "- [x] " in text, name
        assert not (examples_dir() / name / ".git").exists(), "examples must be plain trees"


def test_creates_three_repos_on_main_with_two_commits_and_clean_tree(
    sample_repos: dict[str, Path],
) -> None:
    assert set(sample_repos) == set(SAMPLE_PROJECTS)
    for name, path in sample_repos.items():
        assert path == path.parent / name
        with git.Repo(path) as repo:
            assert repo.active_branch.name == "main"
            commits = list(repo.iter_commits("main"))
            assert len(commits) == 2, name
            assert all(c.author.email == SAMPLE_AUTHOR_EMAIL for c in commits)
            assert all(c.committer.email == SAMPLE_AUTHOR_EMAIL for c in commits)
            assert not repo.is_dirty(untracked_files=True), name
            tracked = {item.path for item in repo.head.commit.tree.traverse()}
            assert ".agent-os/specs/2026-01-01-first-steps/tasks.md" in tracked
            assert "CHANGELOG.md" in tracked


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    first = ensure_sample_repos(tmp_path)
    before = _head_shas(first)
    (first["acme_core"] / "scratch.txt").write_text("agent work in progress\n")

    second = ensure_sample_repos(tmp_path)

    assert second == first
    assert _head_shas(second) == before
    assert (first["acme_core"] / "scratch.txt").exists(), "an existing repo must be left alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAMPLE_PROJECTS)


def test_history_is_identical_on_every_run(tmp_path: Path) -> None:
    one = _head_shas(ensure_sample_repos(tmp_path / "one"))
    two = _head_shas(ensure_sample_repos(tmp_path / "two"))
    assert one == two


@pytest.mark.parametrize("name", ["acme_core", "acme_api"])
def test_python_samples_tests_pass(sample_repos: dict[str, Path], name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-B", "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=sample_repos[name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


def test_node_sample_tests_pass(sample_repos: dict[str, Path]) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run(
        [node, "--test"],
        cwd=sample_repos["acme_web"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


def test_half_made_folder_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "acme_core").mkdir()
    (tmp_path / "acme_core" / "partial.txt").write_text("interrupted copy\n")
    empty_repo = tmp_path / "acme_api"
    git.Repo.init(empty_repo).close()  # a repository without any commit

    repos = ensure_sample_repos(tmp_path)

    for name in ("acme_core", "acme_api"):
        with git.Repo(repos[name]) as repo:
            assert len(list(repo.iter_commits())) == 2
            assert not repo.is_dirty(untracked_files=True)
    assert not (repos["acme_core"] / "partial.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAMPLE_PROJECTS)


def test_symlinked_half_made_sample_is_replaced_without_touching_its_target(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "acme_web").symlink_to(outside, target_is_directory=True)

    repos = ensure_sample_repos(dest)

    assert not repos["acme_web"].is_symlink()
    assert (outside / "keep.txt").read_text() == "not ours\n"


def test_dest_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    dest = tmp_path / "samples"
    dest.write_text("oops\n")
    with pytest.raises(SampleRepoError, match=str(dest)):
        ensure_sample_repos(dest)


def test_missing_source_tree_names_the_path(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(examples_dir() / "acme_core", source / "acme_core")
    with pytest.raises(SampleRepoError, match="acme_api"):
        ensure_sample_repos(tmp_path / "dest", source=source)
    assert not any(p.name.startswith(".") for p in (tmp_path / "dest").iterdir())
