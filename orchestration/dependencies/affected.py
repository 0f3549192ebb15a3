"""Which projects a change touches: the repositories that changed since a ref or a date, and
everything that depends on them, in the order work should go (providers first)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry.loader import LoadedProject
from orchestration.settings import Settings
from orchestration.workspace.git import GitError, GitRepo
from orchestration.workspace.workspace import ProjectWorkspace

RELATIVE_DATE = re.compile(
    r"^\d+\s+(second|minute|hour|day|week|month|year)s?\s+ago$", re.IGNORECASE
)


class SinceError(ValueError):
    """`--since` is neither a date nor a ref any project knows."""


@dataclass(frozen=True)
class Affected:
    project: str
    reason: str


def is_date(text: str) -> bool:
    """ISO dates and times (`2026-11-01`, `2026-11-01T12:00`) and `N days ago` forms."""
    if RELATIVE_DATE.match(text.strip()):
        return True
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def changed_projects(
    projects: Iterable[LoadedProject], since: str, settings: Settings
) -> dict[str, str]:
    """project -> why it counts as changed since `since` (a git ref or a date)."""
    by_date = is_date(since)
    changed: dict[str, str] = {}
    known_ref = by_date
    for project in projects:
        spec = project.spec
        if spec.is_remote:
            workspace = ProjectWorkspace(settings.home, spec)
            repo, tip = workspace.sync(), workspace.upstream_ref
        else:
            repo, tip = GitRepo(Path(spec.repo)), f"refs/heads/{spec.branch}"
        if repo.resolve(tip) is None:
            continue
        if by_date:
            count = _count(repo, "rev-list", "--count", f"--since={since}", tip)
        else:
            if repo.resolve(since) is None:
                continue
            known_ref = True
            count = _count(repo, "rev-list", "--count", f"{since}..{tip}")
        if count:
            changed[spec.name] = f"{count} new commit(s) on {spec.branch}"
    if not known_ref:
        raise SinceError(
            f"--since {since!r} is not a date (2026-11-01, '3 days ago') "
            "and no project's repository has such a ref"
        )
    return changed


def affected_projects(graph: DependencyGraph, changed: dict[str, str]) -> list[Affected]:
    """The changed projects and all their transitive consumers, providers first."""
    everything = graph.transitive_consumers(changed)
    result = []
    for project in graph.topological_order(everything):
        if project in changed:
            result.append(Affected(project, f"changed: {changed[project]}"))
        else:
            via = sorted(p for p in graph.providers_of(project) if p in everything)
            result.append(Affected(project, f"depends on {', '.join(via)}"))
    return result


def _count(repo: GitRepo, *args: str) -> int:
    try:
        return int(repo.run(*args, what="count commits") or 0)
    except (GitError, ValueError):
        return 0
