"""`orch projects`: list the registry's projects, create project files, and move projects
through their lifecycle (pause, resume, stop, archive, unarchive, remove)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import yaml

from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import current_registry, current_settings, dagster_instance, task_store
from orchestration.control.states import Action, ProjectState
from orchestration.registry import PRIORITY_CLASSES
from orchestration.registry.loader import ARCHIVED_DIR
from orchestration.registry.models import is_remote_url, priority_class, validate_project_name


@click.group()
def projects() -> None:
    """List, create, pause, resume, stop, archive and remove projects."""


@projects.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the projects as JSON.")
@click.option(
    "--state",
    "wanted",
    multiple=True,
    type=click.Choice([state.value for state in ProjectState]),
    help="Only projects in this state (repeatable).",
)
def list_projects(as_json: bool, wanted: tuple[str, ...]) -> None:
    """The projects with their state, priority, agent and repository; archived projects too."""
    from orchestration.control.store import ProjectStates, StateRecord

    settings = current_settings()
    registry = current_registry(settings)
    states = ProjectStates(task_store(settings)).all()
    rows: list[dict[str, object]] = [
        {
            **project.spec.model_dump(mode="json"),
            "file": str(project.path),
            **states.get(project.name, StateRecord(project.name, ProjectState.ACTIVE)).to_dict(),
        }
        for project in registry.projects
    ]
    for name in registry.archived:
        record = states.get(name, StateRecord(name, ProjectState.ARCHIVED))
        path = settings.projects_dir / ARCHIVED_DIR / f"{name}.yaml"
        rows.append({"name": name, "file": str(path), **record.to_dict()})
    if wanted:
        rows = [row for row in rows if row["state"] in wanted]
    if as_json:
        echo_json(rows)
    else:
        echo_table(
            ["name", "state", "priority", "agent", "max", "branch", "repo"],
            [
                (
                    row["name"],
                    _state_cell(row),
                    _priority_cell(row),
                    _nested(row, "agent", "profile"),
                    _nested(row, "agent", "max_parallel"),
                    row.get("branch", ""),
                    row.get("repo", ""),
                )
                for row in rows
            ],
        )
    if registry.errors:
        click.echo(
            f"{len(registry.errors)} registry error(s) hide some projects; run `orch validate`.",
            err=True,
        )


def _state_cell(row: dict[str, object]) -> str:
    reason = row.get("state_reason")
    return (
        f"{row['state']} ({reason})" if reason and row["state"] != "active" else str(row["state"])
    )


def _priority_cell(row: dict[str, object]) -> str:
    if "priority" not in row:
        return ""
    return f"{row['priority']} ({priority_class(int(str(row['priority'])))})"


def _nested(row: dict[str, object], key: str, field: str) -> object:
    value = row.get(key)
    return value.get(field, "") if isinstance(value, dict) else ""


def _control(action: Action, name: str, **options: object) -> None:
    """Carry out a lifecycle action from the command line and say what it did."""
    from orchestration.control.actions import ControlError, control_project

    settings = current_settings()
    store = task_store(settings)
    try:
        outcome = control_project(
            action,
            name,
            settings=settings,
            registry=current_registry(settings),
            store=store,
            instance=dagster_instance(settings),
            **options,  # type: ignore[arg-type]
        )
    except ControlError as exc:
        fail(str(exc))
    finally:
        store.dispose()
    click.echo(outcome.message())


REASON = click.option("--reason", help="Why; kept in the audit log and shown in `projects list`.")


@projects.command("pause")
@click.argument("name")
@REASON
def pause(name: str, reason: str | None) -> None:
    """Start no new task of NAME: queued tasks wait, running agents finish, schedules skip."""
    _control(Action.PAUSE, name, reason=reason)


@projects.command("resume")
@click.argument("name")
@REASON
def resume(name: str, reason: str | None) -> None:
    """Make a paused or stopped NAME active again: its queued tasks start, in policy order."""
    _control(Action.RESUME, name, reason=reason)


@projects.command("stop")
@click.argument("name")
@REASON
def stop(name: str, reason: str | None) -> None:
    """Pause NAME and interrupt its running agents now: their work so far is committed on the
    task branch and the tasks queued to continue their sessions on `resume`."""
    _control(Action.STOP, name, reason=reason)


@projects.command("archive")
@click.argument("name")
@REASON
def archive(name: str, reason: str | None) -> None:
    """Take a paused or stopped NAME out of the definitions, keeping its history browsable:
    its private clone becomes a git bundle, its file moves to projects/.archived/."""
    _control(Action.ARCHIVE, name, reason=reason)


@projects.command("unarchive")
@click.argument("name")
@REASON
def unarchive(name: str, reason: str | None) -> None:
    """Bring an archived NAME back, with its clone, sessions and history."""
    _control(Action.UNARCHIVE, name, reason=reason)


@projects.command("remove")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Delete its clone, tasks, sessions and history.")
@click.option("--yes", is_flag=True, help="Confirm: this cannot be undone.")
@REASON
def remove(name: str, purge: bool, yes: bool, reason: str | None) -> None:
    """Remove a paused, stopped or archived NAME for good: its project file, private clone,
    worktrees, tasks, sessions and asset history. Never its own repository."""
    _control(Action.REMOVE, name, reason=reason, purge=purge, confirmed=yes)


@projects.command("history")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def history(name: str | None, as_json: bool) -> None:
    """The audit log of lifecycle changes (of NAME, or of every project): when, who, from,
    to, why."""
    from orchestration.control.store import ProjectStates

    entries = ProjectStates(task_store(current_settings())).log([name] if name else None)
    if as_json:
        echo_json([entry.to_dict() for entry in entries])
        return
    echo_table(
        ["at", "project", "from", "to", "actor", "reason"],
        [
            (
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.project,
                e.from_state,
                e.to_state,
                e.actor,
                e.reason or "",
            )
            for e in entries
        ],
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
