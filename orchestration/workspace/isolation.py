"""Isolation rules: paths that stay inside ORCH_HOME and environments built from allowlists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from orchestration.registry.models import SLUG_PATTERN


class IsolationError(ValueError):
    """A name or path that would leave its project's directory."""


def path_inside(base: Path, *names: str) -> Path:
    """`base/names...`, refusing any name that is not a plain slug-like segment.

    Names come from validated slugs and task ids; this is the second lock on the same door, so a
    name like `..` or `/etc` can never place a workspace outside `base`.
    """
    for name in names:
        if not name or "/" in name or "\\" in name or name in {".", ".."} or "\x00" in name:
            raise IsolationError(f"{name!r} cannot be used as a directory name under {base}")
    base = base.resolve()
    target = base.joinpath(*names).resolve()
    if not target.is_relative_to(base):
        raise IsolationError(f"{target} is outside {base}")
    return target


def project_dir(home: Path, project: str) -> Path:
    """The state directory of one project: `ORCH_HOME/workspaces/<project>`."""
    if not SLUG_PATTERN.fullmatch(project):
        raise IsolationError(f"{project!r} is not a project name")
    return path_inside(home, "workspaces", project)


def child_environment(
    parent: Mapping[str, str],
    allowed: Iterable[str],
    *,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a child process: only the allowed names of the parent's,
    then the overrides. Nothing else of the parent's environment gets through."""
    env = {name: parent[name] for name in allowed if name in parent}
    env.update(overrides or {})
    return env
