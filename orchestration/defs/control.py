"""The `project_control` job: a project's lifecycle actions (pause, resume, stop, archive,
unarchive, remove) from the UI's Launchpad or `dagster job launch`, the same as `orch projects`.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of op functions
# (context, config and resource types) when the definitions are built.

from enum import Enum

import dagster as dg

from orchestration.control.actions import ControlError, control_project
from orchestration.control.states import Action
from orchestration.defs.resources import AgentTasks
from orchestration.tags import CONTROL_TAG

CONTROL_JOB = "project_control"


class ControlAction(Enum):
    """The lifecycle actions as the Launchpad takes them (Dagster's config enums go by member
    name, so these are written as the CLI spells them)."""

    pause = Action.PAUSE.value
    resume = Action.RESUME.value
    stop = Action.STOP.value
    archive = Action.ARCHIVE.value
    unarchive = Action.UNARCHIVE.value
    remove = Action.REMOVE.value


class ProjectControlConfig(dg.Config):
    """Which project, which action, and why."""

    project: str
    action: ControlAction
    reason: str = ""
    purge: bool = False
    """`remove` only: delete the project's clone, tasks, sessions and asset history."""
    yes: bool = False
    """`remove` only: confirm it."""


@dg.op(
    name="control_project",
    description="Move one project to another lifecycle state and apply what that state means "
    "to its tasks, runs, pool and files.",
)
def control_project_op(
    context: dg.OpExecutionContext, config: ProjectControlConfig, agent_tasks: AgentTasks
) -> None:
    registry = agent_tasks.registry()
    store = agent_tasks.store()
    try:
        outcome = control_project(
            Action(config.action.value),
            config.project,
            settings=registry.settings,
            registry=registry,
            store=store,
            instance=context.instance,
            reason=config.reason or None,
            actor=f"dagster run {context.run_id}",
            purge=config.purge,
            confirmed=config.yes,
        )
    except ControlError as exc:
        raise dg.Failure(description=str(exc)) from None
    finally:
        store.dispose()
    context.log.info(outcome.message())


@dg.job(
    name=CONTROL_JOB,
    tags={CONTROL_TAG: "true"},
    executor_def=dg.in_process_executor,
    description="Pause, resume, stop, archive, unarchive or remove a project "
    "(config: project, action, reason; `remove` also needs purge: true and yes: true).",
)
def project_control_job() -> None:
    control_project_op()
