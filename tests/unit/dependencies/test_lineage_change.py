"""`lineage_change`: whether two dependency graphs draw different lineage, the pure decision
behind reloading the asset graph."""

from __future__ import annotations

from orchestration.dependencies.graph import (
    DependencyEdge,
    DependencyGraph,
    Evidence,
    LineageChange,
    lineage_change,
)


def edge(
    consumer: str, provider: str, *, text: str = "x", mismatch: str | None = None
) -> DependencyEdge:
    return DependencyEdge(
        consumer, provider, (Evidence("pyproject.toml", 3, text, "package", mismatch),)
    )


def graph(
    *edges: DependencyEdge, nodes: tuple[str, ...] = ("api", "core", "web")
) -> DependencyGraph:
    return DependencyGraph.of(nodes, edges)


def test_a_new_edge_is_a_change_and_says_which() -> None:
    change = lineage_change(graph(), graph(edge("api", "core")))
    assert change
    assert change == LineageChange(added=(("api", "core"),), removed=())
    assert change.describe() == "api -> core added"


def test_a_removed_edge_is_a_change() -> None:
    change = lineage_change(
        graph(edge("api", "core"), edge("web", "core")), graph(edge("api", "core"))
    )
    assert change.removed == (("web", "core"),) and not change.added
    assert change.describe() == "web -> core removed"


def test_the_same_pairs_with_other_evidence_or_projects_are_no_change() -> None:
    before = graph(edge("api", "core", text="acme-core>=1"))
    after = graph(
        edge("api", "core", text="acme-core>=2", mismatch="requires >=2"),
        nodes=("api", "core", "web", "new"),
    )
    change = lineage_change(before, after)
    assert not change
    assert change.describe() == "no change"


def test_no_graph_draws_no_lineage() -> None:
    assert not lineage_change(None, None)
    assert not lineage_change(None, graph())  # the first detection found no edge
    assert lineage_change(None, graph(edge("api", "core"))).added == (("api", "core"),)
    assert lineage_change(graph(edge("api", "core")), None).removed == (("api", "core"),)


def test_a_reversed_edge_is_one_added_and_one_removed() -> None:
    change = lineage_change(graph(edge("api", "core")), graph(edge("core", "api")))
    assert change == LineageChange(added=(("core", "api"),), removed=(("api", "core"),))


def test_a_long_change_names_a_few_edges_and_counts_the_rest() -> None:
    nodes = tuple(f"p{i}" for i in range(10))
    after = graph(*(edge(f"p{i}", "p0") for i in range(1, 10)), nodes=nodes)
    change = lineage_change(None, after)
    assert len(change.added) == 9
    assert change.describe(limit=2) == "p1 -> p0 added; p2 -> p0 added; and 7 more"
