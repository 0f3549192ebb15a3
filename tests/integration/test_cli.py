"""Tests for the `orch` command line, run through click's CliRunner against real registries."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from orchestration.cli import main
from orchestration.registry import load_registry
from tests.support.git import make_git_repo
from tests.support.registry import RegistryDir

Invoke = Callable[..., Result]


@pytest.fixture
def orch(registry_dir: RegistryDir) -> Invoke:
    """Run `orch ARGS...` with the ORCH_* variables pointing at `registry_dir`."""

    def invoke(*args: str) -> Result:
        settings = registry_dir.settings
        env = {
            "ORCH_PROJECTS_DIR": str(settings.projects_dir),
            "ORCH_CONFIG_DIR": str(settings.config_dir),
            "ORCH_HOME": str(settings.home),
            **registry_dir.env,
        }
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def two_projects(registry_dir: RegistryDir) -> RegistryDir:
    registry_dir.write("projects/templates/service.yaml", "priority: high\ntags:\n  kind: svc\n")
    registry_dir.project("alpha", "extends: service\nagent:\n  max_parallel: 2\n")
    registry_dir.project("beta", "priority: low\nagent:\n  profile: claude_code\n")
    return registry_dir


# --- orch validate ----------------------------------------------------------------------------


def test_validate_valid_registry(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("validate")
    assert result.exit_code == 0, result.output
    *locations, summary = result.stdout.strip().splitlines()
    assert summary == "2 project(s) valid, 0 error(s)"
    settings = two_projects.settings
    assert locations == [
        f"projects_dir: {settings.projects_dir} (ORCH_PROJECTS_DIR)",
        f"config_dir: {settings.config_dir} (ORCH_CONFIG_DIR)",
        f"home: {settings.home} (ORCH_HOME)",
    ]
    assert result.stderr == ""


def test_validate_prints_every_error_and_exits_1(orch: Invoke, two_projects: RegistryDir) -> None:
    two_projects.project("gamma", "priority: urgent\n")
    two_projects.project("delta", "agent:\n  profile: nobody\n")
    two_projects.write("config/pools.yaml", "agents:\n  slots: -1\n")
    result = orch("validate")
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert errors[-1] == "2 project(s) valid, 3 error(s)"
    text = "\n".join(errors[:-1])
    assert f"{two_projects.root / 'projects' / 'gamma.yaml'}:3: priority: 'urgent'" in text
    assert f"{two_projects.root / 'projects' / 'delta.yaml'}:4: agent.profile:" in text
    assert f"{two_projects.root / 'config' / 'pools.yaml'}:2: agents.slots:" in text
    assert len(errors) == 4


def test_validate_reports_hostile_files_and_stray_overrides(
    orch: Invoke, two_projects: RegistryDir
) -> None:
    projects = two_projects.root / "projects"
    (projects / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )
    (projects / os.fsdecode(b"caf\xe9.yaml")).write_bytes(b"description: caf\xe9\n")
    (projects / "passwd.yaml").symlink_to("/etc/passwd")
    two_projects.env["ORCH__ALHPA__PRIORITY"] = "high"
    result = orch("validate")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        "warning: ORCH__ALHPA__PRIORITY: no project named 'alhpa', so this override changes "
        "nothing (projects: alpha, beta, bomb, passwd)"
    )
    assert f"{projects / 'bomb.yaml'}:3: aliases repeat more than 1000 values" in lines[1]
    assert "caf" in lines[2] and ":1: not valid UTF-8 (byte 0xe9)" in lines[2]
    assert f"{projects / 'passwd.yaml'}: the file leads (through a symbolic link) to " in lines[3]
    assert lines[-1] == "2 project(s) valid, 3 error(s)"


def test_validate_json(orch: Invoke, two_projects: RegistryDir) -> None:
    gamma = two_projects.project("gamma", "schedule: never\n")
    result = orch("validate", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert set(data) == {"valid", "projects", "errors", "warnings", "settings", "origins"}
    assert data["valid"] is False
    assert data["projects"] == ["alpha", "beta"]
    [error] = data["errors"]
    assert set(error) == {"file", "key", "message", "line", "project_file"}
    assert error["file"] == error["project_file"] == str(gamma)
    assert error["key"] == "schedule"
    assert error["line"] == 3
    assert "not a cron expression" in error["message"]


def test_validate_json_when_valid(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("validate", "--json")
    assert result.exit_code == 0
    settings = two_projects.settings
    assert json.loads(result.stdout) == {
        "valid": True,
        "projects": ["alpha", "beta"],
        "errors": [],
        "warnings": [],
        "settings": {
            "projects_dir": str(settings.projects_dir),
            "config_dir": str(settings.config_dir),
            "home": str(settings.home),
        },
        "origins": {
            "projects_dir": "ORCH_PROJECTS_DIR",
            "config_dir": "ORCH_CONFIG_DIR",
            "home": "ORCH_HOME",
        },
    }


def test_validate_warns_about_the_former_config_variable(two_projects: RegistryDir) -> None:
    settings = two_projects.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": "",
        "ORCH_RESOURCES_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
    }
    result = CliRunner().invoke(main, ["validate"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: ORCH_RESOURCES_DIR is deprecated" in result.stderr
    assert f"config_dir: {settings.config_dir} (ORCH_RESOURCES_DIR)" in result.stdout


# --- orch projects list -----------------------------------------------------------------------


def test_projects_list_table(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("projects", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["NAME", "STATE", "PRIORITY", "AGENT", "MAX", "BRANCH", "REPO"]
    assert len(rows) == 2
    alpha, beta = rows
    assert alpha.split()[:7] == ["alpha", "active", "75", "(high)", "demo", "2", "main"]
    assert alpha.endswith(str((two_projects.root / "repos" / "alpha").resolve()))
    assert beta.split()[:7] == ["beta", "active", "25", "(low)", "claude_code", "1", "main"]
    assert result.stderr == ""


def test_projects_list_json(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("projects", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [item["name"] for item in data] == ["alpha", "beta"]
    alpha = data[0]
    assert alpha["priority"] == 75
    assert alpha["agent"]["profile"] == "demo"
    assert alpha["agent"]["max_parallel"] == 2
    assert alpha["repo"] == str((two_projects.root / "repos" / "alpha").resolve())
    assert alpha["file"] == str(two_projects.root / "projects" / "alpha.yaml")
    assert alpha["tags"] == {"kind": "svc"}


def test_projects_list_warns_about_hidden_projects(orch: Invoke, two_projects: RegistryDir) -> None:
    two_projects.project("gamma", "priority: urgent\n")
    result = orch("projects", "list", "--json")
    assert result.exit_code == 0
    assert [item["name"] for item in json.loads(result.stdout)] == ["alpha", "beta"]
    assert "1 registry error(s) hide some projects" in result.stderr


# --- orch config show -------------------------------------------------------------------------


def test_config_show(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("config", "show", "alpha")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.strip().splitlines())
    assert lines["priority"] == "75"
    assert lines["agent.max_parallel"] == "2"
    assert lines["agent.profile"] == '"demo"'
    assert lines["tags.kind"] == '"svc"'
    assert lines["schedule"] == "null"
    assert "#" not in result.stdout


def test_config_show_origin(orch: Invoke, two_projects: RegistryDir) -> None:
    two_projects.env["ORCH__ALPHA__BRANCH"] = "develop"
    result = orch("config", "show", "alpha", "--origin")
    assert result.exit_code == 0, result.output
    projects = two_projects.root / "projects"
    origins = {}
    for line in result.stdout.strip().splitlines():
        key = line.split()[0]
        origins[key] = line.rsplit("  # ", 1)[1]
        assert re.search(r"  # (\S+:\d+|built-in default|ORCH__\w+)$", line), line
    assert origins["name"] == f"{projects / 'alpha.yaml'}:1"
    assert origins["agent.max_parallel"] == f"{projects / 'alpha.yaml'}:5"
    assert origins["priority"] == f"{projects / 'templates' / 'service.yaml'}:1"
    assert origins["tags.kind"] == f"{projects / 'templates' / 'service.yaml'}:3"
    assert origins["branch"] == "ORCH__ALPHA__BRANCH"
    assert origins["agent.profile"] == "built-in default"
    assert origins["schedule"] == "built-in default"


def test_config_show_json(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("config", "show", "alpha", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["project"] == "alpha"
    assert data["config"]["priority"] == 75
    assert data["config"]["agent"]["max_parallel"] == 2
    assert data["config"]["extends"] == "service"


def test_config_show_json_with_origins(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("config", "show", "beta", "--json", "--origin")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"project", "config", "origins"}
    assert data["config"]["agent"]["profile"] == "claude_code"
    beta = two_projects.root / "projects" / "beta.yaml"
    assert data["origins"]["agent.profile"] == f"{beta}:5"
    assert data["origins"]["priority"] == f"{beta}:3"
    assert data["origins"]["branch"] == "built-in default"


def test_config_show_unknown_project_lists_known(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch("config", "show", "gamma")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no project named 'gamma'" in result.stderr
    assert "known projects: alpha, beta" in result.stderr


def test_config_show_broken_project_shows_its_error(
    orch: Invoke, two_projects: RegistryDir
) -> None:
    two_projects.project("gamma", "priority: urgent\n")
    result = orch("config", "show", "gamma")
    assert result.exit_code == 1
    assert "project 'gamma' has errors" in result.stderr
    assert "priority" in result.stderr


# --- orch projects create ---------------------------------------------------------------------


def test_create_writes_a_loadable_file(orch: Invoke, registry_dir: RegistryDir) -> None:
    repo = make_git_repo(registry_dir.root / "repos" / "fresh", {"README.md": "fresh"})
    result = orch("projects", "create", "fresh", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    path = registry_dir.root / "projects" / "fresh.yaml"
    assert result.stdout.strip() == f"created {path}"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {
        "name": "fresh",
        "repo": "../repos/fresh",
    }
    registry = registry_dir.load()
    assert registry.errors == ()
    assert Path(registry.project("fresh").spec.repo) == repo.resolve()


def test_create_with_priority_and_template(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch(
        "projects",
        "create",
        "gamma",
        "--repo",
        "git@github.com:acme/gamma.git",
        "--priority",
        "critical",
        "--extends",
        "service",
    )
    assert result.exit_code == 0, result.output
    path = two_projects.root / "projects" / "gamma.yaml"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {
        "name": "gamma",
        "repo": "git@github.com:acme/gamma.git",
        "priority": "critical",
        "extends": "service",
    }
    spec = two_projects.load().project("gamma").spec
    assert (spec.priority, spec.extends, spec.tags) == (100, "service", {"kind": "svc"})


def test_create_with_integer_priority(orch: Invoke, registry_dir: RegistryDir) -> None:
    result = orch(
        "projects", "create", "num", "--repo", "https://x.example/num.git", "--priority", "60"
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((registry_dir.root / "projects" / "num.yaml").read_text())
    assert document["priority"] == 60
    assert registry_dir.load().project("num").spec.priority == 60


def test_create_refuses_to_overwrite(orch: Invoke, two_projects: RegistryDir) -> None:
    path = two_projects.root / "projects" / "alpha.yaml"
    before = path.read_bytes()
    result = orch("projects", "create", "alpha", "--repo", "https://x.example/a.git")
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert str(path) in result.stderr
    assert path.read_bytes() == before


def test_create_refuses_a_bad_slug(orch: Invoke, registry_dir: RegistryDir) -> None:
    result = orch("projects", "create", "My-Project", "--repo", "https://x.example/a.git")
    assert result.exit_code == 1
    assert "'My-Project' is not a valid name" in result.stderr
    assert "'my_project'" in result.stderr
    assert list((registry_dir.root / "projects").glob("*.yaml")) == []


def test_create_refuses_a_reserved_name(orch: Invoke, registry_dir: RegistryDir) -> None:
    result = orch("projects", "create", "default", "--repo", "https://x.example/a.git")
    assert result.exit_code == 1
    assert "reserved" in result.stderr
    assert list((registry_dir.root / "projects").glob("*.yaml")) == []


def test_create_refuses_an_unknown_template(orch: Invoke, two_projects: RegistryDir) -> None:
    result = orch(
        "projects", "create", "gamma", "--repo", "https://x.example/g.git", "--extends", "nope"
    )
    assert result.exit_code == 1
    assert "unknown template 'nope'" in result.stderr
    assert "templates in" in result.stderr and "service" in result.stderr
    assert "gamma.yaml was not created" in result.stderr
    assert not (two_projects.root / "projects" / "gamma.yaml").exists()
    assert load_registry(two_projects.settings, environ={}).names == ("alpha", "beta")


def test_create_refuses_a_bad_priority(orch: Invoke, registry_dir: RegistryDir) -> None:
    result = orch(
        "projects", "create", "p", "--repo", "https://x.example/p.git", "--priority", "urgent"
    )
    assert result.exit_code == 1
    assert "'urgent' is not a priority" in result.stderr
    assert not (registry_dir.root / "projects" / "p.yaml").exists()


def test_create_refuses_a_missing_repo(orch: Invoke, registry_dir: RegistryDir) -> None:
    missing = registry_dir.root / "repos" / "missing"
    result = orch("projects", "create", "p", "--repo", str(missing))
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not (registry_dir.root / "projects" / "p.yaml").exists()


def test_create_refuses_an_unknown_template_another_project_also_names(
    orch: Invoke, two_projects: RegistryDir
) -> None:
    two_projects.project("aardvark", "extends: nope\n")
    result = orch(
        "projects", "create", "gamma", "--repo", "https://x.example/g.git", "--extends", "nope"
    )
    assert result.exit_code == 1
    assert not (two_projects.root / "projects" / "gamma.yaml").exists()


def test_create_stores_a_relative_repo_relative_to_the_projects_dir(
    orch: Invoke, registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_git_repo(registry_dir.root / "work" / "rel", {"README.md": "rel"})
    monkeypatch.chdir(registry_dir.root / "work")
    result = orch("projects", "create", "rel", "--repo", "rel")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((registry_dir.root / "projects" / "rel.yaml").read_text())
    assert document["repo"] == "../work/rel"
    assert Path(registry_dir.load().project("rel").spec.repo) == repo.resolve()


def test_create_keeps_orch_home_and_urls_verbatim(orch: Invoke, registry_dir: RegistryDir) -> None:
    make_git_repo(registry_dir.settings.home / "samples" / "homed", {"README.md": "h"})
    result = orch("projects", "create", "homed", "--repo", "${ORCH_HOME}/samples/homed")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((registry_dir.root / "projects" / "homed.yaml").read_text())
    assert document["repo"] == "${ORCH_HOME}/samples/homed"
    assert registry_dir.load().errors == ()


def test_create_refuses_a_name_another_file_declares(
    orch: Invoke, registry_dir: RegistryDir
) -> None:
    registry_dir.write("projects/zzz.yaml", "name: gamma\nrepo: https://x.example/z.git\n")
    result = orch("projects", "create", "gamma", "--repo", "https://x.example/g.git")
    assert result.exit_code == 1
    assert not (registry_dir.root / "projects" / "gamma.yaml").exists()
    assert registry_dir.load().errors == ()


def test_create_refuses_a_template_that_sets_name(orch: Invoke, registry_dir: RegistryDir) -> None:
    registry_dir.write("projects/templates/named.yaml", "name: foo\n")
    result = orch(
        "projects", "create", "p", "--repo", "https://x.example/p.git", "--extends", "named"
    )
    assert result.exit_code == 1
    assert "a template cannot set 'name'" in result.stderr
    assert not (registry_dir.root / "projects" / "p.yaml").exists()
