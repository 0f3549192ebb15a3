"""`orch providers`: the provider accounts agents spend, whether a usage limit paused one and
until when, and ending a pause by hand.

`list` reads the registry and the task database only; `resume` then sets the pool limits in the
Dagster instance at once, so it imports Dagster (through `orchestration.allocation.control`)
when it runs."""

from __future__ import annotations

import getpass
import os

import click

from orchestration.allocation.providers import ProviderStates
from orchestration.cli.output import echo_json, echo_table, fail
from orchestration.cli.state import current_registry, current_settings, dagster_instance, task_store
from orchestration.control.budget import budget_now
from orchestration.monitoring.portfolio import ProviderStatus, read_providers, utc_iso

#: Who a resume is recorded as when the user's name cannot be read.
CLI_ACTOR = "cli"


@click.group()
def providers() -> None:
    """Provider accounts (a profile's `provider_pool`) and their usage-limit pauses."""


@providers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_command(as_json: bool) -> None:
    """Every account the agent profiles name (and any with a recorded state): its status, its
    pool's limit now against the configured one, until when it is paused (UTC), why, the
    provider's window, the task that hit the limit, and since when."""
    settings = current_settings()
    store = task_store(settings)
    try:
        accounts = read_providers(current_registry(settings), store)
    finally:
        store.dispose()
    if as_json:
        echo_json([account.to_dict() for account in accounts])
        return
    if not accounts:
        click.echo("no agent profile names a provider account (`provider_pool` in agents.yaml)")
        return
    echo_table(
        ["account", "status", "limit", "until", "reason", "window", "task", "since"],
        [
            (
                account.name,
                account.status,
                _limit(account),
                _when(account),
                account.reason or "-",
                account.window or "-",
                account.source_task or "-",
                utc_iso(account.since) if account.since else "-",
            )
            for account in accounts
        ],
    )


@providers.command("resume")
@click.argument("name")
def resume_command(name: str) -> None:
    """End NAME's pause now (a usage limit's, or an account out of credits once it has credit
    again): its pool opens fully and its queued tasks may start."""
    settings = current_settings()
    store = task_store(settings)
    try:
        registry = current_registry(settings)
        before = {account.name: account for account in read_providers(registry, store)}
        if name not in before:
            known = ", ".join(before) or "none"
            fail(
                f"no provider account {name!r}: the accounts are {known} (the `provider_pool` "
                f"of the profiles in {settings.config_dir / 'agents.yaml'})"
            )
        account = before[name]
        if account.status == "open":
            click.echo(f"provider {name} is open already (pool {account.pool}: {account.limit})")
            return
        ProviderStates(store).resume(name, budget_now(os.environ), _actor())
        after = {account.name: account for account in read_providers(registry, store)}[name]
        click.echo(
            f"provider {name}: {account.status} -> {after.status} ({after.reason}); "
            f"pool {after.pool}: {account.limit} -> {after.limit}"
        )
        instance = dagster_instance(settings)
        if instance is None:
            click.echo(
                "no Dagster instance yet: the pool limits are set when `orch up` starts it",
                err=True,
            )
            return
        from orchestration.allocation.control import apply_pool_limits, settings_now

        try:
            changed = apply_pool_limits(instance, settings_now(registry, store).pool_limits())
        finally:
            instance.dispose()
        click.echo(f"pool limits changed: {', '.join(changed) or 'none'}", err=True)
    finally:
        store.dispose()


def _actor() -> str:
    """The user who resumes, as the system names them."""
    try:
        return getpass.getuser() or CLI_ACTOR
    except (OSError, KeyError):  # no login name and no password entry (some containers)
        return CLI_ACTOR


def _limit(account: ProviderStatus) -> str:
    """`4`, or `4 -> 0` while a pause holds the pool below its configured limit."""
    if account.limit == account.configured:
        return str(account.limit)
    return f"{account.configured} -> {account.limit}"


def _when(account: ProviderStatus) -> str:
    if account.status == "open":
        return "-"
    if account.until is None:
        return "until resumed"
    return utc_iso(account.until)
