"""Where the registry and the state live: read from the environment when asked, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECTS_DIR_VAR = "ORCH_PROJECTS_DIR"
RESOURCES_DIR_VAR = "ORCH_RESOURCES_DIR"
HOME_VAR = "ORCH_HOME"


@dataclass(frozen=True)
class Settings:
    """The three locations everything else is derived from.

    `projects_dir` holds one YAML file per project, `resources_dir` the agent profiles and pools,
    `home` the state: private clones, worktrees, sessions and caches.
    """

    projects_dir: Path
    resources_dir: Path
    home: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `ORCH_PROJECTS_DIR`, `ORCH_RESOURCES_DIR` and `ORCH_HOME`.

        Defaults are `./projects`, `./resources` and `./.orch`, relative to the current directory.
        """
        env = os.environ if environ is None else environ
        cwd = Path.cwd()
        return cls(
            projects_dir=_absolute(env.get(PROJECTS_DIR_VAR) or "projects", cwd),
            resources_dir=_absolute(env.get(RESOURCES_DIR_VAR) or "resources", cwd),
            home=_absolute(env.get(HOME_VAR) or ".orch", cwd),
        )

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def samples_dir(self) -> Path:
        return self.home / "samples"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return (candidate if candidate.is_absolute() else base / candidate).resolve()
