"""Shared fixtures: throwaway registries and real git repositories in temporary directories."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestration.registry import Registry, load_registry
from orchestration.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def make_git_repo(path: Path, files: Mapping[str, str], *, branch: str = "main") -> Path:
    """A real git repository at `path` with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(path), **GIT_IDENTITY}
    for argv in (
        ["git", "init", "-q", "-b", branch],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "--no-gpg-sign", "-m", "initial"],
    ):
        subprocess.run(argv, cwd=path, env=env, check=True)
    return path


@dataclass
class RegistryDir:
    """A registry on disk: projects/, projects/templates/, resources/ and a state dir."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return Settings(self.root / "projects", self.root / "resources", self.root / "home")

    def write(self, relative: str, text: str) -> Path:
        """Write a file below the registry root (YAML is dedented)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def project(self, name: str, text: str = "", *, repo: str | None = None) -> Path:
        """projects/<name>.yaml; `repo` defaults to a real git repository made for it."""
        if repo is None:
            repo = str(make_git_repo(self.root / "repos" / name, {"README.md": name}))
        body = textwrap.dedent(text).lstrip("\n")
        return self.write(f"projects/{name}.yaml", f"name: {name}\nrepo: {repo}\n{body}")

    def load(self) -> Registry:
        return load_registry(self.settings, environ=self.env)


@pytest.fixture
def registry_dir(tmp_path: Path) -> RegistryDir:
    """An empty project registry with the shipped agent profiles and pools."""
    shutil.copytree(REPO_ROOT / "resources", tmp_path / "resources")
    (tmp_path / "projects" / "templates").mkdir(parents=True)
    return RegistryDir(tmp_path)
