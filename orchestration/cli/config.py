"""`orch config show`: a project's resolved configuration, and where each key was set."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import click

from orchestration.cli.output import echo_json, fail
from orchestration.cli.state import current_registry
from orchestration.registry import LoadedProject
from orchestration.registry.layers import BUILTIN


@click.group()
def config() -> None:
    """Inspect projects' resolved configuration."""


@config.command("show")
@click.argument("project")
@click.option("--origin", is_flag=True, help="Show where each key was set.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def show(project: str, origin: bool, as_json: bool) -> None:
    """Print PROJECT's configuration after defaults, templates and overrides."""
    registry = current_registry()
    try:
        loaded = registry.project(project)
    except KeyError as exc:
        fail(exc.args[0])
    rows = list(resolved_keys(loaded))
    if as_json:
        data: dict[str, Any] = {"project": project, "config": loaded.spec.model_dump(mode="json")}
        if origin:
            data["origins"] = {key: where for key, _, where in rows}
        echo_json(data)
        return
    width = max(len(key) for key, _, _ in rows)
    for key, value, where in rows:
        line = f"{key.ljust(width)}  {json.dumps(value)}"
        click.echo(f"{line}  # {where}" if origin else line)


def resolved_keys(project: LoadedProject) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, origin) for every leaf of the resolved configuration."""
    for path, value in _leaves(project.spec.model_dump(mode="json")):
        # Every key read from YAML or the environment has an origin; the rest are built in.
        where = project.origins.get(path)
        yield ".".join(path), value, str(where) if where else BUILTIN


def _leaves(
    data: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path)
        else:
            yield path, value
