"""A project's private state under ORCH_HOME: its bare clone, throwaway worktrees, its home dir.

The user's own checkout is only ever read; everything that writes works on the private clone.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock

from orchestration.registry.models import ProjectSpec
from orchestration.workspace.git import GitRepo, remote_head
from orchestration.workspace.isolation import path_inside, project_dir


@dataclass(frozen=True)
class SourceState:
    """What a project's repository looks like right now."""

    branch: str
    branch_sha: str | None
    head_sha: str | None
    head_branch: str | None
    dirty: bool | None
    last_commit_time: datetime | None
    last_commit_summary: str | None
    remote: bool


class ProjectWorkspace:
    """The directory `ORCH_HOME/workspaces/<project>` and what lives in it."""

    def __init__(self, home: Path, spec: ProjectSpec) -> None:
        self.spec = spec
        self.root = project_dir(home, spec.name)
        self.clone_path = self.root / "repo.git"
        self.home_dir = self.root / "home"

    @property
    def upstream_ref(self) -> str:
        """The project's branch as last fetched into the private clone."""
        return f"refs/remotes/origin/{self.spec.branch}"

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Runs of one project take turns at the private clone's refs and configuration."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):  # exclusive, waits as long as it takes
            yield

    def sync(self) -> GitRepo:
        """Create the private clone if needed and fetch the latest commits into it."""
        with self._exclusive():
            return self._sync()

    def _sync(self) -> GitRepo:
        repo = GitRepo(self.clone_path)
        if not repo.is_repository():
            if self.clone_path.exists():
                shutil.rmtree(self.clone_path)
            repo = GitRepo.clone_bare(self.spec.repo, self.clone_path)
        repo.fetch()
        return repo

    @contextmanager
    def checkout(self, purpose: str) -> Iterator[Path]:
        """A fresh worktree of the branch tip, removed afterwards whatever happens."""
        worktrees = self.root / "worktrees"
        path = path_inside(worktrees, f"{purpose}-{uuid.uuid4().hex[:12]}")
        with self._exclusive():
            repo = self._sync()
            worktrees.mkdir(parents=True, exist_ok=True)
            repo.add_worktree(path, self.upstream_ref)
        try:
            yield path
        finally:
            with self._exclusive():
                repo.remove_worktree(path)

    def task_branch(self, task_id: str) -> str:
        """The branch a task's work is committed on."""
        return f"orch/{self.spec.name}/{task_id}"

    def open_task_worktree(self, task_id: str) -> tuple[GitRepo, str]:
        """The task's own worktree on its own branch, and the commit it started from.

        A task run again (after a failure) continues on its existing branch.
        """
        with self._exclusive():
            repo = self._sync()
            worktrees = self.root / "worktrees"
            worktrees.mkdir(parents=True, exist_ok=True)
            path = path_inside(worktrees, task_id)
            if path.exists():
                repo.remove_worktree(path)
            repo.prune_worktrees()
            branch = self.task_branch(task_id)
            if repo.has_branch(branch):
                tree = repo.add_worktree(path, branch)
            else:
                tree = repo.add_worktree(path, self.upstream_ref, branch=branch)
        base = tree.resolve("HEAD")
        assert base is not None
        return tree, base

    def close_task_worktree(self, task_id: str) -> None:
        """Remove the task's worktree directory; its branch stays in the private clone."""
        path = path_inside(self.root / "worktrees", task_id)
        if path.exists():
            with self._exclusive():
                GitRepo(self.clone_path).remove_worktree(path)

    def agent_config_dir(self, profile: str) -> Path:
        """A per-project, per-profile directory for an agent CLI's sessions and settings."""
        path = path_inside(self.root, "agents", profile)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare_home(self) -> Path:
        self.home_dir.mkdir(parents=True, exist_ok=True)
        return self.home_dir


def observe_source(spec: ProjectSpec) -> SourceState:
    """Read the repository's state without cloning or writing anything."""
    if spec.is_remote:
        return SourceState(
            branch=spec.branch,
            branch_sha=remote_head(spec.repo, spec.branch),
            head_sha=None,
            head_branch=None,
            dirty=None,
            last_commit_time=None,
            last_commit_summary=None,
            remote=True,
        )
    repo = GitRepo(Path(spec.repo))
    branch_sha = repo.resolve(f"refs/heads/{spec.branch}")
    head = repo.commit("HEAD") if repo.resolve("HEAD") else None
    last = repo.commit(branch_sha) if branch_sha else head
    return SourceState(
        branch=spec.branch,
        branch_sha=branch_sha,
        head_sha=head.sha if head else None,
        head_branch=repo.current_branch(),
        dirty=repo.is_dirty(),
        last_commit_time=last.committed_at if last else None,
        last_commit_summary=last.summary if last else None,
        remote=False,
    )
