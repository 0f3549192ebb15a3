"""Change sets in the UI: the `orchestration/changes` asset, one partition per change set,
materialized by the run that verifies the change together (members table, `all_verified`
check), and the `change_sets` sensor that adds each new change's partition, records an
observation of it whenever its members' state moves, and requests its joint verification once
every member's task has succeeded."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset and
# sensor functions (context and resource types) when the definitions are built.

import hashlib
import json
import os
from collections.abc import Iterator

import dagster as dg

from orchestration.changes.sets import Change, ChangeError, ChangeSets, ChangeStatus
from orchestration.changes.verify import verify_change
from orchestration.defs.resources import AgentTasks
from orchestration.tags import ROLE_TAG

CHANGES_KEY = dg.AssetKey(["orchestration", "changes"])
CHANGES_PARTITIONS = "changes"
ALL_VERIFIED_CHECK = "all_verified"
CHANGE_SETS_SENSOR = "change_sets"
CHANGE_SETS_INTERVAL_S = 15


def build_change_defs() -> dg.Definitions:
    """The `orchestration/changes` asset and the `change_sets` sensor."""

    @dg.asset(
        key=CHANGES_KEY,
        group_name="orchestration",
        partitions_def=dg.DynamicPartitionsDefinition(name=CHANGES_PARTITIONS),
        check_specs=[
            dg.AssetCheckSpec(
                ALL_VERIFIED_CHECK,
                asset=CHANGES_KEY,
                description="Every member passed its verification run together with the "
                "other members' changed code.",
            )
        ],
        kinds={"git"},
        tags={ROLE_TAG: "change"},
        description="Change sets: one change across several projects (`orch change create`, "
        "`orch task add --propagate`), one partition per change set. A run verifies the "
        "change together: each member's `verify_in_change` (else `verify`) in a fresh "
        "checkout of its task's commit, with a variable ORCH_CHANGE_ and the project's name "
        "upper-cased naming each member's.",
    )
    def changes(
        context: dg.AssetExecutionContext, agent_tasks: AgentTasks
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        store = agent_tasks.store()
        try:
            sets = ChangeSets(store)
            try:
                change = sets.require(context.partition_key)
                checks = verify_change(
                    change,
                    agent_tasks.registry(),
                    agent_tasks.settings().home,
                    os.environ,
                    context.log,
                )
            except ChangeError as exc:
                raise dg.Failure(description=str(exc)) from None
            change = sets.record_verification(change.id, checks)
        finally:
            store.dispose()
        yield dg.MaterializeResult(metadata=change_metadata(change))
        yield dg.AssetCheckResult(
            check_name=ALL_VERIFIED_CHECK,
            passed=change.all_verified,
            severity=dg.AssetCheckSeverity.ERROR,
            description=_verified_text(change),
            metadata={
                project: dg.MetadataValue.text(check.summary)
                for project, check in change.checks.items()
            },
        )

    @dg.sensor(
        name=CHANGE_SETS_SENSOR,
        minimum_interval_seconds=CHANGE_SETS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[CHANGES_KEY],
        description="Add each change set's partition of `orchestration/changes`, record how "
        "its members stand when that moves, and verify it together once every member's task "
        "has succeeded.",
    )
    def change_sets(
        context: dg.SensorEvaluationContext, agent_tasks: AgentTasks
    ) -> dg.SensorResult:
        store = agent_tasks.store()
        try:
            found = ChangeSets(store).all()
        finally:
            store.dispose()
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        known = set(context.instance.get_dynamic_partitions(CHANGES_PARTITIONS))
        new = [change.id for change in found if change.id not in known]
        events = []
        requests = []
        marks = {}
        for change in found:
            mark = _mark(change)
            marks[change.id] = mark
            if seen.get(change.id) == mark:
                continue
            events.append(
                dg.AssetObservation(
                    asset_key=CHANGES_KEY,
                    partition=change.id,
                    metadata=change_metadata(change),
                )
            )
            if change.status is ChangeStatus.VERIFYING:
                requests.append(
                    dg.RunRequest(
                        run_key=f"{change.id}.{mark}",
                        partition_key=change.id,
                        asset_selection=[CHANGES_KEY],
                        tags={"orch/change": change.id},
                    )
                )
        return dg.SensorResult(
            run_requests=requests,
            asset_events=events,
            dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(CHANGES_PARTITIONS, new)]
            if new
            else [],
            cursor=json.dumps(marks, sort_keys=True),
        )

    return dg.Definitions(assets=[changes], sensors=[change_sets])


def _mark(change: Change) -> str:
    """What, when it moves, is worth recording: each member's task status and commit, and
    whether the change was verified or delivered."""
    state = [
        change.status.value,
        *(
            (m.project, m.task.status.value if m.task else None, m.task.commit if m.task else None)
            for m in change.members
        ),
        change.delivered_to,
    ]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def change_metadata(change: Change) -> dict[str, dg.MetadataValue]:
    """The change's members as a table, its status, and `all_verified`."""
    columns = [
        dg.TableColumn("project", "string"),
        dg.TableColumn("task", "string"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("branch", "string"),
        dg.TableColumn("commit", "string"),
        dg.TableColumn("verified", "string"),
    ]
    rows = [
        dg.TableRecord(
            {
                key: (
                    "-"
                    if value is None
                    else str(value).lower()
                    if key == "verified"
                    else str(value)
                )
                for key, value in member.as_json().items()
            }
        )
        for member in change.members
    ]
    return {
        "members": dg.MetadataValue.table(rows, dg.TableSchema(columns)),
        "status": dg.MetadataValue.text(str(change.status)),
        "all_verified": dg.MetadataValue.bool(change.all_verified),
        "prompt": dg.MetadataValue.md(change.prompt[:2000]),
        "projects": dg.MetadataValue.text(", ".join(change.projects)),
    }


def _verified_text(change: Change) -> str:
    failed = [project for project, check in change.checks.items() if not check.passed]
    if not failed:
        return f"{len(change.checks)} members passed together"
    return f"failed together: {', '.join(failed)}"
