"""Tests for the registry's errors: each names the file, the key and what would be valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.registry import Registry, RegistryError
from tests.support.registry import RegistryDir


def same_file(shown: str | None, path: Path) -> bool:
    """Whether a path as the registry displays it (maybe relative to cwd) is `path`."""
    return shown is not None and Path(shown).resolve() == path.resolve()


def only_error(registry: Registry) -> RegistryError:
    assert len(registry.errors) == 1, [str(error) for error in registry.errors]
    return registry.errors[0]


def errors_in(registry: Registry, path: Path) -> list[RegistryError]:
    """The errors that stop the project file at `path` from loading."""
    return [error for error in registry.errors if same_file(error.project_file, path)]


def assert_at(error: RegistryError, path: Path, key: str, line: int | None) -> None:
    assert same_file(error.file, path), error
    assert error.key == key, error
    assert error.line == line, error
    text = str(error)
    assert key in text
    assert (f"{error.file}:{line}" if line else error.file) in text


@pytest.fixture
def plain_repo(registry_dir: RegistryDir) -> str:
    """A directory usable as a local `repo`; the registry only checks that it exists."""
    path = registry_dir.root / "plain_repo"
    path.mkdir()
    return str(path)


# --- project files ----------------------------------------------------------------------------


def test_unknown_top_level_key_lists_valid_keys(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "priority: high\nprioirty: low\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "prioirty", 4)
    assert same_file(error.project_file, path)
    assert "unknown key 'prioirty'" in error.message
    for valid in ("agent", "priority", "repo", "tags", "verify"):
        assert valid in error.message


def test_unknown_key_under_agent_lists_agent_keys(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "agent:\n  profile: demo\n  max_paralel: 2\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "agent.max_paralel", 5)
    assert error.message == (
        "unknown key 'max_paralel'; valid keys here: "
        "command, max_parallel, model, profile, resume, timeout"
    )


def test_wrong_type_names_the_value(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "agent:\n  max_parallel: lots\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "agent.max_parallel", 4)
    assert "integer" in error.message
    assert "'lots'" in error.message


def test_out_of_range_priority_says_what_is_valid(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "priority: urgent\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "priority", 3)
    assert "critical, high, normal, low" in error.message
    assert "0 to 100" in error.message


def test_bad_slug_suggests_a_valid_name(registry_dir: RegistryDir, plain_repo: str) -> None:
    path = registry_dir.write("projects/my_project.yaml", f"name: My-Project\nrepo: {plain_repo}\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "name", 1)
    assert "'My-Project' is not a valid name" in error.message
    assert "lowercase" in error.message
    assert "'my_project'" in error.message


@pytest.mark.parametrize("name", ["default", "orchestration"])
def test_reserved_name(registry_dir: RegistryDir, plain_repo: str, name: str) -> None:
    path = registry_dir.write("projects/reserved.yaml", f"name: {name}\nrepo: {plain_repo}\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "name", 1)
    assert error.message == f"{name!r} is reserved; choose another project name"


def test_duplicate_name_errors_on_the_second_file_naming_the_first(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    first = registry_dir.write("projects/a_first.yaml", f"name: dup\nrepo: {plain_repo}\n")
    second = registry_dir.write("projects/b_second.yaml", f"name: dup\nrepo: {plain_repo}\n")
    registry = registry_dir.load()
    error = only_error(registry)
    assert_at(error, second, "name", 1)
    assert "duplicate project name 'dup'" in error.message
    assert str(first) in error.message
    assert registry.names == ("dup",)
    assert registry.project("dup").path == first


def test_unknown_template_lists_the_templates(registry_dir: RegistryDir) -> None:
    registry_dir.write("projects/templates/service.yaml", "priority: high\n")
    registry_dir.write("projects/templates/library.yaml", "priority: low\n")
    path = registry_dir.project("p", "extends: servise\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "extends", 3)
    assert "unknown template 'servise'" in error.message
    assert "library, service" in error.message
    assert str(registry_dir.root / "projects" / "templates") in error.message


def test_unknown_template_is_reported_for_each_project_that_names_it(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    first = registry_dir.project("a_first", "extends: nope\n", repo=plain_repo)
    second = registry_dir.project("b_second", "description: two\nextends: nope\n", repo=plain_repo)
    registry = registry_dir.load()
    assert len(errors_in(registry, first)) == 1
    [error] = errors_in(registry, second)
    assert_at(error, second, "extends", 4)


def test_unknown_agent_profile_lists_profiles(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "agent:\n  profile: claude\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "agent.profile", 4)
    assert error.message == (
        "unknown agent profile 'claude'; profiles: aider, claude_code, codex, command, demo, gemini"
    )


def test_command_profile_needs_agent_command(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "agent:\n  profile: command\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "agent.command", 3)
    assert "set agent.command" in error.message


def test_missing_local_repo_path(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", repo="../repos/nowhere")
    error = only_error(registry_dir.load())
    assert_at(error, path, "repo", 2)
    assert "'../repos/nowhere' does not exist" in error.message
    assert str(registry_dir.root / "repos" / "nowhere") in error.message
    assert "git URL" in error.message


def test_template_loop_shows_the_cycle(registry_dir: RegistryDir, plain_repo: str) -> None:
    registry_dir.write("projects/templates/a.yaml", "priority: high\nextends: b\n")
    b = registry_dir.write("projects/templates/b.yaml", "extends: a\n")
    path = registry_dir.project("p", "extends: a\n", repo=plain_repo)
    error = only_error(registry_dir.load())
    assert_at(error, b, "extends", 1)
    assert same_file(error.project_file, path)
    assert error.message == "template loop: a -> b -> a"
    assert str(path) in str(error)


def test_template_value_errors_point_at_the_template(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    template = registry_dir.write("projects/templates/t.yaml", "agent:\n  max_parallel: 0\n")
    path = registry_dir.project("p", "extends: t\n", repo=plain_repo)
    error = only_error(registry_dir.load())
    assert_at(error, template, "agent.max_parallel", 2)
    assert same_file(error.project_file, path)
    assert "greater than or equal to 1" in error.message


def test_invalid_yaml_syntax_gives_the_line(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "description: fine\ntags: {a: b\nowners: []\n")
    error = only_error(registry_dir.load())
    assert same_file(error.file, path)
    assert error.message.startswith("not valid YAML")
    assert error.line == 5
    assert f":{error.line}:" in str(error)


def test_top_level_must_be_a_mapping(registry_dir: RegistryDir) -> None:
    path = registry_dir.write("projects/listy.yaml", "- a\n- b\n")
    error = only_error(registry_dir.load())
    assert same_file(error.file, path)
    assert error.line == 1
    assert "mapping" in error.message


def test_duplicate_key_in_one_mapping(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "agent:\n  profile: demo\n  profile: codex\n")
    error = only_error(registry_dir.load())
    assert same_file(error.file, path)
    assert error.line == 5
    assert error.message == "key 'agent.profile' appears twice (first at line 4)"


def test_depends_on_unknown_project_lists_projects(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("core", repo=plain_repo)
    path = registry_dir.project("api", "depends_on: [core, cor]\n", repo=plain_repo)
    registry = registry_dir.load()
    error = only_error(registry)
    assert_at(error, path, "depends_on[1]", 3)
    assert error.message == "unknown project 'cor'; projects: core"
    assert registry.names == ("core",)


def test_depends_on_a_file_stem_is_not_a_project_name(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.write("projects/core_file.yaml", f"name: core\nrepo: {plain_repo}\n")
    path = registry_dir.project("api", "depends_on: [core_file]\n", repo=plain_repo)
    error = only_error(registry_dir.load())
    assert_at(error, path, "depends_on[0]", 3)
    assert "unknown project 'core_file'" in error.message


def test_self_dependency(registry_dir: RegistryDir, plain_repo: str) -> None:
    path = registry_dir.project("api", "depends_on:\n  - api\n", repo=plain_repo)
    error = only_error(registry_dir.load())
    assert_at(error, path, "depends_on[0]", 3)
    assert error.message == "a project cannot depend on itself"


def test_bad_cron_schedule(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "schedule: every morning\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "schedule", 3)
    assert "'every morning' is not a cron expression" in error.message
    assert "five fields" in error.message


def test_bad_owner(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "owners: [team:ok, bob]\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "owners[1]", 3)
    assert error.message == "'bob' is not an owner: use an email address or 'team:<name>'"


def test_bad_tag_value(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "tags:\n  team: ok\n  domain: has spaces\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "tags.domain", 5)
    assert "tag value 'has spaces' is invalid" in error.message
    assert "at most 63 characters" in error.message


def test_bad_tag_key(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p", "tags:\n  'bad key': x\n")
    error = only_error(registry_dir.load())
    assert same_file(error.file, path)
    assert error.line == 4
    assert error.key.startswith("tags.bad key")
    assert "tag key 'bad key' is invalid" in error.message


def test_name_and_repo_cannot_have_defaults(registry_dir: RegistryDir) -> None:
    defaults = registry_dir.write("projects/_defaults.yaml", "priority: low\nrepo: /somewhere\n")
    registry_dir.project("p")
    registry = registry_dir.load()
    error = only_error(registry)
    assert_at(error, defaults, "repo", 2)
    assert "cannot have a default" in error.message
    assert registry.names == ("p",)


# --- environment overrides --------------------------------------------------------------------


def test_unknown_key_in_env_override_names_the_variable(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("p")
    registry_dir.env["ORCH__P__AGENT__MAX_PARALEL"] = "3"
    error = only_error(registry_dir.load())
    assert error.file == "ORCH__P__AGENT__MAX_PARALEL"
    assert error.line is None
    assert error.key == "agent.max_paralel"
    assert same_file(error.project_file, path)
    assert "valid keys here: command, max_parallel" in error.message
    assert str(error).startswith("ORCH__P__AGENT__MAX_PARALEL: agent.max_paralel: unknown key")
    assert str(path) in str(error)


def test_bad_value_in_env_override_names_the_variable(registry_dir: RegistryDir) -> None:
    registry_dir.project("p")
    registry_dir.env["ORCH__P__PRIORITY"] = "urgent"
    error = only_error(registry_dir.load())
    assert (error.file, error.key, error.line) == ("ORCH__P__PRIORITY", "priority", None)


def test_bad_value_inside_a_mapping_env_override_names_the_variable(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("p")
    registry_dir.env["ORCH__P__TAGS"] = "{team: 'not valid!'}"
    error = only_error(registry_dir.load())
    assert (error.file, error.key, error.line) == ("ORCH__P__TAGS", "tags.team", None)


# --- config files ------------------------------------------------------------------------------


def test_unknown_placeholder_in_agent_argv(registry_dir: RegistryDir) -> None:
    agents = registry_dir.write(
        "config/agents.yaml",
        """
        profiles:
          demo:
            argv: [demo, --, "{prompt}"]
            output: text
          broken:
            argv: [tool, "{promt}"]
            output: text
        """,
    )
    error = only_error(registry_dir.load())
    assert_at(error, agents, "profiles.broken.argv", 6)
    assert "unknown placeholder(s) promt" in error.message
    assert (
        "valid: budget, command, model, prompt, prompt_file, python, session_id, workdir"
        in error.message
    )


def test_unknown_key_in_agent_profile(registry_dir: RegistryDir) -> None:
    agents = registry_dir.write(
        "config/agents.yaml",
        """
        profiles:
          demo:
            argv: [demo]
            output: text
            ouput: json
        """,
    )
    error = only_error(registry_dir.load())
    assert_at(error, agents, "profiles.demo.ouput", 5)
    assert "unknown key 'ouput'" in error.message
    assert "output" in error.message and "resume_args" in error.message


def test_set_env_may_not_take_the_agents_home(registry_dir: RegistryDir) -> None:
    agents = registry_dir.write(
        "config/agents.yaml",
        """
        profiles:
          demo:
            argv: [demo]
            output: text
            config_dir_env: DEMO_HOME
            set_env: {TZ: UTC, HOME: /tmp/elsewhere, DEMO_HOME: /tmp/x}
        """,
    )
    error = only_error(registry_dir.load())
    assert same_file(error.file, agents) and error.key.startswith("profiles.demo")
    assert "set_env: DEMO_HOME, HOME cannot be set here" in error.message


def test_provider_pool_must_be_a_slug(registry_dir: RegistryDir) -> None:
    agents = registry_dir.write(
        "config/agents.yaml",
        """
        profiles:
          demo:
            argv: [demo]
            output: text
            provider_pool: "../Anthropic Max"
        """,
    )
    error = only_error(registry_dir.load())
    assert_at(error, agents, "profiles.demo.provider_pool", 5)


def test_a_provider_pool_grace_may_not_be_negative(registry_dir: RegistryDir) -> None:
    pools = registry_dir.write(
        "config/pools.yaml",
        """
        agents: {slots: 4}
        provider_anthropic: {slots: 2, grace_seconds: -5}
        """,
    )
    error = only_error(registry_dir.load())
    assert same_file(error.file, pools)
    assert error.key == "provider_anthropic.grace_seconds"
    assert "greater than or equal to 0" in error.message


def test_pools_without_the_global_pool(registry_dir: RegistryDir) -> None:
    pools = registry_dir.write("config/pools.yaml", "heavy:\n  slots: 1\n")
    registry = registry_dir.load()
    missing = [error for error in registry.errors if same_file(error.file, pools)]
    assert len(missing) == 1
    assert missing[0].key == "agents"
    assert "the global pool is missing" in missing[0].message
    assert "agents: {slots: N}" in missing[0].message
    # Every shipped profile uses the `agents` pool, so each is reported against agents.yaml.
    unknown_pool = [error for error in registry.errors if error.key.endswith(".pool")]
    assert {error.key for error in unknown_pool} == {
        f"profiles.{name}.pool"
        for name in ("claude_code", "codex", "aider", "gemini", "command", "demo")
    }
    assert all("pools in" in error.message and "heavy" in error.message for error in unknown_pool)


def test_bad_pool_slots(registry_dir: RegistryDir) -> None:
    pools = registry_dir.write("config/pools.yaml", "agents:\n  slots: many\n")
    error = only_error(registry_dir.load())
    assert_at(error, pools, "agents.slots", 2)
    assert "integer" in error.message


def test_missing_config_file(registry_dir: RegistryDir) -> None:
    (registry_dir.root / "config" / "pools.yaml").unlink()
    registry_dir.project("p")
    registry = registry_dir.load()
    error = only_error(registry)
    assert same_file(error.file, registry_dir.root / "config" / "pools.yaml")
    assert "file not found" in error.message
    assert registry.names == ("p",)


# --- many errors ------------------------------------------------------------------------------


def test_every_broken_file_is_reported_at_once(registry_dir: RegistryDir, plain_repo: str) -> None:
    one = registry_dir.project("one", "priority: 101\n", repo=plain_repo)
    two = registry_dir.project("two", "agent:\n  profile: nobody\n", repo=plain_repo)
    three = registry_dir.project("three", "owners: [nobody]\nbranch: ../x\n", repo=plain_repo)
    registry = registry_dir.load()
    assert registry.projects == ()
    assert [e.key for e in errors_in(registry, one)] == ["priority"]
    assert [e.key for e in errors_in(registry, two)] == ["agent.profile"]
    assert sorted(e.key for e in errors_in(registry, three)) == ["branch", "owners[0]"]
    assert len(registry.errors) == 4


def test_a_broken_file_never_stops_the_good_ones(registry_dir: RegistryDir) -> None:
    registry_dir.project("good_a")
    broken = registry_dir.project("broken", "agent:\n  max_parallel: lots\n")
    registry_dir.project("good_b", "depends_on: [good_a]\n")
    registry = registry_dir.load()
    assert registry.names == ("good_a", "good_b")
    error = only_error(registry)
    assert_at(error, broken, "agent.max_parallel", 4)
    with pytest.raises(KeyError, match="project 'broken' has errors"):
        registry.project("broken")


def test_depending_on_a_broken_project_is_not_an_unknown_project(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("broken", "tags: [not, a, map\n", repo=plain_repo)
    registry_dir.project("user", "depends_on: [broken]\n", repo=plain_repo)
    registry = registry_dir.load()
    assert registry.names == ("user",)
    assert [error.key for error in registry.errors] == [""]


def test_template_cannot_set_name(registry_dir: RegistryDir, plain_repo: str) -> None:
    template = registry_dir.write("projects/templates/named.yaml", "priority: low\nname: foo\n")
    registry_dir.project("p", "extends: named\n", repo=plain_repo)
    registry = registry_dir.load()
    error = only_error(registry)
    assert_at(error, template, "name", 2)
    assert error.message == "a template cannot set 'name'"
    assert registry.names == ()


def test_a_bad_extends_does_not_hide_the_files_other_errors(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    path = registry_dir.project(
        "p",
        "extends: nope\npriority: urgent\nagent:\n  profile: nobody\nowners: [bob]\n",
        repo=plain_repo,
    )
    registry = registry_dir.load()
    found = {error.key: error for error in errors_in(registry, path)}
    assert sorted(found) == ["agent.profile", "extends", "owners[0]", "priority"]
    assert "unknown template 'nope'" in found["extends"].message
    assert "unknown agent profile 'nobody'" in found["agent.profile"].message
    assert [error.line for error in registry.errors] == [3, 4, 6, 7]
    assert registry.names == ()


def test_a_template_that_would_set_the_repo_is_not_missed_when_extends_fails(
    registry_dir: RegistryDir,
) -> None:
    path = registry_dir.write("projects/p.yaml", "extends: [not, a, name]\npriority: 101\n")
    registry = registry_dir.load()
    assert sorted(error.key for error in errors_in(registry, path)) == ["extends", "priority"]
    [extends] = [error for error in registry.errors if error.key == "extends"]
    assert extends.message == "must be a template name, got ['not', 'a', 'name']"


def test_a_missing_repo_directory_does_not_hide_the_files_other_errors(
    registry_dir: RegistryDir,
) -> None:
    path = registry_dir.project(
        "p", "branch: ../x\ndepends_on: [nobody]\nagent:\n  timeout: soon\n", repo="../nowhere"
    )
    registry = registry_dir.load()
    found = {error.key: error for error in errors_in(registry, path)}
    assert sorted(found) == ["agent.timeout", "branch", "depends_on[0]", "repo"]
    assert "does not exist" in found["repo"].message
    assert found["repo"].line == 2


def test_checks_that_span_files_still_run_when_a_value_is_invalid(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("core", repo=plain_repo)
    path = registry_dir.project(
        "api",
        "priority: 900\ndepends_on: [core, api, cor]\nagent:\n  profile: nobody\n  timeout: x\n",
        repo=plain_repo,
    )
    registry = registry_dir.load()
    assert sorted(error.key for error in errors_in(registry, path)) == [
        "agent.profile",
        "agent.timeout",
        "depends_on[1]",
        "depends_on[2]",
        "priority",
    ]
    assert registry.names == ("core",)


def test_a_bad_name_still_reports_the_rest(registry_dir: RegistryDir, plain_repo: str) -> None:
    path = registry_dir.write(
        "projects/p.yaml", f"name: ../evil\nrepo: {plain_repo}\npriority: 900\n"
    )
    registry = registry_dir.load()
    assert sorted(error.key for error in errors_in(registry, path)) == ["name", "priority"]


def test_both_keys_that_cannot_have_defaults_are_reported(registry_dir: RegistryDir) -> None:
    defaults = registry_dir.write("projects/_defaults.yaml", "name: x\nrepo: /somewhere\n")
    registry = registry_dir.load()
    assert [(error.key, error.line) for error in registry.errors] == [("name", 1), ("repo", 2)]
    assert all(same_file(error.file, defaults) for error in registry.errors)


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("--upload-pack=touch /tmp/pwned", "looks like a git option"),
        ("-cprotocol.ext.allow=always", "looks like a git option"),
        ("ext::sh -c touch% /tmp/pwned", "'<transport>::' form, which runs a helper program"),
        ("fd::17", "'<transport>::' form"),
        ("http://git.example.com/x.git", "the http:// scheme is not allowed"),
        ("ftp://git.example.com/x.git", "the ftp:// scheme is not allowed"),
        ("ssh://-oProxyCommand=touch%20x/repo", "would be read as an option"),
        ("ssh://-oProxyCommand=x@host/repo", "would be read as an option"),
        ("git@-oProxyCommand:repo", "would be read as an option"),
        ("https://example.com/x.git\n[core]", "contains a control character"),
        ("a\x00b", "NUL character"),
    ],
)
def test_repo_values_git_would_misread_are_refused(
    registry_dir: RegistryDir, repo: str, expected: str
) -> None:
    path = registry_dir.write("projects/p.yaml", f"name: p\nrepo: {json.dumps(repo)}\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "repo", 2)
    assert expected in error.message


@pytest.mark.parametrize(
    "repo",
    [
        "https://github.com/acme/core.git",
        "ssh://git@git.example.com:2222/acme/core.git",
        "git://git.example.com/core.git",
        "git+ssh://git@git.example.com/core.git",
        "git@github.com:acme/core.git",
    ],
)
def test_repo_urls_of_the_allowed_kinds_load(registry_dir: RegistryDir, repo: str) -> None:
    registry_dir.project("p", repo=repo)
    assert registry_dir.load().project("p").spec.repo == repo


def test_a_local_directory_whose_name_starts_with_a_dash_is_written_as_a_path(
    registry_dir: RegistryDir,
) -> None:
    (registry_dir.root / "projects" / "-odd").mkdir()
    registry_dir.project("p", repo="./-odd")
    spec = registry_dir.load().project("p").spec
    assert spec.repo == str(registry_dir.root / "projects" / "-odd")


@pytest.mark.parametrize("repo", ["~nosuchuser-orch/x", "/" + "x" * 5000])
def test_a_local_path_that_cannot_be_resolved_is_an_error(
    registry_dir: RegistryDir, repo: str
) -> None:
    path = registry_dir.project("p", repo=repo)
    error = only_error(registry_dir.load())
    assert_at(error, path, "repo", 2)


@pytest.mark.parametrize("model", ["--dangerously-skip-permissions", "-x", "a\nb"])
def test_an_option_like_model_is_refused(registry_dir: RegistryDir, model: str) -> None:
    path = registry_dir.project("p", f"agent:\n  model: {json.dumps(model)}\n")
    error = only_error(registry_dir.load())
    assert_at(error, path, "agent.model", 4)
    assert "must not start with '-'" in error.message


def test_an_override_for_a_project_that_does_not_exist_is_a_warning(
    registry_dir: RegistryDir, plain_repo: str
) -> None:
    registry_dir.project("alpha", repo=plain_repo)
    registry_dir.write("projects/broken.yaml", "tags: [\n")
    registry_dir.env |= {
        "ORCH__ALPHA__PRIORITY": "low",
        "ORCH__BROKEN__PRIORITY": "low",  # a project with errors still exists
        "ORCH__ALPAH__PRIORITY": "high",
        "ORCH__GHOST": "1",
    }
    registry = registry_dir.load()
    assert registry.project("alpha").spec.priority == 25
    assert list(registry.warnings) == [
        "ORCH__ALPAH__PRIORITY: no project named 'alpah', so this override changes nothing "
        "(projects: alpha, broken)",
        "ORCH__GHOST: no project named 'ghost', so this override changes nothing "
        "(projects: alpha, broken)",
    ]
