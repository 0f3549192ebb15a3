"""`orch task` and `orch session`: add, list, show, cancel, retry and import tasks, show a
task's change and transcript and deliver its branch; list sessions. Listing and showing need
only the task store: what else a command needs (the registry, git, Dagster) it imports
itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestration.cli.output import echo_json, echo_table, fail, text_argument
from orchestration.cli.state import (
    current_registry,
    current_settings,
    dagster_instance,
    task_store,
)
from orchestration.tasks.models import Task, TaskStatus, is_task_id
from orchestration.tasks.prompts import prompt_problem
from orchestration.tasks.store import TaskError, TaskStore

if TYPE_CHECKING:
    from orchestration.registry.models import ProjectSpec
    from orchestration.settings import Settings


@click.group()
def task() -> None:
    """Add, inspect and cancel agent tasks."""


@task.command("add")
@click.argument("project")
@click.argument("prompt")
@click.option("--priority", type=click.IntRange(0, 100), default=50, show_default=True)
@click.option("--after", "after", multiple=True, help="Task id that must succeed first.")
@click.option("--profile", help="Agent profile for this task (default: the project's).")
@click.option(
    "--propagate",
    is_flag=True,
    help="Also queue follow-up tasks in every project that depends on PROJECT, each after its "
    "providers' tasks: one change set (`orch change`), verified together.",
)
def add(
    project: str,
    prompt: str,
    priority: int,
    after: tuple[str, ...],
    profile: str | None,
    propagate: bool,
) -> None:
    """Queue a task for PROJECT; PROMPT `-` reads it from standard input. Prints the task id
    (with --propagate, one line per task: id and project)."""
    from orchestration.registry.rules import ProfileError, resolve_profile

    prompt = text_argument(prompt, "prompt")
    problem = prompt_problem(prompt)
    if problem:
        fail(problem)
    settings = current_settings()
    registry = current_registry(settings)
    try:
        spec = registry.project(project).spec
    except KeyError as exc:
        fail(exc.args[0])
    if profile is not None:
        if registry.agents is None:
            fail("the agents file has errors; run `orch validate`")
        try:
            resolve_profile(registry.agents, spec, profile)
        except ProfileError as exc:
            fail(f"--profile: {exc}")
    store = task_store(settings)
    for prerequisite in after:
        if not is_task_id(prerequisite) or store.get(prerequisite) is None:
            fail(f"--after {prerequisite}: no such task")
    session_id = None
    if propagate:
        # The dependency graph's modules (packaging, semantic_version, git): only when needed.
        from orchestration.changes.sets import ChangeSets
        from orchestration.cli.deps import current_graph
        from orchestration.tasks.propagate import new_session_id

        session_id = new_session_id()
    created = store.add(
        project, prompt, priority=priority, after=after, profile=profile, session=session_id
    )
    if created is None:
        fail("the task was not recorded")
    # Its run queued now when nothing else waits, rather than at the dispatch sensor's tick.
    from orchestration.tasks.submit import NO_WEBSERVER, submit_now

    submitted = submit_now(store, registry, created)
    if submitted.run_id:
        click.echo(f"run {submitted.run_id} queued", err=True)
    elif submitted.why_not != NO_WEBSERVER:
        click.echo(f"queued; the dispatch sensor starts it ({submitted.why_not})", err=True)
    queued = [created]
    if propagate:
        # One change set: the follow-ups start on this task's work and are verified with it.
        _change, follow_ups = ChangeSets(store).propagate(
            created, current_graph(settings), registry.names
        )
        queued += follow_ups
    add_partitions([task for task in queued if task.id != created.id or not submitted.run_id])
    if propagate:
        for item in queued:
            click.echo(f"{item.id}  {item.project}")
        click.echo(
            f"change set {session_id}: {len(queued)} task(s) (`orch change show {session_id}`)",
            err=True,
        )
    else:
        click.echo(created.id)


@task.command("list")
@click.argument("project", required=False)
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in TaskStatus])
)
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
def list_tasks(project: str | None, statuses: tuple[str, ...], as_json: bool) -> None:
    """Tasks, oldest first, optionally of one PROJECT and in some states."""
    store = task_store(current_settings())
    tasks = store.tasks(
        project=project, statuses=[TaskStatus(s) for s in statuses] if statuses else None
    )
    if as_json:
        echo_json([t.to_dict() for t in tasks])
        return
    echo_table(
        ["id", "project", "status", "priority", "created", "prompt", "reason"],
        [
            (
                t.id,
                t.project,
                t.status,
                t.priority,
                t.created_at.strftime("%Y-%m-%d %H:%M"),
                _short(t.prompt, 40),
                _short(t.reason or "", 50),
            )
            for t in tasks
        ],
    )


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
def show(task_id: str, as_json: bool) -> None:
    """Everything recorded about one task."""
    found = task_store(current_settings()).get(task_id)
    if found is None:
        fail(f"no task with id {task_id!r}")
    data = found.to_dict()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if value not in (None, "", [], {}):
            click.echo(f"{key + ':':<15} {value}")


@task.command("diff")
@click.argument("task_id")
@click.option("--stat", is_flag=True, help="Print how much each file changed, not the patch.")
def diff(task_id: str, stat: bool) -> None:
    """The change task TASK_ID made, as a patch `git apply` takes (binary files included), from
    the commit it started from to its branch's tip in the project's private clone."""
    from orchestration.delivery.deliver import DeliveryError, task_diff

    settings = current_settings()
    found = _require_task(task_store(settings), task_id)
    try:
        patch = task_diff(settings.home, _task_spec(settings, found), found, stat=stat)
    except DeliveryError as exc:
        fail(str(exc))
    if not patch:
        click.echo(f"task {task_id} changed nothing", err=True)
        return
    # The bytes git wrote, as bytes: a file in another encoding stays as it was.
    click.echo(patch.encode("utf-8", errors="surrogateescape"))


@task.command("log")
@click.argument("task_id")
def log(task_id: str) -> None:
    """What task TASK_ID's agent printed, one section per attempt (secrets masked)."""
    from orchestration.delivery.transcript import read_transcript

    settings = current_settings()
    found = _require_task(task_store(settings), task_id)
    text = read_transcript(settings.home, found.project, found.id)
    if text is None:
        fail(
            f"no transcript kept for task {task_id} yet: its agent has not run "
            f"(the task is {found.status})"
        )
    click.echo(text, nl=not text.endswith("\n"))


@task.command("deliver")
@click.argument("task_id")
@click.option(
    "--to",
    "to",
    type=click.Choice(["local", "origin"]),
    help="local: the branch into the project's own repository; origin: pushed to its remote "
    "(default: the project's `deliver` key when it is not `none`, else local).",
)
def deliver(task_id: str, to: str | None) -> None:
    """Deliver task TASK_ID's branch orch/<project>/<task-id>, never by force; the outcome is
    recorded on the task (delivered_to, delivered_at or delivery_error)."""
    from orchestration.delivery.deliver import DeliveryError, deliver_task

    settings = current_settings()
    store = task_store(settings)
    found = _require_task(store, task_id)
    spec = _task_spec(settings, found)
    target = to or (spec.deliver if spec.deliver != "none" else "local")
    try:
        deliver_task(store, settings.home, spec, found, target, report=click.echo)
    except DeliveryError as exc:
        fail(str(exc))


@task.command("cancel")
@click.argument("task_id")
def cancel(task_id: str) -> None:
    """Cancel a task; a run carrying it out is terminated, which kills its agent."""
    from orchestration.tasks import lifecycle  # imports Dagster: only when cancelling

    settings = current_settings()
    try:
        _, stopped = lifecycle.cancel(task_store(settings), dagster_instance(settings), task_id)
    except TaskError as exc:
        fail(str(exc))
    click.echo(
        f"cancelled {task_id}" + (f" (terminated run {', '.join(stopped)})" if stopped else "")
    )


@task.command("retry")
@click.argument("task_id")
def retry(task_id: str) -> None:
    """Queue a failed, blocked or cancelled task again, as a new attempt."""
    from orchestration.tasks import lifecycle  # imports Dagster: only when retrying

    settings = current_settings()
    try:
        retried = lifecycle.retry(task_store(settings), dagster_instance(settings), task_id)
    except TaskError as exc:
        fail(str(exc))
    click.echo(f"queued {retried.id} again (attempt {retried.attempts + 1})")


@task.command("import")
@click.argument("project")
def import_tasks(project: str) -> None:
    """Add a task for each unchecked `- [ ]` item of PROJECT's .agent-os/specs/*/tasks.md."""
    from orchestration.tasks.intake import import_task_lists  # reads git: only when importing
    from orchestration.workspace.workspace import ProjectWorkspace

    settings = current_settings()
    try:
        spec = current_registry(settings).project(project).spec
    except KeyError as exc:
        fail(exc.args[0])
    store = task_store(settings)
    added = import_task_lists(
        spec,
        ProjectWorkspace(settings.home, spec),
        store,
        warn=lambda message: click.echo(f"warning: {message}", err=True),
    )
    add_partitions(added)
    for new in added:
        click.echo(f"{new.id}  {_short(new.prompt, 70)}")
    click.echo(f"imported {len(added)} new task(s) for {project}", err=True)


@click.group()
def session() -> None:
    """Agent sessions kept per project."""


@session.command("list")
@click.argument("project", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as JSON.")
def list_sessions(project: str | None, as_json: bool) -> None:
    """The last agent session of each project (and profile)."""
    sessions = task_store(current_settings()).sessions(project)
    if as_json:
        echo_json(sessions)
        return
    echo_table(
        ["project", "profile", "session_id", "task_id", "updated_at"],
        [
            (s["project"], s["profile"], s["session_id"], s["task_id"], s["updated_at"])
            for s in sessions
        ],
    )


def _require_task(store: TaskStore, task_id: str) -> Task:
    found = store.get(task_id)
    if found is None:
        fail(f"no task with id {task_id!r}")
    return found


def _task_spec(settings: Settings, found: Task) -> ProjectSpec:
    """The task's project as the registry says now; exits with the registry's words when the
    project is not there (removed, or its file is broken)."""
    try:
        return current_registry(settings).project(found.project).spec
    except KeyError as exc:
        fail(f"task {found.id}: {exc.args[0]}")


def add_partitions(tasks: list[Task]) -> None:
    """Give new tasks their partitions now, when there is an instance (else the dispatch sensor
    adds them)."""
    instance = dagster_instance(current_settings()) if tasks else None
    if instance is not None:
        from orchestration.tasks.lifecycle import ensure_partitions

        ensure_partitions(instance, tasks)


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
