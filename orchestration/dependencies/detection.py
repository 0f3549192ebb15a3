"""Detecting the dependency graph: scan each project's manifests (cached by commit), match them.

This is what the `manifest` assets and `orch deps detect` run. Each project's scan is cached in
its own file, `ORCH_HOME/cache/dependencies/scans-v<N>/<project>/<commit>.json`, so an unchanged
repository costs one ref read and one stat, and one project's scan, however large, never costs
another project's detection. The graph built from all scans is written to `graph.json` beside
them (where definitions read it at load) with a digest of what it was built from, so a
detection in which nothing changed reads no scan at all. `graph.json` is written in one place,
`detect`, which tells its caller when the new graph draws other lineage than the one it
replaced (`on_change`), so the caller can have the asset graph reloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

from filelock import FileLock

from orchestration.dependencies.graph import (
    DependencyGraph,
    LineageChange,
    ProjectInput,
    build_graph,
    lineage_change,
)
from orchestration.dependencies.model import ManifestScan, Package, ProjectScan, Requirement
from orchestration.registry.loader import LoadedProject
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.workspace.git import GitError, GitRepo, read_branch_sha, read_tree_files
from orchestration.workspace.workspace import ProjectWorkspace

#: Bump when what a scan holds, or how the graph is built from scans, changes: both caches are
#: keyed by it. 4: one file per scan, held to the caps of dependencies/limits.py.
CACHE_VERSION = 4
PARSE_WORKERS = 4
#: Problems shown per project by `detection_warnings` (the `manifest` asset shows them all).
WARNINGS_PER_PROJECT = 10


class ScanOutcome:
    """A project's scan and whether it came from the cache.

    A cached scan is read from its file the first time `scan` is asked for, so a detection of
    every project reads no scan nobody looks at.
    """

    def __init__(self, scan: ProjectScan | Callable[[], ProjectScan], *, cached: bool) -> None:
        self.cached = cached
        self._scan = scan if isinstance(scan, ProjectScan) else None
        self._load = None if isinstance(scan, ProjectScan) else scan

    @property
    def scan(self) -> ProjectScan:
        if self._scan is None:
            assert self._load is not None
            self._scan = self._load()
        return self._scan

    def __repr__(self) -> str:
        return f"ScanOutcome(cached={self.cached})"


class DetectionCache:
    """Scans and the last graph, under ORCH_HOME/cache/dependencies.

    One file per project's scan at one commit (the project's older scans are removed when a
    new one is written); `graph.json` holds the graph and the digest of its inputs. Changed
    under an exclusive lock, so that `manifest` runs of several projects can detect at once.
    """

    def __init__(self, home: Path) -> None:
        self.root = home / "cache" / "dependencies"

    @property
    def graph_path(self) -> Path:
        return self.root / "graph.json"

    @property
    def scans_dir(self) -> Path:
        return self.root / f"scans-v{CACHE_VERSION}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):  # exclusive, waits as long as it takes
            self._remove_old_formats()
            yield

    def scan_path(self, project: str, commit: str) -> Path:
        return self.scans_dir / project / f"{commit}.json"

    def has_scan(self, project: str, commit: str) -> bool:
        return self.scan_path(project, commit).is_file()

    def last_commit(self, project: str) -> str | None:
        """The commit of the project's newest cached scan, if any."""
        try:
            found = [p for p in (self.scans_dir / project).iterdir() if p.suffix == ".json"]
        except OSError:
            return None
        if not found:
            return None
        return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name)).stem

    def load_scan(self, project: str, commit: str) -> ProjectScan | None:
        try:
            data = json.loads(self.scan_path(project, commit).read_bytes())
            return _scan_from_dict(data["scan"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_scan(self, scan: ProjectScan) -> None:
        """Write the scan of `scan.commit` and remove the project's older ones."""
        assert scan.commit is not None
        path = self.scan_path(scan.project, scan.commit)
        _write_json(path, {"version": CACHE_VERSION, "scan": asdict(scan)})
        for other in path.parent.iterdir():
            if other != path:
                with suppress(OSError):
                    other.unlink()

    def load_graph(self, inputs: str | None = None) -> DependencyGraph | None:
        """The last graph; None when there is none, or when `inputs` is given and the graph
        was built from other inputs."""
        try:
            data = json.loads(self.graph_path.read_text("utf-8"))
            if inputs is not None and data.get("inputs") != inputs:
                return None
            return DependencyGraph.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save_graph(self, graph: DependencyGraph, inputs: str) -> None:
        _write_json(self.graph_path, {**graph.to_json(), "inputs": inputs})

    def graph_stamp(self) -> tuple[int, int] | None:
        """When `graph.json` was last written and its size (None when there is none): equal
        stamps, same file, so a watcher need not read it again."""
        try:
            stat = self.graph_path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _remove_old_formats(self) -> None:
        """Scan caches of earlier versions (`scans.json` held every project's scan in one file)."""
        for old in self.root.iterdir():
            if old.name == "scans.json" or old.name.startswith(".scans.json."):
                with suppress(OSError):
                    old.unlink()
            elif old.name.startswith("scans-v") and old != self.scans_dir and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


def _branch_tip(spec: ProjectSpec, settings: Settings) -> tuple[Path, str]:
    """Where to read the project's objects from, and the commit its branch points at."""
    if spec.is_remote:
        workspace = ProjectWorkspace(settings.home, spec)
        repo = workspace.sync()
        repo_path, commit = repo.path, repo.resolve(workspace.upstream_ref)
    else:
        repo_path = Path(spec.repo)
        commit = read_branch_sha(repo_path, spec.branch)
        if commit is None:
            commit = GitRepo(repo_path).resolve(f"refs/heads/{spec.branch}")
    if commit is None:
        raise GitError(
            f"{spec.repo}: branch {spec.branch!r} not found (is the repository still there?)"
        )
    return repo_path, commit


def _parse(project: str, repo_path: Path, commit: str) -> ProjectScan:
    """Read and parse the manifests of `commit`, held to the caps of `limits`: what is too
    large, a link, or past the repository's budget is never read, only reported."""
    from orchestration.dependencies.parsers import (
        SKIPPED_DIRECTORIES,
        ManifestSelection,
        scan_files,
    )

    selection = ManifestSelection()
    files = read_tree_files(repo_path, commit, selection, SKIPPED_DIRECTORIES)
    return scan_files(project, files, commit, skipped=selection.skipped())


def detect(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    only: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    on_change: Callable[[LineageChange], None] | None = None,
) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
    """Scan the projects (all, or `only` those, the rest from cache) and rebuild the graph.

    Returns the graph and, per scanned project, its outcome or the error that stopped it: one
    unreadable repository never stops the others. `on_change` hears how the lineage differs
    from the last saved graph's, when it does (once the new graph is saved).
    """
    cache = DetectionCache(settings.home)
    wanted = None if only is None else set(only)
    outcomes: dict[str, ScanOutcome | str] = {}
    with cache.locked():
        projects = list(projects)
        scan_commits: dict[str, str | None] = {}  # the scan each project's graph input uses
        to_parse: dict[str, tuple[Path, str]] = {}
        for project in projects:
            name = project.spec.name
            if wanted is not None and name not in wanted:
                continue
            try:
                repo_path, commit = _branch_tip(project.spec, settings)
                cached = _cached_outcome(cache, name, commit, lazy=wanted is None)
                if cached is not None:
                    outcomes[name] = cached
                    scan_commits[name] = commit
                    if progress is not None:
                        progress(name)
                else:
                    to_parse[name] = (repo_path, commit)
            except Exception as exc:  # one broken repository never stops the others
                outcomes[name] = f"{type(exc).__name__}: {exc}"
        parsed: dict[str, ProjectScan] = {}
        # Reading objects is mostly waiting on git processes: a few at a time overlap well.
        with ThreadPoolExecutor(max_workers=PARSE_WORKERS) as pool:
            futures = {
                pool.submit(_parse, name, path, commit): name
                for name, (path, commit) in to_parse.items()
            }
            for future in as_completed(futures):
                name = futures[future]
                try:
                    scan = future.result()
                    cache.save_scan(scan)
                    parsed[name] = scan
                    scan_commits[name] = scan.commit
                    outcomes[name] = ScanOutcome(scan, cached=False)
                except Exception as exc:  # one broken repository never stops the others
                    outcomes[name] = f"{type(exc).__name__}: {exc}"
                if progress is not None:
                    progress(name)
        for project in projects:
            if project.spec.name not in scan_commits:  # not asked for, or failed: its last scan
                scan_commits[project.spec.name] = cache.last_commit(project.spec.name)
        inputs = _inputs_digest(projects, scan_commits)
        graph = cache.load_graph(inputs)
        change = LineageChange()
        if graph is None:
            graph = build_graph(
                [
                    _project_input(
                        project, _scan_for(project.spec.name, parsed, scan_commits, cache)
                    )
                    for project in projects
                ]
            )
            # The old graph is read only when someone listens (`manifest` runs do not: the
            # `lineage_reload` sensor compares with what its definitions were built from).
            if on_change is not None:
                change = lineage_change(cache.load_graph(), graph)
            cache.save_graph(graph, inputs)
    if change and on_change is not None:
        on_change(change)
    return graph, outcomes


def detection_warnings(outcomes: Mapping[str, ScanOutcome | str]) -> list[str]:
    """What a person running detection should hear: each repository that could not be read,
    and the manifest problems of each repository parsed this time (at most
    `WARNINGS_PER_PROJECT` per project), as `<project>: <message>` lines."""
    warnings: list[str] = []
    for project, outcome in outcomes.items():
        if isinstance(outcome, str):
            warnings.append(f"{project}: {outcome}")
            continue
        if outcome.cached:
            continue
        problems = outcome.scan.problems
        shown = problems[:WARNINGS_PER_PROJECT]
        warnings += [f"{project}: {problem}" for problem in shown]
        if len(problems) > len(shown):
            warnings.append(
                f"{project}: and {len(problems) - len(shown)} more manifest problems "
                "(the project's `manifest` asset lists them all)"
            )
    return warnings


def _cached_outcome(
    cache: DetectionCache, project: str, commit: str, *, lazy: bool
) -> ScanOutcome | None:
    """The cached scan of `project` at `commit`, or None when there is none to use; `lazy`
    leaves it on disk until someone asks for it (one stat now)."""
    if not lazy:
        scan = cache.load_scan(project, commit)
        return None if scan is None else ScanOutcome(scan, cached=True)
    if not cache.has_scan(project, commit):
        return None

    def load() -> ProjectScan:
        scan = cache.load_scan(project, commit)
        if scan is None:
            raise RuntimeError(
                f"the cached dependency scan of {project} at {commit} is gone or unreadable "
                "(a later detection replaced it); run the detection again"
            )
        return scan

    return ScanOutcome(load, cached=True)


def _scan_for(
    project: str,
    parsed: Mapping[str, ProjectScan],
    scan_commits: Mapping[str, str | None],
    cache: DetectionCache,
) -> ProjectScan | None:
    if project in parsed:
        return parsed[project]
    commit = scan_commits.get(project)
    return cache.load_scan(project, commit) if commit else None


def _project_input(project: LoadedProject, scan: ProjectScan | None) -> ProjectInput:
    spec = project.spec
    return ProjectInput(
        name=spec.name,
        root=spec.repo,
        scan=scan,
        depends_on=spec.depends_on,
        ignore_dependencies=spec.ignore_dependencies,
        declared_in=_relative(project.path),
    )


def _inputs_digest(
    projects: Iterable[LoadedProject], scan_commits: Mapping[str, str | None]
) -> str:
    """A digest of everything `build_graph` reads: equal digests, equal graphs."""
    inputs = sorted(
        (
            project.spec.name,
            project.spec.repo,
            scan_commits.get(project.spec.name),
            list(project.spec.depends_on),
            list(project.spec.ignore_dependencies),
            _relative(project.path),
        )
        for project in projects
    )
    text = json.dumps([CACHE_VERSION, inputs], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def last_or_detect(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    refresh: bool = False,
    warn: Callable[[str], None] | None = None,
) -> DependencyGraph:
    """The last detected graph; detection runs first when there is none (or when asked), and
    `warn` hears its `detection_warnings`."""
    graph = None if refresh else DetectionCache(settings.home).load_graph()
    if graph is None:
        graph, outcomes = detect(projects, settings)
        if warn is not None:
            for message in detection_warnings(outcomes):
                warn(message)
    return graph


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(data, separators=(",", ":")))  # compact: the C encoder
    os.replace(temporary, path)


def _scan_from_dict(data: Mapping[str, Any]) -> ProjectScan:
    return ProjectScan(
        project=data["project"],
        commit=data.get("commit"),
        manifests=tuple(
            ManifestScan(
                path=m["path"],
                ecosystem=m["ecosystem"],
                packages=tuple(Package(**p) for p in m.get("packages", ())),
                requirements=tuple(Requirement(**r) for r in m.get("requirements", ())),
                problems=tuple(m.get("problems", ())),
            )
            for m in data.get("manifests", ())
        ),
    )
