"""Tests for orchestration.registry: the shipped files load, layers merge in order, origins hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.registry import LoadedProject, Origin, Registry, load_registry
from orchestration.registry.layers import BUILTIN
from orchestration.samples import SAMPLE_PROJECTS, ensure_sample_repos
from orchestration.settings import Settings
from tests.support.git import make_git_repo
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir


def line_of(path: Path, prefix: str) -> int:
    """The 1-based line of the first line of `path` that starts (after indentation) with prefix."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip().startswith(prefix):
            return number
    raise AssertionError(f"{prefix!r} not found in {path}")


def same_file(shown: str, path: Path) -> bool:
    """Whether a path as the registry displays it (maybe relative to cwd) is `path`."""
    return Path(shown).resolve() == path.resolve()


def assert_origin(project: LoadedProject, key: tuple[str, ...], path: Path, prefix: str) -> None:
    origin = project.origins[key]
    assert same_file(origin.source, path), (key, origin)
    assert origin.line == line_of(path, prefix), (key, origin)


def loaded(registry: Registry, name: str) -> LoadedProject:
    assert registry.errors == (), [str(error) for error in registry.errors]
    return registry.project(name)


# --- the shipped registry ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """The repository's own projects/ and config/, with ORCH_HOME in a temporary directory."""
    home = tmp_path_factory.mktemp("orch_home")
    settings = Settings(REPO_ROOT / "projects", REPO_ROOT / "config", home)
    ensure_sample_repos(settings.samples_dir)
    return load_registry(settings, environ={"ORCH_HOME": str(home)})


def test_every_shipped_file_loads_without_errors(shipped: Registry) -> None:
    assert shipped.errors == (), [str(error) for error in shipped.errors]
    assert sorted(shipped.names) == ["acme_api", "acme_core", "acme_web"]
    assert set(shipped.names) == set(SAMPLE_PROJECTS)


def test_shipped_config_has_every_profile_and_the_global_pool(shipped: Registry) -> None:
    assert shipped.agents is not None
    assert shipped.pools is not None
    assert set(shipped.agents.profiles) == {
        "claude_code",
        "codex",
        "aider",
        "gemini",
        "command",
        "demo",
    }
    assert "agents" in shipped.pools.pools
    assert shipped.pools.pools["agents"].slots >= 1
    for profile in shipped.agents.profiles.values():
        assert profile.pool in shipped.pools.pools


def test_shipped_projects_resolve_through_defaults_and_templates(shipped: Registry) -> None:
    core = shipped.project("acme_core").spec
    assert core.extends == "python_library"
    assert core.priority == 75 and core.priority_class == "high"  # python_library
    assert core.agent.max_parallel == 2  # python_service, two templates up
    assert core.agent.timeout == 1800  # _defaults.yaml: 30m
    assert core.agent.profile == "demo"
    assert core.verify[:3] == ("python3", "-m", "unittest")
    assert core.owners == ("team:core",)  # replaces _defaults' team:platform
    assert core.tags == {"language": "python", "layer": "library", "domain": "shared"}

    web = shipped.project("acme_web").spec
    assert web.extends is None
    assert web.priority == 25
    assert web.verify == ("node", "--test")
    assert web.agent.max_parallel == 1
    assert web.owners == ("team:platform",)


def test_shipped_repos_expand_orch_home(shipped: Registry) -> None:
    for name in SAMPLE_PROJECTS:
        repo = Path(shipped.project(name).spec.repo)
        assert repo == (shipped.settings.samples_dir / name).resolve()
        assert (repo / ".git").exists()


def test_shipped_origins_point_at_the_template_line(shipped: Registry) -> None:
    templates = REPO_ROOT / "projects" / "templates"
    core = shipped.project("acme_core")
    assert_origin(core, ("priority",), templates / "python_library.yaml", "priority:")
    assert_origin(core, ("verify",), templates / "python_service.yaml", "verify:")
    assert_origin(core, ("agent", "timeout"), REPO_ROOT / "projects" / "_defaults.yaml", "timeout:")
    assert_origin(core, ("owners",), REPO_ROOT / "projects" / "acme_core.yaml", "owners:")


# --- inheritance ------------------------------------------------------------------------------


@pytest.fixture
def layered(registry_dir: RegistryDir) -> RegistryDir:
    """A project that sets keys at every layer: defaults, a 3-template chain, its file, env."""
    registry_dir.write(
        "projects/_defaults.yaml",
        """
        priority: low
        owners: [team:defaults]
        verify: [defaults-verify]
        tags:
          from_defaults: d
          level: defaults
        agent:
          timeout: 10m
          max_parallel: 2
        """,
    )
    registry_dir.write(
        "projects/templates/grand.yaml",
        """
        priority: 30
        verify: [grand-verify, --all]
        tags:
          from_grand: g
          level: grand
        agent:
          max_parallel: 3
          model: grand-model
        """,
    )
    registry_dir.write(
        "projects/templates/parent.yaml",
        """
        extends: grand
        tags:
          from_parent: p
          level: parent
        agent:
          model: parent-model
        """,
    )
    registry_dir.write(
        "projects/templates/child.yaml",
        """
        extends: parent
        priority: 40
        description: from child
        tags:
          level: child
        """,
    )
    registry_dir.project(
        "layered",
        """
        extends: child
        owners: [team:project]
        tags:
          level: project
          from_project: x
        agent:
          max_parallel: 4
        """,
    )
    registry_dir.env.update(
        {
            "ORCH__LAYERED__DESCRIPTION": "from env",
            "ORCH__LAYERED__TAGS__FROM_ENV": "e",
        }
    )
    return registry_dir


def test_layers_apply_in_order_maps_merge_lists_replace(layered: RegistryDir) -> None:
    spec = loaded(layered.load(), "layered").spec
    assert spec.extends == "child"
    assert spec.priority == 40  # child beats grand (30) and _defaults (low)
    assert spec.description == "from env"  # env beats child
    assert spec.owners == ("team:project",)  # list replaced, not appended
    assert spec.verify == ("grand-verify", "--all")  # grand replaced the defaults' list
    assert spec.tags == {
        "from_defaults": "d",
        "from_grand": "g",
        "from_parent": "p",
        "from_project": "x",
        "from_env": "e",
        "level": "project",
    }
    assert spec.agent.timeout == 600  # _defaults, untouched by any template
    assert spec.agent.max_parallel == 4  # project beats grand and _defaults
    assert spec.agent.model == "parent-model"  # nearer template beats the farther one
    assert spec.agent.profile == "demo"  # built-in default
    assert spec.branch == "main"


def test_farthest_template_comes_first(registry_dir: RegistryDir) -> None:
    registry_dir.write("projects/templates/t1.yaml", "extends: t2\nbranch: one\n")
    registry_dir.write("projects/templates/t2.yaml", "extends: t3\nbranch: two\ndescription: two\n")
    registry_dir.write(
        "projects/templates/t3.yaml", "branch: three\ndescription: three\npriority: 10\n"
    )
    registry_dir.project("chain", "extends: t1\n")
    spec = loaded(registry_dir.load(), "chain").spec
    assert (spec.branch, spec.description, spec.priority) == ("one", "two", 10)


def test_defaults_file_can_choose_the_template(registry_dir: RegistryDir) -> None:
    registry_dir.write("projects/_defaults.yaml", "extends: base\n")
    registry_dir.write("projects/templates/base.yaml", "priority: high\n")
    registry_dir.write("projects/templates/other.yaml", "priority: critical\n")
    registry_dir.project("plain")
    registry_dir.project("special", "extends: other\n")
    registry = registry_dir.load()
    assert loaded(registry, "plain").spec.priority == 75
    assert loaded(registry, "special").spec.priority == 100


# --- provenance -------------------------------------------------------------------------------


def test_origins_name_the_file_and_line_of_every_layer(layered: RegistryDir) -> None:
    project = loaded(layered.load(), "layered")
    projects = layered.root / "projects"
    templates = projects / "templates"
    assert_origin(project, ("agent", "timeout"), projects / "_defaults.yaml", "timeout:")
    assert_origin(project, ("tags", "from_defaults"), projects / "_defaults.yaml", "from_defaults")
    assert_origin(project, ("verify",), templates / "grand.yaml", "verify:")
    assert_origin(project, ("tags", "from_grand"), templates / "grand.yaml", "from_grand:")
    assert_origin(project, ("agent", "model"), templates / "parent.yaml", "model:")
    assert_origin(project, ("priority",), templates / "child.yaml", "priority:")
    assert_origin(project, ("owners",), projects / "layered.yaml", "owners:")
    assert_origin(project, ("agent", "max_parallel"), projects / "layered.yaml", "max_parallel:")
    assert_origin(project, ("tags", "level"), projects / "layered.yaml", "level:")
    assert_origin(project, ("name",), projects / "layered.yaml", "name:")
    assert project.origins[("description",)] == Origin("ORCH__LAYERED__DESCRIPTION", None)
    assert project.origins[("tags", "from_env")] == Origin("ORCH__LAYERED__TAGS__FROM_ENV", None)


def test_keys_never_set_have_no_origin(layered: RegistryDir) -> None:
    project = loaded(layered.load(), "layered")
    for key in [("schedule",), ("secrets",), ("depends_on",), ("agent", "profile"), ("branch",)]:
        assert key not in project.origins, key
    assert all(origin.source != BUILTIN for origin in project.origins.values())


def test_origin_of_repo_is_the_file_that_set_it(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("solo")
    project = loaded(registry_dir.load(), "solo")
    assert_origin(project, ("repo",), path, "repo:")
    assert project.path == path


def test_keys_inside_a_mapping_env_value_come_from_the_variable(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("x")
    registry_dir.env["ORCH__X__TAGS"] = "{team: web}"
    project = loaded(registry_dir.load(), "x")
    assert project.spec.tags == {"team": "web"}
    assert project.origins[("tags",)] == Origin("ORCH__X__TAGS", None)
    assert project.origins[("tags", "team")] == Origin("ORCH__X__TAGS", None)


# --- environment overrides --------------------------------------------------------------------


def test_env_values_are_parsed_as_yaml(registry_dir: RegistryDir) -> None:
    registry_dir.project("x")
    registry_dir.env.update(
        {
            "ORCH__X__AGENT__MAX_PARALLEL": "3",
            "ORCH__X__VERIFY": "[make, test]",
            "ORCH__X__AGENT__RESUME": "true",
            "ORCH__X__PRIORITY": "critical",
            "ORCH__X__AGENT__TIMEOUT": "2h",
        }
    )
    spec = loaded(registry_dir.load(), "x").spec
    assert spec.agent.max_parallel == 3
    assert spec.verify == ("make", "test")
    assert spec.agent.resume is True
    assert spec.priority == 100
    assert spec.agent.timeout == 7200
    assert spec.agent.profile == "demo"  # a nested override keeps the map's other keys


def test_env_override_beats_project_file(registry_dir: RegistryDir) -> None:
    registry_dir.project("x", "priority: low\nagent:\n  max_parallel: 2\n  model: file\n")
    registry_dir.env["ORCH__X__AGENT__MAX_PARALLEL"] = "7"
    spec = loaded(registry_dir.load(), "x").spec
    assert spec.priority == 25
    assert spec.agent.max_parallel == 7
    assert spec.agent.model == "file"


def test_env_override_for_another_project_does_not_leak(registry_dir: RegistryDir) -> None:
    registry_dir.project("x")
    registry_dir.project("x_two")
    registry_dir.project("y")
    registry_dir.env.update(
        {
            "ORCH__Y__PRIORITY": "high",
            "ORCH__Y__AGENT__MAX_PARALLEL": "9",
            "ORCH__X_TWO__BRANCH": "develop",
            "ORCH__NOBODY__PRIORITY": "low",
        }
    )
    registry = registry_dir.load()
    x = loaded(registry, "x")
    assert (x.spec.priority, x.spec.agent.max_parallel, x.spec.branch) == (50, 1, "main")
    assert not any(origin.source.startswith("ORCH__") for origin in x.origins.values())
    assert registry.project("y").spec.priority == 75
    assert registry.project("y").spec.agent.max_parallel == 9
    assert registry.project("x_two").spec.branch == "develop"


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", 100),
        ("high", 75),
        ("normal", 50),
        ("low", 25),
        ("High", 75),
        ("0", 0),
        ("100", 100),
        ("63", 63),
        ("'80'", 80),
    ],
)
def test_priority_classes_and_integers(
    registry_dir: RegistryDir, value: str, expected: int
) -> None:
    registry_dir.project("p", f"priority: {value}\n", repo=str(registry_dir.root))
    assert loaded(registry_dir.load(), "p").spec.priority == expected


def test_priority_defaults_to_normal(registry_dir: RegistryDir) -> None:
    registry_dir.project("p", repo=str(registry_dir.root))
    spec = loaded(registry_dir.load(), "p").spec
    assert (spec.priority, spec.priority_class) == (50, "normal")


@pytest.mark.parametrize(
    ("value", "expected"), [("30m", 1800), ("90s", 90), ("2h", 7200), ("600", 600), ("45", 45)]
)
def test_durations(registry_dir: RegistryDir, value: str, expected: int) -> None:
    registry_dir.project(
        "d", f"verify_timeout: {value}\nagent:\n  timeout: {value}\n", repo=str(registry_dir.root)
    )
    spec = loaded(registry_dir.load(), "d").spec
    assert spec.agent.timeout == expected
    assert spec.verify_timeout == expected


# --- repositories -----------------------------------------------------------------------------


def test_relative_repo_resolves_from_the_project_file(registry_dir: RegistryDir) -> None:
    repo = make_git_repo(registry_dir.root / "repos" / "rel", {"README.md": "rel"})
    registry_dir.project("rel", repo="../repos/rel")
    spec = loaded(registry_dir.load(), "rel").spec
    assert Path(spec.repo) == repo.resolve()
    assert not spec.is_remote


def test_relative_repo_in_a_template_resolves_from_the_template(
    registry_dir: RegistryDir,
) -> None:
    repo = make_git_repo(registry_dir.root / "repos" / "shared", {"README.md": "shared"})
    registry_dir.write("projects/templates/shared.yaml", "repo: ../../repos/shared\n")
    registry_dir.write("projects/uses_template.yaml", "name: uses_template\nextends: shared\n")
    spec = loaded(registry_dir.load(), "uses_template").spec
    assert Path(spec.repo) == repo.resolve()


def test_orch_home_prefix_expands_to_the_state_dir(registry_dir: RegistryDir) -> None:
    repo = make_git_repo(registry_dir.settings.home / "samples" / "homed", {"README.md": "h"})
    registry_dir.project("homed", repo="${ORCH_HOME}/samples/homed")
    spec = loaded(registry_dir.load(), "homed").spec
    assert Path(spec.repo) == repo.resolve()


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/core.git",
        "ssh://git@git.example.com:2222/acme/core.git",
        "git@github.com:acme/core.git",
    ],
)
def test_git_urls_are_accepted_without_touching_disk(registry_dir: RegistryDir, url: str) -> None:
    registry_dir.project("remote", repo=url)
    spec = loaded(registry_dir.load(), "remote").spec
    assert spec.repo == url
    assert spec.is_remote
    assert not (registry_dir.root / "projects" / url).exists()


def test_the_shipped_registry_on_a_fresh_checkout_says_how_to_make_the_samples(
    tmp_path: Path,
) -> None:
    settings = Settings(REPO_ROOT / "projects", REPO_ROOT / "config", tmp_path / "fresh_home")
    registry = load_registry(settings, environ={})
    assert registry.names == ()
    assert {error.key for error in registry.errors} == {"repo"}
    for error in registry.errors:
        assert "orch samples init" in error.message, error.message
