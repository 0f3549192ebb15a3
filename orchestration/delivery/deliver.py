"""A task's change read from the project's private clone (`task_diff`), and its branch delivered
from there (`deliver`, `deliver_task`): into the user's own repository (`local`) or to the
project's remote (`origin`). Delivery only ever creates a branch or moves it forward: a branch
that has other commits is left as it is and the delivery refused, naming both commits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from orchestration.delivery.results import ResultsRemoteError, fetch_result
from orchestration.registry.models import ProjectSpec, is_remote_url, repo_problem
from orchestration.tasks.models import Task
from orchestration.tasks.store import TaskStore
from orchestration.workspace.git import GitError, GitRepo, remote_head
from orchestration.workspace.isolation import IsolationError
from orchestration.workspace.workspace import ProjectWorkspace

#: Where `orch task deliver --to` may send a task's branch.
DELIVERY_TARGETS = ("local", "origin")
_CREDENTIALS = re.compile(r"(://[^/@:]*):[^/@]*@")


class DeliveryError(Exception):
    """A task's work cannot be shown or delivered; the message says why and what to do."""


def task_diff(home: Path, spec: ProjectSpec, task: Task, *, stat: bool = False) -> str:
    """The task's change as a patch (`git apply` takes it; binary files included), or with
    `stat` git's per-file summary: from the commit the task started from to its branch's tip,
    read in the project's private clone. Empty when the task changed nothing."""
    try:
        clone, tip = _task_tip(home, spec, task)
        base = _task_base(clone, spec, task, tip)
        return clone.patch(base, tip, stat=stat)
    except (GitError, IsolationError) as exc:
        raise DeliveryError(f"could not read the change of task {task.id}: {exc}") from None


def deliver(home: Path, spec: ProjectSpec, task: Task, to: str, *, check_only: bool = False) -> str:
    """Deliver the task's branch `orch/<project>/<task-id>` and say in one line what was done.

    `local`: fetched from the private clone into the user's repository (`spec.repo`), where
    only that branch is created or moved forward (HEAD, the index and the work tree are never
    touched). `origin`: pushed from the private clone to the project's remote (`spec.repo` for
    a remote project, the user's repository's `origin` for a local one). Never by force:
    DeliveryError when the branch there has commits the task's branch does not have, or when
    anything else stands in the way. Delivering again what is already there does nothing.
    With `check_only`, everything is checked (the branch there, the remote reachable) and
    nothing delivered.
    """
    if to not in DELIVERY_TARGETS:
        raise DeliveryError(
            f"cannot deliver to {to!r}: choose one of {', '.join(DELIVERY_TARGETS)}"
        )
    try:
        workspace = ProjectWorkspace(home, spec)
        clone, tip = _task_tip(home, spec, task)
        # Whatever an agent wrote into the clone's configuration is gone before git reads it.
        workspace.restore_clone_config()
        branch = workspace.task_branch(task.id)
        if not clone.has_branch(branch):
            raise DeliveryError(
                f"task {task.id}'s branch {branch} is gone from the private clone of {spec.name} "
                f"(its commit {tip} is still there): nothing to deliver"
            )
        if to == "local":
            return _deliver_local(spec, workspace, clone, branch, tip, check_only)
        return _deliver_origin(spec, clone, branch, tip, check_only)
    except (GitError, IsolationError) as exc:
        raise DeliveryError(_shown(f"could not deliver task {task.id} to {to}: {exc}")) from None


def deliver_task(
    store: TaskStore,
    home: Path,
    spec: ProjectSpec,
    task: Task,
    to: str,
    *,
    report: Callable[[str], None] | None = None,
) -> Task:
    """`deliver`, with its outcome recorded on the task (`delivered_to` and `delivered_at`,
    or `delivery_error`, which leaves an earlier delivery recorded); the task as recorded.
    `report` is given the one-line description of what was done. DeliveryError (after it has
    been recorded) when the delivery failed."""
    try:
        description = deliver(home, spec, task, to)
    except DeliveryError as exc:
        store.record_delivery(task.id, to, error=str(exc))
        raise
    recorded = store.record_delivery(task.id, to)
    if report is not None:
        report(description)
    return recorded


# Reading the task's commits -------------------------------------------------------------------


def _task_tip(home: Path, spec: ProjectSpec, task: Task) -> tuple[GitRepo, str]:
    """The private clone and the commit the task's work ends at: its branch's tip there, else
    the commit recorded on the task. DeliveryError when neither is there (it never ran)."""
    if task.project != spec.name:
        raise DeliveryError(f"task {task.id} belongs to project {task.project}, not {spec.name}")
    if task.started_at is not None:
        try:
            # Run on another host: its branch is in the results remote, not in this clone.
            fetch_result(home, spec, task)
        except ResultsRemoteError as exc:
            raise DeliveryError(str(exc)) from None
    workspace = ProjectWorkspace(home, spec)
    branch = workspace.task_branch(task.id)
    clone = GitRepo.private_clone(workspace.clone_path)
    tip = None
    if clone.is_repository():
        tip = clone.resolve(f"refs/heads/{branch}")
        if tip is None and task.commit:
            tip = clone.resolve(task.commit)
    if tip is None:
        why = (
            "yet: it has not run"
            if task.started_at is None
            else "(its run ended before making it, or the branch or clone was removed)"
        )
        raise DeliveryError(
            f"task {task.id} ({task.status}) has no branch {branch} in the private clone of "
            f"{spec.name} {why}; nothing to show or deliver"
        )
    return clone, tip


def _task_base(clone: GitRepo, spec: ProjectSpec, task: Task, tip: str) -> str:
    """The commit the task started from (recorded as `extra["base"]`), else where its work
    left the project's branch."""
    recorded = task.extra.get("base")
    if isinstance(recorded, str) and recorded:
        base = clone.resolve(recorded)
        if base is not None:
            return base
    upstream = f"refs/remotes/origin/{spec.branch}"
    base = clone.merge_base(tip, upstream)
    if base is None:
        raise DeliveryError(
            f"task {task.id} records no starting commit, and its work shares no history with "
            f"{spec.branch} in the private clone: cannot tell what it changed"
        )
    return base


# Delivering ---------------------------------------------------------------------------------------


def _deliver_local(
    spec: ProjectSpec,
    workspace: ProjectWorkspace,
    clone: GitRepo,
    branch: str,
    tip: str,
    check_only: bool,
) -> str:
    if spec.is_remote:
        raise DeliveryError(
            f"project {spec.name}'s repository is the URL {_shown(spec.repo)}, not a local "
            "repository: deliver with `--to origin`"
        )
    target_path = Path(spec.repo)
    target = GitRepo(target_path)
    if not target.is_repository():
        raise DeliveryError(f"{target_path} (project {spec.name}'s repo) is not a git repository")
    current = target.resolve(f"refs/heads/{branch}")
    if current == tip:
        return f"{branch} in {target_path} is already at {tip[:12]}: nothing to do"
    if current is not None:
        if not clone.is_ancestor(current, tip):
            raise DeliveryError(
                f"branch {branch} in {target_path} is at {current}, which has commits the "
                f"task's branch (at {tip}) does not: left as it is. Rename or delete that "
                "branch, or merge it yourself, then deliver again"
            )
        if f"refs/heads/{branch}" in target.checked_out_branches():
            raise DeliveryError(
                f"branch {branch} is checked out in {target_path} (or one of its worktrees), "
                f"at {current}: switch to another branch there, then deliver again to move it "
                f"to {tip}"
            )
    if check_only:
        return f"{branch} can be fetched into {target_path}"
    target.fetch_branch(workspace.clone_path, branch)
    moved = f"from {current[:12]} " if current else ""
    return f"fetched {branch} into {target_path} ({moved}at {tip[:12]})"


def _deliver_origin(
    spec: ProjectSpec, clone: GitRepo, branch: str, tip: str, check_only: bool
) -> str:
    url = _origin_url(spec)
    current = remote_head(url, branch)
    shown = _shown(url)
    if current == tip:
        return f"{branch} on {shown} is already at {tip[:12]}: nothing to do"
    if current is not None and not clone.is_ancestor(current, tip):
        raise DeliveryError(
            f"branch {branch} on {shown} is at {current}, which has commits the task's branch "
            f"(at {tip}) does not: left as it is. Rename or delete that branch there, or merge "
            "it yourself, then deliver again"
        )
    if check_only:
        return f"{branch} can be pushed to {shown}"
    clone.push_branch(url, branch)
    moved = f"from {current[:12]} " if current else ""
    return f"pushed {branch} to {shown} ({moved}at {tip[:12]})"


def _origin_url(spec: ProjectSpec) -> str:
    """Where `origin` delivery pushes: the project's URL, or the URL the user's repository
    pushes its `origin` to (a path relative to that repository made absolute)."""
    if spec.is_remote:
        url = spec.repo
        where = f"project {spec.name}'s repo"
    else:
        user = GitRepo(Path(spec.repo))
        if not user.is_repository():
            raise DeliveryError(f"{spec.repo} (project {spec.name}'s repo) is not a git repository")
        found = user.config_value("remote.origin.pushurl") or user.config_value("remote.origin.url")
        if not found:
            raise DeliveryError(
                f"the repository {spec.repo} of project {spec.name} has no `origin` remote: add "
                "one (`git remote add origin URL`) or deliver with `--to local`"
            )
        url = found
        where = f"the `origin` remote of {spec.repo}"
    problem = repo_problem(url)
    if problem:
        raise DeliveryError(_shown(f"refusing to push to {where}: {problem}"))
    if not is_remote_url(url) and not Path(url).is_absolute():
        url = str((Path(spec.repo) / url).resolve())  # as git in that repository reads it
    return url


def _shown(text: str) -> str:
    """`text` without the password a URL in it may carry (`https://user:secret@host` ->
    `https://user:***@host`)."""
    return _CREDENTIALS.sub(r"\1:***@", text)
