"""A hostile corpus of registry files, loaded by `orch validate --json` in a child process held to
1 GiB of memory and 20 seconds: alias bombs, recursive aliases, deep nesting, invalid UTF-8,
huge files, values Python refuses, files that are not files or lead out of the tree, a wrong
type for every key of a project, `repo` values git would read as options or helper programs,
names that could become paths. Each case must be an error of its own file, naming the file (and
the key where there is one); the valid projects beside them must still load, and nothing may be
created outside the temporary directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestration.registry.models import AgentSettings, ProjectSpec
from tests.support.paths import REPO_ROOT

MEMORY_LIMIT_BYTES = 1 << 30
TIMEOUT_S = 20.0

#: `orch validate --json` under a memory limit: the limit is set before anything is imported.
CHILD = textwrap.dedent(
    """
    import resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from orchestration.cli import main
    sys.argv = ["orch", "validate", "--json"]
    main()
    """
)

#: The classic billion laughs: nine levels of nine aliases, a billion "lol"s, under 1 KB.
BILLION_LAUGHS = (
    "name: bomb\nrepo: ../plain\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{level}: &{level} [{', '.join([f'*{below}'] * 9)}]\n"
        for below, level in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "tags: {k: *i}\n"
)
MAPPING_BOMB = (
    "name: bomb_map\nrepo: ../plain\n"
    "a: &a {a: x, b: x, c: x, d: x, e: x, f: x, g: x, h: x, i: x}\n"
    + "".join(
        f"{level}: &{level} {{{', '.join(f'{k}: *{below}' for k in 'abcdefghi')}}}\n"
        for below, level in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "agent: *i\n"
)


@dataclass(frozen=True)
class Case:
    """One hostile file: how to make it, and what its error must say."""

    file: str  # relative to the registry root
    make: Callable[[Path], None]
    key: str | None  # the key the error names ("" for the file as a whole)
    says: str
    line: int | None = None
    project_file: str | None = None  # when the error is in another file (a template)


def text(relative: str, body: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / relative).write_text(body, encoding="utf-8")

    return make


def data(relative: str, body: bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / relative).write_bytes(body)

    return make


def link(relative: str, target: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / relative).symlink_to(target.format(root=root))

    return make


def project(name: str, body: str, key: str | None, says: str, line: int | None = None) -> Case:
    """A project file `name.yaml` with `body` after its name and repo."""
    file = f"projects/{name}.yaml"
    return Case(file, text(file, f"name: {name}\nrepo: ../plain\n{body}"), key, says, line)


def wrong_type_cases() -> list[Case]:
    """A wrong type for every key of a project and of its `agent` mapping."""
    cases = []
    for key in ProjectSpec.model_fields:
        value = "[1, 2]" if key in ("agent", "tags", "budget", "channels") else "{x: 1}"
        body = {"name": f"name: {value}\nrepo: ../plain\n", "repo": f"name: w\nrepo: {value}\n"}
        file = f"projects/wrong_{key}.yaml"
        cases.append(
            Case(
                file,
                text(file, body.get(key, f"name: wrong_{key}\nrepo: ../plain\n{key}: {value}\n")),
                key,
                "template name" if key == "extends" else "Input should be",
            )
        )
    agent_values = {
        "profile": "{x: 1}",
        "max_parallel": "lots",
        "timeout": "[1]",
        "model": "[1]",
        "resume": "maybe",
        "command": "not a list",
    }
    assert set(agent_values) == set(AgentSettings.model_fields)
    for key, value in agent_values.items():
        cases.append(
            project(
                f"wrong_agent_{key}",
                f"agent:\n  {key}: {value}\n",
                key=f"agent.{key}",
                says="",
                line=4,
            )
        )
    return cases


CASES: list[Case] = [
    # What a file may cost
    project(
        "bomb",
        BILLION_LAUGHS.split("\n", 2)[2],
        key="",
        says="aliases repeat more than 1000 values",
    ),
    project(
        "bomb_map", MAPPING_BOMB.split("\n", 2)[2], key="", says="aliases repeat more than 1000"
    ),
    project(
        "recursive_map", "tags: &a {k: *a}\n", key="", says="*a is inside its own anchor &a", line=3
    ),
    project("recursive_list", "verify: &v [x, *v]\n", key="", says="inside its own anchor", line=3),
    project(
        "deep_block",
        "".join(f"{'  ' * level}k{level}:\n" for level in range(40)) + "  " * 40 + "x\n",
        key="",
        says="nest more than 32 levels deep",
    ),
    project("deep_flow", "tags: " + "[" * 100_000 + "\n", key="", says="nest"),
    project(
        "huge", "description: >\n" + "  lorem ipsum\n" * 30_000, key="", says="at most 256 KiB"
    ),
    project("bad_date", "description: 2024-13-45\n", key="", says="month must be in 1..12"),
    project("big_int", "priority: " + "9" * 5000 + "\n", key="", says="Exceeds the limit"),
    Case(
        "projects/latin1.yaml",
        data("projects/latin1.yaml", b"name: latin1\nrepo: ../plain\ndescription: caf\xe9\n"),
        "",
        "not valid UTF-8 (byte 0xe9)",
        line=3,
    ),
    Case(
        "projects/utf16.yaml",
        data("projects/utf16.yaml", "name: utf16\n".encode("utf-16")),
        "",
        "not valid UTF-8 (byte 0xff)",
        line=1,
    ),
    Case(
        "projects/nul.yaml", data("projects/nul.yaml", b"name: nul\n\x00\n"), "", "not valid YAML"
    ),
    # What a file is and where it leads
    Case(
        "projects/dir.yaml",
        lambda root: (root / "projects/dir.yaml").mkdir(),
        "",
        "not a regular file",
    ),
    Case(
        "projects/fifo.yaml",
        lambda root: os.mkfifo(root / "projects/fifo.yaml"),
        "",
        "not a regular file",
    ),
    Case(
        "projects/passwd.yaml",
        link("projects/passwd.yaml", "/etc/passwd"),
        "",
        "to /etc/passwd, outside",
    ),
    Case(
        "projects/outside.yaml",
        link("projects/outside.yaml", "{root}/outside/ok.yaml"),
        "",
        "outside",
    ),
    Case(
        "projects/dangling.yaml",
        link("projects/dangling.yaml", "{root}/projects/nowhere.yaml"),
        "",
        "cannot read file",
    ),
    Case("projects/loop.yaml", link("projects/loop.yaml", "loop.yaml"), "", "cannot read file"),
    Case(
        "projects/templates/evil.yaml",
        link("projects/templates/evil.yaml", "{root}/outside/template.yaml"),
        "",
        "outside",
        project_file="projects/evil_user.yaml",
    ),
    project("evil_user", "extends: evil\n", key=None, says=""),
    Case(
        "projects/templates/tbomb.yaml",
        text("projects/templates/tbomb.yaml", BILLION_LAUGHS.split("\n", 2)[2]),
        "",
        "aliases repeat",
        project_file="projects/tbomb_user.yaml",
    ),
    project("tbomb_user", "extends: tbomb\n", key=None, says=""),
    project(
        "traversal",
        "extends: ../../outside/template\n",
        key="extends",
        says="unknown template",
        line=3,
    ),
    # Repositories git would misread
    *[
        project(f"repo_{index}", "", key="repo", says=says, line=2)
        for index, says in enumerate(
            ["looks like a git option"] * 2 + ["runs a helper program"] * 2
        )
    ],
    project("repo_http", "", key="repo", says="the http:// scheme is not allowed", line=2),
    project("repo_ssh_option", "", key="repo", says="would be read as an option", line=2),
    project("repo_scp_option", "", key="repo", says="would be read as an option", line=2),
    # Names that could become paths, keys or branches
    *[
        Case(
            f"projects/name_{index}.yaml",
            text(f"projects/name_{index}.yaml", f"name: {name}\nrepo: ../plain\n"),
            "name",
            says,
            line=1,
        )
        for index, (name, says) in enumerate(
            [
                ("../evil", "is not a valid name"),
                ("a/b", "is not a valid name"),
                ("ünïcode", "is not a valid name"),
                ("Upper", "is not a valid name"),
                ("'x{}'".format("y" * 63), "is not a valid name"),
                ("''", "is not a valid name"),
                ("default", "is reserved"),
                ("orchestration", "is reserved"),
            ]
        )
    ],
    Case(
        "projects/Ünï.yaml",
        text("projects/Ünï.yaml", "repo: ../plain\n"),
        "name",
        "is not a valid name",
    ),
    Case(
        "projects/-rf.yaml",
        text("projects/-rf.yaml", "repo: ../plain\n"),
        "name",
        "is not a valid name",
    ),
    Case(
        os.fsdecode(b"projects/\xff.yaml"),
        data(os.fsdecode(b"projects/\xff.yaml"), b"repo: ../plain\n"),
        "name",
        "valid string",
    ),
    # Every error of a file at once
    Case(
        "projects/many.yaml",
        text(
            "projects/many.yaml",
            "name: many\nrepo: ../nowhere\nextends: nope\npriority: 900\nowners: [bob]\n",
        ),
        None,
        "",
    ),
    *wrong_type_cases(),
]
REPO_VALUES = {
    "repo_0": "--upload-pack=touch {canary}",
    "repo_1": "-cprotocol.ext.allow=always",
    "repo_2": "ext::sh -c touch% {canary}",
    "repo_3": "fd::17",
    "repo_http": "http://git.example.com/x.git",
    "repo_ssh_option": "ssh://-oProxyCommand=touch%20{canary}/x",
    "repo_scp_option": "git@-oProxyCommand:x",
}
ENV = {
    "ORCH__ENV_BOMB__TAGS": "["
    + ", ".join(["&a [x, x, x, x, x, x, x, x, x, x]", *["*a"] * 500])
    + "]",
    "ORCH__NOBODY__PRIORITY": "high",
}


@dataclass(frozen=True)
class Loaded:
    root: Path
    canary: Path
    report: dict
    before: set[str]
    after: set[str]

    def errors_of(self, case: Case) -> list[dict]:
        """The errors of the case's file (or, for a template, of its project file)."""
        wanted = (self.root / (case.project_file or case.file)).absolute()
        return [
            error
            for error in self.report["errors"]
            if (self.root / (error["project_file"] or error["file"])).absolute() == wanted
        ]


def build(root: Path) -> Path:
    """The corpus, two valid projects (one depending on the other) and one for the override."""
    canary = root / "outside" / "pwned"
    (root / "projects" / "templates").mkdir(parents=True)
    (root / "plain").mkdir()
    (root / "outside").mkdir()
    (root / "outside" / "ok.yaml").write_text("name: outside\nrepo: ../plain\n")
    (root / "outside" / "template.yaml").write_text("priority: high\n")
    (root / "user").mkdir()
    (root / "tmp").mkdir()
    shutil.copytree(REPO_ROOT / "config", root / "config")
    for case in CASES:
        case.make(root)
    for name, repo in REPO_VALUES.items():
        (root / "projects" / f"{name}.yaml").write_text(
            f"name: {name}\nrepo: {json.dumps(repo.format(canary=canary))}\n"
        )
    (root / "projects" / "good_a.yaml").write_text("repo: ../plain\npriority: high\n")
    (root / "projects" / "good_b.yaml").write_text("repo: ../plain\ndepends_on: [good_a]\n")
    (root / "projects" / "env_bomb.yaml").write_text("repo: ../plain\n")
    return canary


def listing(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def run_validate(root: Path, environ: dict[str, str]) -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root / "user"),
        "TMPDIR": str(root / "tmp"),
        "ORCH_PROJECTS_DIR": str(root / "projects"),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(root / "home"),
        "PYTHONPATH": str(REPO_ROOT),
        **environ,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(MEMORY_LIMIT_BYTES)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # 1: the registry has errors; no crash
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    root = tmp_path_factory.mktemp("hostile")
    canary = build(root)
    before = listing(root)
    report = run_validate(root, ENV)
    return Loaded(root, canary, report, before, listing(root))


def test_the_valid_projects_load_beside_the_corpus(loaded: Loaded) -> None:
    assert loaded.report["projects"] == ["good_a", "good_b"]


def test_the_corpus_is_small_where_it_says_so() -> None:
    assert len(BILLION_LAUGHS.encode()) < 1024
    assert len(MAPPING_BOMB.encode()) < 1024


def test_nothing_is_created_anywhere(loaded: Loaded) -> None:
    assert loaded.after == loaded.before  # no clone, no ORCH_HOME, no cache, no temporary file
    assert not loaded.canary.exists()


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.key is not None], ids=lambda c: c.file
)
def test_each_hostile_file_is_an_error_of_its_own(loaded: Loaded, case: Case) -> None:
    errors = loaded.errors_of(case)
    assert errors, f"no error for {case.file}"
    error = errors[0]
    assert (loaded.root / error["file"]).absolute() == (loaded.root / case.file).absolute()
    assert case.says in error["message"], error
    if case.key:
        assert error["key"] == case.key or error["key"].startswith(
            (f"{case.key}.", f"{case.key}[")
        ), error
    else:
        assert error["key"] == ""
    if case.line is not None:
        assert error["line"] == case.line, error


def test_every_error_of_one_file_comes_out_at_once(loaded: Loaded) -> None:
    [many] = [case for case in CASES if case.file == "projects/many.yaml"]
    errors = loaded.errors_of(many)
    assert [(error["key"], error["line"]) for error in errors] == [
        ("repo", 2),
        ("extends", 3),
        ("priority", 4),
        ("owners[0]", 5),
    ]


def test_a_project_whose_template_is_hostile_names_both_files(loaded: Loaded) -> None:
    for case in CASES:
        if case.project_file:
            [error] = loaded.errors_of(case)
            assert error["file"] == case.file
            assert error["project_file"] == case.project_file


def test_a_bomb_in_an_override_variable_is_that_variables_error(loaded: Loaded) -> None:
    errors = [error for error in loaded.report["errors"] if error["file"] == "ORCH__ENV_BOMB__TAGS"]
    assert [error["key"] for error in errors] == ["tags"]
    assert any(
        "ORCH__NOBODY__PRIORITY: no project named 'nobody'" in w for w in loaded.report["warnings"]
    )


def test_hostile_config_and_defaults_files_are_only_their_own_errors(tmp_path: Path) -> None:
    (tmp_path / "projects").mkdir()
    (tmp_path / "plain").mkdir()
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    (tmp_path / "projects" / "good_a.yaml").write_text("repo: ../plain\n")
    (tmp_path / "projects" / "good_b.yaml").write_text("repo: ../plain\ndepends_on: [good_a]\n")
    (tmp_path / "projects" / "_defaults.yaml").write_text(BILLION_LAUGHS.split("\n", 2)[2])
    (tmp_path / "config" / "agents.yaml").write_text("profiles: &p {demo: *p}\n")
    (tmp_path / "config" / "pools.yaml").write_bytes(b"agents: {slots: \xff}\n")
    report = run_validate(tmp_path, {})
    assert report["projects"] == ["good_a", "good_b"]
    assert sorted((error["file"], error["key"]) for error in report["errors"]) == [
        ("config/agents.yaml", ""),
        ("config/pools.yaml", ""),
        ("projects/_defaults.yaml", ""),
    ]
