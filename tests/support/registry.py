"""A project registry on disk in a temporary directory, with the shipped agent profiles."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from orchestration.registry import Registry, load_registry
from orchestration.settings import Settings
from tests.support.git import make_git_repo
from tests.support.paths import REPO_ROOT

#: The pools of the provider accounts the shipped profiles spend (`provider_pool`).
PROVIDER_POOLS = ("provider_anthropic", "provider_demo", "provider_google", "provider_openai")


@dataclass
class RegistryDir:
    """A registry on disk: projects/, projects/templates/, config/ and a state dir."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path) -> RegistryDir:
        """An empty project registry under `root` with the shipped agent profiles and pools."""
        shutil.copytree(REPO_ROOT / "config", root / "config")
        (root / "projects" / "templates").mkdir(parents=True)
        return cls(root)

    @property
    def settings(self) -> Settings:
        return Settings(self.root / "projects", self.root / "config", self.root / "home")

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

    def add_profile(self, name: str, script: Path, **keys: object) -> None:
        """Add to config/agents.yaml a profile running the stand-in `script` the way Claude Code
        is run (`-p --output-format json -- PROMPT`), with extra profile `keys`."""
        agents = self.root / "config" / "agents.yaml"
        profile: dict[str, object] = {
            "description": f"The stand-in {script.name} (tests).",
            "argv": ["{python}", str(script), "-p", "--output-format", "json", "--", "{prompt}"],
            "output": "claude_json",
            **keys,
        }
        data = yaml.safe_load(agents.read_text(encoding="utf-8"))
        data["profiles"][name] = profile
        agents.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def use_in(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's ORCH_PROJECTS_DIR, ORCH_CONFIG_DIR and ORCH_HOME here, as the
        resources, sensors and commands read them at run time."""
        for name, value in self.settings.environment().items():
            monkeypatch.setenv(name, value)

    def load(self) -> Registry:
        return load_registry(self.settings, environ=self.env)
