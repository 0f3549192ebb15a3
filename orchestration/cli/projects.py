"""`orch projects`: list the registry's projects and create new project files."""

from __future__ import annotations

import os
from pathlib import Path

import click
import yaml

from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import current_registry, current_settings
from orchestration.registry import PRIORITY_CLASSES
from orchestration.registry.models import is_remote_url, validate_project_name


@click.group()
def projects() -> None:
    """List and create projects."""


@projects.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the projects as JSON.")
def list_projects(as_json: bool) -> None:
    """The valid projects, with their priority, agent and repository."""
    registry = current_registry()
    if as_json:
        echo_json(
            [
                {**project.spec.model_dump(mode="json"), "file": str(project.path)}
                for project in registry.projects
            ]
        )
    else:
        echo_table(
            ["name", "priority", "agent", "max", "branch", "repo"],
            [
                (
                    p.spec.name,
                    f"{p.spec.priority} ({p.spec.priority_class})",
                    p.spec.agent.profile,
                    p.spec.agent.max_parallel,
                    p.spec.branch,
                    p.spec.repo,
                )
                for p in registry.projects
            ],
        )
    if registry.errors:
        click.echo(
            f"{len(registry.errors)} registry error(s) hide some projects; run `orch validate`.",
            err=True,
        )


@projects.command("create")
@click.argument("name")
@click.option(
    "--repo", required=True, help="Local path (to an existing git repository) or git URL."
)
@click.option("--priority", help=f"{', '.join(PRIORITY_CLASSES)} or an integer 0-100.")
@click.option("--extends", "template", help="Template name from projects/templates/.")
def create_project(name: str, repo: str, priority: str | None, template: str | None) -> None:
    """Write projects/NAME.yaml and validate it; refuse to overwrite an existing file."""
    try:
        validate_project_name(name)
    except ValueError as exc:
        fail(f"project name: {exc}")
    settings = current_settings()
    path = settings.projects_dir / f"{name}.yaml"
    if path.exists():
        fail(f"{path} already exists; edit it or choose another name")
    before = current_registry(settings)
    if name in before.names:
        fail(f"{before.project(name).path} already defines project {name!r}; choose another name")
    document: dict[str, object] = {"name": name, "repo": _repo_for_file(repo, path.parent)}
    if priority is not None:
        document["priority"] = int(priority) if priority.strip().isdigit() else priority
    if template is not None:
        document["extends"] = template
    settings.projects_dir.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    after = current_registry(settings)
    if name not in after.names or len(after.errors) > len(before.errors):
        path.unlink()
        old = {str(error) for error in before.errors}
        for problem in after.errors:
            if str(problem) not in old:
                click.echo(str(problem), err=True)
        fail(f"{path.name} was not created: fix the values above and run the command again")
    click.echo(f"created {path}")


def _repo_for_file(repo: str, directory: Path) -> str:
    """A local path as the new file should say it: relative to the file's directory."""
    if is_remote_url(repo) or repo.startswith("${ORCH_HOME}"):
        return repo
    return os.path.relpath(Path(repo).expanduser().resolve(), directory.resolve())
