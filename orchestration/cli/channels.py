"""`orch channel`: post a message to a project's messages channel (the team lead speaking for
the publisher), list every published channel with its subscribers and activity, and show one
channel's ledger. Reads the live registry and the task database; never Dagster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from orchestration.channels.log import ChannelEvent, ChannelLog, EventKind
from orchestration.cli.output import echo_json, echo_table, fail, text_argument
from orchestration.cli.state import current_registry, current_settings, task_store
from orchestration.registry.channels import published, split_ref, subscribers
from orchestration.registry.layers import display_path

if TYPE_CHECKING:
    from orchestration.registry.loader import Registry
    from orchestration.registry.models import ChannelSpec, ProjectSpec

#: What each kind that carries no messages is for, in the error a post to it gets.
NOT_MESSAGES = {
    "contract": "its subscribers get files from the repository",
    "lease": "its subscribers' runs share a resource, a few at a time",
}


@click.group()
def channel() -> None:
    """Channels between projects: post to one, list them, read a channel's ledger."""


@channel.command("post")
@click.argument("ref", metavar="PUBLISHER.CHANNEL")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded message as JSON.")
def post_command(ref: str, text: str, as_json: bool) -> None:
    """Post TEXT to a messages channel on its publisher's behalf; TEXT `-` reads it from
    standard input. Each subscriber's next task gets it. Prints the message id."""
    text = text_argument(text, "message")
    problem = _text_problem(text)
    if problem:
        fail(f"{ref}: {problem}; nothing was posted")
    settings = current_settings()
    registry = current_registry(settings)
    declared, problem = _declared(registry, ref)
    if declared is None:
        fail(problem)
    publisher, name = split_ref(ref)
    if declared.kind != "messages":
        fail(_not_messages(registry, publisher, declared))
    store = task_store(settings)
    try:
        try:
            event = ChannelLog(store).post(publisher, name, text, project=publisher)
        except ValueError as exc:  # empty, or MessageTooLong
            fail(f"{ref}: {exc}; nothing was posted")
    finally:
        store.dispose()
    reached = subscribers(_specs(registry), publisher, name)
    if reached:
        click.echo(
            f"posted to {ref}; {len(reached)} subscriber(s) get it with their next task: "
            f"{', '.join(reached)}",
            err=True,
        )
    else:
        click.echo(f"posted to {ref}; no project subscribes to it yet", err=True)
    if as_json:
        echo_json(event.as_json())
    else:
        click.echo(event.id)


@channel.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_command(as_json: bool) -> None:
    """Every channel the projects publish: its kind, subscribers, who may subscribe, its files
    (contract) or slots (lease), when its ledger last had an entry (UTC) and how many messages
    it holds."""
    settings = current_settings()
    registry = current_registry(settings)
    store = task_store(settings)
    try:
        log = ChannelLog(store)
        activity, counts = log.last_activity(), log.message_counts()
    finally:
        store.dispose()
    specs = _specs(registry)
    rows = [
        _row(specs, publisher, declared, activity, counts)
        for publisher, declared in published(specs)
    ]
    if as_json:
        echo_json({"channels": rows})
        return
    if not rows:
        click.echo("no project publishes a channel (`channels.publish` in a project file)")
        return
    echo_table(
        ["channel", "kind", "subscribers", "allow", "paths/slots", "last activity", "messages"],
        [
            (
                row["channel"],
                row["kind"],
                ", ".join(row["subscribers"]) or "-",
                "any" if row["allow"] is None else ", ".join(row["allow"]) or "none",
                _carries(row),
                _when(activity[(row["publisher"], row["name"])])
                if row["last_activity"]
                else "never",
                row["messages"],
            )
            for row in rows
        ],
    )


@channel.command("log")
@click.argument("ref", metavar="PUBLISHER.CHANNEL")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N entries.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def log_command(ref: str, limit: int | None, as_json: bool) -> None:
    """The ledger of one channel, oldest first: each message posted, each delivery to a
    subscriber's task and each refusal, with when (UTC), who, the task and the commit. A
    channel no longer declared (its publisher archived, say) shows what it recorded."""
    settings = current_settings()
    registry = current_registry(settings)
    declared, problem = _declared(registry, ref)
    publisher, name = split_ref(ref)
    store = task_store(settings)
    try:
        events = ChannelLog(store).events(publisher, name) if publisher and name else []
    finally:
        store.dispose()
    if declared is None:
        if not events:
            fail(problem)
        click.echo(f"{problem}; showing what its ledger recorded", err=True)
    shown = events[-limit:] if limit else events
    if as_json:
        echo_json(
            {
                "channel": ref,
                "kind": declared.kind if declared else None,
                "events": [event.as_json() for event in shown],
            }
        )
        return
    if not shown:
        click.echo(f"{ref}: nothing posted, delivered or refused yet")
        return
    _echo_events(shown)


def _specs(registry: Registry) -> dict[str, ProjectSpec]:
    return {project.name: project.spec for project in registry.projects}


def _text_problem(text: str) -> str | None:
    """What no channel can carry: text that is not UTF-8, or a NUL character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, as a command line may carry them
        return "the message is not valid UTF-8 text"
    if "\x00" in text:
        return "the message contains a NUL character (\\0); remove it"
    return None


def _declared(registry: Registry, ref: str) -> tuple[ChannelSpec | None, str]:
    """The declaration of the channel `ref` names in the live registry; or None and what is
    wrong, naming the channels there are."""
    publisher, name = split_ref(ref)
    if not publisher or not name:
        return None, (f"{ref!r}: name a channel as PUBLISHER.CHANNEL; channels: {_known(registry)}")
    try:
        project = registry.project(publisher)
    except KeyError as exc:
        return None, f"{ref}: {exc.args[0]}; channels: {_known(registry)}"
    declared = project.spec.channels.published(name)
    if declared is None:
        offered = ", ".join(f"{c.name} ({c.kind})" for c in project.spec.channels.publish) or "none"
        return None, (
            f"{ref}: {display_path(project.path)} publishes no channel {name!r} "
            f"(it publishes: {offered})"
        )
    return declared, ""


def _known(registry: Registry) -> str:
    return (
        ", ".join(f"{publisher}.{c.name}" for publisher, c in published(_specs(registry))) or "none"
    )


def _not_messages(registry: Registry, publisher: str, declared: ChannelSpec) -> str:
    """Why `declared` takes no posts, and which channels of its publisher do."""
    project = registry.project(publisher)
    shown = display_path(project.path)
    takers = [
        f"{publisher}.{c.name}" for c in project.spec.channels.publish if c.kind == "messages"
    ]
    where = (
        f"{shown} publishes the messages channel(s) {', '.join(takers)}"
        if takers
        else f"{shown} publishes none"
    )
    return (
        f"{publisher}.{declared.name} is a {declared.kind} channel: "
        f"{NOT_MESSAGES[declared.kind]}; post to a messages channel ({where})"
    )


def _row(
    specs: Mapping[str, ProjectSpec],
    publisher: str,
    declared: ChannelSpec,
    activity: Mapping[tuple[str, str], datetime],
    counts: Mapping[tuple[str, str], int],
) -> dict[str, Any]:
    key = (publisher, declared.name)
    last = activity.get(key)
    return {
        "channel": f"{publisher}.{declared.name}",
        "publisher": publisher,
        "name": declared.name,
        "kind": declared.kind,
        "subscribers": subscribers(specs, publisher, declared.name),
        "allow": None if declared.allow is None else list(declared.allow),
        "paths": list(declared.paths),
        "slots": declared.lease_slots if declared.kind == "lease" else None,
        "last_activity": last.astimezone(UTC).isoformat() if last else None,
        "messages": counts.get(key, 0),
    }


def _carries(row: Mapping[str, Any]) -> str:
    if row["kind"] == "contract":
        return ", ".join(row["paths"])
    if row["kind"] == "lease":
        return f"{row['slots']} slot(s)"
    return "-"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _echo_events(events: Sequence[ChannelEvent]) -> None:
    """One line per entry (id, when, kind, project, then its task, commit and the messages a
    delivery handed over), a post's text or a refusal's reason indented below it."""
    heads = [(f"#{e.id}", _when(e.created_at), str(e.kind), e.project) for e in events]
    widths = [max(len(head[i]) for head in heads) for i in range(len(heads[0]))]
    for event, head in zip(events, heads, strict=True):
        cells = [cell.ljust(width) for cell, width in zip(head, widths, strict=True)]
        if event.task:
            cells.append(f"task {event.task}")
        if event.commit:
            cells.append(f"commit {event.commit[:12]}")
        if event.kind is EventKind.DELIVERY and event.upto:
            cells.append(f"messages up to #{event.upto}")
        click.echo("  ".join(cells).rstrip())
        for line in (event.body or "").splitlines():
            click.echo(f"    {line}".rstrip())
