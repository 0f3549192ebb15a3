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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestration.dependencies.graph import DependencyGraph, ProjectInput, build_graph
from orchestration.dependencies.model import ManifestScan, Package, ProjectScan, Requirement
from orchestration.registry.loader import LoadedProject
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.workspace.git import GitError, GitRepo, read_branch_sha, read_tree_files
from orchestration.workspace.workspace import ProjectWorkspace

CACHE_VERSION = 1


@dataclass(frozen=True)
class ScanOutcome:
    scan: ProjectScan
    cached: bool


class DetectionCache:
    """Scans and the last graph, as JSON files under ORCH_HOME/cache/dependencies."""

    def __init__(self, home: Path) -> None:
        self.root = home / "cache" / "dependencies"

    @property
    def graph_path(self) -> Path:
        return self.root / "graph.json"

    def load_scan(self, project: str) -> tuple[dict[str, Any], ProjectScan] | None:
        path = self.root / f"{project}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if data.get("version") != CACHE_VERSION:
            return None
        return data["key"], _scan_from_dict(data["scan"])

    def save_scan(self, key: Mapping[str, Any], scan: ProjectScan) -> None:
        _write_json(
            self.root / f"{scan.project}.json",
            {"version": CACHE_VERSION, "key": dict(key), "scan": asdict(scan)},
        )

    def load_graph(self) -> DependencyGraph | None:
        try:
            return DependencyGraph.from_json(json.loads(self.graph_path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_graph(self, graph: DependencyGraph) -> None:
        _write_json(self.graph_path, graph.to_json())


def scan_project(spec: ProjectSpec, settings: Settings, cache: DetectionCache) -> ScanOutcome:
    """The project's scan at its branch tip; parsed again only when the commit changed."""
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
    cached = cache.load_scan(spec.name)
    if cached is not None and cached[0].get("commit") == commit:
        return ScanOutcome(cached[1], cached=True)
    from orchestration.dependencies.parsers import SKIPPED_DIRECTORIES, is_manifest, scan_files

    files = read_tree_files(repo_path, commit, is_manifest, SKIPPED_DIRECTORIES)
    scan = scan_files(spec.name, files, commit)
    cache.save_scan({"commit": commit, "manifests": sorted(files)}, scan)
    return ScanOutcome(scan, cached=False)


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
    for project in projects:
        spec = project.spec
        scan: ProjectScan | None = None
        if wanted is None or spec.name in wanted:
            try:
                outcome = scan_project(spec, settings, cache)
                outcomes[spec.name] = outcome
                scan = outcome.scan
            except Exception as exc:  # one broken repository never stops the others
                outcomes[spec.name] = f"{type(exc).__name__}: {exc}"
            if progress is not None:
                progress(spec.name)
        if scan is None:
            cached = cache.load_scan(spec.name)
            scan = cached[1] if cached else None
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
    graph = build_graph(inputs)
    cache.save_graph(graph)
    return graph, outcomes


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
        json.dump(data, out, indent=1, sort_keys=True)
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
                workspace_members=tuple(m.get("workspace_members", ())),
                problems=tuple(m.get("problems", ())),
            )
            for m in data.get("manifests", ())
        ),
    )
