"""`orch deps`, `orch affected` and `orch task add --propagate` through click's CliRunner, on a
registry of real git repositories and the real SQLite task store; no Dagster instance.

The registry: core (Python, `acme-core` 1.0.0) <- api and worker (worker wants `acme-core>=2`)
<- cli (requires both); web (npm) depends on no project. Every repository's first commit is
dated 2019, so a date after that tells which repositories changed since.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestration.cli import main
from orchestration.dependencies.affected import changed_projects
from orchestration.registry.models import ProjectSpec
from orchestration.tags import SESSION_TAG, TASK_TAG
from orchestration.tasks.dispatch import plan_dispatch
from orchestration.tasks.lifecycle import task_run_tags
from orchestration.tasks.models import Task, TaskStatus, is_task_id
from orchestration.tasks.store import TaskStore
from tests.support.git import commit, git
from tests.support.registry import RegistryDir

Invoke = Callable[..., Result]
OLD = "2019-06-01T12:00:00+00:00"

CORE = '[project]\nname = "Acme_Core"\nversion = "1.0.0"\n'
API = '[project]\nname = "acme-api"\nversion = "0.1.0"\ndependencies = [\n  "acme-core>=1",\n]\n'
WORKER = "[metadata]\nname = acme-worker\n\n[options]\ninstall_requires =\n    acme-core>=2\n"
CLI = "click>=8\nacme-api\nacme-worker\n"
WEB = '{\n  "name": "@acme/web",\n  "version": "1.0.0",\n  "dependencies": {"react": "^18"}\n}\n'
MISMATCH = "requires >=2, but acme-core is at 1.0.0 (pyproject.toml)"


def old_repo(path: Path, files: Mapping[str, str]) -> Path:
    """A repository on `main` whose one commit is from 2019."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commit(path, files, date=OLD)
    return path


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a folder that is no git repository, so no git command can reach another one."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    for name, files in {
        "core": {"pyproject.toml": CORE},
        "api": {"pyproject.toml": API},
        "worker": {"setup.cfg": WORKER},
        "cli": {"requirements.txt": CLI},
        "web": {"package.json": WEB},
    }.items():
        registry_dir.project(name, repo=str(old_repo(registry_dir.root / "repos" / name, files)))
    return registry_dir


def repo(registry: RegistryDir, name: str) -> Path:
    return registry.root / "repos" / name


@pytest.fixture
def orch(registry: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """Run `orch ARGS...` with ORCH_* at `registry` and no Dagster instance anywhere."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    settings = registry.settings

    def invoke(*args: str) -> Result:
        env = {
            "ORCH_PROJECTS_DIR": str(settings.projects_dir),
            "ORCH_CONFIG_DIR": str(settings.config_dir),
            "ORCH_HOME": str(settings.home),
            "DAGSTER_HOME": None,
        }
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    yield invoke
    assert not settings.dagster_home.exists()  # no instance was created


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def graph_file(registry: RegistryDir) -> Path:
    return registry.settings.home / "cache" / "dependencies" / "graph.json"


# --- orch deps detect ----------------------------------------------------------------------------


def test_detect_reports_what_it_parsed_then_what_was_unchanged(
    orch: Invoke, registry: RegistryDir
) -> None:
    first = ok(orch("deps", "detect"))
    assert first.strip() == (
        "5 project(s), 4 edge(s), 0 cycle(s); 5 repository(ies) parsed, 0 unchanged"
    )
    assert graph_file(registry).is_file()

    commit(repo(registry, "web"), {"requirements.txt": "acme-api\n"})
    second = ok(orch("deps", "detect"))
    assert second.strip() == (
        "5 project(s), 5 edge(s), 0 cycle(s); 1 repository(ies) parsed, 4 unchanged"
    )


def test_detect_json(orch: Invoke) -> None:
    data = json.loads(ok(orch("deps", "detect", "--json")))
    assert data["nodes"] == ["api", "cli", "core", "web", "worker"]
    assert [(e["consumer"], e["provider"]) for e in data["edges"]] == [
        ("api", "core"),
        ("cli", "api"),
        ("cli", "worker"),
        ("worker", "core"),
    ]
    assert data["cycles"] == []


def test_detect_warns_about_a_broken_repository_and_goes_on(
    orch: Invoke, registry: RegistryDir
) -> None:
    shutil.rmtree(repo(registry, "web") / ".git" / "objects")
    result = orch("deps", "detect")
    assert ok(result).strip() == (
        "5 project(s), 4 edge(s), 0 cycle(s); 4 repository(ies) parsed, 0 unchanged"
    )
    assert "warning: web: GitError: git could not" in result.stderr


def test_detect_warns_of_a_manifest_left_out_by_a_cap_and_goes_on(
    orch: Invoke, registry: RegistryDir
) -> None:
    huge = '{"name": "@acme/web", "description": "' + "x" * (3 << 20) + '"}'
    commit(repo(registry, "web"), {"package.json": huge, "requirements.txt": "acme-api\n"})
    result = orch("deps", "detect")
    assert ok(result).strip() == (
        "5 project(s), 5 edge(s), 0 cycle(s); 5 repository(ies) parsed, 0 unchanged"
    )
    assert result.stderr.splitlines()[-1] == (
        "warning: web: package.json: not read: 3.0 MiB is over the 1 MiB limit for one "
        "manifest, so its dependencies are not counted (keep generated or vendored files out of "
        "manifests)"
    )


# --- orch deps graph -----------------------------------------------------------------------------


def test_graph_detects_first_then_prints_edges_with_evidence(
    orch: Invoke, registry: RegistryDir
) -> None:
    assert not graph_file(registry).exists()
    out = ok(orch("deps", "graph"))
    assert graph_file(registry).is_file()
    assert out.splitlines() == [
        "api -> core",
        "    pyproject.toml:5: acme-core>=1 (package)",
        "cli -> api",
        "    requirements.txt:2: acme-api (package)",
        "cli -> worker",
        "    requirements.txt:3: acme-worker (package)",
        "worker -> core",
        f"    setup.cfg:6: acme-core>=2 (package)  [version mismatch: {MISMATCH}]",
    ]


def test_graph_warns_of_a_manifest_left_out_when_it_detects_first(
    orch: Invoke, registry: RegistryDir
) -> None:
    huge = '{"name": "@acme/web", "description": "' + "x" * (3 << 20) + '"}'
    commit(repo(registry, "web"), {"package.json": huge})
    result = orch("deps", "graph")
    assert "api -> core" in ok(result)
    assert result.stderr.splitlines() == [
        "warning: web: package.json: not read: 3.0 MiB is over the 1 MiB limit for one "
        "manifest, so its dependencies are not counted (keep generated or vendored files out of "
        "manifests)"
    ]
    assert ok(orch("deps", "graph"))  # from the cache: no detection, no warning
    assert orch("deps", "graph").stderr == ""


def test_graph_reads_the_cached_graph(orch: Invoke, registry: RegistryDir) -> None:
    ok(orch("deps", "detect"))
    commit(repo(registry, "web"), {"requirements.txt": "acme-api\n"})
    assert "web -> api" not in ok(orch("deps", "graph"))  # not detected again
    ok(orch("deps", "detect"))
    assert "web -> api" in ok(orch("deps", "graph"))


def test_graph_json_has_nodes_edges_with_evidence_and_cycles(orch: Invoke) -> None:
    data = json.loads(ok(orch("deps", "graph", "--json")))
    assert set(data) == {"nodes", "edges", "cycles"}
    assert data["cycles"] == []
    for edge in data["edges"]:
        assert set(edge) == {"consumer", "provider", "evidence"}
        assert isinstance(edge["evidence"], list) and edge["evidence"]
    by_pair = {(e["consumer"], e["provider"]): e["evidence"] for e in data["edges"]}
    assert by_pair[("api", "core")] == [
        {"file": "pyproject.toml", "line": 5, "text": "acme-core>=1", "via": "package"}
    ]
    assert by_pair[("worker", "core")][0]["version_mismatch"] == MISMATCH


def test_graph_mermaid_and_dot(orch: Invoke) -> None:
    mermaid = ok(orch("deps", "graph", "--mermaid")).splitlines()
    assert mermaid[0] == "graph LR"
    for line in ("  api --> core", "  cli --> api", "  cli --> worker", "  worker -.-> core"):
        assert line in mermaid
    assert "  web" in mermaid

    dot = ok(orch("deps", "graph", "--dot"))
    assert dot.startswith("digraph dependencies {")
    for consumer, provider in (("api", "core"), ("cli", "api"), ("cli", "worker")):
        assert f'"{consumer}" -> "{provider}" [label="package"];' in dot
    assert '"worker" -> "core" [label="package" style="dashed" color="red"];' in dot


def test_graph_prints_cycles(orch: Invoke, registry: RegistryDir) -> None:
    commit(repo(registry, "core"), {"requirements.txt": "acme-worker\n"})
    result = orch("deps", "graph")
    assert "core -> worker" in ok(result)
    assert "cycle: core -> worker -> core" in result.stderr


# --- orch deps why -------------------------------------------------------------------------------


def test_why_prints_each_shortest_chain_with_evidence(orch: Invoke) -> None:
    out = ok(orch("deps", "why", "cli", "core"))
    assert out.splitlines() == [
        "cli -> api -> core",
        "  cli -> api: requirements.txt:2: acme-api",
        "  api -> core: pyproject.toml:5: acme-core>=1",
        "cli -> worker -> core",
        "  cli -> worker: requirements.txt:3: acme-worker",
        "  worker -> core: setup.cfg:6: acme-core>=2",
    ]
    assert ok(orch("deps", "why", "api", "core")).splitlines()[0] == "api -> core"


def test_why_a_project_that_does_not_depend_exits_1(orch: Invoke) -> None:
    result = orch("deps", "why", "core", "cli")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: core does not depend on cli"
    assert orch("deps", "why", "web", "core").exit_code == 1


def test_why_an_unknown_project_exits_1_naming_the_known_ones(orch: Invoke) -> None:
    result = orch("deps", "why", "cli", "nowhere")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no project named 'nowhere' in the graph (projects: api, cli, core, web, worker)"
    )


# --- orch affected -------------------------------------------------------------------------------


def tag_all(registry: RegistryDir, tag: str) -> None:
    for name in ("core", "api", "worker", "cli", "web"):
        git(repo(registry, name), "tag", tag)


def rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["PROJECT", "REASON"]
    return [line.split(None, 1) for line in lines[1:]]


def test_affected_since_a_tag_lists_the_changed_provider_then_its_consumers(
    orch: Invoke, registry: RegistryDir
) -> None:
    tag_all(registry, "v1")
    commit(repo(registry, "core"), {"CHANGELOG": "one\n"})
    commit(repo(registry, "core"), {"CHANGELOG": "two\n"})

    assert rows(ok(orch("affected", "--since", "v1"))) == [
        ["core", "changed: 2 new commit(s) on main"],
        ["api", "depends on core"],
        ["worker", "depends on core"],
        ["cli", "depends on api, worker"],
    ]


def test_affected_json(orch: Invoke, registry: RegistryDir) -> None:
    tag_all(registry, "v1")
    commit(repo(registry, "api"), {"CHANGELOG": "api\n"})
    data = json.loads(ok(orch("affected", "--since", "v1", "--json")))
    assert data == {
        "since": "v1",
        "changed": ["api"],
        "affected": [
            {"project": "api", "reason": "changed: 1 new commit(s) on main"},
            {"project": "cli", "reason": "depends on api"},
        ],
    }


def test_affected_since_a_date(orch: Invoke, registry: RegistryDir) -> None:
    commit(repo(registry, "worker"), {"CHANGELOG": "now\n"})
    commit(repo(registry, "web"), {"CHANGELOG": "now\n"})
    data = json.loads(ok(orch("affected", "--since", "2020-01-01", "--json")))
    assert data["changed"] == ["web", "worker"]
    assert [a["project"] for a in data["affected"]] == ["web", "worker", "cli"]
    assert data["affected"][2] == {"project": "cli", "reason": "depends on worker"}

    everything = json.loads(ok(orch("affected", "--since", "2019-01-01", "--json")))
    assert everything["changed"] == ["api", "cli", "core", "web", "worker"]
    assert [a["project"] for a in everything["affected"]][:1] == ["core"]
    assert json.loads(ok(orch("affected", "--since", "3 days ago", "--json")))["changed"] == [
        "web",
        "worker",
    ]


def test_affected_since_nothing_known_exits_1(orch: Invoke) -> None:
    result = orch("affected", "--since", "not-a-ref-or-date")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --since 'not-a-ref-or-date' is not a date (2026-11-01, '3 days ago') and no "
        "project's repository has such a ref"
    )


def test_affected_with_no_change_lists_nothing(orch: Invoke, registry: RegistryDir) -> None:
    tag_all(registry, "v1")
    data = json.loads(ok(orch("affected", "--since", "v1", "--json")))
    assert data == {"since": "v1", "changed": [], "affected": []}


def test_a_repository_removed_after_loading_is_never_counted_as_changed(
    registry: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = registry.load()
    elsewhere = registry.root / "elsewhere"
    elsewhere.mkdir()
    git(elsewhere, "init", "-q", "-b", "main")
    commit(elsewhere, {"file": "recent\n"})
    monkeypatch.chdir(elsewhere)
    shutil.rmtree(repo(registry, "web"))
    assert changed_projects(loaded.projects, "2020-01-01", registry.settings) == {}


# --- orch task add --propagate -------------------------------------------------------------------


def propagate(orch: Invoke, project: str, prompt: str) -> list[tuple[str, str]]:
    result = orch("task", "add", project, prompt, "--propagate")
    lines = [line.split() for line in ok(result).splitlines()]
    assert all(len(line) == 2 and is_task_id(line[0]) for line in lines), result.stdout
    assert f": {len(lines)} task(s)" in result.stderr
    return [(task_id, name) for task_id, name in lines]


def plan(store: TaskStore, projects: list[str]):
    tasks = store.tasks()
    return plan_dispatch(
        [t for t in tasks if t.status is TaskStatus.QUEUED], {t.id: t for t in tasks}, projects
    )


PROJECTS = ["api", "cli", "core", "web", "worker"]


def test_propagate_queues_a_linked_task_in_every_transitive_consumer(
    orch: Invoke, store: TaskStore
) -> None:
    created = propagate(orch, "core", "Rename acme_core.parse to acme_core.read")

    assert [name for _, name in created] == ["core", "api", "worker", "cli"]
    task = {name: store.get(task_id) for task_id, name in created}
    assert all(t is not None for t in task.values())
    origin = task["core"]
    assert origin.after == () and origin.source == "cli"
    assert task["api"].after == (origin.id,)
    assert task["worker"].after == (origin.id,)
    assert task["cli"].after == (task["api"].id, task["worker"].id)
    sessions = {t.session for t in task.values()}
    assert len(sessions) == 1 and sessions != {None} and sessions != {""}
    for name in ("api", "worker", "cli"):
        assert task[name].source == "propagate"
        assert "Rename acme_core.parse to acme_core.read" in task[name].prompt
        assert origin.id in task[name].prompt
    assert store.tasks(project="web") == []

    shown = json.loads(ok(orch("task", "show", task["cli"].id, "--json")))
    assert shown["session"] == origin.session
    assert shown["after"] == [task["api"].id, task["worker"].id]


def test_propagate_from_a_project_nobody_uses_queues_one_task(
    orch: Invoke, store: TaskStore
) -> None:
    ((task_id, name),) = propagate(orch, "cli", "Add --verbose")
    assert name == "cli" and store.require(task_id).session


def test_dispatch_runs_the_providers_task_first(orch: Invoke, store: TaskStore) -> None:
    created = {name: task_id for task_id, name in propagate(orch, "core", "Bump to 2.0")}

    first = plan(store, PROJECTS)
    assert [t.id for t in first.runnable] == [created["core"]] and first.blocked == ()

    store.claim(created["core"], "run-1")
    store.finish(created["core"], TaskStatus.SUCCEEDED)
    second = plan(store, PROJECTS)
    assert [t.project for t in second.runnable] == ["api", "worker"]

    for name in ("api", "worker"):
        store.claim(created[name], f"run-{name}")
        store.finish(created[name], TaskStatus.SUCCEEDED)
    assert [t.project for t in plan(store, PROJECTS).runnable] == ["cli"]


def test_a_failed_providers_task_blocks_every_consumer(orch: Invoke, store: TaskStore) -> None:
    created = {name: task_id for task_id, name in propagate(orch, "core", "Bump to 2.0")}
    store.claim(created["core"], "run-1")
    store.finish(created["core"], TaskStatus.FAILED, "the agent gave up")

    first = plan(store, PROJECTS)
    assert first.runnable == ()
    assert {t.project: reason for t, reason in first.blocked} == {
        "api": f"prerequisite task {created['core']} failed",
        "worker": f"prerequisite task {created['core']} failed",
    }
    for blocked, reason in first.blocked:  # what the dispatch sensor does with the plan
        assert store.block(blocked.id, reason)

    second = plan(store, PROJECTS)
    assert second.runnable == ()
    assert [(t.project, reason) for t, reason in second.blocked] == [
        ("cli", f"prerequisite task {created['api']} blocked")
    ]
    store.block(second.blocked[0][0].id, second.blocked[0][1])
    statuses = {t.project: t.status for t in store.tasks()}
    assert statuses == {
        "core": TaskStatus.FAILED,
        "api": TaskStatus.BLOCKED,
        "worker": TaskStatus.BLOCKED,
        "cli": TaskStatus.BLOCKED,
    }


def test_run_tags_of_a_propagated_task_carry_its_session(
    orch: Invoke, store: TaskStore, registry: RegistryDir
) -> None:
    created = propagate(orch, "core", "Bump to 2.0")
    specs: dict[str, ProjectSpec] = {p.name: p.spec for p in registry.load().projects}
    tasks: list[Task] = [store.require(task_id) for task_id, _ in created]
    for task in tasks:
        tags = task_run_tags(task, specs[task.project])
        assert tags[SESSION_TAG] == tasks[0].session
        assert tags[TASK_TAG] == task.id and tags["project"] == task.project

    plain = store.add("web", "Unrelated")
    assert plain is not None
    assert SESSION_TAG not in task_run_tags(plain, specs["web"])
