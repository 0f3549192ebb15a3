"""`orch deps` and `orch affected`: the dependency graph between projects and what a change
touches.

Detection and `affected` read git (GitPython runs `git version` when imported), so they are
imported by the commands that use them, not when the CLI starts. These commands need the
settings and the registry only: neither Dagster nor the task store is imported."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import click

from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import current_registry, current_settings
from orchestration.settings import Settings

if TYPE_CHECKING:
    from orchestration.dependencies.detection import ScanOutcome
    from orchestration.dependencies.graph import DependencyGraph, LineageChange
    from orchestration.registry.loader import LoadedProject


@click.group()
def deps() -> None:
    """Detect and show dependencies between projects."""


def current_graph(settings: Settings) -> DependencyGraph:
    """The last detected graph; detection runs first when there is none."""
    from orchestration.dependencies.detection import last_or_detect

    return last_or_detect(
        current_registry(settings).projects,
        settings,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
    )


def detect_with_progress(
    projects: Iterable[LoadedProject],
    settings: Settings,
    *,
    on_change: Callable[[LineageChange], None] | None = None,
) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
    """Detect over `projects` with a progress bar and the warnings on stderr: what
    `orch deps detect` and `orch up` (before it serves) run. A repository that cannot be read
    is a warning, never an error."""
    from orchestration.dependencies.detection import detect, detection_warnings

    projects = list(projects)
    changes: list[LineageChange] = []
    with click.progressbar(
        length=len(projects),
        label="scanning manifests",
        file=sys.stderr,
        item_show_func=lambda name: name,
    ) as bar:
        graph, outcomes = detect(
            projects, settings, progress=lambda name: bar.update(1, name), on_change=changes.append
        )
    if on_change is not None:  # once the bar is done, before the warnings
        for change in changes:
            on_change(change)
    for message in detection_warnings(outcomes):
        click.echo(f"warning: {message}", err=True)
    return graph, outcomes


@deps.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
def detect_command(as_json: bool) -> None:
    """Scan every project's manifests now (unchanged repositories come from the cache).

    When the lineage changed (a project depends on another, or no longer does), the running
    UI is asked to reload its code location (ORCH_WEBSERVER_URL, which `orch up` sets).
    """
    settings = current_settings()
    registry = current_registry(settings)
    graph, outcomes = detect_with_progress(
        registry.projects,
        settings,
        on_change=lambda change: click.echo(
            f"lineage changed ({change.describe()}): {reload_ui()}", err=True
        ),
    )
    failed = {p: o for p, o in outcomes.items() if isinstance(o, str)}
    if as_json:
        echo_json(graph.to_json())
        return
    parsed = sum(1 for o in outcomes.values() if not isinstance(o, str) and not o.cached)
    click.echo(
        f"{len(graph.nodes)} project(s), {len(graph.edges)} edge(s), {len(graph.cycles)} "
        f"cycle(s); {parsed} repository(ies) parsed, {len(outcomes) - parsed - len(failed)} "
        "unchanged"
    )


def reload_ui() -> str:
    """Ask the running UI to reload its code location, waiting for its answer; what happened."""
    from orchestration.defs.reload import request_reload  # urllib only, no Dagster

    return request_reload(os.environ, wait=True)


@deps.command("graph")
@click.option("--json", "fmt", flag_value="json", help="JSON: nodes, edges with evidence, cycles.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="A Mermaid flowchart.")
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz DOT.")
def graph_command(fmt: str | None) -> None:
    """The dependency graph (consumer -> provider), with the evidence of each edge."""
    graph = current_graph(current_settings())
    if fmt == "json":
        echo_json(graph.to_json())
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid())
    elif fmt == "dot":
        click.echo(graph.to_dot())
    else:
        for edge in graph.edges:
            click.echo(f"{edge.consumer} -> {edge.provider}")
            for item in edge.evidence:
                where = f"{item.file}:{item.line}" if item.line else item.file
                flag = (
                    f"  [version mismatch: {item.version_mismatch}]"
                    if item.version_mismatch
                    else ""
                )
                click.echo(f"    {where}: {item.text} ({item.via}){flag}")
        for cycle in graph.cycles:
            click.echo(f"cycle: {' -> '.join(cycle)}", err=True)
        if not graph.edges:
            click.echo("no dependencies between projects")


@deps.command("why")
@click.argument("consumer")
@click.argument("provider")
def why(consumer: str, provider: str) -> None:
    """Why CONSUMER depends on PROVIDER: the chain of edges and their evidence."""
    graph = current_graph(current_settings())
    for name in (consumer, provider):
        if name not in graph.nodes:
            fail(f"no project named {name!r} in the graph (projects: {', '.join(graph.nodes)})")
    paths = graph.why(consumer, provider)
    if not paths:
        fail(f"{consumer} does not depend on {provider}")
    for path in paths:
        click.echo(" -> ".join([path[0].consumer, *(edge.provider for edge in path)]))
        for edge in path:
            for item in edge.evidence:
                where = f"{item.file}:{item.line}" if item.line else item.file
                click.echo(f"  {edge.consumer} -> {edge.provider}: {where}: {item.text}")


@click.command()
@click.option("--since", required=True, help="A git ref (tag, branch, sha) or a date.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def affected(since: str, as_json: bool) -> None:
    """Projects whose repositories changed since SINCE, plus all their transitive consumers,
    in topological order (providers first)."""
    from orchestration.dependencies.affected import (
        SinceError,
        affected_projects,
        changed_projects,
    )

    settings = current_settings()
    registry = current_registry(settings)
    try:
        changed = changed_projects(registry.projects, since, settings)
    except SinceError as exc:
        fail(str(exc))
    result = affected_projects(current_graph(settings), changed)
    if as_json:
        echo_json(
            {
                "since": since,
                "changed": sorted(changed),
                "affected": [{"project": a.project, "reason": a.reason} for a in result],
            }
        )
    else:
        echo_table(["project", "reason"], [(a.project, a.reason) for a in result])
