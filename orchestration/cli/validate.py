"""`orch validate`: check every project, template and config file; report all errors, and say
which directories were read and why."""

from __future__ import annotations

import click

from orchestration.cli.output import echo_json
from orchestration.cli.state import current_registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(as_json: bool) -> None:
    """Validate the registry; exit 1 if anything is wrong."""
    registry = current_registry()
    settings = registry.settings
    locations = {
        "projects_dir": str(settings.projects_dir),
        "config_dir": str(settings.config_dir),
        "home": str(settings.home),
    }
    if as_json:
        echo_json(
            {
                "valid": not registry.errors,
                "projects": list(registry.names),
                "errors": [error.to_dict() for error in registry.errors],
                "warnings": list(registry.warnings),
                "settings": locations,
                "origins": dict(settings.origins),
            }
        )
    else:
        for key, path in locations.items():
            click.echo(f"{key}: {path} ({settings.origins.get(key, 'given')})")
        for warning in registry.warnings:
            click.echo(f"warning: {warning}", err=True)
        for error in registry.errors:
            click.echo(str(error), err=True)
        summary = f"{len(registry.projects)} project(s) valid, {len(registry.errors)} error(s)"
        click.echo(summary, err=bool(registry.errors))
    if registry.errors:
        raise SystemExit(1)
