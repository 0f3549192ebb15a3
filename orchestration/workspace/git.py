"""The seam to git: every git command the package runs goes through `GitRepo` (GitPython).

Commands are argv lists with an explicit timeout, never prompt for credentials, and take no
optional locks on a repository they only read, so observing a user's checkout never writes to it.
Failures are re-raised as `GitError` saying what was being done and where.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git

#: Variables every git command gets: never prompt, never take optional locks on a read.
QUIET_GIT_ENV: Mapping[str, str] = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
DEFAULT_TIMEOUT_S = 300.0


class GitError(Exception):
    """A git command failed; the message says what was being done, where, and git's words."""


@dataclass(frozen=True)
class DiffStats:
    """How much a range of commits changed."""

    files_changed: int
    lines_added: int
    lines_removed: int


@dataclass(frozen=True)
class CommitInfo:
    """One commit as the UI shows it."""

    sha: str
    committed_at: datetime
    author: str
    summary: str


class GitRepo:
    """A git repository (a work tree or a bare one) at `path`."""

    def __init__(self, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s

    def run(self, *args: str, what: str, env: Mapping[str, str] | None = None) -> str:
        """Run `git <args>` in this repository and return its standard output."""
        return run_git(args, cwd=self.path, what=what, env=env, timeout_s=self.timeout_s)

    # Reading ---------------------------------------------------------------------------------

    def is_repository(self) -> bool:
        if not self.path.exists():
            return False
        try:
            self.run("rev-parse", "--git-dir", what="check for a repository")
        except GitError:
            return False
        return True

    def resolve(self, ref: str) -> str | None:
        """The commit sha `ref` points at, or None when it does not exist."""
        try:
            return (
                self.run(
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    f"{ref}^{{commit}}",
                    what=f"resolve {ref}",
                )
                or None
            )
        except GitError:
            return None

    def commit(self, ref: str) -> CommitInfo:
        out = self.run(
            "log",
            "-1",
            "--format=%H%x00%ct%x00%an <%ae>%x00%s",
            "--end-of-options",
            ref,
            what=f"read commit {ref}",
        )
        sha, timestamp, author, summary = out.split("\x00", 3)
        return CommitInfo(sha, datetime.fromtimestamp(int(timestamp), UTC), author, summary)

    def current_branch(self) -> str | None:
        """The branch HEAD is on; None when HEAD is detached."""
        try:
            return self.run("symbolic-ref", "--quiet", "--short", "HEAD", what="read HEAD")
        except GitError:
            return None

    def is_dirty(self) -> bool:
        """True when the work tree has uncommitted changes or untracked files."""
        return bool(
            self.run(
                "status",
                "--porcelain",
                "--untracked-files=normal",
                what="read the work tree status",
            )
        )

    def list_files(self, ref: str) -> list[str]:
        out = self.run(
            "ls-tree",
            "-r",
            "--name-only",
            "-z",
            "--end-of-options",
            ref,
            what=f"list the files of {ref}",
        )
        return [name for name in out.split("\x00") if name]

    def read_file(self, ref: str, path: str) -> str:
        return self.run("show", f"{ref}:{path}", what=f"read {path} at {ref}")

    # Writing (private clones under ORCH_HOME only) -------------------------------------------

    @classmethod
    def clone_bare(
        cls, source: str, dest: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> GitRepo:
        """A bare clone whose remote branches live under `refs/remotes/origin/`.

        Keeping the upstream branches out of `refs/heads/` leaves that namespace to the branches
        the orchestrator creates, so a fetch with pruning can never delete them.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_git(
            ("init", "--quiet", "--bare", str(dest)),
            cwd=dest.parent,
            what=f"create a private clone at {dest}",
            timeout_s=timeout_s,
        )
        repo = cls(dest, timeout_s=timeout_s)
        repo.run("remote", "add", "origin", "--", source, what=f"point {dest} at {source}")
        repo.run(
            "config",
            "remote.origin.fetch",
            "+refs/heads/*:refs/remotes/origin/*",
            what="configure fetching",
        )
        # Several runs write to this clone at once (commits in their worktrees, fetches):
        # automatic repacking under them would race, so it is off here.
        repo.run("config", "gc.auto", "0", what="turn off automatic gc")
        repo.run("config", "maintenance.auto", "false", what="turn off automatic maintenance")
        return repo

    def fetch(self) -> None:
        self.run("fetch", "--quiet", "--prune", "origin", what="fetch from origin")

    def add_worktree(self, path: Path, ref: str, *, branch: str | None = None) -> GitRepo:
        args = ["worktree", "add", "--quiet"]
        args += ["--no-track", "-b", branch] if branch else ["--detach"]
        self.run(*args, "--", str(path), ref, what=f"create a worktree at {path} from {ref}")
        return GitRepo(path, timeout_s=self.timeout_s)

    def has_branch(self, branch: str) -> bool:
        return self.resolve(f"refs/heads/{branch}") is not None

    def commit_all(self, message: str, *, author: tuple[str, str]) -> str | None:
        """Commit every change in this work tree; the new sha, or None when nothing changed."""
        self.run("add", "--all", what="stage changes")
        if not self.run("status", "--porcelain", what="check for staged changes"):
            return None
        name, email = author
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        self.run(
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
            what="commit changes",
            env=identity,
        )
        return self.resolve("HEAD")

    def diff_stats(self, base: str, head: str) -> DiffStats:
        out = self.run("diff", "--numstat", base, head, "--", what=f"diff {base}..{head}")
        added = removed = files = 0
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            files += 1
            added += int(parts[0]) if parts[0].isdigit() else 0
            removed += int(parts[1]) if parts[1].isdigit() else 0
        return DiffStats(files, added, removed)

    def prune_worktrees(self) -> None:
        self.run("worktree", "prune", what="forget worktrees whose directories are gone")

    def remove_worktree(self, path: Path) -> None:
        self.run(
            "worktree", "remove", "--force", "--", str(path), what=f"remove the worktree at {path}"
        )


def read_branch_sha(repo_path: Path, branch: str) -> str | None:
    """The sha `refs/heads/<branch>` points at, read from the ref files without running git.

    Cheap enough to check a thousand repositories for changes in milliseconds; None when the
    repository or branch is not there (callers then fall back to git itself).
    """
    git_dir = _git_dir(Path(repo_path))
    if git_dir is None:
        return None
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    ref = f"refs/heads/{branch}"
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text().strip()
            if value.startswith("ref: "):
                return None
            return value or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + ref) and not line.startswith(("#", "^")):
                return line.split(" ", 1)[0]
    return None


def _git_dir(path: Path) -> Path | None:
    dot_git = path / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text().strip()
        if text.startswith("gitdir: "):
            return (path / text[len("gitdir: ") :]).resolve()
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path  # a bare repository
    return None


def read_tree_files(
    repo_path: Path,
    commit: str,
    wanted: Callable[[str], bool],
    skipped_dirs: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The text of every file at `commit` whose path `wanted` accepts, read from git's object
    store, never from the work tree: one `ls-tree` and one `cat-file --batch` process."""
    listing = run_git(
        ("ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit),
        cwd=Path(repo_path),
        what=f"list the files of {commit}",
    )
    blobs: dict[str, str] = {}
    for entry in listing.split("\x00"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) != 3 or parts[1] != "blob":
            continue
        if skipped_dirs and any(d in skipped_dirs for d in path.split("/")[:-1]):
            continue
        if wanted(path):
            blobs[path] = parts[2]
    if not blobs:
        return {}
    with tempfile.TemporaryFile() as request:
        request.write("".join(f"{sha}\n" for sha in blobs.values()).encode())
        request.seek(0)
        raw = run_git(
            ("cat-file", "--batch"),
            cwd=Path(repo_path),
            what=f"read the manifests of {commit}",
            stdin=request,
        )
    contents = _parse_batch(raw)
    return {path: contents[sha] for path, sha in blobs.items() if sha in contents}


def _parse_batch(raw: bytes) -> dict[str, str]:
    """`git cat-file --batch` output: a header line `<sha> <type> <size>`, then the content."""
    contents: dict[str, str] = {}
    position = 0
    while position < len(raw):
        end = raw.index(b"\n", position)
        header = raw[position:end].split()
        position = end + 1
        if len(header) < 3:  # `<sha> missing`
            continue
        size = int(header[2])
        contents[header[0].decode()] = raw[position : position + size].decode(
            "utf-8", errors="replace"
        )
        position += size + 1
    return contents


def remote_head(url: str, branch: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """The sha of `branch` in the remote repository at `url`, without cloning it."""
    out = run_git(
        ("ls-remote", "--heads", "--", url, f"refs/heads/{branch}"),
        cwd=Path.cwd(),
        what=f"read {branch} of {url}",
        timeout_s=timeout_s,
    )
    return out.split()[0] if out.strip() else None


def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stdin: Any = None,
) -> Any:
    """The one place a git process is started. Returns stdout as text, or as bytes when a
    `stdin` file is given (batch commands whose output is binary-safe)."""
    if not Path(cwd).is_dir():
        # GitPython would fall back to this process's directory: never run git elsewhere.
        raise GitError(f"git could not {what}: {cwd} is not a directory")
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        return git.Git(str(cwd)).execute(
            command,
            env={**os.environ, **QUIET_GIT_ENV, **(env or {})},
            kill_after_timeout=timeout_s,
            strip_newline_in_stdout=stdin is None,
            istream=stdin,
            stdout_as_string=stdin is None,
        )
    except git.GitCommandError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().removeprefix("stderr:").strip(" '\n")
        raise GitError(f"git could not {what} (in {cwd}): {detail or exc}") from None
    except (OSError, git.GitCommandNotFound) as exc:
        raise GitError(f"git could not {what} (in {cwd}): {exc}") from None
