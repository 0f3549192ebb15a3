"""The project dependency graph: edges consumer -> provider with evidence, cycles, orderings.

Pure functions over the scans of each project: no git, no disk. An edge exists when a consumer's
requirement names a package another project provides, when a path dependency or submodule
points into another project's repository, or when the consumer lists the provider in
`depends_on`; `ignore_dependencies` removes detected edges.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import semantic_version
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from orchestration.dependencies.model import (
    Package,
    ProjectScan,
    Requirement,
    normalize_git_url,
)
from orchestration.registry.models import is_remote_url

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True)
class Evidence:
    """Why an edge exists: the manifest line that declares it, or the registry's depends_on."""

    file: str
    line: int | None
    text: str
    via: str  # package | path | submodule | declared
    version_mismatch: str | None = None

    def to_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"file": self.file}
        if self.line is not None:
            found["line"] = self.line
        found["text"], found["via"] = self.text, self.via
        if self.version_mismatch is not None:
            found["version_mismatch"] = self.version_mismatch
        return found


@dataclass(frozen=True)
class DependencyEdge:
    consumer: str
    provider: str
    evidence: tuple[Evidence, ...]

    @property
    def version_mismatches(self) -> tuple[str, ...]:
        return tuple(e.version_mismatch for e in self.evidence if e.version_mismatch)

    def to_dict(self) -> dict[str, object]:
        """The edge as `graph.json` holds it; an edge read from that file gives back what it
        was read from (do not change it)."""
        found: dict[str, object] | None = self.__dict__.get("_json")
        if found is None:
            found = {
                "consumer": self.consumer,
                "provider": self.provider,
                "evidence": [e.to_dict() for e in self.evidence],
            }
        return found


@dataclass(frozen=True)
class ProjectInput:
    """What the graph needs to know about one project."""

    name: str
    root: str  # local path (absolute) or git URL
    scan: ProjectScan | None = None
    depends_on: tuple[str, ...] = ()
    ignore_dependencies: tuple[str, ...] = ()
    declared_in: str = ""  # the project file, for evidence of depends_on


@dataclass(frozen=True)
class DependencyGraph:
    nodes: tuple[str, ...]
    edges: tuple[DependencyEdge, ...]
    cycles: tuple[tuple[str, ...], ...] = ()
    _providers: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        nodes: Iterable[str],
        edges: Iterable[DependencyEdge],
        cycles: Iterable[Iterable[str]] | None = None,
    ) -> DependencyGraph:
        """The graph of `nodes` and `edges`; its `cycles` are found unless given (as
        `find_cycles` found them for these edges)."""
        nodes = tuple(sorted(set(nodes)))
        edges = tuple(sorted(edges, key=lambda e: (e.consumer, e.provider)))
        providers: dict[str, list[str]] = {node: [] for node in nodes}
        for edge in edges:
            providers.setdefault(edge.consumer, []).append(edge.provider)
        frozen = {k: tuple(sorted(v)) for k, v in providers.items()}
        found = find_cycles(nodes, frozen) if cycles is None else cycles
        return cls(nodes, edges, tuple(tuple(cycle) for cycle in found), frozen)

    def providers_of(self, project: str) -> tuple[str, ...]:
        return self._providers.get(project, ())

    def consumers_of(self, project: str) -> tuple[str, ...]:
        return tuple(sorted(e.consumer for e in self.edges if e.provider == project))

    def edge(self, consumer: str, provider: str) -> DependencyEdge | None:
        for edge in self.edges:
            if edge.consumer == consumer and edge.provider == provider:
                return edge
        return None

    def transitive_consumers(self, projects: Iterable[str]) -> set[str]:
        """`projects` and everything that depends on them, directly or not."""
        import networkx as nx

        graph = self._networkx()
        seen = set(projects)
        for project in list(seen):
            if project in graph:
                seen |= nx.ancestors(graph, project)
        return seen

    def topological_order(self, subset: Iterable[str] | None = None) -> list[str]:
        """Providers before consumers (ties by name); a cycle's members come together, by name."""
        import networkx as nx

        wanted = set(self.nodes if subset is None else subset)
        # One node per cycle (strongly connected component), edges consumer -> provider; the
        # lexicographical sort of the reversed graph puts providers first, ties by first name.
        condensed = nx.condensation(self._networkx())
        members = {c: sorted(data["members"]) for c, data in condensed.nodes(data=True)}
        components = nx.lexicographical_topological_sort(
            condensed.reverse(copy=False), key=lambda c: members[c][0]
        )
        return [node for c in components for node in members[c] if node in wanted]

    def why(self, consumer: str, provider: str) -> list[list[DependencyEdge]]:
        """Every shortest chain of edges by which `consumer` depends on `provider`."""
        import networkx as nx

        graph = self._networkx()
        if consumer not in graph or provider not in graph:
            return []
        # Chains start with one of the consumer's edges, so a project's chain to itself (a
        # cycle) is found like any other: the shortest ways on from its providers.
        distance = dict(nx.single_target_shortest_path_length(graph, provider))
        firsts = [node for node in graph.successors(consumer) if node in distance]
        if not firsts:
            return []
        best = min(distance[node] for node in firsts)
        chains = sorted(  # in name order, node by node
            [consumer, *path]
            for node in firsts
            if distance[node] == best
            for path in nx.all_shortest_paths(graph, node, provider)
        )
        edges = {(edge.consumer, edge.provider): edge for edge in self.edges}
        return [[edges[pair] for pair in itertools.pairwise(chain)] for chain in chains]

    def _networkx(self) -> nx.DiGraph:
        """The graph consumer -> provider, for networkx's algorithms."""
        import networkx as nx

        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        for consumer, providers in self._providers.items():
            graph.add_edges_from((consumer, provider) for provider in providers)
        return graph

    def to_json(self) -> dict[str, object]:
        return {
            "nodes": list(self.nodes),
            "edges": [edge.to_dict() for edge in self.edges],
            "cycles": [list(cycle) for cycle in self.cycles],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DependencyGraph:
        edges = []
        for e in data.get("edges", []):
            edge = DependencyEdge(
                e["consumer"],
                e["provider"],
                tuple(
                    Evidence(
                        ev["file"],
                        ev.get("line"),
                        ev["text"],
                        ev["via"],
                        ev.get("version_mismatch"),
                    )
                    for ev in e["evidence"]
                ),
            )
            if len(e) == 3:  # given back by `to_dict`: a detection keeps most edges
                object.__setattr__(edge, "_json", e)
            edges.append(edge)
        cycles = data.get("cycles")  # written by `to_json` from the same edges
        if not (isinstance(cycles, list) and all(isinstance(c, list) for c in cycles)):
            cycles = None
        return cls.of(data.get("nodes", []), edges, cycles)

    def to_mermaid(self) -> str:
        lines = ["graph LR"]
        lines += [f"  {node}" for node in self.nodes]
        for edge in self.edges:
            style = "-.->" if edge.version_mismatches else "-->"
            lines.append(f"  {edge.consumer} {style} {edge.provider}")
        return "\n".join(lines)

    def to_dot(self) -> str:
        lines = ["digraph dependencies {", "  rankdir=LR;"]
        lines += [f"  {json.dumps(node)};" for node in self.nodes]
        for edge in self.edges:
            label = ", ".join(sorted({e.via for e in edge.evidence}))
            style = ' style="dashed" color="red"' if edge.version_mismatches else ""
            lines.append(
                f"  {json.dumps(edge.consumer)} -> {json.dumps(edge.provider)} "
                f'[label="{label}"{style}];'
            )
        lines.append("}")
        return "\n".join(lines)


def build_graph(projects: Sequence[ProjectInput]) -> DependencyGraph:
    """Match every project's requirements against the others' packages and locations."""
    packages = PackageIndex.of({p.name: p.scan.packages for p in projects if p.scan})
    matcher = EdgeMatcher(projects, packages)
    return DependencyGraph.of(
        matcher.names, [edge for project in projects for edge in matcher.edges_of(project)]
    )


#: A package as `PackageIndex` keeps it: ecosystem, name, version, manifest, line.
PackageRow = Sequence[Any]


def package_row(package: Package) -> list[Any]:
    return [package.ecosystem, package.name, package.version, package.manifest, package.line]


class PackageIndex:
    """Every project's packages by ecosystem and name. Kept as rows (as `graph-inputs.json`
    stores them); a package becomes a `Package` only when a requirement names it."""

    def __init__(self, rows: Mapping[str, Iterable[PackageRow]]) -> None:
        self._rows: dict[tuple[str, str], list[tuple[str, PackageRow]]] = {}
        for project, found in rows.items():
            for row in found:
                self._rows.setdefault((row[0], row[1]), []).append((project, row))
        self._packages: dict[tuple[str, str], list[tuple[str, Package]]] = {}

    @classmethod
    def of(cls, packages: Mapping[str, Iterable[Package]]) -> PackageIndex:
        return cls({name: [package_row(p) for p in found] for name, found in packages.items()})

    def get(self, key: tuple[str, str]) -> Sequence[tuple[str, Package]]:
        """The projects providing the package `(ecosystem, name)`, each with the package."""
        found = self._packages.get(key)
        if found is None:
            rows = self._rows.get(key, ())
            found = self._packages[key] = [(project, Package(*row)) for project, row in rows]
        return found


def update_graph(
    previous: DependencyGraph,
    projects: Sequence[ProjectInput],
    packages: PackageIndex,
    consumers: Iterable[str],
) -> DependencyGraph:
    """`previous` with the edges of `consumers` matched again and every other edge kept.

    `projects` are all projects as `build_graph` would get them, though only the scans of
    `consumers` are read; `packages` are every project's packages now. Equal to `build_graph`
    over the same inputs when `consumers` holds every project whose scan changed and every
    project with a requirement naming a package that one of them provided before or provides
    now (`affected_consumers`), and nothing else about the projects changed.
    """
    matcher = EdgeMatcher(projects, packages)
    again = set(consumers)
    kept = [edge for edge in previous.edges if edge.consumer not in again]
    fresh = [
        edge for project in projects if project.name in again for edge in matcher.edges_of(project)
    ]
    return DependencyGraph.of(matcher.names, [*kept, *fresh])


def package_key(ecosystem: str, name: str) -> str:
    """One string for a package name in its ecosystem (as `affected_consumers` compares them)."""
    return f"{ecosystem}:{name}"


def affected_consumers(
    changed: Iterable[str],
    provided: Iterable[str],
    required: Mapping[str, Iterable[str]],
) -> set[str]:
    """The projects whose edges may differ when the scans of `changed` changed: those, and
    every project requiring one of the packages in `provided` (what the changed projects
    provided before and provide now). `provided` and `required` (per project, the packages its
    requirements name) hold `package_key`s."""
    names = set(provided)
    affected = set(changed)
    if names:
        affected.update(
            project for project, wants in required.items() if not names.isdisjoint(wants)
        )
    return affected


class EdgeMatcher:
    """Matches one project's requirements against every project's packages and locations."""

    def __init__(self, projects: Sequence[ProjectInput], packages: PackageIndex) -> None:
        self.by_package = packages
        self.names = {project.name for project in projects}
        self._projects = projects

    @functools.cached_property
    def local_roots(self) -> dict[str, str]:
        """Each local project's folder -> the project (made when a path is first matched)."""
        return {
            _norm(project.root): project.name
            for project in self._projects
            if project.root and not is_remote_url(project.root)
        }

    @functools.cached_property
    def remote_roots(self) -> dict[str, str]:
        """Each remote project's URL -> the project (made when a URL is first matched)."""
        return {
            normalize_git_url(project.root): project.name
            for project in self._projects
            if project.root and is_remote_url(project.root)
        }

    def edges_of(self, project: ProjectInput) -> list[DependencyEdge]:
        """The edges whose consumer is `project`: its requirements' matches, then its
        `depends_on`, less its `ignore_dependencies`."""
        evidence: dict[str, list[Evidence]] = {}

        def add(provider: str, item: Evidence) -> None:
            if provider != project.name and provider in self.names:
                bucket = evidence.setdefault(provider, [])
                if item not in bucket:
                    bucket.append(item)

        for requirement in project.scan.requirements if project.scan else ():
            for provider, item in _matches(project, requirement, self):
                add(provider, item)
        for provider in project.depends_on:
            add(provider, Evidence(project.declared_in, None, provider, "declared"))
        for ignored in project.ignore_dependencies:
            evidence.pop(ignored, None)
        return [
            DependencyEdge(project.name, provider, tuple(items))
            for provider, items in evidence.items()
        ]


@dataclass(frozen=True)
class LineageChange:
    """How the lineage of two graphs differs: the consumer -> provider pairs only the newer one
    has, and those only the older one has. False when there is no difference."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self, limit: int = 5) -> str:
        """One line for a person: `api -> core added; web -> core removed`, at most `limit`
        edges named (a first detection over many projects adds many)."""
        parts = [f"{c} -> {p} added" for c, p in self.added]
        parts += [f"{c} -> {p} removed" for c, p in self.removed]
        more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
        return "; ".join(parts[:limit]) + more if parts else "no change"

    def into(self, consumers: Callable[[str], bool]) -> LineageChange:
        """Only the pairs whose consumer `consumers` accepts (the lineage one code location
        draws: into its projects' verification)."""
        return LineageChange(
            added=tuple(pair for pair in self.added if consumers(pair[0])),
            removed=tuple(pair for pair in self.removed if consumers(pair[0])),
        )


def lineage_change(before: DependencyGraph | None, after: DependencyGraph | None) -> LineageChange:
    """What differs between the lineage `before` and `after` draw, for deciding whether the
    asset graph must be reloaded. Only which project depends on which counts: evidence and
    version mismatches change no lineage, and projects come and go with the registry (which
    has its own reload). No graph draws no lineage."""
    old = _pairs(before)
    new = _pairs(after)
    return LineageChange(added=tuple(sorted(new - old)), removed=tuple(sorted(old - new)))


def _pairs(graph: DependencyGraph | None) -> set[tuple[str, str]]:
    return {(e.consumer, e.provider) for e in graph.edges} if graph is not None else set()


def _matches(
    project: ProjectInput, requirement: Requirement, matcher: EdgeMatcher
) -> Iterator[tuple[str, Evidence]]:
    """The projects `requirement` points at, each with the evidence."""
    if requirement.local_path and project.root and not is_remote_url(project.root):
        manifest_dir = PurePosixPath(requirement.manifest).parent
        target = _norm(os.path.join(project.root, str(manifest_dir), requirement.local_path))
        provider = _owner(target, matcher.local_roots)
        if provider and provider != project.name:
            yield provider, _evidence(requirement, "path")
            return
    if requirement.ecosystem == "git" and requirement.url:
        url = requirement.url
        local_roots, remote_roots = matcher.local_roots, matcher.remote_roots
        if url.startswith(("./", "../")) and project.root:
            if is_remote_url(project.root):
                # git resolves a relative submodule URL against the superproject's own URL.
                provider = remote_roots.get(normalize_git_url(_join_url(project.root, url)))
            else:
                provider = local_roots.get(_norm(os.path.join(project.root, url)))
        else:
            provider = remote_roots.get(normalize_git_url(url)) or local_roots.get(_norm(url))
        if provider:
            yield provider, _evidence(requirement, "submodule")
        return
    for provider, package in matcher.by_package.get((requirement.ecosystem, requirement.name)):
        if provider != project.name:
            yield (
                provider,
                _evidence(requirement, "package", version_mismatch(requirement, package)),
            )


def _evidence(requirement: Requirement, via: str, mismatch: str | None = None) -> Evidence:
    return Evidence(requirement.manifest, requirement.line, requirement.text, via, mismatch)


def _join_url(base: str, relative: str) -> str:
    """`relative` (./x, ../x) resolved against a repository URL, as git does for submodules."""
    scp = re.match(r"^([\w.-]+@[\w.-]+:)(.*)$", base)
    prefix, path = (scp.group(1), scp.group(2)) if scp else ("", base)
    if not scp:
        scheme = re.match(r"^([a-z][a-z0-9+.-]*://[^/]*)(.*)$", path)
        prefix, path = (scheme.group(1), scheme.group(2)) if scheme else ("", path)
    joined = posixpath.normpath(posixpath.join(path.rstrip("/"), relative))
    return prefix + joined.lstrip("/") if scp else prefix + joined


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path)) if path else path


def _owner(path: str, roots: Mapping[str, str]) -> str | None:
    """The project whose root is `path` or the closest directory above it."""
    current = path
    while True:
        if current in roots:
            return roots[current]
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def version_mismatch(requirement: Requirement, package: Package) -> str | None:
    """A sentence when the provider's current version is outside the required range."""
    spec, version = requirement.specifier.strip(), package.version
    if not spec or not version or spec.startswith(("workspace:", "file:", "link:", "path:")):
        return None
    try:
        if requirement.ecosystem == "python":
            ok = SpecifierSet(spec).contains(Version(version), prereleases=True)
        elif requirement.ecosystem in ("npm", "cargo"):
            ok = _semver_match(requirement.ecosystem, spec, version)
        else:
            return None
    except (InvalidSpecifier, InvalidVersion, ValueError):
        return None
    if ok:
        return None
    return f"requires {spec}, but {package.name} is at {version} ({package.manifest})"


@functools.lru_cache(maxsize=4096)
def _semver_match(ecosystem: str, spec: str, version: str) -> bool:
    current = semantic_version.Version.coerce(version)
    if ecosystem == "cargo":
        # Cargo reads a bare version as a caret requirement and separates clauses with commas.
        spec = " ".join(
            f"^{part.strip()}" if part.strip()[:1].isdigit() else part.strip()
            for part in spec.split(",")
        )
    return semantic_version.NpmSpec(spec).match(current)


# The cycle search stays hand-written, not networkx: `DependencyGraph.of` runs it on every
# detection and every load of graph.json (definitions, the CLI), where importing networkx
# (0.07-0.12 s) made a warm `detect()` over 1,000 repositories a third slower (0.19 s -> 0.25 s
# of CPU). Only the questions asked on demand (orderings, why, consumers) use networkx.
def find_cycles(
    nodes: Sequence[str], providers: Mapping[str, Sequence[str]]
) -> list[tuple[str, ...]]:
    """Cycle paths (first node repeated at the end) that together cover every project caught
    in a cycle: per strongly connected component, a shortest cycle through each member not yet
    on a reported one."""
    component = _components(nodes, providers)
    members: dict[int, set[str]] = {}
    for node, comp in component.items():
        members.setdefault(comp, set()).add(node)
    cycles: list[tuple[str, ...]] = []
    for nodes_in in members.values():
        if len(nodes_in) == 1:
            (only,) = nodes_in
            if only in providers.get(only, ()):
                cycles.append((only, only))
            continue
        covered: set[str] = set()
        for start in sorted(nodes_in):
            if start not in covered:
                cycle = _cycle_from(start, nodes_in, providers)
                covered.update(cycle)
                cycles.append(cycle)
    return sorted(cycles)


def _cycle_from(
    start: str, allowed: set[str], providers: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for provider in sorted(providers.get(node, ())):
                if provider == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return (*reversed(path), start)
                if provider in allowed and provider not in previous:
                    previous[provider] = node
                    following.append(provider)
        frontier = following
    return (start, start)


def _components(nodes: Sequence[str], providers: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Tarjan's strongly connected components, iteratively: node -> component number."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    counter = 0
    components = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(providers.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(providers.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = components
                    if member == node:
                        break
                components += 1
    return component
