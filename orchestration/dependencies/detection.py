"""Detecting the dependency graph: scan each project's manifests (cached by commit), match them.

This is what the `manifest` assets and `orch deps detect` run. Each project's scan is cached in
its own file, `ORCH_HOME/cache/dependencies/scans-v<N>/<project>/<commit>.json`, so one
project's scan, however large, never costs another project's detection. An unchanged repository
costs one `stat` of its loose ref file, whose stamp `graph-inputs.json` keeps with the commit it
held (the ref is read again when the stamp differs or the file is gone, e.g. into
`packed-refs`). Manifests are read from git's object store in this process
(`objects.py`), git itself only where libgit2 cannot.

The graph built from all scans is written to `graph.json` beside them (where definitions read
it at load) with a digest of what it was built from, so a detection in which nothing changed
reads no scan at all. `graph-inputs.json` keeps what the graph was built from (each project's
scan commit, the packages it provides, the names it requires), so a detection after a few
commits matches again only the changed projects and those requiring a package they provided
or now provide, and reads only their scans. `graph.json` is written in one place, `detect`,
which tells its caller when the new graph draws other lineage than the one it replaced
(`on_change`), so the caller can have the asset graph reloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from orchestration.dependencies.graph import (
    DependencyGraph,
    LineageChange,
    PackageIndex,
    PackageRow,
    ProjectInput,
    affected_consumers,
    build_graph,
    lineage_change,
    package_key,
    package_row,
    update_graph,
)
from orchestration.dependencies.model import ManifestScan, Package, ProjectScan, Requirement
from orchestration.dependencies.objects import (
    RefStamp,
    loose_ref,
    read_files_in_process,
    ref_stamp,
    stamped_branch_commit,
)
from orchestration.registry.loader import LoadedProject
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.workspace.git import GitError, GitRepo, read_tree_files
from orchestration.workspace.workspace import ProjectWorkspace

#: Bump when what a scan holds, or how the graph is built from scans, changes: both caches are
#: keyed by it. 4: one file per scan, held to the caps of dependencies/limits.py.
CACHE_VERSION = 4
#: Repositories git itself reads at once: mostly waiting on git.
GIT_WORKERS = 4
#: The first repositories of a detection to read are read by git, in threads, while this
#: thread goes on; the rest in this process. Importing pygit2 (40-60 ms) costs about as much as
#: git reading 16 small repositories `GIT_WORKERS` at a time, so a detection after a few
#: commits never imports it.
READ_BY_GIT = 15
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


@dataclass(frozen=True)
class GraphInputs:
    """What the saved graph was built from, beyond the registry: each project's scan commit,
    the packages it provides and the `package_key`s its requirements name. Enough to match
    again only what a few new commits can change."""

    digest: str  # the saved graph's `inputs`
    registry: str  # the digest of the registry's side of the inputs
    commits: Mapping[str, str | None]
    packages: Mapping[str, Sequence[PackageRow]]
    required: Mapping[str, Sequence[str]]
    #: project -> its loose ref file, that file's `RefStamp` and the commit it held then.
    refs: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "digest": self.digest,
            "registry": self.registry,
            "commits": self.commits,
            "packages": self.packages,
            "required": self.required,
            "refs": self.refs,
        }

    def known_tip(self, name: str, spec: ProjectSpec) -> str | None:
        """The commit the project's branch points at when its loose ref file still has the
        stamp it had when this was recorded and the graph used the scan of that commit; None
        when the ref must be read."""
        known = self.refs.get(name)
        if known is None or spec.is_remote or known[0] != loose_ref(spec.repo, spec.branch):
            return None
        commit = known[5]
        if commit != self.commits.get(name) or ref_stamp(known[0]) != tuple(known[1:5]):
            return None
        return str(commit)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GraphInputs:
        if data.get("version") != CACHE_VERSION:
            raise ValueError("another version's inputs")
        if not all(isinstance(data[key], dict) for key in ("commits", "packages", "required")):
            raise ValueError("not what inputs hold")
        refs = data.get("refs", {})
        if not (
            isinstance(refs, dict)
            and all(isinstance(ref, list) and len(ref) == 6 for ref in refs.values())
        ):
            raise ValueError("not what inputs hold")
        return cls(
            digest=data["digest"],
            registry=data["registry"],
            commits=data["commits"],
            packages=data["packages"],
            required=data["required"],
            refs=refs,
        )


class DetectionCache:
    """Scans and the last graph, under ORCH_HOME/cache/dependencies.

    One file per project's scan at one commit (the project's older scans are removed when a
    new one is written); `graph.json` holds the graph and the digest of its inputs,
    `graph-inputs.json` what it was built from. Changed under an exclusive lock, so that
    `manifest` runs of several projects can detect at once.
    """

    def __init__(self, home: Path) -> None:
        self.root = home / "cache" / "dependencies"
        self._scans = os.path.join(self.root, f"scans-v{CACHE_VERSION}")

    @property
    def graph_path(self) -> Path:
        return self.root / "graph.json"

    @property
    def inputs_path(self) -> Path:
        return self.root / "graph-inputs.json"

    @property
    def scans_dir(self) -> Path:
        return Path(self._scans)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):  # exclusive, waits as long as it takes
            self._remove_old_formats()
            yield

    def scan_path(self, project: str, commit: str) -> Path:
        return Path(self._scan_file(project, commit))

    def _scan_file(self, project: str, commit: str) -> str:
        return os.path.join(self._scans, project, f"{commit}.json")

    def has_scan(self, project: str, commit: str) -> bool:
        return os.path.isfile(self._scan_file(project, commit))

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
            with open(self._scan_file(project, commit), "rb") as handle:
                data = json.loads(handle.read())
            return _scan_from_dict(data["scan"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_scan(self, scan: ProjectScan) -> None:
        """Write the scan of `scan.commit` and remove the project's older ones."""
        assert scan.commit is not None
        path = self._scan_file(scan.project, scan.commit)
        folder, name = os.path.split(path)
        try:
            os.makedirs(folder)
            first = True  # the project's first scan: nothing older to remove
        except FileExistsError:
            first = False
        _write_json(Path(path), {"version": CACHE_VERSION, "scan": _scan_to_dict(scan)})
        if not first:
            for other in os.listdir(folder):
                if other != name:
                    with suppress(OSError):
                        os.unlink(os.path.join(folder, other))

    def load_graph(self, inputs: str | None = None) -> DependencyGraph | None:
        """The last graph; None when there is none, or when `inputs` is given and the graph
        was built from other inputs."""
        found = self.load_graph_and_digest()
        if found is None or (inputs is not None and found[1] != inputs):
            return None
        return found[0]

    def load_graph_and_digest(self) -> tuple[DependencyGraph, str | None] | None:
        """The last graph and the digest of its inputs."""
        try:
            data = json.loads(self.graph_path.read_bytes())
            return DependencyGraph.from_json(data), data.get("inputs")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save_graph(self, graph: DependencyGraph, inputs: str) -> None:
        _write_json(self.graph_path, {**graph.to_json(), "inputs": inputs})

    def load_inputs(self) -> GraphInputs | None:
        try:
            return GraphInputs.from_json(json.loads(self.inputs_path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save_inputs(self, inputs: GraphInputs) -> None:
        _write_json(self.inputs_path, inputs.to_json())

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
        for old in os.scandir(self.root):
            if old.name == "scans.json" or old.name.startswith(".scans.json."):
                with suppress(OSError):
                    os.unlink(old.path)
            elif old.name.startswith("scans-v") and old.path != self._scans and old.is_dir():
                shutil.rmtree(old.path, ignore_errors=True)


def _branch_tip(spec: ProjectSpec, settings: Settings) -> tuple[Path | str, str, RefStamp | None]:
    """Where to read the project's objects from, the commit its branch points at, and the
    stamp of the loose ref file that said so (when one did)."""
    stamp = None
    if spec.is_remote:
        workspace = ProjectWorkspace(settings.home, spec)
        repo = workspace.sync()
        repo_path: Path | str = repo.path
        commit = repo.resolve(workspace.upstream_ref)
    else:
        repo_path = spec.repo
        commit, stamp = stamped_branch_commit(repo_path, spec.branch)
        if commit is None:
            commit = GitRepo(Path(repo_path)).resolve(f"refs/heads/{spec.branch}")
    if commit is None:
        raise GitError(
            f"{spec.repo}: branch {spec.branch!r} not found (is the repository still there?)"
        )
    return repo_path, commit, stamp


def _parse(project: str, repo_path: Path | str, commit: str) -> ProjectScan | None:
    """Read and parse the manifests of `commit` in this process, held to the caps of `limits`:
    what is too large, a link, or past the repository's budget is never read, only reported.
    None when libgit2 cannot read the repository (`_parse_with_git` then does)."""
    from orchestration.dependencies.parsers import (
        SKIPPED_DIRECTORIES,
        ManifestSelection,
        scan_files,
    )

    selection = ManifestSelection()
    files = read_files_in_process(Path(repo_path), commit, selection, SKIPPED_DIRECTORIES)
    if files is None:
        return None
    return scan_files(project, files, commit, skipped=selection.skipped())


def _parse_with_git(project: str, repo_path: Path | str, commit: str) -> ProjectScan:
    """`_parse`, with git reading the objects."""
    from orchestration.dependencies.parsers import (
        SKIPPED_DIRECTORIES,
        ManifestSelection,
        scan_files,
    )

    selection = ManifestSelection()
    files = read_tree_files(Path(repo_path), commit, selection, SKIPPED_DIRECTORIES)
    return scan_files(project, files, commit, skipped=selection.skipped())


def detect(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    only: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    on_change: Callable[[LineageChange], None] | None = None,
) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
    """Scan the projects (all, or `only` those, the rest from cache) and update the graph.

    Returns the graph and, per scanned project, its outcome or the error that stopped it: one
    unreadable repository never stops the others. `on_change` hears how the lineage differs
    from the last saved graph's, when it does (once the new graph is saved).
    """
    cache = DetectionCache(settings.home)
    projects = list(projects)
    with cache.locked():
        try:
            graph, outcomes, change = _detect(
                projects, settings, cache, only, progress, on_change, trust_refs=True
            )
        except _ScanGone:  # a cached scan the saved inputs name was removed: look at all
            graph, outcomes, change = _detect(
                projects, settings, cache, only, progress, on_change, trust_refs=False
            )
    if change and on_change is not None:
        on_change(change)
    return graph, outcomes


class _ScanGone(Exception):
    """A scan the graph inputs say is cached is not (someone removed it)."""


def _detect(
    projects: Sequence[LoadedProject],
    settings: Settings,
    cache: DetectionCache,
    only: Iterable[str] | None,
    progress: Callable[[str], None] | None,
    on_change: Callable[[LineageChange], None] | None,
    *,
    trust_refs: bool,
) -> tuple[DependencyGraph, dict[str, ScanOutcome | str], LineageChange]:
    """`detect`, under the cache's lock. With `trust_refs`, a project whose loose ref file is
    as the saved inputs recorded it keeps the scan they name without looking for it; a missing
    one raises `_ScanGone` when the graph needs it."""
    wanted = None if only is None else set(only)
    outcomes: dict[str, ScanOutcome | str] = {}
    recorded = cache.load_inputs()
    scan_commits: dict[str, str | None] = {}  # the scan each project's graph input uses
    names = {project.spec.name for project in projects}
    refs = {k: v for k, v in recorded.refs.items() if k in names} if recorded is not None else {}
    with _Scanning(cache, outcomes, progress) as scanning:
        for project in projects:
            name = project.spec.name
            if wanted is not None and name not in wanted:
                continue
            try:
                known = recorded.known_tip(name, project.spec) if trust_refs and recorded else None
                if known is not None:  # the ref is as it was: its scan is the graph's
                    cached = _cached_outcome(cache, name, known, lazy=wanted is None, known=True)
                    if cached is not None:
                        outcomes[name] = cached
                        scan_commits[name] = known
                        if progress is not None:
                            progress(name)
                        continue
                refs.pop(name, None)
                repo_path, commit, stamp = _branch_tip(project.spec, settings)
                if stamp is not None:
                    refs[name] = [loose_ref(repo_path, project.spec.branch), *stamp, commit]
                cached = _cached_outcome(cache, name, commit, lazy=wanted is None)
                if cached is not None:
                    outcomes[name] = cached
                    scan_commits[name] = commit
                    if progress is not None:
                        progress(name)
                else:
                    scanning.add(name, repo_path, commit)
            except Exception as exc:  # one broken repository never stops the others
                outcomes[name] = f"{type(exc).__name__}: {exc}"
        # Meanwhile git may still be reading some repositories.
        cwd = os.getcwd()
        inputs = [_project_input(project, cwd) for project in projects]
        registry = _registry_digest(inputs)
        before, built_from = cache.load_graph_and_digest() or (None, None)
        parsed = scanning.finish(scan_commits)
    for project in projects:
        name = project.spec.name
        if name not in scan_commits:  # not asked for, or failed: its last scan
            scan_commits[name] = _last_commit(cache, recorded, name)
    digest = _inputs_digest(registry, scan_commits)
    change = LineageChange()
    if before is not None and built_from == digest:
        graph = before
        if recorded is not None and recorded.digest == digest and recorded.refs != refs:
            cache.save_inputs(replace(recorded, refs=refs))
    else:
        # What `before` was built from, when it is known and the registry's side is equal.
        if recorded is not None and (
            before is None or recorded.digest != built_from or recorded.registry != registry
        ):
            recorded = None
        graph, record = _graph_from(
            inputs, scan_commits, parsed, cache, before, recorded, registry, digest, trust_refs
        )
        # The old graph is compared only when someone listens (`manifest` runs do not:
        # the `lineage_reload` sensor compares with what its definitions were built from).
        if on_change is not None:
            change = lineage_change(before, graph)
        cache.save_inputs(replace(record, refs=refs))
        cache.save_graph(graph, digest)
    return graph, outcomes, change


class _Scanning:
    """The scans of one detection, made while its repositories are looked at: the first
    `READ_BY_GIT` repositories to read go to git (`GIT_WORKERS` at a time, in threads), the
    rest are read in this process as they come (by git too when libgit2 cannot), and a thread
    writes each scan to the cache. `finish` waits for them all."""

    def __init__(
        self,
        cache: DetectionCache,
        outcomes: dict[str, ScanOutcome | str],
        progress: Callable[[str], None] | None,
    ) -> None:
        self._cache = cache
        self._outcomes = outcomes
        self._progress = progress
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._git = ThreadPoolExecutor(max_workers=GIT_WORKERS)
        self._names: set[str] = set()
        self._reading: dict[Future[ProjectScan], str] = {}
        self._saved: dict[str, Future[None]] = {}
        self._parsed: dict[str, ProjectScan] = {}

    def __enter__(self) -> _Scanning:
        return self

    def __exit__(self, *_: object) -> None:
        self._git.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)

    def add(self, name: str, repo_path: Path | str, commit: str) -> None:
        """Scan `name`'s repository at `commit`, now or in the background (once)."""
        if name in self._names:
            return
        self._names.add(name)
        if len(self._names) <= READ_BY_GIT or not self._done(
            name, functools.partial(_parse, name, repo_path, commit)
        ):
            self._reading[self._git.submit(_parse_with_git, name, repo_path, commit)] = name

    def finish(self, scan_commits: dict[str, str | None]) -> dict[str, ProjectScan]:
        """Every scan made, once it is in the cache; `scan_commits` gets their commits (a scan
        that could not be cached is an error, and the project keeps its last scan)."""
        for future in as_completed(self._reading):
            self._done(self._reading[future], future.result)
        self._writer.shutdown(wait=True)
        for name, write in self._saved.items():
            error = write.exception()
            if error is None:
                scan_commits[name] = self._parsed[name].commit
            else:
                del self._parsed[name]
                self._outcomes[name] = f"{type(error).__name__}: {error}"
        return self._parsed

    def _done(self, name: str, scan: Callable[[], ProjectScan | None]) -> bool:
        """Record what `scan` gives (False when it gives nothing: libgit2 could not read)."""
        try:
            found = scan()
            if found is None:
                return False
            self._saved[name] = self._writer.submit(self._cache.save_scan, found)
            self._parsed[name] = found
            self._outcomes[name] = ScanOutcome(found, cached=False)
        except Exception as exc:  # one broken repository never stops the others
            self._outcomes[name] = f"{type(exc).__name__}: {exc}"
        if self._progress is not None:
            self._progress(name)
        return True


def _graph_from(
    inputs: Sequence[ProjectInput],
    scan_commits: Mapping[str, str | None],
    parsed: Mapping[str, ProjectScan],
    cache: DetectionCache,
    previous: DependencyGraph | None,
    recorded: GraphInputs | None,
    registry: str,
    digest: str,
    trust_refs: bool,
) -> tuple[DependencyGraph, GraphInputs]:
    """The graph over `inputs` at `scan_commits`, and what it was built from: `previous`
    updated where only some scans changed since `recorded` (the inputs `previous` was built
    from, same registry), built from every scan otherwise."""
    commits = {project.name: scan_commits.get(project.name) for project in inputs}
    scan_for = functools.partial(
        _scan_for, parsed=parsed, scan_commits=scan_commits, cache=cache, required=trust_refs
    )
    if previous is not None and recorded is not None:
        try:
            updated = _updated(inputs, scan_for, previous, recorded, commits)
        except (LookupError, TypeError, ValueError, AttributeError):  # damaged graph-inputs
            updated = None
        if updated is not None:
            graph, packages, required = updated
            return graph, GraphInputs(digest, registry, commits, packages, required)
    full = [_with_scan(p, scan_for(p.name)) for p in inputs]
    record = GraphInputs(
        digest,
        registry,
        commits,
        {p.name: _rows(p.scan) for p in full if p.scan is not None},
        {p.name: _required(p.scan) for p in full if p.scan is not None},
    )
    return build_graph(full), record


def _updated(
    inputs: Sequence[ProjectInput],
    scan_for: Callable[[str], ProjectScan | None],
    previous: DependencyGraph,
    recorded: GraphInputs,
    commits: Mapping[str, str | None],
) -> tuple[DependencyGraph, dict[str, Sequence[PackageRow]], dict[str, Sequence[str]]] | None:
    """`previous` with the edges of the projects whose scans changed since `recorded`, and of
    the consumers of their packages, matched again; with the packages and requirements now.
    None when so many changed that building the graph afresh costs less."""
    changed = [name for name, commit in commits.items() if recorded.commits.get(name) != commit]
    packages = dict(recorded.packages)
    required = dict(recorded.required)
    provided: set[str] = set()
    for name in changed:
        scan = scan_for(name)
        old = packages.get(name, ())
        packages[name] = _rows(scan)
        required[name] = _required(scan)
        provided.update(package_key(row[0], row[1]) for row in (*old, *packages[name]))
    consumers = affected_consumers(changed, provided, required)
    if len(consumers) * 2 > len(inputs):
        return None
    scans = {name: scan_for(name) for name in consumers}
    graph = update_graph(
        previous,
        [_with_scan(project, scans.get(project.name)) for project in inputs],
        PackageIndex(packages),
        consumers,
    )
    return graph, packages, required


def _rows(scan: ProjectScan | None) -> list[PackageRow]:
    return [package_row(package) for package in scan.packages] if scan is not None else []


def _required(scan: ProjectScan | None) -> list[str]:
    """The `package_key`s `scan`'s requirements name, each once."""
    if scan is None:
        return []
    return list(dict.fromkeys(package_key(r.ecosystem, r.name) for r in scan.requirements))


def _with_scan(project: ProjectInput, scan: ProjectScan | None) -> ProjectInput:
    return ProjectInput(
        name=project.name,
        root=project.root,
        scan=scan,
        depends_on=project.depends_on,
        ignore_dependencies=project.ignore_dependencies,
        declared_in=project.declared_in,
    )


def _last_commit(cache: DetectionCache, recorded: GraphInputs | None, project: str) -> str | None:
    """The commit of the project's last scan: the one the saved graph used when it is still
    cached (a project keeps one scan), else the newest cached."""
    commit = recorded.commits.get(project) if recorded is not None else None
    if commit is not None and cache.has_scan(project, commit):
        return commit
    return cache.last_commit(project)


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
    cache: DetectionCache, project: str, commit: str, *, lazy: bool, known: bool = False
) -> ScanOutcome | None:
    """The cached scan of `project` at `commit`, or None when there is none to use; `lazy`
    leaves it on disk until someone asks for it (one stat now, none when it is `known` to be
    there)."""
    if not lazy:
        scan = cache.load_scan(project, commit)
        return None if scan is None else ScanOutcome(scan, cached=True)
    if not known and not cache.has_scan(project, commit):
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
    *,
    parsed: Mapping[str, ProjectScan],
    scan_commits: Mapping[str, str | None],
    cache: DetectionCache,
    required: bool,
) -> ProjectScan | None:
    """The project's scan the graph is built from (None when it has none); `required` raises
    `_ScanGone` when the scan named is not in the cache."""
    if project in parsed:
        return parsed[project]
    commit = scan_commits.get(project)
    if not commit:
        return None
    scan = cache.load_scan(project, commit)
    if scan is None and required:
        raise _ScanGone(project)
    return scan


def _project_input(project: LoadedProject, cwd: str) -> ProjectInput:
    spec = project.spec
    return ProjectInput(
        name=spec.name,
        root=spec.repo,
        depends_on=spec.depends_on,
        ignore_dependencies=spec.ignore_dependencies,
        declared_in=_relative(project.path, cwd),
    )


def _registry_digest(projects: Iterable[ProjectInput]) -> str:
    """A digest of everything `build_graph` reads besides the scans."""
    inputs = sorted(
        (
            project.name,
            project.root,
            list(project.depends_on),
            list(project.ignore_dependencies),
            project.declared_in,
        )
        for project in projects
    )
    text = json.dumps([CACHE_VERSION, inputs], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _inputs_digest(registry: str, scan_commits: Mapping[str, str | None]) -> str:
    """A digest of everything `build_graph` reads: equal digests, equal graphs."""
    text = json.dumps([registry, sorted(scan_commits.items())], separators=(",", ":"))
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


def _relative(path: Path, cwd: str) -> str:
    """`os.path.relpath(path, cwd)`, quick for a path below `cwd` (`cwd` absolute)."""
    text = os.path.normpath(path)
    if text.startswith(cwd) and text[len(cwd) : len(cwd) + 1] == os.sep and cwd != os.sep:
        return text[len(cwd) + 1 :]
    try:
        return os.path.relpath(text, cwd)
    except ValueError:
        return str(path)


def _write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(data, separators=(",", ":")))  # compact: the C encoder
    os.replace(temporary, path)


def _scan_to_dict(scan: ProjectScan) -> dict[str, Any]:
    """`dataclasses.asdict(scan)`, without its deep copies."""
    return {
        "project": scan.project,
        "commit": scan.commit,
        "manifests": [
            {
                "path": m.path,
                "ecosystem": m.ecosystem,
                "packages": [vars(p) for p in m.packages],
                "requirements": [vars(r) for r in m.requirements],
                "problems": list(m.problems),
            }
            for m in scan.manifests
        ],
    }


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
