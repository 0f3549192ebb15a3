"""The results remote: with run workers on several hosts, a task's branch must not live only in
the private clone of the host that ran it. `ORCH_RESULTS_REMOTE` names a bare repository every
host reaches; each task's branch is pushed there when the task ends (`publish_result`), and
`orch task diff` and `deliver` fetch it from there into the private clone of the host they run
on (`fetch_result`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from logging import Logger
from pathlib import Path

from orchestration.registry.models import ProjectSpec, repo_problem
from orchestration.tasks.models import Task
from orchestration.workspace.git import GitError, GitRepo
from orchestration.workspace.workspace import ProjectWorkspace

RESULTS_REMOTE_VAR = "ORCH_RESULTS_REMOTE"


class ResultsRemoteError(Exception):
    """The results remote is not usable; the message says why."""


def results_remote(environ: Mapping[str, str] | None = None) -> str | None:
    """The results remote's URL or path; None when unset (one host). ResultsRemoteError for a
    value git must not be given."""
    env = os.environ if environ is None else environ
    value = env.get(RESULTS_REMOTE_VAR, "").strip()
    if not value:
        return None
    problem = repo_problem(value)
    if problem:
        raise ResultsRemoteError(f"{RESULTS_REMOTE_VAR}: {problem}")
    return value


def publish_result(
    workspace: ProjectWorkspace, task: Task, environ: Mapping[str, str], log: Logger
) -> str | None:
    """Push the task's branch to the results remote (by force: the remote holds the
    orchestrator's own branches, and a task's branch may have been rewritten since); the
    remote, or None when there is none or the push failed (logged: the task's outcome stands)."""
    try:
        remote = results_remote(environ)
        if remote is None:
            return None
        clone = GitRepo.private_clone(workspace.clone_path)
        branch = workspace.task_branch(task.id)
        if not clone.is_repository() or not clone.has_branch(branch):
            return None
        clone.push_branch(remote, branch, force=True)
    except (GitError, ResultsRemoteError) as exc:
        log.error(f"task {task.id}: its branch did not reach the results remote: {exc}")
        return None
    log.info(f"task {task.id}: branch {branch} pushed to the results remote")
    return remote


def fetch_result(
    home: Path, spec: ProjectSpec, task: Task, environ: Mapping[str, str] | None = None
) -> bool:
    """Bring the task's branch from the results remote into this host's private clone of the
    project (made first if missing), where another host may have run it, or run it again
    since; whether it was fetched. ResultsRemoteError when the remote does not have it and
    this clone does not either."""
    remote = results_remote(environ)
    if remote is None:
        return False
    workspace = ProjectWorkspace(home, spec)
    branch = workspace.task_branch(task.id)
    clone = GitRepo.private_clone(workspace.clone_path)
    if not clone.is_repository():
        clone = workspace.sync()
    try:
        clone.fetch_branch(remote, branch, force=True)
    except GitError as exc:
        if clone.has_branch(branch):
            return False  # not pushed (its push failed): this host's copy is the one there is
        raise ResultsRemoteError(
            f"task {task.id}'s branch {branch} is not in the results remote: {exc}"
        ) from None
    return True
