"""Real git repositories for tests and benchmarks: made in temporary directories, with a fixed
identity, and git run in them the way a user would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
GIT_TIMEOUT_S = 60


def git_env(repo: Path, date: str | None = None) -> dict[str, str]:
    """The environment `git` and `commit` run git in: the fixed identity, no user or system
    configuration of this machine, no optional index locks (so that `git status` leaves the
    repository as it found it), and the commit date if given."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_OPTIONAL_LOCKS": "0",
        **GIT_IDENTITY,
    }
    if date is not None:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return env


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    """`git ARGS...` in `repo`, as a user would run it (`stdin` on its standard input); its
    stripped output. Fails the caller with git's message if git fails."""
    return _run(repo, args, git_env(repo), stdin)


def commit(
    repo: Path, files: Mapping[str, str], *, message: str = "change", date: str | None = None
) -> str:
    """A new commit on the checked-out branch of `repo` with `files` (relative path -> text)
    written; its sha. `date` (any form git takes, e.g. "2019-01-01T00:00:00Z") dates it."""
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    env = git_env(repo, date)
    _run(repo, ("add", "-A"), env)
    _run(repo, ("commit", "-q", "--no-gpg-sign", "-m", message), env)
    return _run(repo, ("rev-parse", "HEAD"), env)


def make_git_repo(path: Path, files: Mapping[str, str], *, branch: str = "main") -> Path:
    """A real git repository at `path` with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    _run(path, ("init", "-q", "-b", branch), git_env(path))
    commit(path, files, message="initial")
    return path


def _run(
    repo: Path, args: tuple[str, ...], env: Mapping[str, str], stdin: bytes | None = None
) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env=dict(env),
        input=stdin,
        capture_output=True,
        check=False,
        timeout=GIT_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed in {repo} ({done.returncode}):\n"
            + done.stderr.decode(errors="replace")
        )
    return done.stdout.decode(errors="replace").strip()
