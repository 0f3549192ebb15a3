"""Submitting a new task's run to the run queue at once, so that it starts as soon as a slot
allows rather than at the dispatch sensor's next tick (Dagster's sensor loop comes about every
5 s).

Why through the webserver's GraphQL (the mutations the UI's Materialize uses): making a run
needs the code location's job and execution plan, which the webserver holds loaded; a command
that loaded the definitions itself would pay their whole load (seconds for a large registry)
on every `orch task add`. Over GraphQL, the command imports nothing of Dagster and the run is
queued in about 0.2 s.

The run is the one the dispatch sensor would make: the same asset (`<project>/tasks`, its
checks and so its pools), partition, tags, priority and run key (`<task>.<dispatches>`). The
task is marked dispatched first, by the same compare-and-set the sensor uses, so only one of
the two ever makes its run. The sensor stays the safety net: a task not submitted here (no
webserver, a submission that failed, which puts the task back in the queue) is dispatched by
its next tick, and a run request lost in between is found by its reconciliation.

Only a task that could not be out of order is submitted: none other is queued (so no ranking
is bypassed), it waits for no other task, its project is active, and its agent program is on
PATH. Anything else is left to the sensor and the allocation policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestration.agents.invocation import missing_executable
from orchestration.control.store import ProjectStates
from orchestration.registry.loader import Registry
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.settings import webserver_url
from orchestration.sharding import LOCATION, location_of
from orchestration.tags import RUN_KEY_TAG, tasks_partitions_name
from orchestration.tasks.dispatch import task_run_tags
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.webserver import WebserverError, post_graphql

#: The repository of the code location that holds a project's assets (workspace.yaml): the one
#: location `orchestration`, or the shard that holds the project (`sharding.py`).
REPOSITORY = "__repository__"
ASSET_JOB = "__ASSET_JOB"
PARTITION_TAG = "dagster/partition"
SUBMIT_TIMEOUT_S = 10.0
#: Why nothing was submitted when no webserver is known (the usual case without `orch up`).
NO_WEBSERVER = "no webserver is known (`orch up` not running here)"

LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name } }
  ... on PythonError { message } } }
"""
ADD_PARTITION = """
mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
  }
}
"""


@dataclass(frozen=True)
class Submission:
    """What became of a direct submission: the run's id, or why there is none (the dispatch
    sensor then starts the task)."""

    run_id: str | None = None
    why_not: str | None = None


def submit_now(
    store: TaskStore,
    registry: Registry,
    task: Task,
    environ: Mapping[str, str] | None = None,
) -> Submission:
    """Submit `task`'s run to the run queue now when it may start out of the sensor's turn;
    never raises. A submission that fails puts the task back in the queue, that dispatch not
    counted, for the sensor."""
    env = os.environ if environ is None else environ
    url = webserver_url(registry.settings.home, env)
    if not url:
        return Submission(why_not=NO_WEBSERVER)
    why_not = _why_wait(store, registry, task, env)
    if why_not is not None:
        return Submission(why_not=why_not)
    if not store.mark_dispatched(task.id):
        return Submission(why_not="the dispatch sensor took it first")
    dispatched = store.require(task.id)
    spec = registry.spec(task.project)
    assert spec is not None
    try:
        run_id = _launch(url.rstrip("/") + "/graphql", dispatched, task_run_tags(dispatched, spec))
    except SubmitError as exc:
        store.requeue(
            task.id,
            f"queued for the dispatch sensor (direct submission failed: {exc})",
            uncount=True,
            dispatch=dispatched.dispatches,
        )
        return Submission(why_not=str(exc))
    return Submission(run_id=run_id)


def _why_wait(
    store: TaskStore, registry: Registry, task: Task, env: Mapping[str, str]
) -> str | None:
    """Why `task` is left to the dispatch sensor; None when it may be submitted now."""
    if registry.config_errors or registry.agents is None:
        return "the config files have errors"
    spec = registry.spec(task.project)
    if spec is None:
        return f"project {task.project} is not valid in the registry"
    if task.after:
        return "it waits for other tasks"
    others = [t for t in store.tasks(statuses=[TaskStatus.QUEUED]) if t.id != task.id]
    if others:
        return "other tasks are queued: the allocation policy orders them"
    if ProjectStates(store).get(task.project).state.holds_tasks:
        return f"project {task.project} is not active"
    try:
        profile = resolve_profile(registry.agents, spec, task.profile or spec.agent.profile)
    except ProfileError as exc:
        return str(exc)
    program = missing_executable(profile, tuple(spec.agent.command or ()), env)
    if program is not None:
        return f"agent program {program!r} is not on PATH"
    return None


class SubmitError(Exception):
    """The webserver did not queue the run; the message says why."""


def _launch(endpoint: str, task: Task, tags: Mapping[str, str]) -> str:
    """Queue the run of `task` (dispatched `task.dispatches` times) through the webserver at
    `endpoint`; its run id."""
    repository = {
        "repositoryLocationName": _location(endpoint, task.project),
        "repositoryName": REPOSITORY,
    }
    added = _post(
        endpoint,
        ADD_PARTITION,
        {"repo": repository, "name": tasks_partitions_name(task.project), "key": task.id},
    )["addDynamicPartition"]
    # An existing partition answers DuplicateDynamicPartitionError: that is as good.
    if added.get("__typename") in ("PythonError", "UnauthorizedError"):
        raise SubmitError(f"adding partition {task.id}: {added.get('message')}")
    all_tags = {
        **tags,
        PARTITION_TAG: task.id,
        RUN_KEY_TAG: f"{task.id}.{task.dispatches}",
    }
    params = {
        "selector": {
            **repository,
            "pipelineName": ASSET_JOB,
            "assetSelection": [{"path": [task.project, "tasks"]}],
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
    }
    launched = _post(endpoint, LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
    if launched.get("__typename") != "LaunchRunSuccess":
        problem = launched.get("message") or launched.get("errors") or launched
        raise SubmitError(f"{launched.get('__typename')}: {str(problem)[:300]}")
    return str(launched["run"]["runId"])


def _location(endpoint: str, project: str) -> str:
    """The code location of the webserver's workspace that holds `project`'s assets."""
    workspace = _post(endpoint, LOCATIONS, {})["workspaceOrError"]
    if workspace.get("__typename") != "Workspace":
        raise SubmitError(f"reading the workspace: {workspace.get('message')}")
    names = [entry["name"] for entry in workspace["locationEntries"]]
    location = location_of(project, names)
    if location is None:
        raise SubmitError(
            f"no code location of the workspace holds {project} (locations: "
            f"{', '.join(names) or 'none'}; expected {LOCATION} or {LOCATION}_<i>_of_<N>)"
        )
    return location


def _post(endpoint: str, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return post_graphql(endpoint, query, variables, SUBMIT_TIMEOUT_S)
    except WebserverError as exc:
        raise SubmitError(str(exc)) from None
