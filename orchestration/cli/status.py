"""`orch status`: every project at a glance (state, work in flight, outcomes, spend, last
verification), the agent pools and the provider accounts, from the task database and the
Dagster instance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from orchestration.cli.output import echo_json, echo_table
from orchestration.cli.state import current_registry, current_settings, dagster_instance, task_store

if TYPE_CHECKING:
    from orchestration.monitoring.portfolio import LastVerification, Portfolio


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Every project: state, running, queued, outcomes in the last 24 h, cost today and over 7
    days, tokens today, last verification; the agent pools' slots; and each provider account
    (open, or paused by a usage limit until when)."""
    from orchestration.monitoring.portfolio import read_portfolio

    settings = current_settings()
    store = task_store(settings)
    instance = dagster_instance(settings)
    registry = current_registry(settings)
    portfolio = read_portfolio(registry, store, instance, datetime.now(UTC))
    if as_json:
        echo_json(portfolio.to_dict())
        return
    _print(portfolio)
    if instance is None:
        click.echo(
            "no Dagster instance yet (`orch up` makes one): pool limits are the configured "
            "ones, and no verification is known",
            err=True,
        )
    if registry.errors:
        click.echo(
            f"{len(registry.errors)} registry error(s) hide some projects; run `orch validate`.",
            err=True,
        )


def _print(portfolio: Portfolio) -> None:
    echo_table(
        [
            "project",
            "state",
            "priority",
            "running",
            "queued",
            "blocked",
            "ok 24h",
            "failed 24h",
            "$ today",
            "$ 7d",
            "tokens today",
            "verified",
        ],
        [
            (
                row.name,
                f"{row.state} ({row.state_reason})" if row.state_reason else row.state,
                "-" if row.priority is None else row.priority,
                row.running,
                row.queued,
                row.blocked,
                row.usage.succeeded_24h,
                row.usage.failed_24h,
                f"{row.usage.cost_today_usd:.2f}",
                f"{row.usage.cost_7d_usd:.2f}",
                row.usage.tokens_today,
                _verification(row.last_verification),
            )
            for row in portfolio.projects
        ],
    )
    slots = ", ".join(
        f"{name} {pool.in_use} of {pool.limit}" for name, pool in portfolio.slots.items()
    )
    click.echo(f"slots in use: {slots or 'no pools'}")
    today = sum(row.usage.cost_today_usd for row in portfolio.projects)
    wasted = sum(row.usage.wasted_usd_today for row in portfolio.projects)
    click.echo(f"spent today (UTC): ${today:.2f}, of which ${wasted:.2f} on failed or cancelled")
    providers = "; ".join(
        f"{provider.name} {provider.limit}/{provider.configured} {provider.describe()}"
        for provider in portfolio.providers
    )
    click.echo(f"providers: {providers or 'none named by the agent profiles'}")


def _verification(last: LastVerification | None) -> str:
    if last is None:
        return "-"
    return f"{'passed' if last.passed else 'FAILED'} {_age(last.age_s)} ago"


def _age(seconds: float) -> str:
    """A short age: 45s, 12m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
