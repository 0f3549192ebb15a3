"""`orch task` and `orch session`: add, list, show, cancel and import tasks; list sessions."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click

from orchestration.agents.invocation import needs_command
from orchestration.cli.deps import current_graph
from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import dagster_instance
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry import load_registry
from orchestration.registry.loader import load_agents
from orchestration.sensors import ensure_partitions
from orchestration.settings import Settings
from orchestration.tags import TASK_TAG
from orchestration.tasks.intake import import_task_lists
from orchestration.tasks.models import Task, TaskStatus, is_task_id, new_task_id
from orchestration.tasks.store import TaskError, TaskStore
from orchestration.workspace.workspace import ProjectWorkspace

#: Linux refuses a single argument of 128 KiB or more (MAX_ARG_STRLEN), and the prompt is one.
MAX_PROMPT_BYTES = 120 * 1024


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
    "providers' tasks, linked by one session.",
)
def add(
    project: str,
    prompt: str,
    priority: int,
    after: tuple[str, ...],
    profile: str | None,
    propagate: bool,
):
    """Queue a task for PROJECT; PROMPT `-` reads it from standard input. Prints the task id
    (with --propagate, one line per task: id and project)."""
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail("the prompt is empty")
    if len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        fail(f"the prompt is larger than {MAX_PROMPT_BYTES // 1024} KiB")
    settings = Settings.from_env()
    registry = load_registry(settings)
    try:
        registry.project(project)
    except KeyError as exc:
        fail(exc.args[0])
    if profile is not None:
        profiles = load_agents(settings).profiles
        if profile not in profiles:
            fail(f"unknown agent profile {profile!r}; profiles: {', '.join(profiles)}")
        if needs_command(profiles[profile]) and not registry.project(project).spec.agent.command:
            fail(f"profile {profile!r} runs the project's agent.command, and {project} sets none")
    store = TaskStore.from_settings(settings)
    for prerequisite in after:
        if not is_task_id(prerequisite) or store.get(prerequisite) is None:
            fail(f"--after {prerequisite}: no such task")
    session_id = f"s{new_task_id()[1:]}" if propagate else None
    created = store.add(
        project, prompt, priority=priority, after=after, profile=profile, session=session_id
    )
    assert created is not None
    queued = [created]
    if propagate:
        queued += follow_up_tasks(store, current_graph(settings), created, registry.names)
    instance = dagster_instance(settings)
    if instance is not None:
        ensure_partitions(instance, queued)
    if propagate:
        for item in queued:
            click.echo(f"{item.id}  {item.project}")
        click.echo(f"linked session {session_id}: {len(queued)} task(s)", err=True)
    else:
        click.echo(created.id)


def follow_up_tasks(
    store: TaskStore, graph: DependencyGraph, origin: Task, valid: Iterable[str]
) -> list[Task]:
    """A task in every transitive consumer of the origin's project, in topological order, each
    after the tasks of its own providers in the same linked session."""
    affected = graph.transitive_consumers([origin.project]) & set(valid)
    task_of = {origin.project: origin.id}
    created = []
    for consumer in graph.topological_order(affected):
        if consumer in task_of:
            continue
        prerequisites = [task_of[p] for p in graph.providers_of(consumer) if p in task_of]
        follow_up = store.add(
            consumer,
            f"Follow-up in {consumer} of task {origin.id} in {origin.project}, which a change "
            f"there may affect. Adapt {consumer} to it and keep its tests passing.\n\n"
            f"The change in {origin.project}:\n{origin.prompt}",
            priority=origin.priority,
            after=prerequisites or [origin.id],
            session=origin.session,
            source="propagate",
        )
        assert follow_up is not None
        task_of[consumer] = follow_up.id
        created.append(follow_up)
    return created


@task.command("list")
@click.argument("project", required=False)
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in TaskStatus])
)
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
def list_tasks(project: str | None, statuses: tuple[str, ...], as_json: bool) -> None:
    """Tasks, oldest first, optionally of one PROJECT and in some states."""
    store = TaskStore.from_settings(Settings.from_env())
    tasks = store.list(
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
    found = TaskStore.from_settings(Settings.from_env()).get(task_id)
    if found is None:
        fail(f"no task with id {task_id!r}")
    data = found.to_dict()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if value not in (None, "", [], {}):
            click.echo(f"{key + ':':<13} {value}")


@task.command("cancel")
@click.argument("task_id")
def cancel(task_id: str) -> None:
    """Cancel a task; a run carrying it out is terminated, which kills its agent."""
    settings = Settings.from_env()
    store = TaskStore.from_settings(settings)
    try:
        cancelled = store.cancel(task_id)
    except TaskError as exc:
        fail(str(exc))
    instance = dagster_instance(settings)
    stopped = []
    if instance is not None:
        import dagster as dg

        runs = instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task_id}))
        if cancelled.run_id and all(run.run_id != cancelled.run_id for run in runs):
            run = instance.get_run_by_id(cancelled.run_id)
            runs = [run, *runs] if run else runs
        for run in runs:
            if not run.is_finished:
                instance.run_coordinator.cancel_run(run.run_id)
                stopped.append(run.run_id)
    click.echo(
        f"cancelled {task_id}" + (f" (terminated run {', '.join(stopped)})" if stopped else "")
    )


@task.command("import")
@click.argument("project")
def import_tasks(project: str) -> None:
    """Add a task for each unchecked `- [ ]` item of PROJECT's .agent-os/specs/*/tasks.md."""
    settings = Settings.from_env()
    try:
        spec = load_registry(settings).project(project).spec
    except KeyError as exc:
        fail(exc.args[0])
    store = TaskStore.from_settings(settings)
    added = import_task_lists(spec, ProjectWorkspace(settings.home, spec), store)
    instance = dagster_instance(settings)
    if instance is not None and added:
        ensure_partitions(instance, added)
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
    sessions = TaskStore.from_settings(Settings.from_env()).sessions(project)
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


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
