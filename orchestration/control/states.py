"""The project state machine, as plain data: states, actions, and which action may move a
project from which state to which.

    active --pause--> paused --resume--> active
    active/paused --stop--> stopped --resume--> active
    paused/stopped --archive--> archived --unarchive--> active
    archived/paused/stopped --remove--> (gone: purged)

Every action is idempotent: asking for the state a project is already in changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ProjectState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"
    ARCHIVED = "archived"

    @property
    def holds_tasks(self) -> bool:
        """No task of a project in this state starts (its pool is 0)."""
        return self is not ProjectState.ACTIVE


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    REMOVE = "remove"


@dataclass(frozen=True)
class Rule:
    allowed_from: frozenset[ProjectState]
    to: ProjectState | None  # None: the project is removed

    def describe(self) -> str:
        return ", ".join(sorted(self.allowed_from))


RULES: dict[Action, Rule] = {
    Action.PAUSE: Rule(frozenset({ProjectState.ACTIVE}), ProjectState.PAUSED),
    Action.RESUME: Rule(
        frozenset({ProjectState.PAUSED, ProjectState.STOPPED}), ProjectState.ACTIVE
    ),
    Action.STOP: Rule(frozenset({ProjectState.ACTIVE, ProjectState.PAUSED}), ProjectState.STOPPED),
    Action.ARCHIVE: Rule(
        frozenset({ProjectState.PAUSED, ProjectState.STOPPED}), ProjectState.ARCHIVED
    ),
    Action.UNARCHIVE: Rule(frozenset({ProjectState.ARCHIVED}), ProjectState.ACTIVE),
    Action.REMOVE: Rule(
        frozenset({ProjectState.PAUSED, ProjectState.STOPPED, ProjectState.ARCHIVED}), None
    ),
}


class TransitionError(Exception):
    """An action that cannot be taken from the project's state; the message names the states
    it can be taken from and what to run first."""


def check(project: str, action: Action, current: ProjectState) -> bool:
    """Whether `action` has anything to do for a project in `current`: False when the project
    is already where the action leads (idempotent); TransitionError when the action is not
    allowed from there."""
    rule = RULES[action]
    if rule.to is not None and current is rule.to:
        return False
    if current in rule.allowed_from:
        return True
    hint = ""
    if action in (Action.ARCHIVE, Action.REMOVE) and current is ProjectState.ACTIVE:
        hint = f"; run `orch projects pause {project}` (or `stop`) first"
    elif action is Action.STOP and current is ProjectState.ARCHIVED:
        hint = f"; it has nothing running (`orch projects unarchive {project}` brings it back)"
    elif current is ProjectState.ARCHIVED:
        hint = f"; run `orch projects unarchive {project}` first"
    raise TransitionError(
        f"cannot {action} project {project!r}: it is {current}, and {action} is allowed only "
        f"from {rule.describe()}{hint}"
    )
