"""Where the registry and state live: variables, defaults resolved once per process, and the
former name of the config folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestration.settings import CONFIG_DIR_VAR, LEGACY_CONFIG_DIR_VAR, Settings

PROBE = """
import json, os, sys
from orchestration.settings import Settings
first = Settings.from_env({})
os.chdir(sys.argv[1])
later = Settings.from_env({})
print(json.dumps({"first": str(first.config_dir), "later": str(later.config_dir),
                  "projects": str(later.projects_dir), "home": str(later.home),
                  "origins": dict(later.origins), "notices": list(later.notices)}))
"""


def probe(cwd: Path, elsewhere: Path) -> dict:
    """Resolve the defaults in a new process started in `cwd`, then again after a chdir."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(elsewhere)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_relative_defaults_keep_the_start_directory_after_a_chdir(tmp_path: Path) -> None:
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    (start / "config").mkdir(parents=True)
    elsewhere.mkdir()
    found = probe(start, elsewhere)
    assert found["first"] == found["later"] == str(start / "config")
    assert found["projects"] == str(start / "projects")
    assert found["home"] == str(start / ".orch")
    assert found["origins"]["config_dir"] == f"default ./config of {start}"


def test_the_former_folder_name_is_read_with_a_notice(tmp_path: Path) -> None:
    (tmp_path / "resources").mkdir()
    found = probe(tmp_path, tmp_path)
    assert found["later"] == str(tmp_path / "resources")
    (notice,) = found["notices"]
    assert "git mv resources config" in notice


def test_the_former_variable_is_read_with_a_notice(tmp_path: Path) -> None:
    settings = Settings.from_env({LEGACY_CONFIG_DIR_VAR: str(tmp_path)})
    assert settings.config_dir == tmp_path
    assert settings.origins["config_dir"] == LEGACY_CONFIG_DIR_VAR
    (notice,) = settings.notices
    assert CONFIG_DIR_VAR in notice


def test_the_new_variable_wins_over_the_former_one(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {CONFIG_DIR_VAR: str(tmp_path / "new"), LEGACY_CONFIG_DIR_VAR: str(tmp_path / "old")}
    )
    assert settings.config_dir == tmp_path / "new"
    assert settings.notices == ()


def test_environment_gives_a_child_the_same_settings(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "p", tmp_path / "c", tmp_path / "h")
    assert Settings.from_env(settings.environment()) == settings
