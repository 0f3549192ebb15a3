"""`orch validate`: check every project, template and resource file; report all errors."""

from __future__ import annotations

import click

from orchestration.cli.output import echo_json
from orchestration.registry import load_registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(as_json: bool) -> None:
    """Validate the registry; exit 1 if anything is wrong."""
    registry = load_registry()
    if as_json:
        echo_json(
            {
                "valid": not registry.errors,
                "projects": list(registry.names),
                "errors": [error.to_dict() for error in registry.errors],
            }
        )
    else:
        for error in registry.errors:
            click.echo(str(error), err=True)
        summary = f"{len(registry.projects)} project(s) valid, {len(registry.errors)} error(s)"
        click.echo(summary, err=bool(registry.errors))
    if registry.errors:
        raise SystemExit(1)
