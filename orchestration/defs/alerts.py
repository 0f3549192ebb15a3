"""The `alerts` sensor (defined when `config/alerts.yaml` exists): a thin shell that reads the
failed tasks, the projects' verification checks and the runs in progress, asks
`orchestration/alerts/selection.py` what is new since its cursor, and hands the alerts to the
background sender, so a tick never waits for a webhook."""

# No `from __future__ import annotations` here: Dagster reads the annotations of sensor
# functions (context and resource types) when the definitions are built.

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from orchestration.alerts.delivery import Alerts, WebhookSender
from orchestration.alerts.selection import (
    ActiveRun,
    AlertCursor,
    FailedTask,
    VerificationRecord,
    VerificationState,
    select_alerts,
)
from orchestration.defs.reload import WEBSERVER_URL_VAR
from orchestration.defs.resources import AgentTasks
from orchestration.registry.layers import display_path
from orchestration.registry.loader import ALERTS_FILE, Registry
from orchestration.tags import PROJECT_TAG, TASK_TAG
from orchestration.tasks.models import Task, TaskStatus

ALERTS_SENSOR = "alerts"
ALERTS_INTERVAL_S = 15
#: The check of `<project>/verification` whose failures are alerted.
VERIFY_CHECK = "verify_passed"
#: How many of a project's newest check executions one tick reads.
HISTORY = 20
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
NOT_ENDED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, *IN_PROGRESS}


def alerts_configured(registry: Registry) -> bool:
    """Whether `config/alerts.yaml` exists, valid or not: a broken one still gets the sensor,
    whose ticks then say what is wrong (and alert again once it is fixed)."""
    return registry.alerts is not None or bool(alerts_file_errors(registry))


def alerts_file_errors(registry: Registry) -> list[str]:
    """The registry's errors in `config/alerts.yaml`."""
    shown = display_path(registry.settings.config_dir / ALERTS_FILE)
    return [str(error) for error in registry.errors if error.file == shown]


def build_alerts_defs(
    sender: WebhookSender | None = None, clock: Callable[[], float] = time.time
) -> dg.Definitions:
    """The `alerts` sensor; its webhooks are read from `config/alerts.yaml` at each tick."""
    return dg.Definitions(sensors=[build_alerts_sensor(sender, clock)])


def build_alerts_sensor(
    sender: WebhookSender | None = None, clock: Callable[[], float] = time.time
) -> dg.SensorDefinition:
    """The `alerts` sensor. `sender` posts in the background (one per code server, started on
    the first alert); `clock` gives the time (epoch seconds)."""
    webhooks = sender or WebhookSender(log=dg.get_dagster_logger(ALERTS_SENSOR))

    @dg.sensor(
        name=ALERTS_SENSOR,
        minimum_interval_seconds=ALERTS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Post an alert to the webhooks of config/alerts.yaml when a task fails, a "
            "project's verification fails, or a run is in progress longer than stuck_after_s; "
            "once per event (the cursor), in the background (a tick never waits for a webhook)."
        ),
    )
    def alerts(context: dg.SensorEvaluationContext, agent_tasks: AgentTasks) -> dg.SensorResult:
        registry = agent_tasks.registry()
        config = registry.alerts
        if config is None:
            broken = alerts_file_errors(registry)
            return dg.SensorResult(
                skip_reason=(
                    "no alerts until config/alerts.yaml is fixed: " + "; ".join(broken)
                    if broken
                    else "no alerts: config/alerts.yaml is gone"
                )
            )
        now = clock()
        cursor = AlertCursor.parse(context.cursor) or AlertCursor.start(now)
        projects = sorted(p.name for p in registry.projects if p.spec.verify)
        store = agent_tasks.store()
        try:
            failed = [_failed_task(task) for task in store.tasks(statuses=[TaskStatus.FAILED])]
        finally:
            store.dispose()
        selection = select_alerts(
            cursor,
            now,
            failed_tasks=failed,
            verifications=_verifications(context.instance, projects, cursor),
            projects=projects,
            active_runs=_active_runs(context.instance),
            stuck_after_s=config.stuck_after_s,
            ui_url=os.environ.get(WEBSERVER_URL_VAR),
        )
        notifier = Alerts(config, webhooks)
        queued = sum(notifier.notify(alert) for alert in selection.alerts)
        summary = (
            f"{len(selection.alerts)} alert(s), posted to {queued} webhook(s) in the "
            "background: "
            + "; ".join(alert.title for alert in selection.alerts[:5])
            + (" ..." if len(selection.alerts) > 5 else "")
            if selection.alerts
            else "nothing new to alert"
        )
        return dg.SensorResult(skip_reason=summary, cursor=selection.cursor.to_json())

    return alerts


def _failed_task(task: Task) -> FailedTask:
    finished = task.finished_at or task.updated_at
    return FailedTask(
        id=task.id,
        project=task.project,
        finished_at=finished.timestamp(),
        reason=task.reason,
        run_id=task.run_id,
        prompt=task.prompt,
        attempts=task.attempts,
        profile=task.profile,
        cost_usd=task.cost_usd,
    )


def _check_key(project: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey([project, "verification"]), VERIFY_CHECK)


def _verifications(
    instance: dg.DagsterInstance, projects: Collection[str], cursor: AlertCursor
) -> dict[str, list[VerificationRecord]]:
    """The recent executions of the verification checks of the projects that have new ones."""
    storage = instance.event_log_storage
    latest = storage.get_latest_asset_check_execution_by_key([_check_key(p) for p in projects])
    wanted = [
        key.asset_key.path[0]
        for key, record in latest.items()
        if cursor.wants_verifications(key.asset_key.path[0], record.id, record.create_timestamp)
    ]
    history = {
        project: storage.get_asset_check_execution_history(_check_key(project), limit=HISTORY)
        for project in wanted
    }
    planned = {
        record.run_id
        for records in history.values()
        for record in records
        if record.status is AssetCheckExecutionRecordStatus.PLANNED
    }
    statuses = _run_statuses(instance, planned)
    return {
        project: [_verification(instance, project, record, statuses) for record in records]
        for project, records in history.items()
    }


def _run_statuses(
    instance: dg.DagsterInstance, run_ids: Collection[str]
) -> dict[str, dg.DagsterRunStatus]:
    if not run_ids:
        return {}
    records = instance.get_run_records(dg.RunsFilter(run_ids=list(run_ids)))
    return {record.dagster_run.run_id: record.dagster_run.status for record in records}


def _verification(
    instance: dg.DagsterInstance,
    project: str,
    record: AssetCheckExecutionRecord,
    statuses: Mapping[str, dg.DagsterRunStatus],
) -> VerificationRecord:
    """One check execution as plain data; a planned one is judged by how its run stands."""
    pending = VerificationRecord(
        project=project,
        id=record.id,
        run_id=record.run_id,
        created=record.create_timestamp,
        state=VerificationState.PENDING,
    )
    if record.status is not AssetCheckExecutionRecordStatus.PLANNED:
        event = record.event
        evaluation = event.asset_check_evaluation if event else None
        passed = record.status is AssetCheckExecutionRecordStatus.SUCCEEDED
        metadata = evaluation.metadata if evaluation else {}
        return replace(
            pending,
            state=VerificationState.PASSED if passed else VerificationState.FAILED,
            message=evaluation.description if evaluation else None,
            details={
                key: value.value
                for key, value in metadata.items()
                if isinstance(value.value, str | int | float | bool)
            },
            at=event.timestamp if event else None,
        )
    status = statuses.get(record.run_id)
    if status in NOT_ENDED:
        return pending
    if status is dg.DagsterRunStatus.FAILURE:
        return replace(
            pending,
            state=VerificationState.RUN_FAILED,
            message=_run_error(
                instance, record.run_id, record.event.step_key if record.event else None
            ),
        )
    return replace(pending, state=VerificationState.NOT_RUN)


def _run_error(instance: dg.DagsterInstance, run_id: str, step_key: str | None) -> str | None:
    """What made a run fail: the error of the failed step `step_key` (the project's, when the
    check's planned event names it; else every failed step), else the run's failure."""
    messages: list[str] = []
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for step in steps.records:
        data = step.event_log_entry.dagster_event
        failure = data.step_failure_data if data else None
        if failure is None or (step_key and step.event_log_entry.step_key != step_key):
            continue
        if failure.user_failure_data and failure.user_failure_data.description:
            messages.append(failure.user_failure_data.description)
        elif failure.error:
            error = failure.error
            while error.cause is not None:
                error = error.cause
            messages.append(error.message.strip())
    if messages:
        return "\n".join(messages)
    runs = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return next(
        (r.event_log_entry.message for r in runs.records if r.event_log_entry.message), None
    )


def _active_runs(instance: dg.DagsterInstance) -> Sequence[ActiveRun]:
    return [
        ActiveRun(
            run_id=record.dagster_run.run_id,
            started=record.start_time or record.create_timestamp.timestamp(),
            job=record.dagster_run.job_name,
            status=record.dagster_run.status.value,
            project=record.dagster_run.tags.get(PROJECT_TAG),
            task_id=record.dagster_run.tags.get(TASK_TAG),
        )
        for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    ]
