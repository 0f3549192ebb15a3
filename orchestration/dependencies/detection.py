"""Detecting the dependency graph: scan each project's manifests (cached by commit), match them.

This is what the `manifest` assets and `orch deps detect` run. A scan is cached under
`ORCH_HOME/cache/dependencies/<project>.json` keyed by the branch's commit and the manifest paths
found there, so an unchanged repository costs one ref read (no git process); the graph built
from all scans is written to `graph.json` beside them, where definitions read it at load.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from orchestration.dependencies.graph import DependencyGraph, ProjectInput, build_graph
from orchestration.dependencies.model import ManifestScan, Package, ProjectScan, Requirement
from orchestration.registry.loader import LoadedProject
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.workspace.git import GitError, GitRepo, read_branch_sha, read_tree_files
from orchestration.workspace.workspace import ProjectWorkspace

CACHE_VERSION = 3  # 3: manifests no longer carry workspace_members
PARSE_WORKERS = 4


@dataclass(frozen=True)
class ScanOutcome:
    scan: ProjectScan
    cached: bool


class DetectionCache:
    """Scans and the last graph, under ORCH_HOME/cache/dependencies.

    All scans live in one index file (`scans.json`, read once per detection), changed under an
    exclusive lock so that `manifest` runs of several projects can detect at the same time.
    """

    def __init__(self, home: Path) -> None:
        self.root = home / "cache" / "dependencies"
        self._index: dict[str, Any] | None = None

    @property
    def graph_path(self) -> Path:
        return self.root / "graph.json"

    @property
    def index_path(self) -> Path:
        return self.root / "scans.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):  # exclusive, waits as long as it takes
            self._index = None  # re-read what another process may have written
            yield

    def _entries(self) -> dict[str, Any]:
        if self._index is None:
            try:
                data = json.loads(self.index_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if data.get("version") != CACHE_VERSION:
                data = {"version": CACHE_VERSION, "projects": {}}
            self._index = data
        return self._index["projects"]

    def load_scan(self, project: str) -> tuple[dict[str, Any], ProjectScan] | None:
        entry = self._entries().get(project)
        if entry is None:
            return None
        return entry["key"], _scan_from_dict(entry["scan"])

    def cached_commit(self, project: str) -> str | None:
        entry = self._entries().get(project)
        return entry["key"].get("commit") if entry else None

    def save_scan(self, key: Mapping[str, Any], scan: ProjectScan) -> None:
        """Record a scan; written to disk by `flush`."""
        self._entries()[scan.project] = {"key": dict(key), "scan": asdict(scan)}

    def flush(self) -> None:
        if self._index is not None:
            _write_json(self.index_path, self._index)

    def load_graph(self) -> DependencyGraph | None:
        try:
            return DependencyGraph.from_json(json.loads(self.graph_path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_graph(self, graph: DependencyGraph) -> None:
        _write_json(self.graph_path, graph.to_json())


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


def _parse(project: str, repo_path: Path, commit: str) -> tuple[dict[str, Any], ProjectScan]:
    from orchestration.dependencies.parsers import SKIPPED_DIRECTORIES, is_manifest, scan_files

    files = read_tree_files(repo_path, commit, is_manifest, SKIPPED_DIRECTORIES)
    return {"commit": commit, "manifests": sorted(files)}, scan_files(project, files, commit)


def detect(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    only: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
    """Scan the projects (all, or `only` those, the rest from cache) and rebuild the graph.

    Returns the graph and, per scanned project, its outcome or the error that stopped it: one
    unreadable repository never stops the others.
    """
    cache = DetectionCache(settings.home)
    wanted = None if only is None else set(only)
    inputs: list[ProjectInput] = []
    outcomes: dict[str, ScanOutcome | str] = {}
    with cache.locked():
        projects = list(projects)
        to_parse: dict[str, tuple[Path, str]] = {}
        for project in projects:
            spec = project.spec
            if wanted is not None and spec.name not in wanted:
                continue
            try:
                repo_path, commit = _branch_tip(spec, settings)
                cached = (
                    cache.load_scan(spec.name) if cache.cached_commit(spec.name) == commit else None
                )
                if cached is not None:
                    outcomes[spec.name] = ScanOutcome(cached[1], cached=True)
                    if progress is not None:
                        progress(spec.name)
                else:
                    to_parse[spec.name] = (repo_path, commit)
            except Exception as exc:  # one broken repository never stops the others
                outcomes[spec.name] = f"{type(exc).__name__}: {exc}"
        # Reading objects is mostly waiting on git processes: a few at a time overlap well.
        with ThreadPoolExecutor(max_workers=PARSE_WORKERS) as pool:
            futures = {
                pool.submit(_parse, name, path, commit): name
                for name, (path, commit) in to_parse.items()
            }
            for future in as_completed(futures):
                name = futures[future]
                try:
                    key, parsed = future.result()
                    cache.save_scan(key, parsed)
                    outcomes[name] = ScanOutcome(parsed, cached=False)
                except Exception as exc:  # one broken repository never stops the others
                    outcomes[name] = f"{type(exc).__name__}: {exc}"
                if progress is not None:
                    progress(name)
        for project in projects:
            spec = project.spec
            outcome = outcomes.get(spec.name)
            scan: ProjectScan | None
            if isinstance(outcome, ScanOutcome):
                scan = outcome.scan
            else:
                last = cache.load_scan(spec.name)
                scan = last[1] if last else None
            inputs.append(
                ProjectInput(
                    name=spec.name,
                    root=spec.repo,
                    scan=scan,
                    depends_on=spec.depends_on,
                    ignore_dependencies=spec.ignore_dependencies,
                    declared_in=_relative(project.path),
                )
            )
        if any(isinstance(o, ScanOutcome) and not o.cached for o in outcomes.values()):
            cache.flush()
        graph = build_graph(inputs)
        if graph != cache.load_graph():
            cache.save_graph(graph)
    return graph, outcomes


def last_or_detect(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    refresh: bool = False,
    warn: Callable[[str], None] | None = None,
) -> DependencyGraph:
    """The last detected graph; detection runs first when there is none (or when asked), and
    `warn` hears of every repository it could not read."""
    graph = None if refresh else DetectionCache(settings.home).load_graph()
    if graph is None:
        graph, outcomes = detect(projects, settings)
        for project, outcome in outcomes.items():
            if isinstance(outcome, str) and warn is not None:
                warn(f"{project}: {outcome}")
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
