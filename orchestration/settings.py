"""Where the registry and the state live: read from the environment when asked, never at import.

Relative defaults (`./projects`, `./config`, `./.orch`) are resolved against the directory the
process started in, once: a long-running daemon that later changes directory keeps reading the
same files, and `orch validate` shows which directories are in use and why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECTS_DIR_VAR = "ORCH_PROJECTS_DIR"
CONFIG_DIR_VAR = "ORCH_CONFIG_DIR"
#: The name `ORCH_CONFIG_DIR` had before the folder was renamed from `resources/` to `config/`;
#: still read, with a notice, for one release.
LEGACY_CONFIG_DIR_VAR = "ORCH_RESOURCES_DIR"
HOME_VAR = "ORCH_HOME"
#: `off` runs agents and verify commands without the bubblewrap sandbox (where Linux namespaces
#: are unavailable); anything else, or nothing, leaves it on.
SANDBOX_VAR = "ORCH_SANDBOX"
SANDBOX_OFF_VALUES = frozenset({"off", "0", "false", "no"})
SANDBOX_ON_VALUES = frozenset({"", "on", "1", "true", "yes"})
#: Seconds between the heartbeats a task run writes while it works on its task.
HEARTBEAT_VAR = "ORCH_HEARTBEAT_S"
HEARTBEAT_S = 30.0
#: Seconds without a heartbeat after which the dispatch tick takes a running task back from its
#: run (its worker, code server or host died) and queues it to continue; never less than
#: STALE_BEATS heartbeats, so a slow write is not taken for a death.
HEARTBEAT_STALE_VAR = "ORCH_HEARTBEAT_STALE_S"
HEARTBEAT_STALE_S = 120.0
STALE_BEATS = 3

#: Seconds added to the clock budgets and usage periods are read with (the `monitoring`
#: sensor's): for drills and tests that must cross a midnight without waiting for one.
CLOCK_OFFSET_VAR = "ORCH_CLOCK_OFFSET_S"
#: Where the Dagster webserver answers; `orch up` sets it for what it starts and writes it to
#: ORCH_HOME/WEBSERVER_URL_FILE for the commands run beside it.
WEBSERVER_URL_VAR = "ORCH_WEBSERVER_URL"
WEBSERVER_URL_FILE = "webserver_url"

DEFAULT_PROJECTS_DIR = "projects"
DEFAULT_CONFIG_DIR = "config"
LEGACY_CONFIG_DIR = "resources"
DEFAULT_HOME = ".orch"

#: The directory relative defaults are resolved against, fixed by the first resolution.
_start_dir: list[Path] = []


def start_directory() -> Path:
    """The working directory when this process first resolved its settings."""
    if not _start_dir:
        _start_dir.append(Path.cwd())
    return _start_dir[0]


@dataclass(frozen=True)
class Settings:
    """The three locations everything else is derived from.

    `projects_dir` holds one YAML file per project, `config_dir` the agent profiles and pools,
    `home` the state: private clones, worktrees, sessions and caches. `origins` says where each
    came from (a variable or a default), `notices` what the user should change.
    """

    projects_dir: Path
    config_dir: Path
    home: Path
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    notices: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `ORCH_PROJECTS_DIR`, `ORCH_CONFIG_DIR` and `ORCH_HOME`.

        Defaults are `./projects`, `./config` and `./.orch`, relative to the directory the
        process started in. A sandbox turned off by `ORCH_SANDBOX` is one of the notices.
        """
        env = os.environ if environ is None else environ
        base = start_directory()
        origins: dict[str, str] = {}
        notices: list[str] = []

        def resolve(key: str, variable: str, default: str) -> Path:
            value = env.get(variable)
            if value:
                origins[key] = variable
                return _absolute(value, base)
            origins[key] = f"default ./{default} of {base}"
            return _absolute(default, base)

        projects_dir = resolve("projects_dir", PROJECTS_DIR_VAR, DEFAULT_PROJECTS_DIR)
        home = resolve("home", HOME_VAR, DEFAULT_HOME)
        if not env.get(CONFIG_DIR_VAR) and env.get(LEGACY_CONFIG_DIR_VAR):
            config_dir = resolve("config_dir", LEGACY_CONFIG_DIR_VAR, DEFAULT_CONFIG_DIR)
            notices.append(
                f"{LEGACY_CONFIG_DIR_VAR} is deprecated and will be ignored in the next release; "
                f"set {CONFIG_DIR_VAR} instead"
            )
        else:
            config_dir = resolve("config_dir", CONFIG_DIR_VAR, DEFAULT_CONFIG_DIR)
            legacy = _absolute(LEGACY_CONFIG_DIR, base)
            if not env.get(CONFIG_DIR_VAR) and not config_dir.is_dir() and legacy.is_dir():
                config_dir = legacy
                origins["config_dir"] = f"default ./{LEGACY_CONFIG_DIR} of {base} (old name)"
                notices.append(
                    f"the folder {legacy} is now called {DEFAULT_CONFIG_DIR}/: rename it "
                    f"(`git mv {LEGACY_CONFIG_DIR} {DEFAULT_CONFIG_DIR}`); the old name is read "
                    "for one more release"
                )
        notices.extend(_sandbox_notices(env))
        return cls(projects_dir, config_dir, home, origins, tuple(notices))

    @property
    def samples_dir(self) -> Path:
        return self.home / "samples"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def environment(self) -> dict[str, str]:
        """The variables that give a child process these same settings, as absolute paths."""
        return {
            PROJECTS_DIR_VAR: str(self.projects_dir),
            CONFIG_DIR_VAR: str(self.config_dir),
            HOME_VAR: str(self.home),
        }


def sandbox_enabled(environ: Mapping[str, str]) -> bool:
    """Whether agents and verify commands run in the sandbox: on unless `ORCH_SANDBOX=off`.

    A value that is neither on nor off leaves it on (and `orch validate` says so): a typo must
    never turn the isolation off.
    """
    return environ.get(SANDBOX_VAR, "").strip().lower() not in SANDBOX_OFF_VALUES


def heartbeat_interval(environ: Mapping[str, str]) -> float:
    """Seconds between a task run's heartbeats: `ORCH_HEARTBEAT_S`, else HEARTBEAT_S (also
    for a value that is not a positive number)."""
    return _positive_seconds(environ.get(HEARTBEAT_VAR), HEARTBEAT_S)


def heartbeat_stale_after(environ: Mapping[str, str]) -> float:
    """Seconds without a heartbeat after which a running task's run counts as dead:
    `ORCH_HEARTBEAT_STALE_S`, else HEARTBEAT_STALE_S; at least STALE_BEATS heartbeat
    intervals."""
    stale = _positive_seconds(environ.get(HEARTBEAT_STALE_VAR), HEARTBEAT_STALE_S)
    return max(stale, STALE_BEATS * heartbeat_interval(environ))


def clock_offset(environ: Mapping[str, str]) -> float:
    """`ORCH_CLOCK_OFFSET_S` as seconds (0 when unset or not a finite number)."""
    try:
        offset = float(environ.get(CLOCK_OFFSET_VAR) or 0)
    except ValueError:
        return 0.0
    return offset if math.isfinite(offset) else 0.0


def webserver_url(home: Path, environ: Mapping[str, str]) -> str | None:
    """Where the webserver of the orchestrator keeping its state in `home` answers:
    ORCH_WEBSERVER_URL, else what `orch up` wrote there; None when neither says."""
    if environ.get(WEBSERVER_URL_VAR):
        return environ[WEBSERVER_URL_VAR]
    try:
        return (home / WEBSERVER_URL_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _positive_seconds(value: str | None, default: float) -> float:
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds > 0 else default


def _sandbox_notices(env: Mapping[str, str]) -> list[str]:
    value = env.get(SANDBOX_VAR, "").strip().lower()
    if value in SANDBOX_OFF_VALUES:
        return [
            f"{SANDBOX_VAR}={env[SANDBOX_VAR]}: agents and verify commands run without the "
            "sandbox, so an agent can read every project's secrets (from the environment of "
            "the process that started it), the task database and the other projects' clones, "
            f"and write wherever the orchestrator can; unset {SANDBOX_VAR} (and install "
            "bubblewrap) to isolate them"
        ]
    if value not in SANDBOX_ON_VALUES:
        return [
            f"{SANDBOX_VAR}={env[SANDBOX_VAR]!r} is neither 'on' nor 'off': the sandbox stays on"
        ]
    return []


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return (candidate if candidate.is_absolute() else base / candidate).resolve()
