"""Tests for archived projects in the registry: listed by name and never read, refused by name
with the way back, and known (with a warning) to the projects that depend on them; and the
repo paths the registry resolves, as `resolve_repo_path` gives them to the archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.registry.loader import resolve_repo_path
from tests.support.registry import RegistryDir


@pytest.fixture
def plain_repo(registry_dir: RegistryDir) -> str:
    """A directory usable as a local `repo`; the registry only checks that it exists."""
    path = registry_dir.root / "plain_repo"
    path.mkdir()
    return str(path)


def test_archived_files_are_listed_by_name_and_not_read(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("alpha", repo=plain_repo)
    registry_dir.write("projects/.archived/beta.yaml", "name: beta\nrepo: [not, valid\n")
    registry_dir.write("projects/.archived/_notes.yaml", "anything\n")
    registry_dir.write("projects/.archived/nested/gamma.yaml", "name: gamma\n")

    registry = registry_dir.load()

    assert registry.names == ("alpha",)
    assert registry.archived == ("beta",)
    assert registry.errors == () and registry.warnings == ()


def test_asking_for_an_archived_project_says_how_to_bring_it_back(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("alpha", repo=plain_repo)
    registry_dir.write("projects/.archived/beta.yaml", f"name: beta\nrepo: {plain_repo}\n")
    registry = registry_dir.load()

    with pytest.raises(KeyError) as raised:
        registry.project("beta")
    assert raised.value.args[0] == (
        "project 'beta' is archived; `orch projects unarchive beta` brings it back"
    )
    with pytest.raises(KeyError, match="no project named 'gamma'"):
        registry.project("gamma")
    assert registry.spec("beta") is None


def test_depending_on_an_archived_project_is_a_warning_not_an_error(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    path = registry_dir.project(
        "alpha",
        "depends_on: [beta]\nignore_dependencies: [gamma]\n",
        repo=plain_repo,
    )
    for name in ("beta", "gamma"):
        registry_dir.write(f"projects/.archived/{name}.yaml", f"name: {name}\n")

    registry = registry_dir.load()

    assert registry.errors == ()
    assert registry.project("alpha").spec.depends_on == ("beta",)
    shown = [warning.split(": ", 1) for warning in registry.warnings]
    assert [Path(file).resolve() for file, _ in shown] == [path.resolve()] * 2
    assert [text for _, text in shown] == [
        "depends_on: project 'beta' is archived",
        "ignore_dependencies: project 'gamma' is archived",
    ]


def test_an_unknown_project_is_still_an_error(registry_dir: RegistryDir, plain_repo: str) -> None:
    registry_dir.project("alpha", "depends_on: [delta]\n", repo=plain_repo)
    registry_dir.write("projects/.archived/beta.yaml", "name: beta\n")

    registry = registry_dir.load()

    assert registry.names == ()
    assert len(registry.errors) == 1
    assert "unknown project 'delta'" in registry.errors[0].message


def test_an_archived_name_in_use_again_is_no_warning(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("alpha", "depends_on: [beta]\n", repo=plain_repo)
    registry_dir.project("beta", repo=plain_repo)
    registry_dir.write("projects/.archived/beta.yaml", "name: beta\n")

    registry = registry_dir.load()

    assert registry.errors == () and registry.warnings == ()
    assert registry.names == ("alpha", "beta") and registry.archived == ("beta",)
    assert registry.project("beta").name == "beta"


def test_resolve_repo_path_as_the_registry_does(registry_dir: RegistryDir) -> None:
    settings = registry_dir.settings
    base = settings.projects_dir
    assert (
        resolve_repo_path("${ORCH_HOME}/samples/a", settings, base)
        == (settings.home / "samples" / "a").resolve()
    )
    assert (
        resolve_repo_path(" ../repos/a ", settings, base)
        == (registry_dir.root / "repos" / "a").resolve()
    )
    assert resolve_repo_path("~/code", settings, base) == (Path.home() / "code").resolve()
    assert resolve_repo_path("/abs/path", settings, base) == Path("/abs/path")
