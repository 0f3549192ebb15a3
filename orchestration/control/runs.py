"""What a project's state means for the Dagster instance: its pool's limit, the hold on its
queued runs that carry no task (a refresh, a verification), and one observation per transition
on the `orchestration/registry` asset, so the UI shows each project's lifecycle."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import dagster as dg

from orchestration.control.store import StateRecord
from orchestration.tags import HOLD_TAG, HOLD_VALUE, PROJECT_TAG, TASK_TAG, project_pool

REGISTRY_ASSET = dg.AssetKey(["orchestration", "registry"])
#: The value a released hold takes: the run queue holds only `HOLD_VALUE`.
RELEASED = "released"


def set_project_pool(instance: dg.DagsterInstance, project: str, limit: int) -> None:
    """Set the project's pool now, rather than at the next dispatch tick."""
    instance.event_log_storage.set_concurrency_slots(project_pool(project), limit)


def run_project(run: dg.DagsterRun) -> str | None:
    """The project a run works on: its `project` tag, else the one project its selected assets
    belong to (the automation sensor's runs carry no project tag)."""
    if PROJECT_TAG in run.tags:
        return run.tags[PROJECT_TAG]
    keys = run.asset_selection or set()
    projects = {key.path[0] for key in keys if len(key.path) > 1}
    return projects.pop() if len(projects) == 1 else None


def hold_project_runs(instance: dg.DagsterInstance, held: Collection[str]) -> tuple[int, int]:
    """Put the hold tag on every queued run of a held project that carries no task (task runs
    are held by their project's pool), and release it from the runs of projects no longer
    held; (runs held, runs released)."""
    queued = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    holding = releasing = 0
    for run in queued:
        if TASK_TAG in run.tags:
            continue
        on_hold = run.tags.get(HOLD_TAG) == HOLD_VALUE
        wanted = run_project(run) in held
        if wanted and not on_hold:
            instance.add_run_tags(run.run_id, {HOLD_TAG: HOLD_VALUE})
            holding += 1
        elif on_hold and not wanted:
            instance.add_run_tags(run.run_id, {HOLD_TAG: RELEASED})
            releasing += 1
    return holding, releasing


def record_transition(
    instance: dg.DagsterInstance,
    project: str,
    from_state: str,
    to_state: str,
    reason: str | None,
    actor: str,
    records: Iterable[StateRecord] = (),
) -> None:
    """One observation of the registry asset per transition: the lifecycle timeline in the UI,
    with `lifecycle`, the table of every project's state (`records`) after it."""
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=REGISTRY_ASSET,
            description=f"{project}: {from_state} -> {to_state}"
            + (f" ({reason})" if reason else ""),
            metadata={
                "project": project,
                "from": from_state,
                "to": to_state,
                "reason": reason or "",
                "actor": actor,
                "lifecycle": lifecycle_table(records),
            },
        )
    )


def lifecycle_table(records: Iterable[StateRecord]) -> dg.MetadataValue:
    """Every project whose lifecycle state was ever set: state, since when, by whom, why (a
    project not listed is active)."""
    rows = "\n".join(
        f"| {r.project} | {r.state} | {r.since:%Y-%m-%d %H:%M} UTC | {r.actor or ''} | "
        f"{(r.reason or '').replace('|', '/')} |"
        for r in sorted(records, key=lambda r: r.project)
        if r.since is not None
    )
    header = "| project | state | since | by | reason |\n|---|---|---|---|---|\n"
    return dg.MetadataValue.md(header + rows if rows else "every project is active")


def in_progress_runs(instance: dg.DagsterInstance, project: str) -> list[dg.DagsterRun]:
    """The project's runs that have started and not ended."""
    statuses = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=statuses))
    return [run for run in runs if run_project(run) == project]
