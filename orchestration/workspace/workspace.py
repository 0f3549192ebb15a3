"""A project's private state under ORCH_HOME: its bare clone, throwaway worktrees, its home dir.

The user's own checkout is only ever read; everything that writes works on the private clone.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock

from orchestration.registry.models import ProjectSpec
from orchestration.workspace.git import GitError, GitRepo, remote_head
from orchestration.workspace.isolation import path_inside, project_dir
from orchestration.workspace.sandbox import Sandbox, private_paths, visible_again


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
        self.orch_home = self.root.parent.parent
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
        repo = GitRepo.private_clone(self.clone_path)
        if not repo.is_repository():
            if self.clone_path.exists():
                shutil.rmtree(self.clone_path)
            repo = GitRepo.clone_bare(self.spec.repo, self.clone_path)
        else:
            repo.reset_clone_config(self.spec.repo)  # whatever an agent may have written there
        repo.fetch()
        return repo

    def restore_clone_config(self) -> None:
        """Rewrite the private clone's configuration from the project's spec, dropping anything
        an agent wrote there (without the sandbox it can)."""
        with self._exclusive():
            GitRepo.private_clone(self.clone_path).reset_clone_config(self.spec.repo)

    def reclaim(self, tree: GitRepo) -> None:
        """Take the clone and the task's worktree `tree` back from the agent that worked in it,
        before the orchestrator runs git there: the clone's configuration and the links between
        the worktree and the clone are written again as the orchestrator made them."""
        self.restore_clone_config()
        tree.restore_worktree_links()

    @contextmanager
    def checkout(self, purpose: str, commit: str | None = None) -> Iterator[GitRepo]:
        """A fresh worktree of the branch tip (or detached at `commit`, a full sha of the
        clone), removed afterwards whatever happens."""
        worktrees = self.root / "worktrees"
        path = path_inside(worktrees, f"{purpose}-{uuid.uuid4().hex[:12]}")
        with self._exclusive():
            repo = self._sync()
            worktrees.mkdir(parents=True, exist_ok=True)
            tree = repo.add_worktree(path, commit or self.upstream_ref)
        try:
            yield tree
        finally:
            with self._exclusive():
                _discard_worktree(repo, path)

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
                _discard_worktree(repo, path)
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
                _discard_worktree(GitRepo.private_clone(self.clone_path), path)

    def agent_config_dir(self, profile: str) -> Path:
        """A per-project, per-profile directory for an agent CLI's sessions and settings."""
        path = path_inside(self.root, "agents", profile)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare_home(self) -> Path:
        self.home_dir.mkdir(parents=True, exist_ok=True)
        return self.home_dir

    def sandbox(
        self,
        tree: GitRepo,
        *,
        program: str,
        environ: Mapping[str, str],
        network: bool = True,
        config_dir: Path | None = None,
        also_hidden: Sequence[Path] = (),
        also_readable: Sequence[Path] = (),
    ) -> Sandbox:
        """The sandbox of a command run in `tree`, a worktree of this project's clone made by
        `open_task_worktree` or `checkout` (so its administrative directory is the one git
        recorded then, not whatever its `.git` file says now).

        Writable: the worktree, the project's agent home, `config_dir` (the profile's own
        directory), and of the clone what committing writes (objects, refs, logs, the worktree's
        administrative directory). Read-only: the rest of the clone (its `config`, `hooks/`,
        `info/` and `objects/info/`, where alternate object stores are named). Hidden: the rest
        of ORCH_HOME, `private_paths` and `also_hidden` (the other projects' checkouts), but for
        `also_readable`, read-only (the other members' checkouts in a change set).
        """
        clone = self.clone_path
        committing = [clone / "objects", clone / "refs", clone / "logs"]
        for path in [*committing, clone / "objects" / "info"]:
            path.mkdir(exist_ok=True)  # git makes `logs/` on the first reflog; bwrap needs it
        writable = [Path(tree.path), self.prepare_home(), *committing]
        if tree.git_dir is not None and tree.git_dir != Path(tree.path):
            writable.append(tree.git_dir)
        if config_dir is not None:
            writable.append(config_dir)
        hidden = (*private_paths(self.orch_home, environ), *also_hidden)
        return Sandbox(
            program,
            hidden=hidden,
            writable=tuple(path.resolve() for path in writable),
            readable=(
                clone,
                clone / "objects" / "info",
                *visible_again(hidden, network=network),
                *(path.resolve() for path in also_readable),
            ),
            network=network,
        )


def _discard_worktree(repo: GitRepo, path: Path) -> None:
    """Remove the worktree at `path` from the clone `repo`; when git refuses (an agent may have
    replaced its `.git` file or added a submodule), delete the directory and forget it."""
    try:
        repo.remove_worktree(path)
    except GitError:
        shutil.rmtree(path, ignore_errors=True)
        repo.prune_worktrees()


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
