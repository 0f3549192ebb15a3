"""The seam to git: every git command the package runs goes through `GitRepo` and `run_git`.

Commands are argv lists with an explicit timeout, never prompt for credentials, and take no
optional locks on a repository they only read, so observing a user's checkout never writes to it.
Failures are re-raised as `GitError` saying what was being done and where.

Nothing a repository configures runs as a program of ours. Agents write to the private clones'
worktrees (and, without the sandbox, to the clones themselves), so every command pins the keys
that name programs (`PINNED_CONFIG`: fsmonitor, hooks, pager, ...), gets a scrubbed environment
(`GIT_ENV_PASSED`: no project's secret), and finds its repository from paths recorded when the
orchestrator made it, never from a `.git` file an agent may have rewritten. The private clone's
own configuration is rewritten from what the orchestrator knows before it is used
(`GitRepo.reset_clone_config`), so a filter driver, credential helper or `include` an agent
added there is gone before the orchestrator's next `add`, `commit` or `fetch`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

#: Variables every git command gets: never prompt, never take optional locks on a read, and
#: messages in English (they end up in `GitError`s).
QUIET_GIT_ENV: Mapping[str, str] = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",
    "LANGUAGE": "C",
    "LC_ALL": "C",
}
#: The only variables of this process's environment a git command sees: PATH, the locale, HOME
#: (the user's own git configuration: credential helpers, `safe.directory`, LFS), and what
#: reaching a remote takes (an ssh agent, proxies, certificates). No project's secret.
GIT_ENV_PASSED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TZ",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
#: Configuration given with `-c` to every git command, above every file a repository or an
#: agent can write: no key that names a program to run is taken from them. (`core.sshCommand`
#: is pinned through GIT_SSH_COMMAND, which git ranks above any configuration; external diff
#: programs and text conversions are turned off on the one `diff` we run, since an empty
#: `diff.external` would make every other `git diff` fail.)
PINNED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", os.devnull),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    ("protocol.ext.allow", "never"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
)
DEFAULT_TIMEOUT_S = 300.0
#: What a private clone's configuration holds besides its remote (see `reset_clone_config`).
_CLONE_FETCH_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
_CLONE_BOOLEANS = ("core.filemode", "core.ignorecase", "core.precomposeunicode", "core.symlinks")


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
    """A git repository (a work tree or a bare one) at `path`.

    With `git_dir` (and `common_dir` for a linked worktree) git is told where the repository is
    instead of looking for it: a private clone, or a worktree whose `.git` file an agent could
    have pointed somewhere else. Without them git finds the repository from `path` (a user's
    checkout, which only the user writes to). With a `wrapper` (a sandbox's `bwrap ... --`)
    every command runs under it.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        git_dir: Path | None = None,
        common_dir: Path | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.wrapper = tuple(wrapper)

    def confined(self, wrapper: Sequence[str]) -> GitRepo:
        """This repository with every command run under `wrapper` (a sandbox's launcher)."""
        return GitRepo(
            self.path,
            timeout_s=self.timeout_s,
            git_dir=self.git_dir,
            common_dir=self.common_dir,
            wrapper=wrapper,
        )

    @classmethod
    def private_clone(cls, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> GitRepo:
        """The orchestrator's bare clone at `path`, used only as the repository found there."""
        return cls(path, timeout_s=timeout_s, git_dir=Path(path), common_dir=Path(path))

    def _location_env(self) -> dict[str, str]:
        if self.git_dir is None:
            return {}
        env = {"GIT_DIR": str(self.git_dir), "GIT_COMMON_DIR": str(self.common_dir or self.git_dir)}
        if self.git_dir != self.path:
            env["GIT_WORK_TREE"] = str(self.path)
        return env

    def run(self, *args: str, what: str, env: Mapping[str, str] | None = None) -> str:
        """Run `git <args>` in this repository and return its standard output."""
        return run_git(
            args,
            cwd=self.path,
            what=what,
            env={**self._location_env(), **(env or {})},
            timeout_s=self.timeout_s,
            wrapper=self.wrapper,
        )

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

    def config_value(self, key: str) -> str | None:
        """The value of the configuration `key` (one the caller names, never untrusted text)
        as this repository sees it, or None when it is not set."""
        try:
            return self.run("config", "--get", "--end-of-options", key, what=f"read {key}") or None
        except GitError:
            return None

    def merge_base(self, one: str, other: str) -> str | None:
        """The best common ancestor of two commits; None when they have none (or either is
        not in this repository)."""
        if self.resolve(one) is None or self.resolve(other) is None:
            return None
        try:
            out = self.run(
                "merge-base",
                "--end-of-options",
                one,
                other,
                what=f"find where {one} and {other} met",
            )
        except GitError:  # exit status 1: no common ancestor
            return None
        return out or None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when `ancestor` is `descendant` or in its history (both in this repository)."""
        sha = self.resolve(ancestor)
        return sha is not None and self.merge_base(sha, descendant) == sha

    def checked_out_branches(self) -> set[str]:
        """The branches (`refs/heads/...`) checked out in this repository's worktrees."""
        out = self.run("worktree", "list", "--porcelain", what="list the worktrees")
        return {
            line.removeprefix("branch ") for line in out.splitlines() if line.startswith("branch ")
        }

    def patch(self, base: str, head: str, *, stat: bool = False) -> str:
        """The change from `base` to `head` as a patch `git apply` takes (binary files
        included), or with `stat` the per-file summary. No external diff or text conversion,
        colour or prefix setting of anyone's configuration changes it."""
        form = ("--stat",) if stat else ("--binary", "--src-prefix=a/", "--dst-prefix=b/")
        return self.run(
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            *form,
            "--end-of-options",
            base,
            head,
            "--",
            what=f"diff {base}..{head}",
        )

    # Delivering (the private clone's branches to the user's repositories) ---------------------

    def fetch_branch(self, source: Path | str, branch: str, *, force: bool = False) -> None:
        """Create or fast-forward `refs/heads/<branch>` here from the same branch of the
        repository at `source` (a private clone, or the results remote's URL): never by force
        unless `force`, no tags, no FETCH_HEAD; git refuses to move a branch checked out here,
        and nothing else of this repository (its HEAD, index or work tree) is touched."""
        _check_url(str(source), f"fetch {branch}")
        ref = f"refs/heads/{_plain_branch(branch)}"
        self.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            str(source),
            f"{'+' if force else ''}{ref}:{ref}",
            what=f"fetch {branch} from {source}",
        )

    def push_branch(self, url: str, branch: str, *, force: bool = False) -> str:
        """Push `refs/heads/<branch>` to the same branch of the repository at `url`, never by
        force unless `force` (the results remote, the orchestrator's own), and nothing else
        (no tags, no submodules); git's `--porcelain` report."""
        _check_url(url, f"push {branch}")
        ref = f"refs/heads/{_plain_branch(branch)}"
        return self.run(
            "push",
            "--porcelain",
            "--no-follow-tags",
            "--recurse-submodules=no",
            "--",
            url,
            f"{'+' if force else ''}{ref}:{ref}",
            what=f"push {branch} to {url}",
        )

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
        repo = cls.private_clone(dest, timeout_s=timeout_s)
        repo.reset_clone_config(source)
        return repo

    def config_values(self) -> dict[str, str]:
        """The settings of this repository's own `config` file (no global or system ones), by
        lower-case key; none when it is missing or unreadable (an agent's doing)."""
        try:
            listed = run_git(
                ("config", "--file", str(self.path / "config"), "--list"),
                cwd=self.path,
                what=f"read the configuration of {self.path}",
            ).splitlines()
        except GitError:
            return {}
        return dict(line.partition("=")[::2] for line in listed)

    def reset_clone_config(self, source: str) -> None:
        """Rewrite this private clone's configuration from what the orchestrator knows: the
        format git chose when it made the clone, the remote `source`, and automatic gc and
        maintenance off (several runs write to the clone at once: repacking under them would
        race). Whatever else is there (an agent's filter driver, credential helper, `include`,
        remote URL or upload-pack command) is dropped, and so are alternate object stores."""
        if any(char in source for char in "\n\r\x00"):
            raise GitError(
                f"git could not configure {self.path}: the remote {source!r} is not a URL"
            )
        values = self.config_values()
        object_format = values.get("extensions.objectformat", "sha1").lower()
        if object_format not in ("sha1", "sha256"):
            object_format = "sha1"
        lines = ["[core]", f"\trepositoryformatversion = {int(object_format != 'sha1')}"]
        lines += ["\tbare = true"]
        for key in _CLONE_BOOLEANS:
            value = values.get(key, "").lower()
            if value in ("true", "false"):
                lines.append(f"\t{key.split('.')[1]} = {value}")
        if object_format != "sha1":
            lines += ["[extensions]", f"\tobjectformat = {object_format}"]
        lines += [
            '[remote "origin"]',
            f"\turl = {_config_value(source)}",
            f"\tfetch = {_CLONE_FETCH_REFSPEC}",
            "[gc]",
            "\tauto = 0",
            "[maintenance]",
            "\tauto = false",
        ]
        _replace_file(self.path / "config", "\n".join(lines) + "\n")
        for alternates in ("alternates", "http-alternates"):
            (self.path / "objects" / "info" / alternates).unlink(missing_ok=True)

    def fetch(self) -> None:
        self.run("fetch", "--quiet", "--prune", "origin", what="fetch from origin")

    def add_worktree(self, path: Path, ref: str, *, branch: str | None = None) -> GitRepo:
        """A new worktree of this (bare) clone at `path`: on a new `branch` made at `ref`; on
        `ref` itself when it is one of the clone's branches (so that commits made there move
        it: a task run again continues its branch); else detached at `ref`. The `GitRepo`
        returned remembers the worktree's administrative directory as git recorded it now,
        before anyone else could write to the worktree."""
        args = ["worktree", "add", "--quiet"]
        if branch:
            args += ["--no-track", "-b", branch]
        elif not self.has_branch(ref):
            args += ["--detach"]
        self.run(*args, "--", str(path), ref, what=f"create a worktree at {path} from {ref}")
        admin = self._admin_dir(path)
        return GitRepo(path, timeout_s=self.timeout_s, git_dir=admin, common_dir=self.path)

    def restore_worktree_links(self) -> None:
        """Write this linked worktree's `.git` file and its administrative directory's
        `commondir` and `gitdir` as git made them. An agent can rewrite all three (its worktree
        and that directory are writable in its sandbox), and git reads the branches from the
        `commondir` named there even when told the common directory."""
        if self.git_dir is None or self.common_dir is None or self.git_dir == self.path:
            raise GitError(f"{self.path} is not a worktree of a private clone")
        _replace_file(
            self.git_dir / "commondir", f"{os.path.relpath(self.common_dir, self.git_dir)}\n"
        )
        dot_git = self.path / ".git"
        _replace_file(self.git_dir / "gitdir", f"{dot_git}\n")
        # A `.git` directory there is a repository of the agent's own, never part of its work.
        _replace_file(dot_git, f"gitdir: {self.git_dir}\n")

    def _admin_dir(self, worktree: Path) -> Path:
        """Where git keeps the new `worktree`'s HEAD and index: `<clone>/worktrees/<name>`."""
        text = (Path(worktree) / ".git").read_text(encoding="utf-8").strip()
        admin = Path(text.removeprefix("gitdir: ")).resolve()
        if not text.startswith("gitdir: ") or admin.parent != (self.path / "worktrees").resolve():
            raise GitError(f"git made the worktree {worktree} with an unexpected {text!r}")
        return admin

    def has_branch(self, branch: str) -> bool:
        return self.resolve(f"refs/heads/{branch}") is not None

    def commit_all(self, message: str, *, author: tuple[str, str]) -> str | None:
        """Commit every change in this work tree; the new sha, or None when nothing changed."""
        self.run("add", "--all", what="stage changes")
        # The index against HEAD only: `status` would also run git in nested repositories.
        if not self.run(
            "diff-index", "--cached", "--name-only", "HEAD", "--", what="check for staged changes"
        ):
            return None
        name, email = author
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        self.run(
            "commit", "--quiet", "--no-verify", "-m", message, what="commit changes", env=identity
        )
        return self.resolve("HEAD")

    def diff_stats(self, base: str, head: str) -> DiffStats:
        out = self.run(
            "diff",
            "--numstat",
            "--no-ext-diff",
            "--no-textconv",
            base,
            head,
            "--",
            what=f"diff {base}..{head}",
        )
        added = removed = files = 0
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            files += 1
            added += int(parts[0]) if parts[0].isdigit() else 0
            removed += int(parts[1]) if parts[1].isdigit() else 0
        return DiffStats(files, added, removed)

    def reset_soft(self, commit: str) -> None:
        """Move this worktree's branch back to `commit`, keeping the changes staged."""
        self.run("reset", "--soft", commit, "--", what=f"reset softly to {commit}")

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
    wanted: Callable[[str, str, int], bool],
    skipped_dirs: frozenset[str] = frozenset(),
) -> dict[str, bytes]:
    """The bytes of every file at `commit` that `wanted(path, mode, size)` accepts, read from
    git's object store, never from the work tree: one `ls-tree` and one `cat-file --batch`
    process, nothing else (no URL, submodule or filter of the repository is ever run).

    `wanted` sees each blob's git mode (`120000` for a symbolic link, whose blob holds only
    the link's target) and size before anything is read, so a caller can refuse links and
    large files without their content ever reaching memory. Submodules (gitlinks) and
    folders named in `skipped_dirs` are never offered.
    """
    listing = run_git(
        ("ls-tree", "-r", "-z", "-l", "--full-tree", "--end-of-options", commit),
        cwd=Path(repo_path),
        what=f"list the files of {commit}",
    )
    blobs: dict[str, str] = {}
    for entry in listing.split("\x00"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        parts = meta.split()  # mode, type, sha, size (`-` for a gitlink)
        if len(parts) != 4 or parts[1] != "blob" or not parts[3].isdigit():
            continue
        if skipped_dirs and any(d in skipped_dirs for d in path.split("/")[:-1]):
            continue
        if wanted(path, parts[0], int(parts[3])):
            blobs[path] = parts[2]
    if not blobs:
        return {}
    with tempfile.TemporaryFile() as request:
        request.write("".join(f"{sha}\n" for sha in dict.fromkeys(blobs.values())).encode())
        request.seek(0)
        raw = run_git(
            ("cat-file", "--batch"),
            cwd=Path(repo_path),
            what=f"read the manifests of {commit}",
            stdin=request,
        )
    # Each object: a header line `<sha> <type> <size>` (or `<sha> missing`), the bytes, `\n`.
    contents: dict[str, bytes] = {}
    position = 0
    while position < len(raw):
        end = raw.index(b"\n", position)
        header = raw[position:end].split()
        position = end + 1
        if len(header) < 3:
            continue
        size = int(header[2])
        contents[header[0].decode()] = raw[position : position + size]
        position += size + 1
    return {path: contents[sha] for path, sha in blobs.items() if sha in contents}


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
    stdin: IO[bytes] | None = None,
    wrapper: Sequence[str] = (),
) -> Any:
    """The one place a git process is started. Returns stdout as text, or as bytes when a
    `stdin` file is given (batch commands whose output is binary-safe).

    git runs with `PINNED_CONFIG` ahead of `args` and with only `git_environment(env)`, in its
    own process group, which is killed whole when `timeout_s` passes; under `wrapper` (a
    sandbox's launcher) when one is given.
    """
    if not Path(cwd).is_dir():
        raise GitError(f"git could not {what}: {cwd} is not a directory")
    child_env = git_environment(env)
    program = shutil.which("git", path=child_env.get("PATH", os.defpath))
    if program is None:
        raise GitError(
            f"git could not {what} (in {cwd}): no git program on PATH "
            f"{child_env.get('PATH', '')!r}; install git"
        )
    pins = [arg for key, value in PINNED_CONFIG for arg in ("-c", f"{key}={value}")]
    try:
        process = subprocess.Popen(
            [*wrapper, program, *pins, *args],
            cwd=cwd,
            env=child_env,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise GitError(f"git could not {what} (in {cwd}): {exc}") from None
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise GitError(
            f"git could not {what} (in {cwd}): no answer within {timeout_s:g} s"
        ) from None
    finally:
        if process.returncode is None:  # interrupted: leave nothing running
            _kill_group(process)
    if process.returncode != 0:
        detail = (err or out).decode("utf-8", errors="replace").strip()
        raise GitError(
            f"git could not {what} (in {cwd}): {detail or f'exit status {process.returncode}'}"
        )
    if stdin is not None:
        return out
    text = out.decode("utf-8", errors="surrogateescape")
    return text[:-1] if text.endswith("\n") else text


def git_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of a git command: `GIT_ENV_PASSED` from this process's,
    `QUIET_GIT_ENV`, an ssh command that no repository configuration can replace, then
    `extra`."""
    env = {name: os.environ[name] for name in GIT_ENV_PASSED if name in os.environ}
    env.update(QUIET_GIT_ENV)
    if "GIT_SSH_COMMAND" not in env:
        env["GIT_SSH_COMMAND"] = shlex.quote(env["GIT_SSH"]) if "GIT_SSH" in env else "ssh"
    env.update(extra or {})
    return env


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.communicate()


def _check_url(url: str, what: str) -> None:
    """GitError for a URL git would read as an option or that holds a line break or NUL."""
    if url.startswith("-") or any(char in url for char in "\n\r\x00"):
        raise GitError(f"git could not {what}: {url!r} is not a repository URL")


def _plain_branch(branch: str) -> str:
    """`branch` when it can only be read as a branch name in a refspec (no leading `-` or `+`,
    no `:`, `*` or whitespace); GitError otherwise."""
    if not branch or branch[0] in "-+" or any(char in branch for char in ":*^~?[\\ \t\n\r\x00"):
        raise GitError(f"{branch!r} cannot be used as a branch name here")
    return branch


def _replace_file(path: Path, text: str) -> None:
    """Put `text` at `path` by renaming a new file over it: a symbolic link there is replaced,
    never written through, and a directory there is removed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    scratch = path.with_name(f".{path.name}.orch-{uuid.uuid4().hex}")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def _config_value(value: str) -> str:
    """`value` quoted for a git configuration file."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
