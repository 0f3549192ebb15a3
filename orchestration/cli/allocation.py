"""`orch allocation`: see and change how agent slots are shared, live.

Every command here talks to the Dagster instance, so each imports `orchestration.allocation.control`
(and Dagster with it) when it runs: the rest of the CLI starts without Dagster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import (
    current_registry,
    current_settings,
    dagster_instance,
    task_store,
)
from orchestration.registry import PRIORITY_CLASSES
from orchestration.registry.models import parse_priority
from orchestration.settings import Settings
from orchestration.tags import PROJECT_TAG, TASK_TAG, lease_pool
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore

if TYPE_CHECKING:
    import dagster as dg

    from orchestration.allocation.control import AllocationSettings
    from orchestration.registry.loader import Registry


@click.group()
def allocation() -> None:
    """Share agent slots among projects: show, set, apply, rebalance."""


def _context() -> tuple[Settings, dg.DagsterInstance, TaskStore]:
    settings = current_settings()
    instance = dagster_instance(settings)
    if instance is None:
        fail("no Dagster instance yet: start it with `orch up`, or set DAGSTER_HOME")
    return settings, instance, task_store(settings)


def _settings(settings: Settings, store: TaskStore) -> AllocationSettings:
    from orchestration.allocation.control import settings_now

    return settings_now(current_registry(settings), store)


def _apply(instance: dg.DagsterInstance, store: TaskStore, current: AllocationSettings) -> None:
    from orchestration.allocation.control import apply_pool_limits, rebalance

    changed = apply_pool_limits(instance, current.pool_limits())
    reranked = rebalance(instance, store, current)
    click.echo(
        f"pool limits changed: {', '.join(changed) or 'none'}; "
        f"queued runs re-prioritised: {len(reranked)}",
        err=True,
    )


@allocation.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--next",
    "next_count",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="How many of the queued tasks that start next to list.",
)
def show(as_json: bool, next_count: int) -> None:
    """Slots, who holds them, queue depth, target and actual share per project, the queued
    tasks in the order they will start, each provider account's pool (paused by a usage
    limit, until when), and each lease channel's pool (its slots in use, its subscribers)."""
    from orchestration.allocation.control import current_allocation, settings_now
    from orchestration.control.store import ProjectStates
    from orchestration.monitoring.portfolio import read_pools_in_use, read_providers

    settings, instance, store = _context()
    registry = current_registry(settings)
    current = settings_now(registry, store)
    accounts = read_providers(registry, store)
    states = ProjectStates(store).states()
    # Tasks the dispatch sensor has not turned into runs yet are in the queue too.
    waiting = [t for t in store.tasks(statuses=[TaskStatus.QUEUED]) if not t.dispatched]
    result, runs, loads = current_allocation(instance, store, current, waiting)
    holders = [
        {"project": r.tags.get(PROJECT_TAG), "task": r.tags.get(TASK_TAG), "run_id": r.run_id}
        for r in runs.running
    ]
    projects = [
        {
            "name": load.name,
            "state": str(states.get(load.name, "active")),
            "priority": load.priority,
            "max_parallel": load.max_parallel,
            "running": load.running,
            "queued": len(load.queued),
            "target_share": round(result.target_share(load.name), 4),
            "actual_share": round(load.running / current.slots, 4) if current.slots else 0.0,
        }
        for load in loads
    ]
    project_of = {task.task_id: load.name for load in loads for task in load.queued}
    upcoming = sorted(result.priorities.items(), key=lambda item: -item[1])[:next_count]
    leases = _leases(registry, current.pool_limits(), read_pools_in_use(instance))
    next_up = [
        {"task": task_id, "project": project_of[task_id], "priority": priority}
        for task_id, priority in upcoming
    ]
    if as_json:
        echo_json(
            {
                "slots": current.slots,
                "in_use": len(runs.running),
                "ageing_s": current.ageing_s,
                "pools": current.pool_limits(),
                "holders": holders,
                "projects": projects,
                "next": next_up,
                "providers": [account.to_dict() for account in accounts],
                "leases": leases,
            }
        )
        return
    click.echo(f"slots: {len(runs.running)} of {current.slots} in use")
    echo_table(
        ["project", "state", "priority", "max", "running", "queued", "target", "actual"],
        [
            (
                p["name"],
                # Dagster's own messages name another pool for a run held by a paused project's.
                p["state"] if p["state"] == "active" else f"{p['state']} (pool 0)",
                p["priority"],
                p["max_parallel"],
                p["running"],
                p["queued"],
                f"{p['target_share']:.0%}",
                f"{p['actual_share']:.0%}",
            )
            for p in projects
        ],
    )
    if next_up:
        listed = ", ".join(f"{n['task']} ({n['project']})" for n in next_up)
        click.echo(f"next in the queue (as pool limits allow): {listed}")
    width = max(
        (len(pool) for pool in [a.pool for a in accounts] + [x["pool"] for x in leases]), default=0
    )
    for account in accounts:
        click.echo(
            f"{account.pool.ljust(width)}  {account.limit}/{account.configured}  "
            f"{account.describe()}"
        )
    for lease in leases:
        click.echo(
            f"{lease['pool'].ljust(width)}  {lease['in_use']}/{lease['limit']} in use  "
            f"lease {lease['channel']}, subscribers: {', '.join(lease['subscribers']) or 'none'}"
        )


def _leases(
    registry: Registry, limits: Mapping[str, int], in_use: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Each lease channel's pool: its channel, limit, slots held by task runs now, and the
    projects whose task runs hold it."""
    from orchestration.registry.channels import published, subscribers

    specs = {project.name: project.spec for project in registry.projects}
    rows = []
    for publisher, channel in published(specs):
        if channel.kind != "lease":
            continue
        pool = lease_pool(publisher, channel.name)
        rows.append(
            {
                "pool": pool,
                "channel": f"{publisher}.{channel.name}",
                "limit": limits.get(pool, channel.lease_slots),
                "in_use": in_use.get(pool, 0),
                "subscribers": subscribers(specs, publisher, channel.name),
            }
        )
    return rows


@allocation.command("set")
@click.argument("project", required=False)
@click.option("--priority", help=f"{', '.join(PRIORITY_CLASSES)} or 0-100.")
@click.option("--max-parallel", type=click.IntRange(1, 1000))
@click.option("--slots", type=click.IntRange(0, 100_000), help="The global agent slot count.")
def set_command(
    project: str | None, priority: str | None, max_parallel: int | None, slots: int | None
) -> None:
    """Change a project's priority or parallelism, or the slot count, live (until the next
    `orch allocation apply`)."""
    from orchestration.allocation.control import AllocationOverrides

    settings, instance, store = _context()
    values: dict[str, int] = {}
    if slots is not None:
        values["slots"] = slots
    if project is None:
        if priority is not None or max_parallel is not None:
            fail("--priority and --max-parallel need a PROJECT")
    else:
        registry = current_registry(settings)
        try:
            registry.project(project)
        except KeyError as exc:
            fail(exc.args[0])
        if priority is not None:
            try:
                # A class name becomes its number; digits come back as they were.
                value = int(str(parse_priority(priority.strip())))
            except ValueError as exc:
                fail(f"--priority: {exc}")
            if not 0 <= value <= 100:
                fail("--priority: use 0-100 or a class name")
            values[f"priority:{project}"] = value
        if max_parallel is not None:
            values[f"max_parallel:{project}"] = max_parallel
    if not values:
        fail("nothing to set: give --priority, --max-parallel or --slots")
    overrides = AllocationOverrides(store)
    overrides.set(values)
    _apply(instance, store, _settings(settings, store))
    click.echo("set " + ", ".join(f"{k}={v}" for k, v in values.items()))


@allocation.command("apply")
def apply_command() -> None:
    """Take the YAML (projects, pools.yaml) as the allocation now: clears `set` overrides,
    sets pool limits, re-prioritises queued runs."""
    from orchestration.allocation.control import AllocationOverrides, settings_now

    settings, instance, store = _context()
    registry = current_registry(settings)
    if registry.errors:
        for error in registry.errors:
            click.echo(str(error), err=True)
        fail("the registry has errors; fix them first (`orch validate`)")
    AllocationOverrides(store).clear()
    _apply(instance, store, settings_now(registry, store))


@allocation.command("rebalance")
def rebalance_command() -> None:
    """Re-prioritise queued task runs by the allocation policy now."""
    from orchestration.allocation.control import rebalance

    settings, instance, store = _context()
    reranked = rebalance(instance, store, _settings(settings, store))
    click.echo(f"re-prioritised {len(reranked)} queued run(s)")
