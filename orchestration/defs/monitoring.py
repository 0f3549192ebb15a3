"""The `monitoring` sensor and what it records: each project's `usage` (spend, tokens and
outcomes as numbers the UI plots) when a task of it ended or the day rolled over, the
`within_budget` check of each `usage` (and of `orchestration/portfolio` for all projects'
budget) when a budget's level changed, and `orchestration/portfolio`, one table of every
project, when anything changed or every five minutes while work runs. A spent budget pauses its
project (reason `budget`) and the next period resumes it. `orchestration/providers`, one table of
the provider accounts agents spend, and its `available` check are recorded when an account's
state changed (a usage limit paused it, a canary tried it, it opened or was resumed), and each
pause and resume is alerted.

All of it is recorded as runless events returned with the tick (`SensorResult.asset_events`),
as the daemon records any sensor's: nothing runs per project, and no timer either. A thin shell:
`orchestration/monitoring/recording.py` decides."""

# No `from __future__ import annotations` here: Dagster reads the annotations of sensor and
# check functions (context and resource types) when the definitions are built.

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from datetime import datetime

import dagster as dg

from orchestration.alerts.delivery import Alerts, WebhookSender
from orchestration.alerts.model import Alert
from orchestration.control.actions import ControlError, control_project
from orchestration.control.budget import BudgetCheck, BudgetLevel, budget_now
from orchestration.control.states import Action, ProjectState
from orchestration.defs.resources import AgentTasks
from orchestration.monitoring.portfolio import (
    Portfolio,
    ProjectRow,
    ProviderStatus,
    read_portfolio,
    utc_iso,
)
from orchestration.monitoring.recording import (
    ALL_PROJECTS,
    BUDGET_REASON,
    BudgetChange,
    MonitorCursor,
    ProviderChange,
    all_projects_check,
    plan_monitoring,
    portfolio_mark,
)
from orchestration.registry.loader import Registry
from orchestration.sharding import split_evenly
from orchestration.tasks.store import TaskStore

MONITORING_SENSOR = "monitoring"
MONITORING_INTERVAL_S = 30
PORTFOLIO_KEY = dg.AssetKey(["orchestration", "portfolio"])
BUDGET_CHECK = "within_budget"
PROVIDERS_KEY = dg.AssetKey(["orchestration", "providers"])
AVAILABLE_CHECK = "available"
#: Who a transition made by a budget is recorded as.
BUDGET_ACTOR = "budget"
#: How many projects the portfolio's summary names as top spenders.
TOP_SPENDERS = 5


def usage_key(project: str) -> dg.AssetKey:
    return dg.AssetKey([project, "usage"])


def build_monitoring_defs(
    projects: Collection[str],
    clock: Callable[[], datetime] | None = None,
    sender: WebhookSender | None = None,
    checked: Collection[str] | None = None,
) -> dg.Definitions:
    """The portfolio and providers assets, the `within_budget` checks of the portfolio and of
    the `usage` of every project in `checked` (by default `projects`; a few definitions for
    all, no op per project), the providers' `available` check, and the `monitoring` sensor,
    which records all of `projects` (the checks of other code locations' projects included).
    `clock` gives the time (UTC; by default the system's, shifted by ORCH_CLOCK_OFFSET_S);
    tests pass their own to cross a midnight."""

    @dg.multi_asset_check(
        name="provider_checks",
        specs=[
            dg.AssetCheckSpec(
                AVAILABLE_CHECK,
                asset=PROVIDERS_KEY,
                description="Every provider account agents spend is open: fails while a usage "
                "limit holds one paused (its pool `provider_<name>` at 0), naming it, until when "
                "and why. Evaluated by the `monitoring` sensor when an account's state changes.",
            )
        ],
    )
    def provider_checks() -> Iterator[dg.AssetCheckResult]:
        yield from _evaluated_by_the_sensor(AVAILABLE_CHECK)

    portfolio = dg.AssetSpec(
        PORTFOLIO_KEY,
        group_name="orchestration",
        kinds={"cost"},
        description="Every project at a glance: state, priority, tasks running, queued and "
        "blocked, outcomes of the last 24 h, spend today and over 7 days, tokens today, last "
        "verification and budget used, with a summary of the top spenders and wasted spend. "
        "Recorded by the `monitoring` sensor when anything changed, and every 5 minutes while "
        "work runs. The same data: `orch status`.",
    )
    providers = dg.AssetSpec(
        PROVIDERS_KEY,
        group_name="orchestration",
        description="The provider accounts agents spend (a profile's `provider_pool`): each "
        "one's status (open; paused by a usage limit until the provider's reset plus a grace; "
        "canary: one task tries it again), until when and why, the task that hit the limit, and "
        "its pool's limit now. Recorded by the `monitoring` sensor when an account's state "
        "changes. The same data: `orch providers list`; `orch providers resume NAME` ends a "
        "pause by hand.",
    )
    return dg.Definitions(
        assets=[portfolio, providers],
        asset_checks=[
            *build_budget_checks(projects if checked is None else checked, portfolio=True),
            provider_checks,
        ],
        sensors=[build_monitoring_sensor(projects, clock, sender)],
    )


def build_budget_checks(
    projects: Collection[str], *, portfolio: bool = False
) -> list[dg.AssetChecksDefinition]:
    """The `within_budget` checks of these projects' `usage` (and of the portfolio), evaluated
    by the `monitoring` sensor: one op per `MOST_PER_OP` projects, never executed."""
    groups = split_evenly(sorted(projects))
    keys = [[usage_key(name) for name in group] for group in groups] or [[]]
    if portfolio:
        keys[0].append(PORTFOLIO_KEY)
    return [
        _budget_checks("budget_checks" + (f"_{number}" if number else ""), group)
        for number, group in enumerate(keys)
        if group
    ]


def _budget_checks(op: str, keys: Sequence[dg.AssetKey]) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=op,
        specs=[
            dg.AssetCheckSpec(
                BUDGET_CHECK,
                asset=key,
                description="Spend against the budget: warns at 80 %, fails at 100 % (the "
                "project is then paused until the period ends). Evaluated by the `monitoring` "
                "sensor when the level changes.",
            )
            for key in keys
        ],
        can_subset=True,
    )
    def budget_checks() -> Iterator[dg.AssetCheckResult]:
        # A generator: Dagster wants one with several checks (it reads what is yielded).
        yield from _evaluated_by_the_sensor(BUDGET_CHECK)

    return budget_checks


def _evaluated_by_the_sensor(check: str) -> Iterator[dg.AssetCheckResult]:
    raise dg.Failure(
        f"{check} is evaluated by the monitoring sensor from the task database; there is "
        "nothing to run"
    )


def _budget_clock() -> datetime:
    """Now as budgets read it (ORCH_CLOCK_OFFSET_S read at each tick)."""
    return budget_now(os.environ)


def build_monitoring_sensor(
    projects: Collection[str],
    clock: Callable[[], datetime] | None = None,
    sender: WebhookSender | None = None,
) -> dg.SensorDefinition:
    """The `monitoring` sensor of definitions that hold `projects`."""
    now_of = clock or _budget_clock
    webhooks = sender or WebhookSender(log=dg.get_dagster_logger(MONITORING_SENSOR))
    loaded = set(projects)

    @dg.sensor(
        name=MONITORING_SENSOR,
        minimum_interval_seconds=MONITORING_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Record each project's usage when a task ended or the day rolled over, "
        "evaluate budgets (pause a project whose budget is spent, resume it when the period "
        "ends), record the portfolio of all projects, and record the provider accounts and "
        "alert their pauses and resumes.",
    )
    def monitoring(context: dg.SensorEvaluationContext, agent_tasks: AgentTasks) -> dg.SensorResult:
        registry = agent_tasks.live_registry().current()
        store = agent_tasks.store()
        try:
            now = now_of()
            portfolio = read_portfolio(registry, store, context.instance, now)
            all_budget = registry.pools.budget if registry.pools else None
            plan = plan_monitoring(
                portfolio, MonitorCursor.from_json(context.cursor), now=now, all_budget=all_budget
            )
            moved = _apply_budget_states(plan.pause, plan.resume, registry, store, context)
            if moved:  # the portfolio recorded shows the states as they are now
                portfolio = read_portfolio(registry, store, context.instance, now)
                plan = replace(
                    plan,
                    portfolio=True,
                    cursor=replace(
                        plan.cursor,
                        portfolio=portfolio_mark(portfolio),
                        portfolio_at=now.timestamp(),
                    ),
                )
            events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = [
                usage_materialization(row) for row in plan.usage if row.name in loaded
            ]
            events += [
                budget_evaluation(change)
                for change in plan.budget_changes
                if change.project in loaded or change.project == ALL_PROJECTS
            ]
            if plan.portfolio:
                events.append(
                    portfolio_materialization(
                        portfolio, all_projects_check(portfolio, all_budget, now)
                    )
                )
            if plan.providers:
                events += [
                    providers_materialization(portfolio.providers),
                    available_evaluation(portfolio.providers),
                ]
            _alert_budget_changes(plan.budget_changes, registry, webhooks, now)
            _alert_provider_changes(plan.provider_changes, registry, webhooks, now)
            return dg.SensorResult(asset_events=events, cursor=plan.cursor.to_json())
        finally:
            store.dispose()

    return monitoring


def _apply_budget_states(
    pause: Sequence[str],
    resume: Sequence[str],
    registry: Registry,
    store: TaskStore,
    context: dg.SensorEvaluationContext,
) -> list[str]:
    """Pause the projects whose budget is spent and resume those a budget had paused; the
    projects moved. One that cannot be moved is logged and left."""
    moved = []
    for action, names in ((Action.PAUSE, pause), (Action.RESUME, resume)):
        for name in names:
            try:
                outcome = control_project(
                    action,
                    name,
                    settings=registry.settings,
                    registry=registry,
                    store=store,
                    instance=context.instance,
                    reason=BUDGET_REASON if action is Action.PAUSE else "budget period ended",
                    actor=BUDGET_ACTOR,
                )
            except ControlError as exc:
                context.log.warning(f"budget: could not {action} {name}: {exc}")
                continue
            if outcome.changed:
                context.log.info(f"budget: {action}d {name}")
                moved.append(name)
    return moved


def usage_materialization(row: ProjectRow) -> dg.AssetMaterialization:
    """A project's `usage` as numbers the UI plots."""
    usage, budget = row.usage, row.budget
    metadata: dict[str, float | int] = {
        "cost_today_usd": round(usage.cost_today_usd, 6),
        "cost_7d_usd": round(usage.cost_7d_usd, 6),
        "cost_30d_usd": round(usage.cost_30d_usd, 6),
        "cost_month_usd": round(usage.cost_month_usd, 6),
        "tokens_in_today": usage.tokens_in_today,
        "tokens_out_today": usage.tokens_out_today,
        "tasks_succeeded_today": usage.tasks_succeeded_today,
        "tasks_failed_today": usage.tasks_failed_today,
        "wasted_usd_today": round(usage.wasted_usd_today, 6),
        "burn_rate_usd_per_h": round(usage.burn_rate_usd_per_h, 6),
    }
    if usage.cost_per_success_usd is not None:
        metadata["cost_per_success_usd"] = round(usage.cost_per_success_usd, 6)
    if budget.used_pct is not None:
        metadata["budget_used_pct"] = budget.used_pct
    return dg.AssetMaterialization(
        asset_key=usage_key(row.name),
        description=f"{row.name}: ${usage.cost_today_usd:.2f} today, "
        f"{usage.tasks_succeeded_today} succeeded, {usage.tasks_failed_today} failed",
        metadata=metadata,
    )


def budget_evaluation(change: BudgetChange) -> dg.AssetCheckEvaluation:
    """The `within_budget` evaluation of a budget whose level changed."""
    check = change.check
    key = PORTFOLIO_KEY if change.project == ALL_PROJECTS else usage_key(change.project)
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=BUDGET_CHECK,
        passed=check.level is BudgetLevel.OK,
        severity=(
            dg.AssetCheckSeverity.WARN
            if check.level is BudgetLevel.WARN
            else dg.AssetCheckSeverity.ERROR
        ),
        description=_budget_text(change.project, check),
        metadata={
            "used_pct": check.used_pct if check.used_pct is not None else 0.0,
            "period": check.period or "",
            "spent_usd": round(check.spent_usd, 6),
            "limit_usd": check.limit_usd if check.limit_usd is not None else 0.0,
            "resets_at": check.resets_at.isoformat() if check.resets_at else "",
            "level": str(check.level),
            "before": change.before,
        },
    )


def portfolio_materialization(
    portfolio: Portfolio, all_budget: BudgetCheck
) -> dg.AssetMaterialization:
    """One row per project as a table, the totals as numbers, and a summary."""
    rows = [_table_row(row) for row in portfolio.projects]
    columns = [
        dg.TableColumn("project", "string"),
        dg.TableColumn("state", "string"),
        dg.TableColumn("priority", "int"),
        dg.TableColumn("running", "int"),
        dg.TableColumn("queued", "int"),
        dg.TableColumn("blocked", "int"),
        dg.TableColumn("succeeded_24h", "int"),
        dg.TableColumn("failed_24h", "int"),
        dg.TableColumn("cost_today_usd", "float"),
        dg.TableColumn("cost_7d_usd", "float"),
        dg.TableColumn("tokens_today", "int"),
        dg.TableColumn("last_verification", "string"),
        dg.TableColumn("budget_used_pct", "float"),
    ]
    projects = portfolio.projects
    return dg.AssetMaterialization(
        asset_key=PORTFOLIO_KEY,
        description=f"{len(projects)} projects, {sum(r.running for r in projects)} running, "
        f"{sum(r.queued for r in projects)} queued, "
        f"${sum(r.usage.cost_today_usd for r in projects):.2f} today",
        metadata={
            "projects": dg.MetadataValue.table(
                [dg.TableRecord(row) for row in rows], dg.TableSchema(columns)
            ),
            "summary": dg.MetadataValue.md(portfolio_summary(portfolio, all_budget)),
            "running": sum(r.running for r in projects),
            "queued": sum(r.queued for r in projects),
            "cost_today_usd": round(sum(r.usage.cost_today_usd for r in projects), 6),
            "cost_7d_usd": round(sum(r.usage.cost_7d_usd for r in projects), 6),
            "wasted_usd_today": round(sum(r.usage.wasted_usd_today for r in projects), 6),
        },
    )


def _table_row(row: ProjectRow) -> dict[str, str | int | float | None]:
    verification = row.last_verification
    return {
        "project": row.name,
        "state": str(row.state) + (f" ({row.state_reason})" if row.state_reason else ""),
        "priority": row.priority,
        "running": row.running,
        "queued": row.queued,
        "blocked": row.blocked,
        "succeeded_24h": row.usage.succeeded_24h,
        "failed_24h": row.usage.failed_24h,
        "cost_today_usd": round(row.usage.cost_today_usd, 4),
        "cost_7d_usd": round(row.usage.cost_7d_usd, 4),
        "tokens_today": row.usage.tokens_today,
        "last_verification": (
            f"{'passed' if verification.passed else 'failed'}, {_age(verification.age_s)} ago"
            if verification
            else "none"
        ),
        "budget_used_pct": row.budget_used_pct,
    }


def portfolio_summary(portfolio: Portfolio, all_budget: BudgetCheck) -> str:
    """Markdown: the top spenders today, spend wasted on failed and cancelled tasks, budgets
    near or over their limit, paused projects and providers."""
    projects = portfolio.projects
    spenders = sorted(
        (row for row in projects if row.usage.cost_today_usd > 0),
        key=lambda row: (-row.usage.cost_today_usd, row.name),
    )[:TOP_SPENDERS]
    lines = ["**Top spenders today**", ""]
    lines += [
        f"- {row.name}: ${row.usage.cost_today_usd:.2f} ({row.usage.tasks_succeeded_today} "
        f"succeeded, {row.usage.tasks_failed_today} failed)"
        for row in spenders
    ] or ["- nothing spent yet today"]
    wasted = sum(row.usage.wasted_usd_today for row in projects)
    lines += ["", f"**Wasted today** (failed and cancelled tasks): ${wasted:.2f}"]
    budgets = [
        f"- {row.name}: {_budget_text(row.name, row.budget)}"
        for row in projects
        if row.budget.level is not BudgetLevel.OK
    ]
    if all_budget.limit_usd is not None:
        budgets.insert(0, f"- all projects: {_budget_text(ALL_PROJECTS, all_budget)}")
    lines += ["", "**Budgets**", "", *(budgets or ["- all within budget"])]
    paused = [
        f"- {row.name}: {row.state}" + (f" ({row.state_reason})" if row.state_reason else "")
        for row in projects
        if row.state in (ProjectState.PAUSED, ProjectState.STOPPED)
    ]
    if paused:
        lines += ["", "**Paused or stopped**", "", *paused]
    providers = [
        f"{provider.name} until "
        + (utc_iso(provider.until) if provider.until else "resumed (`orch providers resume`)")
        for provider in portfolio.providers
        if provider.paused
    ]
    lines += ["", f"**Providers paused**: {', '.join(providers) or 'none'}"]
    return "\n".join(lines)


def providers_materialization(
    providers: Sequence[ProviderStatus],
) -> dg.AssetMaterialization:
    """Every provider account as a table, and per account `<name>_paused` (1 or 0) and
    `<name>_limit` (its pool's limit now) as numbers the UI plots."""
    columns = [
        dg.TableColumn("account", "string"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("pool", "string"),
        dg.TableColumn("limit", "int", description="The pool's limit now."),
        dg.TableColumn("configured", "int", description="The pool's limit when open."),
        dg.TableColumn("until", "string", description="UTC; empty: until resumed by hand."),
        dg.TableColumn("reason", "string"),
        dg.TableColumn("window", "string"),
        dg.TableColumn("source_task", "string"),
        dg.TableColumn("since", "string"),
    ]
    rows: list[dict[str, str | int]] = [
        {
            "account": provider.name,
            "status": provider.status,
            "pool": provider.pool,
            "limit": provider.limit,
            "configured": provider.configured,
            "until": utc_iso(provider.until) if provider.until else "",
            "reason": provider.reason or "",
            "window": provider.window or "",
            "source_task": provider.source_task or "",
            "since": utc_iso(provider.since) if provider.since else "",
        }
        for provider in providers
    ]
    metadata: dict[str, dg.MetadataValue | int] = {
        "accounts": dg.MetadataValue.table(
            [dg.TableRecord(row) for row in rows], dg.TableSchema(columns)
        ),
        "paused": sum(provider.paused for provider in providers),
    }
    for provider in providers:
        metadata[f"{provider.name}_paused"] = int(provider.paused)
        metadata[f"{provider.name}_limit"] = provider.limit
    return dg.AssetMaterialization(
        asset_key=PROVIDERS_KEY,
        description=_providers_text(providers),
        metadata=metadata,
    )


def available_evaluation(providers: Sequence[ProviderStatus]) -> dg.AssetCheckEvaluation:
    """The `available` evaluation: passes when no account is paused, else fails naming each
    paused one with until when and why."""
    paused = [provider for provider in providers if provider.paused]
    return dg.AssetCheckEvaluation(
        asset_key=PROVIDERS_KEY,
        check_name=AVAILABLE_CHECK,
        passed=not paused,
        severity=dg.AssetCheckSeverity.ERROR,
        description=_providers_text(providers),
        metadata={
            "paused": len(paused),
            "paused_accounts": ", ".join(provider.name for provider in paused),
            **{
                f"{provider.name}_until": utc_iso(provider.until) if provider.until else ""
                for provider in paused
            },
        },
    )


def _providers_text(providers: Sequence[ProviderStatus]) -> str:
    """Each paused account with until when and why, and those trying one task again; or that
    all are open."""
    paused = [
        f"{provider.name} {provider.describe()}"
        + (f": {provider.reason}" if provider.reason else "")
        for provider in providers
        if provider.paused
    ]
    trying = [provider.name for provider in providers if provider.status == "canary"]
    if not paused and not trying:
        if not providers:
            return "no agent profile names a provider account (`provider_pool`)"
        return f"all {len(providers)} provider account(s) open"
    text = "paused: " + "; ".join(paused) if paused else "none paused"
    if trying:
        text += f"; trying one task again: {', '.join(trying)}"
    return text


def _budget_text(project: str, check: BudgetCheck) -> str:
    if check.limit_usd is None:
        return f"{'all projects' if project == ALL_PROJECTS else project}: no budget"
    text = (
        f"${check.spent_usd:.2f} of ${check.limit_usd:.2f} this {check.period} "
        f"({check.used_pct:.0f} %)"
    )
    if check.level is BudgetLevel.EXCEEDED and check.resets_at is not None:
        text += f"; paused until {check.resets_at.strftime('%Y-%m-%d %H:%M')} UTC"
    elif check.level is BudgetLevel.WARN:
        text += "; warning at 80 %"
    return text


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _alert_budget_changes(
    changes: Sequence[BudgetChange], registry: Registry, sender: WebhookSender, now: datetime
) -> None:
    """A budget alert for each budget that rose to its warning or was spent, and for each that
    is within its limit again after that (config/alerts.yaml `budget`)."""
    if registry.alerts is None:
        return
    alerts = Alerts(registry.alerts, sender)
    for change in changes:
        rose = change.check.level is not BudgetLevel.OK
        eased = change.check.level is BudgetLevel.OK and change.before != str(BudgetLevel.OK)
        if not (rose or eased):
            continue
        who = "all projects" if change.project == ALL_PROJECTS else change.project
        alerts.notify(
            Alert(
                kind="budget",
                title=f"{who}: budget {change.check.level}",
                text=_budget_text(change.project, change.check),
                at=now,
                project=None if change.project == ALL_PROJECTS else change.project,
                details=change.check.to_dict() | {"before": change.before},
            )
        )


def _alert_provider_changes(
    changes: Sequence[ProviderChange], registry: Registry, sender: WebhookSender, now: datetime
) -> None:
    """A provider alert for each account a usage limit paused and for each one resumed (tried
    again through its canary, opened, or resumed by hand) (config/alerts.yaml `provider`)."""
    if registry.alerts is None:
        return
    alerts = Alerts(registry.alerts, sender)
    for change in changes:
        provider = change.provider
        if change.paused:
            title = f"provider {provider.name}: {provider.describe()}"
        elif provider.status == "canary":
            title = f"provider {provider.name}: pause over, one task tries it again"
        else:
            title = f"provider {provider.name}: open again"
        alerts.notify(
            Alert(
                kind="provider",
                title=title,
                text=provider.reason or title,
                at=now,
                task_id=provider.source_task if change.paused else None,
                details=provider.to_dict() | {"before": change.before},
            )
        )
