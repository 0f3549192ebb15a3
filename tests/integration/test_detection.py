"""Dependency detection over a registry of real git repositories: the cache under ORCH_HOME and
the graph updated after a few commits, reading manifests in this process (libgit2) as git reads
them, a broken repository among good ones, the lineage definitions draw from the detected graph,
the `orchestration/dependencies` asset and its `acyclic` check, the `manifest` assets' metadata,
and a remote project read through its private clone."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import ProjectKeys
from orchestration.defs.orchestration_assets import DEPENDENCIES_KEY
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.dependencies import detection
from orchestration.dependencies.detection import (
    DetectionCache,
    ScanOutcome,
    detect,
    detection_warnings,
)
from orchestration.dependencies.graph import DependencyGraph
from orchestration.dependencies.limits import MAX_MANIFEST_BYTES
from orchestration.dependencies.objects import branch_commit, read_files_in_process
from orchestration.dependencies.parsers import SKIPPED_DIRECTORIES, ManifestSelection
from orchestration.registry import Registry
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.workspace.git import read_branch_sha, read_tree_files
from tests.support.git import commit, git, make_git_repo
from tests.support.registry import RegistryDir

CORE = '[project]\nname = "Acme_Core"\nversion = "1.0.0"\n'
API = '[project]\nname = "acme-api"\nversion = "0.3.0"\ndependencies = [\n  "acme-core>=2",\n]\n'
CLI = "acme-api\nclick>=8\n"
WEB = '{\n  "name": "@acme/web",\n  "version": "2.0.0",\n  "dependencies": {"react": "^18"}\n}\n'


def add_project(registry_dir: RegistryDir, name: str, files: Mapping[str, str]) -> Path:
    repo = make_git_repo(registry_dir.root / "repos" / name, files)
    registry_dir.project(name, repo=str(repo))
    return repo


def outcome(outcomes: Mapping[str, ScanOutcome | str], project: str) -> ScanOutcome:
    found = outcomes[project]
    assert isinstance(found, ScanOutcome), found
    return found


def pairs(graph: DependencyGraph) -> set[tuple[str, str]]:
    return {(e.consumer, e.provider) for e in graph.edges}


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a folder that is no git repository, so no git command can reach another one."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def four(registry_dir: RegistryDir) -> RegistryDir:
    """core <- api <- cli (Python), and web (npm) depending on no project."""
    add_project(registry_dir, "core", {"pyproject.toml": CORE})
    add_project(registry_dir, "api", {"pyproject.toml": API})
    add_project(registry_dir, "cli", {"requirements.txt": CLI})
    add_project(registry_dir, "web", {"package.json": WEB})
    return registry_dir


def load(registry_dir: RegistryDir) -> Registry:
    registry = registry_dir.load()
    assert registry.errors == ()
    return registry


# --- the cache -------------------------------------------------------------------------------


def test_detect_writes_the_graph_and_a_second_run_parses_nothing(four: RegistryDir) -> None:
    registry, settings = load(four), four.settings
    graph, outcomes = detect(registry.projects, settings)

    assert pairs(graph) == {("api", "core"), ("cli", "api")}
    assert sorted(outcomes) == ["api", "cli", "core", "web"]
    assert all(not outcome(outcomes, p).cached for p in outcomes)
    assert outcome(outcomes, "core").scan.commit == git(
        four.root / "repos" / "core", "rev-parse", "HEAD"
    )
    cached_file = settings.home / "cache" / "dependencies" / "graph.json"
    written = json.loads(cached_file.read_text())
    assert len(written.pop("inputs")) == 64  # the digest of what the graph was built from
    assert written == json.loads(json.dumps(graph.to_json()))
    assert DetectionCache(settings.home).load_graph() == graph

    again, outcomes = detect(registry.projects, settings)
    assert {p: outcome(outcomes, p).cached for p in outcomes} == dict.fromkeys(outcomes, True)
    assert again.to_json() == graph.to_json()


def test_a_new_commit_in_one_repository_parses_only_that_one(four: RegistryDir) -> None:
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    web = json.loads(WEB)
    web["dependencies"]["acme-core"] = "1.0.0"  # not a Python project: no edge
    web["devDependencies"] = {"@acme/web-kit": "^1"}
    sha = commit(four.root / "repos" / "web", {"package.json": json.dumps(web, indent=2)})
    commit(four.root / "repos" / "cli", {"setup.cfg": "[metadata]\nname = acme-cli\n"})
    add_project(four, "kit", {"package.json": '{"name": "@acme/web-kit", "version": "1.2.0"}'})
    git(four.root / "repos" / "cli", "reset", "-q", "--hard", "HEAD~1")  # back where it was

    graph, outcomes = detect(load(four).projects, settings)

    cached = {p: outcome(outcomes, p).cached for p in outcomes}
    assert cached == {"core": True, "api": True, "cli": True, "web": False, "kit": False}
    assert outcome(outcomes, "web").scan.commit == sha
    assert pairs(graph) == {("api", "core"), ("cli", "api"), ("web", "kit")}
    edge = graph.edge("web", "kit")
    assert edge is not None
    (evidence,) = edge.evidence
    assert (evidence.file, evidence.line, evidence.via) == ("package.json", 9, "package")
    assert evidence.text == '"@acme/web-kit": "^1"'


def test_only_rescans_the_named_projects(four: RegistryDir) -> None:
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    commit(four.root / "repos" / "web", {"requirements.txt": "acme-api\n"})
    commit(four.root / "repos" / "cli", {"requirements.txt": "click\n"})

    graph, outcomes = detect(registry.projects, settings, only=["web"])

    assert sorted(outcomes) == ["web"] and not outcome(outcomes, "web").cached
    # cli's new commit is not read: its last scan still counts
    assert pairs(graph) == {("api", "core"), ("cli", "api"), ("web", "api")}


def scan_files_of(home: Path) -> dict[str, list[str]]:
    """project -> the commits whose scans are cached for it."""
    root = DetectionCache(home).scans_dir
    return {d.name: sorted(f.stem for f in d.iterdir()) for d in sorted(root.iterdir())}


def test_each_project_has_its_own_scan_file_and_a_commit_replaces_only_its_own(
    four: RegistryDir,
) -> None:
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    heads = {p: git(four.root / "repos" / p, "rev-parse", "HEAD") for p in ("api", "cli", "core")}
    first = scan_files_of(settings.home)
    assert first == {p: [git(four.root / "repos" / p, "rev-parse", "HEAD")] for p in first}
    stamps = {
        p.name: p.stat().st_mtime_ns
        for p in DetectionCache(settings.home).scans_dir.rglob("*.json")
    }

    sha = commit(four.root / "repos" / "web", {"requirements.txt": "acme-api\n"})
    detect(registry.projects, settings)

    assert scan_files_of(settings.home) == {**first, "web": [sha]}  # the old web scan is gone
    for project, head in heads.items():  # the others' files were not rewritten
        path = DetectionCache(settings.home).scan_path(project, head)
        assert path.stat().st_mtime_ns == stamps[path.name]


def test_a_detection_in_which_nothing_changed_reads_no_scan(
    four: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, settings = load(four), four.settings
    graph, _ = detect(registry.projects, settings)
    reads: list[str] = []
    real_load = DetectionCache.load_scan

    def counting(self: DetectionCache, project: str, commit: str) -> object:
        reads.append(project)
        return real_load(self, project, commit)

    monkeypatch.setattr(DetectionCache, "load_scan", counting)
    again, outcomes = detect(registry.projects, settings)
    assert again == graph and reads == []
    assert outcome(outcomes, "web").scan.project == "web"  # read when asked for
    assert reads == ["web"]

    reads.clear()
    four.project("docs", "depends_on: [web]\n")  # a new input: the graph is built again
    rebuilt, _ = detect(load(four).projects, settings)
    assert ("docs", "web") in pairs(rebuilt)
    assert sorted(reads) == ["api", "cli", "core", "web"]


def test_a_branch_moved_into_packed_refs_is_seen(four: RegistryDir) -> None:
    """An unchanged repository is known by its loose ref file's stamp; a ref moved while its
    loose file went into `packed-refs` (a commit, then `git pack-refs`) is still seen."""
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    web = four.root / "repos" / "web"
    git(web, "pack-refs", "--all")  # the loose ref is gone, the branch where it was
    graph, outcomes = detect(registry.projects, settings)
    assert all(outcome(outcomes, p).cached for p in outcomes)

    sha = commit(web, {"README.md": "moved\n"})
    git(web, "pack-refs", "--all")
    assert not (web / ".git" / "refs" / "heads" / "main").exists()
    again, outcomes = detect(registry.projects, settings)
    assert outcome(outcomes, "web").scan.commit == sha
    assert not outcome(outcomes, "web").cached
    assert again == graph


def test_a_removed_scan_the_graph_needs_is_made_again(four: RegistryDir) -> None:
    """A scan removed by hand from the cache, of a project whose ref did not move, is made
    again when a commit elsewhere needs it; the graph equals a full build."""
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    cache = DetectionCache(settings.home)
    shutil.rmtree(cache.scans_dir / "api")
    sha = commit(four.root / "repos" / "core", {"pyproject.toml": CORE.replace("1.0.0", "2.1.0")})

    graph, outcomes = detect(registry.projects, settings)

    assert not outcome(outcomes, "api").cached
    assert outcome(outcomes, "core").scan.commit == sha
    fresh = replace(settings, home=settings.home / "fresh")
    assert graph == detect(registry.projects, fresh)[0]
    assert ("api", "core") in pairs(graph)


def test_the_single_scan_index_of_earlier_versions_is_removed(four: RegistryDir) -> None:
    cache_dir = four.settings.home / "cache" / "dependencies"
    cache_dir.mkdir(parents=True)
    (cache_dir / "scans.json").write_text('{"version": 3, "projects": {}}')
    (cache_dir / "scans-v3").mkdir()
    graph, _ = detect(load(four).projects, four.settings)
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        ".lock",
        "graph-inputs.json",
        "graph.json",
        "scans-v4",
    ]
    assert pairs(graph) == {("api", "core"), ("cli", "api")}


def counting_scan_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The projects whose cached scans detection reads from now on, in order."""
    reads: list[str] = []
    real_load = DetectionCache.load_scan

    def counting(self: DetectionCache, project: str, commit: str) -> object:
        reads.append(project)
        return real_load(self, project, commit)

    monkeypatch.setattr(DetectionCache, "load_scan", counting)
    return reads


def detect_afresh(registry_dir: RegistryDir, home: Path) -> DependencyGraph:
    """The graph a detection with an empty cache finds."""
    return detect(load(registry_dir).projects, replace(registry_dir.settings, home=home))[0]


def test_a_commit_matches_again_only_its_project_and_the_consumers_of_its_packages(
    four: RegistryDir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    reads = counting_scan_reads(monkeypatch)

    # core 2.0.0 satisfies api's `acme-core>=2`: api's evidence changes, cli and web are untouched
    commit(four.root / "repos" / "core", {"pyproject.toml": CORE.replace("1.0.0", "2.0.0")})
    graph, outcomes = detect(registry.projects, settings)

    assert reads == ["api"]  # core was just parsed; only api requires one of its packages
    assert [p for p in outcomes if not outcome(outcomes, p).cached] == ["core"]
    edge = graph.edge("api", "core")
    assert edge is not None and edge.version_mismatches == ()
    assert graph.to_json() == detect_afresh(four, tmp_path / "fresh-1").to_json()

    # web now requires acme-api and provides what cli requires: both sides are matched again
    reads.clear()
    commit(
        four.root / "repos" / "web",
        {"requirements.txt": "acme-api\n", "setup.cfg": "[metadata]\nname = click\n"},
    )
    graph, _ = detect(registry.projects, settings)

    assert sorted(reads) == ["cli"]
    assert pairs(graph) == {("api", "core"), ("cli", "api"), ("cli", "web"), ("web", "api")}
    assert graph.to_json() == detect_afresh(four, tmp_path / "fresh-2").to_json()
    assert DetectionCache(settings.home).load_graph() == graph


@pytest.mark.parametrize("damage", ["not JSON", "rows cut short"])
def test_without_what_the_graph_was_built_from_every_scan_is_read_again(
    four: RegistryDir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str
) -> None:
    registry, settings = load(four), four.settings
    detect(registry.projects, settings)
    inputs = DetectionCache(settings.home).inputs_path
    if damage == "not JSON":
        inputs.write_text("{not json", encoding="utf-8")
    else:
        data = json.loads(inputs.read_text(encoding="utf-8"))
        data["packages"]["core"] = [["python"]]
        inputs.write_text(json.dumps(data), encoding="utf-8")
    reads = counting_scan_reads(monkeypatch)

    commit(four.root / "repos" / "web", {"requirements.txt": "acme-core\n"})
    graph, _ = detect(registry.projects, settings)

    assert sorted(reads) == ["api", "cli", "core"]
    assert pairs(graph) == {("api", "core"), ("cli", "api"), ("web", "core")}
    assert graph.to_json() == detect_afresh(four, tmp_path / "fresh").to_json()


# --- reading manifests in this process ----------------------------------------------------------


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection reads every repository with libgit2, however few there are."""
    monkeypatch.setattr(detection, "READ_BY_GIT", 0)


def odd_repository(root: Path) -> tuple[Path, str]:
    """A repository with what reading must get right: manifests in folders, in skipped folders
    and executable, a link, a submodule, an oversized manifest, files that are no manifest."""
    repo = make_git_repo(
        root,
        {
            "package.json": WEB,
            "README.md": "odd\n",
            "packages/a/package.json": '{"name": "a"}',
            "packages/a/node_modules/dep/package.json": '{"name": "dep"}',
            "build/requirements.txt": "built\n",
            "tools/requirements.txt": "click\n",
            "big/requirements.txt": "x>=1\n" * (MAX_MANIFEST_BYTES // 5 + 1),
            "src/z/go.mod": "module example.com/z\n",
        },
    )
    (repo / "docs").mkdir()
    (repo / "docs" / "pyproject.toml").symlink_to("../package.json")
    (repo / "tools" / "requirements.txt").chmod(0o755)
    git(repo, "add", "-A")
    gitlink = f"160000,{git(repo, 'rev-parse', 'HEAD')},vendor/lib"
    git(repo, "update-index", "--add", "--cacheinfo", gitlink)
    git(repo, "commit", "-q", "--no-gpg-sign", "-m", "odd")
    return repo, git(repo, "rev-parse", "HEAD")


def test_reading_in_process_offers_and_gives_what_git_does(tmp_path: Path) -> None:
    repo, sha = odd_repository(tmp_path / "odd")
    offered: dict[str, list[tuple[str, str, int]]] = {"git": [], "here": []}
    selections = {"git": ManifestSelection(), "here": ManifestSelection()}

    def recording(reader: str) -> Callable[[str, str, int], bool]:
        def wanted(path: str, mode: str, size: int) -> bool:
            offered[reader].append((path, mode, size))
            return selections[reader](path, mode, size)

        return wanted

    by_git = read_tree_files(repo, sha, recording("git"), SKIPPED_DIRECTORIES)
    here = read_files_in_process(repo, sha, recording("here"), SKIPPED_DIRECTORIES)

    assert here == by_git
    assert offered["here"] == offered["git"]
    assert sorted(here) == [
        "package.json",
        "packages/a/package.json",
        "src/z/go.mod",
        "tools/requirements.txt",
    ]
    assert selections["here"].skipped() == selections["git"].skipped()
    assert sorted(selections["here"].skipped()) == ["big/requirements.txt", "docs/pyproject.toml"]
    modes = {path: mode for path, mode, _ in offered["here"]}
    assert (modes["docs/pyproject.toml"], modes["tools/requirements.txt"]) == ("120000", "100755")
    assert not [path for path in modes if path.startswith(("vendor", "build/", "packages/a/node_"))]


def test_reading_in_process_declines_what_libgit2_cannot_read(tmp_path: Path) -> None:
    repo, sha = odd_repository(tmp_path / "odd")
    assert read_files_in_process(repo, "0" * 40, ManifestSelection()) is None  # no such commit
    assert read_files_in_process(tmp_path / "nowhere", sha, ManifestSelection()) is None
    shutil.rmtree(repo / ".git" / "objects")
    assert read_files_in_process(repo, sha, ManifestSelection()) is None


def test_the_branch_is_read_from_its_ref_as_git_reads_it(tmp_path: Path) -> None:
    repo, sha = odd_repository(tmp_path / "odd")
    assert branch_commit(repo, "main") == sha == read_branch_sha(repo, "main")
    git(repo, "pack-refs", "--all")  # no loose ref left: packed-refs is read
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert branch_commit(repo, "main") == sha
    assert branch_commit(repo, "nothing") is None
    worktree = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    assert branch_commit(worktree, "side") == sha == branch_commit(repo, "side")


@pytest.mark.usefixtures("in_process")
def test_detection_in_process_finds_what_git_finds(four: RegistryDir, tmp_path: Path) -> None:
    registry, settings = load(four), four.settings
    graph, outcomes = detect(registry.projects, settings)

    by_git = replace(settings, home=tmp_path / "by-git")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(detection, "READ_BY_GIT", 1_000_000)
        expected, expected_outcomes = detect(registry.projects, by_git)

    assert graph.to_json() == expected.to_json()
    assert {p: outcome(outcomes, p).scan for p in outcomes} == {
        p: outcome(expected_outcomes, p).scan for p in expected_outcomes
    }


@pytest.mark.usefixtures("in_process")
def test_a_repository_libgit2_cannot_read_is_read_by_git(four: RegistryDir) -> None:
    registry = load(four)
    shutil.rmtree(four.root / "repos" / "cli" / ".git" / "objects")
    graph, outcomes = detect(registry.projects, four.settings)

    error = outcomes["cli"]
    assert isinstance(error, str) and error.startswith("GitError:") and "repos/cli" in error
    assert pairs(graph) == {("api", "core")}


# --- broken repositories -----------------------------------------------------------------------


def test_an_oversized_manifest_is_left_out_and_the_rest_of_its_project_counts(
    four: RegistryDir,
) -> None:
    huge = '{"name": "@acme/web", "version": "2.0.0", "description": "' + "x" * (2 << 20) + '"}'
    commit(four.root / "repos" / "web", {"package.json": huge, "requirements.txt": "acme-api\n"})
    graph, outcomes = detect(load(four).projects, four.settings)

    scan = outcome(outcomes, "web").scan
    assert [m.path for m in scan.manifests] == ["package.json", "requirements.txt"]
    assert scan.problems == (
        "package.json: not read: 2.0 MiB is over the 1 MiB limit for one manifest, so its "
        "dependencies are not counted (keep generated or vendored files out of manifests)",
    )
    assert pairs(graph) == {("api", "core"), ("cli", "api"), ("web", "api")}
    scan_file = DetectionCache(four.settings.home).scan_path("web", scan.commit or "")
    assert scan_file.stat().st_size < 10_000


def test_a_corrupt_manifest_is_a_problem_and_the_others_still_detect(four: RegistryDir) -> None:
    commit(four.root / "repos" / "web", {"package.json": '{"name": "@acme/web",'})
    graph, outcomes = detect(load(four).projects, four.settings)

    (problem,) = outcome(outcomes, "web").scan.problems
    assert problem.startswith("package.json: not valid JSON")
    assert pairs(graph) == {("api", "core"), ("cli", "api")}


def test_warnings_name_each_failure_and_a_bounded_number_of_new_problems(
    four: RegistryDir,
) -> None:
    broken = "".join(f"bad{index} >=> 1\n" for index in range(15))
    commit(four.root / "repos" / "cli", {"requirements.txt": broken})
    registry = load(four)
    shutil.rmtree(four.root / "repos" / "web" / ".git" / "objects")
    _, outcomes = detect(registry.projects, four.settings)

    warnings = detection_warnings(outcomes)

    assert [w for w in warnings if w.startswith("web: ")][0].startswith("web: GitError:")
    cli = [w for w in warnings if w.startswith("cli: ")]
    assert len(cli) == 11
    assert cli[0].startswith("cli: requirements.txt:1: 'bad0 >=> 1' is not a valid requirement")
    assert cli[-1] == (
        "cli: and 5 more manifest problems (the project's `manifest` asset lists them all)"
    )
    _, again = detect(registry.projects, four.settings)  # cli unchanged: said already
    assert not [w for w in detection_warnings(again) if w.startswith("cli: ")]


def test_an_unreadable_repository_is_an_error_and_the_others_still_detect(
    four: RegistryDir,
) -> None:
    registry = load(four)
    shutil.rmtree(four.root / "repos" / "cli" / ".git" / "objects")
    graph, outcomes = detect(registry.projects, four.settings)

    error = outcomes["cli"]
    assert isinstance(error, str) and "repos/cli" in error
    assert {p for p, o in outcomes.items() if isinstance(o, ScanOutcome)} == {"core", "api", "web"}
    assert pairs(graph) == {("api", "core")}


def test_a_repository_removed_after_loading_does_not_stop_the_others(four: RegistryDir) -> None:
    registry = load(four)
    shutil.rmtree(four.root / "repos" / "cli")
    graph, outcomes = detect(registry.projects, four.settings)
    assert pairs(graph) == {("api", "core")}
    assert all(isinstance(outcomes[p], ScanOutcome) for p in ("core", "api", "web"))


def test_a_repository_removed_after_loading_is_reported(four: RegistryDir) -> None:
    registry = load(four)
    shutil.rmtree(four.root / "repos" / "cli")
    _, outcomes = detect(registry.projects, four.settings)
    found = outcomes["cli"]
    message = found if isinstance(found, str) else " ".join(found.scan.problems)
    assert "repos/cli" in message


# --- lineage in the definitions ---------------------------------------------------------------


def parents(defs: dg.Definitions, key: dg.AssetKey) -> set[dg.AssetKey]:
    return set(defs.resolve_asset_graph().get(key).parent_keys)


def test_definitions_draw_lineage_from_the_detected_graph(four: RegistryDir) -> None:
    registry = load(four)
    api, cli, core = ProjectKeys("api"), ProjectKeys("cli"), ProjectKeys("core")
    before = build_definitions(registry)
    assert parents(before, api.verification) == {api.source}

    detect(registry.projects, four.settings)
    defs = build_definitions(registry)

    assert parents(defs, api.verification) == {api.source, core.source}
    assert parents(defs, cli.verification) == {cli.source, api.source}
    assert parents(defs, core.verification) == {core.source}
    assert parents(defs, api.manifest) == {api.source}


def test_detected_lineage_survives_a_declared_dependency_elsewhere(four: RegistryDir) -> None:
    four.project("docs", "depends_on: [web]\n")
    registry = load(four)
    detect(registry.projects, four.settings)
    assert DetectionCache(four.settings.home).load_graph() is not None
    defs = build_definitions(registry)
    assert ProjectKeys("core").source in parents(defs, ProjectKeys("api").verification)


@pytest.fixture
def state_env(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ORCH_* for the resources, which read the registry location at run time."""
    settings = registry_dir.settings
    monkeypatch.setenv(PROJECTS_DIR_VAR, str(settings.projects_dir))
    monkeypatch.setenv(CONFIG_DIR_VAR, str(settings.config_dir))
    monkeypatch.setenv(HOME_VAR, str(settings.home))
    return settings.home


def materialize(
    defs: dg.Definitions, key: dg.AssetKey, home: Path, selection: list[dg.AssetKey] | None = None
) -> dg.ExecuteInProcessResult:
    assert isinstance(defs.resources["workspaces"], ProjectWorkspaces)
    result = dg.materialize(
        [defs.get_assets_def(key)],
        selection=selection or [key],
        resources={"workspaces": ProjectWorkspaces(home=str(home))},
        raise_on_error=False,
    )
    assert result.success
    return result


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    assert event.materialization is not None
    return {k: v.value for k, v in event.materialization.metadata.items()}


ALPHA = "[metadata]\nname = alpha-lib\nversion = 1.0\n"
BETA = '[project]\nname = "beta-lib"\nversion = "1.0"\ndependencies = ["alpha-lib"]\n'


def test_a_cycle_still_loads_and_fails_the_acyclic_check(
    registry_dir: RegistryDir, state_env: Path
) -> None:
    add_project(registry_dir, "alpha", {"requirements.txt": "beta-lib\n", "setup.cfg": ALPHA})
    add_project(registry_dir, "beta", {"pyproject.toml": BETA})
    registry = load(registry_dir)
    graph, _ = detect(registry.projects, registry_dir.settings)
    assert graph.cycles == (("alpha", "beta", "alpha"),)

    defs = build_definitions(registry)
    alpha, beta = ProjectKeys("alpha"), ProjectKeys("beta")
    assert parents(defs, alpha.verification) == {alpha.source, beta.source}
    assert parents(defs, beta.verification) == {beta.source, alpha.source}
    dependencies = defs.get_assets_def(DEPENDENCIES_KEY)
    assert "alpha -> beta -> alpha" in (
        dependencies.specs_by_key[DEPENDENCIES_KEY].description or ""
    )

    result = materialize(defs, DEPENDENCIES_KEY, state_env)

    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "acyclic" and not check.passed
    assert check.metadata["cycles"].value == [["alpha", "beta", "alpha"]]
    assert check.description == "alpha -> beta -> alpha"
    found = metadata(result, DEPENDENCIES_KEY)
    assert (found["projects"], found["edges"], found["cycles"], found["parsed"]) == (2, 2, 1, 0)


def test_the_acyclic_check_passes_without_a_cycle(four: RegistryDir, state_env: Path) -> None:
    defs = build_definitions(load(four))
    result = materialize(defs, DEPENDENCIES_KEY, state_env)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["cycles"].value == []
    found = metadata(result, DEPENDENCIES_KEY)
    assert (found["projects"], found["edges"], found["parsed"]) == (4, 2, 4)
    assert found["failed"] == {}
    assert (state_env / "cache" / "dependencies" / "graph.json").is_file()


def test_the_manifest_asset_lists_dependencies_consumers_and_mismatches(
    four: RegistryDir, state_env: Path
) -> None:
    registry = load(four)
    detect(registry.projects, four.settings)
    defs = build_definitions(registry)
    api = ProjectKeys("api")

    result = materialize(defs, api.source, state_env, selection=[api.manifest])
    found = metadata(result, api.manifest)

    mismatch = "requires >=2, but acme-core is at 1.0.0 (pyproject.toml)"
    assert found["depends_on"] == {
        "core": [
            {
                "file": "pyproject.toml",
                "line": 5,
                "text": "acme-core>=2",
                "via": "package",
                "version_mismatch": mismatch,
            }
        ]
    }
    assert found["used_by"] == ["cli"]
    assert found["version_mismatches"] == [mismatch]
    assert found["provides"] == ["acme-api"]
    assert found["cached"] is True  # detection above already scanned this commit
    assert found["commit"] == git(four.root / "repos" / "api", "rev-parse", "HEAD")
    assert found["problems"] == [] and found["cycles"] == []
    assert "`pyproject.toml` | python | acme-api | 1 |" in str(found["manifests"])


def test_the_manifest_asset_shows_a_manifest_left_out_by_a_cap(
    four: RegistryDir, state_env: Path
) -> None:
    registry = load(four)
    detect(registry.projects, four.settings)
    big = "".join(f"package-number-{index} >= 1.0\n" for index in range(60_000))
    commit(four.root / "repos" / "api", {"requirements.txt": big})
    defs = build_definitions(registry)
    api = ProjectKeys("api")

    found = metadata(
        materialize(defs, api.source, state_env, selection=[api.manifest]), api.manifest
    )

    assert found["problems"] == [
        "requirements.txt: not read: 1.6 MiB is over the 1 MiB limit for one manifest, so its "
        "dependencies are not counted (keep generated or vendored files out of manifests)"
    ]
    assert found["cached"] is False
    assert list(found["depends_on"]) == ["core"]  # pyproject.toml still requires acme-core
    assert "`requirements.txt` | python |  | 0 |" in str(found["manifests"])


# --- a remote project --------------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["git", "libgit2"])
def test_a_remote_project_is_fetched_into_its_private_clone(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    if reader == "libgit2":
        monkeypatch.setattr(detection, "READ_BY_GIT", 0)
    work = make_git_repo(registry_dir.root / "upstream" / "core", {"pyproject.toml": CORE})
    bare = registry_dir.root / "remote" / "core.git"
    git(registry_dir.root, "clone", "-q", "--bare", str(work), str(bare))
    registry_dir.project("core", repo=f"file://{bare}")
    add_project(registry_dir, "api", {"pyproject.toml": API})
    gitmodules = f'[submodule "core"]\n\tpath = core\n\turl = file://{bare}\n'
    add_project(registry_dir, "vendor", {".gitmodules": gitmodules})
    registry = load(registry_dir)
    assert registry.project("core").spec.is_remote

    graph, outcomes = detect(registry.projects, registry_dir.settings)

    clone = registry_dir.settings.home / "workspaces" / "core" / "repo.git"
    assert clone.is_dir()
    scan = outcome(outcomes, "core").scan
    assert scan.commit == git(work, "rev-parse", "HEAD")
    assert [p.name for p in scan.packages] == ["acme-core"]
    assert pairs(graph) == {("api", "core"), ("vendor", "core")}
    edge = graph.edge("vendor", "core")
    assert edge is not None and edge.evidence[0].via == "submodule"

    sha = commit(work, {"pyproject.toml": CORE.replace("1.0.0", "2.0.0")})
    git(work, "push", "-q", str(bare), "main")
    graph, outcomes = detect(registry.projects, registry_dir.settings)
    assert outcome(outcomes, "core").scan.commit == sha and not outcome(outcomes, "core").cached
    api_edge = graph.edge("api", "core")
    assert api_edge is not None and api_edge.version_mismatches == ()
