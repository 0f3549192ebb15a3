"""The dependency graph between projects, built from manifests read by the real parsers.

Pure: every project is a `ProjectScan` made with `scan_files` from manifest texts, and a root
path or git URL; `build_graph` matches them. No git, no disk.
"""

from __future__ import annotations

import json

import pytest

from orchestration.dependencies.graph import (
    DependencyEdge,
    DependencyGraph,
    Evidence,
    ProjectInput,
    build_graph,
)
from orchestration.dependencies.parsers import scan_files

ROOT = "/srv/repos"


def project(
    name: str,
    files: dict[str, str] | None = None,
    *,
    root: str | None = None,
    depends_on: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
) -> ProjectInput:
    """A project whose repository holds `files`, at ROOT/<name> unless `root` says otherwise."""
    return ProjectInput(
        name=name,
        root=root or f"{ROOT}/{name}",
        scan=scan_files(name, files or {}, "0" * 40),
        depends_on=depends_on,
        ignore_dependencies=ignore,
        declared_in=f"projects/{name}.yaml",
    )


def pyproject(name: str, version: str = "1.0.0", *requires: str) -> dict[str, str]:
    lines = [f'"{r}",' for r in requires]
    body = "\n".join(
        ["[project]", f'name = "{name}"', f'version = "{version}"', "dependencies = [", *lines, "]"]
    )
    return {"pyproject.toml": body + "\n"}


def package_json(name: str, version: str = "1.0.0", **dependencies: str) -> dict[str, str]:
    return {
        "package.json": json.dumps(
            {"name": name, "version": version, "dependencies": dependencies}, indent=2
        )
        + "\n"
    }


def cargo(name: str, version: str = "1.0.0", dependencies: str = "") -> dict[str, str]:
    text = f'[package]\nname = "{name}"\nversion = "{version}"\n\n[dependencies]\n{dependencies}'
    return {"Cargo.toml": text}


def edges(graph: DependencyGraph) -> set[tuple[str, str]]:
    return {(e.consumer, e.provider) for e in graph.edges}


def only_evidence(graph: DependencyGraph, consumer: str, provider: str) -> Evidence:
    edge = graph.edge(consumer, provider)
    assert edge is not None, f"no edge {consumer} -> {provider}: {sorted(edges(graph))}"
    (item,) = edge.evidence
    return item


# --- one edge per format, with its evidence ---------------------------------------------------


def test_python_package_names_match_as_pep_503_says() -> None:
    graph = build_graph(
        [
            project("core", pyproject("Acme_Core")),
            project("api", pyproject("acme-api", "0.1.0", "acme-core>=1", "requests>=2")),
        ]
    )
    assert edges(graph) == {("api", "core")}
    assert only_evidence(graph, "api", "core") == Evidence(
        "pyproject.toml", 5, "acme-core>=1", "package"
    )


def test_requirements_editable_path_into_another_projects_root() -> None:
    graph = build_graph(
        [
            project("lib", {"README.md": "no manifest at all"}),
            project("app", {"requirements.txt": "flask>=3\n-e ../lib\n"}),
        ]
    )
    assert edges(graph) == {("app", "lib")}
    assert only_evidence(graph, "app", "lib") == Evidence(
        "requirements.txt", 2, "-e ../lib", "path"
    )


def test_npm_workspace_protocol_and_scoped_names() -> None:
    graph = build_graph(
        [
            project("ui", package_json("@Acme/UI", "1.4.0")),
            project("web", package_json("@acme/web", **{"@acme/ui": "workspace:*"})),
        ]
    )
    assert edges(graph) == {("web", "ui")}
    evidence = only_evidence(graph, "web", "ui")
    assert evidence == Evidence("package.json", 5, '"@acme/ui": "workspace:*"', "package")


def test_go_require_replaced_by_a_local_path() -> None:
    go_mod = (
        "module example.com/svc\n\ngo 1.22\n\n"
        "require (\n\texample.com/shared v1.2.0\n)\n\n"
        "replace example.com/shared => ../golib\n"
    )
    graph = build_graph(
        [
            # the provider's module path differs: only the replace path links them
            project("golib", {"go.mod": "module example.com/golib\n\ngo 1.22\n"}),
            project("svc", {"go.mod": go_mod}),
        ]
    )
    assert edges(graph) == {("svc", "golib")}
    assert only_evidence(graph, "svc", "golib") == Evidence(
        "go.mod", 6, "example.com/shared v1.2.0", "path"
    )


def test_go_require_of_another_projects_module() -> None:
    graph = build_graph(
        [
            project("golib", {"go.mod": "module example.com/golib\n"}),
            project(
                "svc", {"go.mod": "module example.com/svc\n\nrequire example.com/golib v0.3.0\n"}
            ),
        ]
    )
    assert only_evidence(graph, "svc", "golib") == Evidence(
        "go.mod", 3, "example.com/golib v0.3.0", "package"
    )


def test_cargo_path_dependency_and_dash_underscore_names() -> None:
    graph = build_graph(
        [
            project("pathcrate", cargo("path_crate")),
            project("named", cargo("my_crate")),
            project(
                "app",
                cargo("app", "0.1.0", 'local = { path = "../pathcrate" }\nmy-crate = "1"\n'),
            ),
        ]
    )
    assert edges(graph) == {("app", "pathcrate"), ("app", "named")}
    assert only_evidence(graph, "app", "pathcrate") == Evidence(
        "Cargo.toml", 6, 'local = { path = "../pathcrate" }', "path"
    )
    assert only_evidence(graph, "app", "named") == Evidence(
        "Cargo.toml", 7, 'my-crate = "1"', "package"
    )


def test_submodules_by_remote_url_and_by_relative_path() -> None:
    gitmodules = (
        '[submodule "remote"]\n'
        "\tpath = vendor/remote\n"
        "\turl = https://github.com/Acme/Remote.git\n"
        '[submodule "lib"]\n'
        "\tpath = lib\n"
        "\turl = ../lib\n"
    )
    graph = build_graph(
        [
            project("remote", root="git@github.com:acme/remote.git"),
            project("lib"),
            project("super", {".gitmodules": gitmodules}),
        ]
    )
    assert edges(graph) == {("super", "remote"), ("super", "lib")}
    assert only_evidence(graph, "super", "remote") == Evidence(
        ".gitmodules", 3, "url = https://github.com/Acme/Remote.git", "submodule"
    )
    assert only_evidence(graph, "super", "lib") == Evidence(
        ".gitmodules", 6, "url = ../lib", "submodule"
    )


# --- declared and ignored edges ----------------------------------------------------------------


def test_depends_on_adds_a_declared_edge() -> None:
    graph = build_graph([project("docs", depends_on=("core",)), project("core")])
    assert only_evidence(graph, "docs", "core") == Evidence(
        "projects/docs.yaml", None, "core", "declared"
    )


def test_declared_evidence_joins_detected_evidence() -> None:
    graph = build_graph(
        [
            project("core", pyproject("acme-core")),
            project("api", pyproject("api", "1.0.0", "acme-core"), depends_on=("core",)),
        ]
    )
    edge = graph.edge("api", "core")
    assert edge is not None
    assert [e.via for e in edge.evidence] == ["package", "declared"]


def test_ignore_dependencies_removes_a_detected_edge() -> None:
    inputs = [
        project("core", pyproject("acme-core")),
        project("util", pyproject("acme-util")),
        project("api", pyproject("api", "1.0.0", "acme-core", "acme-util"), ignore=("core",)),
    ]
    assert edges(build_graph(inputs)) == {("api", "util")}


def test_no_edge_to_a_package_nobody_provides_nor_to_itself() -> None:
    graph = build_graph(
        [
            project("core", pyproject("acme-core", "1.0.0", "acme-core[extra]", "numpy")),
            project("api", pyproject("api", "1.0.0", "requests", "left-pad")),
            project("web", package_json("web", react="^18.0.0", web="file:.")),
            project("app", {"requirements.txt": "-e .\n"}),
        ]
    )
    assert graph.edges == ()
    assert graph.nodes == ("api", "app", "core", "web")


def test_depends_on_itself_or_an_unknown_project_makes_no_edge() -> None:
    graph = build_graph([project("core", depends_on=("core", "nowhere"))])
    assert graph.edges == () and graph.cycles == ()


# --- version ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "consumer", "mismatch"),
    [
        pytest.param(
            pyproject("acme-core", "1.0.0"),
            pyproject("api", "1.0.0", "acme-core>=2"),
            "requires >=2, but acme-core is at 1.0.0 (pyproject.toml)",
            id="python-unsatisfied",
        ),
        pytest.param(
            pyproject("acme-core", "1.0.0"),
            pyproject("api", "1.0.0", "acme-core>=1,<2"),
            None,
            id="python-satisfied",
        ),
        pytest.param(
            package_json("@acme/ui", "1.4.0"),
            package_json("web", **{"@acme/ui": "^2.0.0"}),
            "requires ^2.0.0, but @acme/ui is at 1.4.0 (package.json)",
            id="npm-unsatisfied",
        ),
        pytest.param(
            package_json("@acme/ui", "1.4.0"),
            package_json("web", **{"@acme/ui": "^1.2.0"}),
            None,
            id="npm-satisfied",
        ),
        pytest.param(
            cargo("acme_core", "1.0.0"),
            cargo("app", "0.1.0", 'acme-core = "2"\n'),
            "requires 2, but acme-core is at 1.0.0 (Cargo.toml)",
            id="cargo-unsatisfied",
        ),
        pytest.param(
            cargo("acme_core", "1.0.0"),
            cargo("app", "0.1.0", 'acme-core = "1"\n'),
            None,
            id="cargo-satisfied",
        ),
    ],
)
def test_a_range_the_providers_version_misses_is_flagged(
    provider: dict[str, str], consumer: dict[str, str], mismatch: str | None
) -> None:
    graph = build_graph([project("provider", provider), project("consumer", consumer)])
    edge = graph.edge("consumer", "provider")
    assert edge is not None
    assert edge.evidence[0].version_mismatch == mismatch
    assert edge.version_mismatches == ((mismatch,) if mismatch else ())


def test_a_mismatch_is_drawn_differently() -> None:
    graph = build_graph(
        [
            project("core", pyproject("acme-core", "1.0.0")),
            project("api", pyproject("api", "1.0.0", "acme-core>=2")),
            project("cli", pyproject("cli", "1.0.0", "acme-core>=1")),
        ]
    )
    assert "api -.-> core" in graph.to_mermaid() and "cli --> core" in graph.to_mermaid()
    dot = graph.to_dot()
    assert '"api" -> "core" [label="package" style="dashed" color="red"];' in dot
    assert '"cli" -> "core" [label="package"];' in dot


# --- cycles and orderings ----------------------------------------------------------------------


def chain(*pairs: str) -> list[ProjectInput]:
    """Python projects named by the letters; `"ab"` means a requires b's package."""
    requires: dict[str, list[str]] = {}
    for pair in pairs:
        consumer, provider = pair
        requires.setdefault(consumer, []).append(f"pkg-{provider}")
        requires.setdefault(provider, [])
    return [
        project(name, pyproject(f"pkg-{name}", "1.0.0", *sorted(deps)))
        for name, deps in sorted(requires.items())
    ]


@pytest.fixture
def cyclic() -> DependencyGraph:
    """a <-> b; c -> d -> e -> c; e -> f; g -> a, g -> c; h alone."""
    inputs = chain("ab", "ba", "cd", "de", "ec", "ef", "ga", "gc")
    return build_graph([*inputs, project("h", pyproject("pkg-h"))])


def test_two_and_three_project_cycles_are_reported_with_their_paths(
    cyclic: DependencyGraph,
) -> None:
    assert cyclic.cycles == (("a", "b", "a"), ("c", "d", "e", "c"))


def test_topological_order_keeps_every_node_providers_first(cyclic: DependencyGraph) -> None:
    order = cyclic.topological_order()
    assert sorted(order) == list(cyclic.nodes)
    position = {node: i for i, node in enumerate(order)}
    assert position["f"] < min(position["c"], position["d"], position["e"])
    assert max(position[n] for n in "abcdef") < position["g"]
    # a cycle's members come together
    assert abs(position["a"] - position["b"]) == 1
    assert sorted(position[n] for n in "cde") == list(range(position["c"], position["c"] + 3))


def test_topological_order_of_a_subset() -> None:
    graph = build_graph(chain("ab", "bc", "xc"))
    assert graph.topological_order() == ["c", "b", "a", "x"]
    assert graph.topological_order(["a", "c"]) == ["c", "a"]


def test_transitive_consumers() -> None:
    graph = build_graph(chain("ab", "bc", "xc", "yz"))
    assert graph.transitive_consumers(["c"]) == {"a", "b", "c", "x"}
    assert graph.transitive_consumers(["b"]) == {"a", "b"}
    assert graph.transitive_consumers(["a"]) == {"a"}
    assert graph.consumers_of("c") == ("b", "x")
    assert graph.providers_of("a") == ("b",)


def test_why_gives_the_shortest_chain() -> None:
    # a -> b -> c -> d and a -> x -> d: the two-step chain wins
    graph = build_graph(chain("ab", "bc", "cd", "ax", "xd"))
    (path,) = graph.why("a", "d")
    assert [(e.consumer, e.provider) for e in path] == [("a", "x"), ("x", "d")]
    assert path[0].evidence[0].text == "pkg-x"
    assert graph.why("d", "a") == []
    (direct,) = graph.why("a", "b")
    assert [(e.consumer, e.provider) for e in direct] == [("a", "b")]


def test_why_lists_every_shortest_chain() -> None:
    graph = build_graph(chain("ab", "ac", "bd", "cd"))
    paths = graph.why("a", "d")
    assert sorted([e.provider for e in p] for p in paths) == [["b", "d"], ["c", "d"]]


# --- serialisations ------------------------------------------------------------------------------


def test_json_round_trip(cyclic: DependencyGraph) -> None:
    data = json.loads(json.dumps(cyclic.to_json()))
    assert set(data) == {"nodes", "edges", "cycles"}
    assert data["cycles"] == [["a", "b", "a"], ["c", "d", "e", "c"]]
    again = DependencyGraph.from_json(data)
    assert again.nodes == cyclic.nodes
    assert again.edges == cyclic.edges
    assert again.cycles == cyclic.cycles
    assert again.to_json() == cyclic.to_json()


def test_json_round_trip_keeps_version_mismatches() -> None:
    graph = build_graph(
        [
            project("core", pyproject("acme-core")),
            project("api", pyproject("api", "1", "acme-core>2")),
        ]
    )
    again = DependencyGraph.from_json(json.loads(json.dumps(graph.to_json())))
    assert again.edges == graph.edges
    assert again.edges[0].version_mismatches


def test_json_round_trip_of_a_declared_edge() -> None:
    graph = build_graph([project("docs", depends_on=("core",)), project("core")])
    again = DependencyGraph.from_json(json.loads(json.dumps(graph.to_json())))
    assert again.edges == graph.edges


def test_mermaid_and_dot_mention_every_edge(cyclic: DependencyGraph) -> None:
    mermaid, dot = cyclic.to_mermaid(), cyclic.to_dot()
    assert mermaid.splitlines()[0] == "graph LR"
    assert dot.startswith("digraph dependencies {") and dot.endswith("}")
    for node in cyclic.nodes:
        assert f"  {node}" in mermaid.splitlines()
        assert f'  "{node}";' in dot.splitlines()
    for edge in cyclic.edges:
        assert f"  {edge.consumer} --> {edge.provider}" in mermaid.splitlines()
        assert f'  "{edge.consumer}" -> "{edge.provider}" [label="package"];' in dot.splitlines()
    assert mermaid.count("-->") == len(cyclic.edges) == dot.count("->")


def test_dot_labels_name_every_kind_of_evidence() -> None:
    graph = DependencyGraph.of(
        ["a", "b"],
        [
            DependencyEdge(
                "a",
                "b",
                (
                    Evidence("requirements.txt", 1, "-e ../b", "path"),
                    Evidence("projects/a.yaml", None, "b", "declared"),
                ),
            )
        ],
    )
    assert '"a" -> "b" [label="declared, path"];' in graph.to_dot()


def test_a_relative_submodule_of_a_remote_project_resolves_against_its_url() -> None:
    gitmodules = '[submodule "lib"]\n\tpath = lib\n\turl = ../lib.git\n'
    graph = build_graph(
        [
            project("lib", root="https://github.com/acme/lib.git"),
            project("super", {".gitmodules": gitmodules}, root="https://github.com/acme/super.git"),
        ]
    )
    assert edges(graph) == {("super", "lib")}
