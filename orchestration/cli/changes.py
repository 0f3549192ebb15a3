"""`orch change`: change sets, one change across several projects, verified together and
delivered all or none (orchestration.changes)."""

from __future__ import annotations

import logging

import click

from orchestration.cli.output import echo_json, echo_table, fail, text_argument
from orchestration.cli.state import current_registry, current_settings, task_store


@click.group()
def change() -> None:
    """Change sets: one change across several projects."""


@change.command("create")
@click.argument("prompt")
@click.option(
    "--projects",
    required=True,
    help="The projects the change spans, comma-separated (two or more).",
)
@click.option("--priority", type=click.IntRange(0, 100), default=50, show_default=True)
def create(prompt: str, projects: str, priority: int) -> None:
    """Queue one task per project for PROMPT (`-` reads it from stdin), providers' tasks first:
    a consumer's task starts once its providers' tasks in the set succeed. Prints the change
    set's id, then one line per task: id and project."""
    from orchestration.changes.sets import ChangeError, ChangeSets
    from orchestration.cli.deps import current_graph
    from orchestration.cli.tasks import add_partitions
    from orchestration.tasks.prompts import prompt_problem

    prompt = text_argument(prompt, "prompt")
    problem = prompt_problem(prompt)
    if problem:
        fail(problem)
    settings = current_settings()
    registry = current_registry(settings)
    names = [name.strip() for name in projects.split(",") if name.strip()]
    for name in names:
        try:
            registry.project(name)
        except KeyError as exc:
            fail(f"--projects: {exc.args[0]}")
    store = task_store(settings)
    try:
        made, tasks = ChangeSets(store).create(
            prompt, names, current_graph(settings), priority=priority
        )
    except ChangeError as exc:
        fail(str(exc))
    add_partitions(tasks)
    click.echo(made.id)
    for item in tasks:
        click.echo(f"{item.id}  {item.project}")
    click.echo(
        f"change set {made.id}: {len(tasks)} tasks, in this order (`orch change show {made.id}`)",
        err=True,
    )


@change.command("show")
@click.argument("change_id")
@click.option("--json", "as_json", is_flag=True, help="Print the change set as JSON.")
def show(change_id: str, as_json: bool) -> None:
    """A change set: its members' tasks (status, branch, commit), whether each passed the joint
    verification, and `all_verified`."""
    from orchestration.changes.sets import ChangeError, ChangeSets

    try:
        found = ChangeSets(task_store(current_settings())).require(change_id)
    except ChangeError as exc:
        fail(str(exc))
    if as_json:
        echo_json(found.as_json())
        return
    click.echo(f"change {found.id}: {found.status}, all_verified: {found.all_verified}")
    click.echo(f"prompt: {' '.join(found.prompt.split())[:200]}")
    rows = []
    for member in found.members:
        data = member.as_json()
        check = found.checks.get(member.project)
        rows.append(
            [
                member.project,
                data["task"] or "-",
                data["status"] or "-",
                data["branch"] or "-",
                (data["commit"] or "-")[:12],
                {True: "passed", False: "FAILED", None: "-"}[member.verified],
                check.summary if check else "",
            ]
        )
    echo_table(["PROJECT", "TASK", "STATUS", "BRANCH", "COMMIT", "VERIFIED", "VERIFICATION"], rows)
    if found.delivered_to:
        click.echo(f"delivered to {found.delivered_to} at {found.delivered_at:%Y-%m-%d %H:%M}Z")
    if found.delivery_error:
        click.echo(f"last delivery failed: {found.delivery_error}")


@change.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the change sets as JSON.")
def list_changes(as_json: bool) -> None:
    """Every change set, oldest first: id, status, members, all_verified."""
    from orchestration.changes.sets import ChangeSets

    found = ChangeSets(task_store(current_settings())).all()
    if as_json:
        echo_json({"changes": [item.as_json() for item in found]})
        return
    echo_table(
        ["CHANGE", "STATUS", "ALL_VERIFIED", "PROJECTS", "CREATED"],
        [
            [
                item.id,
                item.status,
                item.all_verified,
                ",".join(item.projects),
                f"{item.created_at:%Y-%m-%d %H:%M}",
            ]
            for item in found
        ],
    )


@change.command("verify")
@click.argument("change_id")
def verify(change_id: str) -> None:
    """Verify a change set together now (the `change_sets` sensor does it on its own once every
    member's task succeeded): each member's `verify_in_change` (else `verify`) in a fresh
    checkout of its task's commit, ORCH_CHANGE_<PROJECT> naming the others'. Exits 1 when a
    member fails."""
    import os

    from orchestration.changes.sets import ChangeError, ChangeSets
    from orchestration.changes.verify import verify_change

    settings = current_settings()
    changes = ChangeSets(task_store(settings))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        found = changes.require(change_id)
        checks = verify_change(
            found,
            current_registry(settings),
            settings.home,
            os.environ,
            logging.getLogger("orch.change"),
        )
    except ChangeError as exc:
        fail(str(exc))
    recorded = changes.record_verification(change_id, checks)
    for project, check in checks.items():
        click.echo(f"{project}: {'passed' if check.passed else 'FAILED'} ({check.summary})")
    if not recorded.all_verified:
        fail(f"change {change_id} did not pass its joint verification")


@change.command("deliver")
@click.argument("change_id")
@click.option(
    "--to",
    "to",
    type=click.Choice(["local", "origin"]),
    default="local",
    show_default=True,
    help="local: each member's branch into its project's own repository; origin: pushed to "
    "its remote.",
)
def deliver(change_id: str, to: str) -> None:
    """Deliver every member's task branch, or none: all are checked first (the branch name
    free or behind there, the remote reachable), then delivered providers first."""
    from orchestration.changes.deliver import deliver_change
    from orchestration.changes.sets import ChangeError, ChangeSets

    settings = current_settings()
    store = task_store(settings)
    try:
        found = ChangeSets(store).require(change_id)
        deliver_change(
            store, current_registry(settings), settings.home, found, to, report=click.echo
        )
    except ChangeError as exc:
        fail(str(exc))
