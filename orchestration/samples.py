"""Sample projects shipped in `examples/`, turned into local git repositories on first start.

The sample registry points at these repositories, so a fresh machine works offline: nothing is
cloned, the repositories are built from the committed trees with a fixed author and fixed dates.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import git

SAMPLE_PROJECTS: tuple[str, ...] = ("acme_core", "acme_api", "acme_web")

SAMPLE_AUTHOR_NAME = "Orchestration Samples"
SAMPLE_AUTHOR_EMAIL = "samples@orchestration.invalid"
SAMPLE_BRANCH = "main"

# Fixed identity and dates make the generated commits identical on every machine, and the
# user's global/system git config (hooks, signing, templates, autocrlf) is kept out of it.
_GIT_ENV: Mapping[str, str] = {
    "GIT_AUTHOR_NAME": SAMPLE_AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": SAMPLE_AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": SAMPLE_AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": SAMPLE_AUTHOR_EMAIL,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}
_FIRST_COMMIT_DATE = "2026-01-01T09:00:00+00:00"
_SECOND_COMMIT_DATE = "2026-01-01T10:00:00+00:00"

# Build litter that may sit in examples/ after someone ran the samples' tests in place.
_IGNORED_WHEN_COPYING = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "node_modules", ".pytest_cache", "*.egg-info"
)

_CHANGELOG = """# Changelog

## Unreleased

- Imported the `{name}` sample project into its own repository.
"""


class SampleRepoError(RuntimeError):
    """A sample repository could not be created; the message names the path and the step."""


def examples_dir() -> Path:
    """The repository's `examples/` folder, which holds the sample projects' source trees."""
    return Path(__file__).resolve().parent.parent / "examples"


def ensure_sample_repos(dest: Path, *, source: Path | None = None) -> dict[str, Path]:
    """Make `dest/<name>` a git repository on branch `main` for every sample project.

    A repository that already has a commit is left exactly as it is (agents may have worked in
    it); anything else at `dest/<name>` is a leftover of an interrupted run and is rebuilt.
    Nothing outside `dest` is touched. Returns sample name -> repository path.
    """
    source_root = source if source is not None else examples_dir()
    if dest.exists() and not dest.is_dir():
        raise SampleRepoError(
            f"cannot create sample repositories in {dest}: it is a file, not a folder; "
            "move it away or choose another destination"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SampleRepoError(
            f"cannot create the sample repositories folder {dest}: {error}"
        ) from error

    repos: dict[str, Path] = {}
    for name in SAMPLE_PROJECTS:
        target = dest / name
        if not _has_commits(target):
            _build_repo(name, source_root / name, target)
        repos[name] = target
    return repos


def _has_commits(path: Path) -> bool:
    """True when `path` itself is the work tree of a git repository whose HEAD has a commit."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    with repo:
        if repo.bare or repo.working_tree_dir is None:
            return False
        if Path(repo.working_tree_dir).resolve() != path.resolve():
            return False
        return repo.head.is_valid()


def _build_repo(name: str, tree: Path, target: Path) -> None:
    """Build the sample repository beside `target`, then move it into place in one rename."""
    if not tree.is_dir():
        raise SampleRepoError(
            f"cannot create sample repository {target}: its source tree {tree} is missing; "
            "check that the examples/ folder was shipped with the package"
        )
    staging = target.parent / f".{name}.building-{uuid.uuid4().hex}"
    try:
        _populate(name, tree, staging)
        _remove(target)
        try:
            staging.rename(target)
        except OSError as error:
            if not _has_commits(target):  # not a concurrent run that finished first
                raise SampleRepoError(
                    f"cannot move the new sample repository into {target}: {error}"
                ) from error
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _populate(name: str, tree: Path, work_tree: Path) -> None:
    """Copy the sample's tree to the new folder `work_tree` and record a two-commit history."""
    try:
        shutil.copytree(tree, work_tree, ignore=_IGNORED_WHEN_COPYING)
    except OSError as error:
        raise SampleRepoError(
            f"cannot copy sample project {tree} into {work_tree}: {error}"
        ) from error

    cmd = git.Git(str(work_tree))
    _run_git(cmd, work_tree, "init", "--quiet")
    _run_git(cmd, work_tree, "symbolic-ref", "HEAD", f"refs/heads/{SAMPLE_BRANCH}")
    _run_git(cmd, work_tree, "add", "--all")
    _commit(cmd, work_tree, f"Import the {name} sample project", _FIRST_COMMIT_DATE)

    (work_tree / "CHANGELOG.md").write_text(_CHANGELOG.format(name=name), encoding="utf-8")
    _run_git(cmd, work_tree, "add", "CHANGELOG.md")
    _commit(cmd, work_tree, "Add a changelog", _SECOND_COMMIT_DATE)


def _commit(cmd: git.Git, work_tree: Path, message: str, date: str) -> None:
    _run_git(
        cmd,
        work_tree,
        "commit",
        "--quiet",
        "--no-verify",
        "--no-gpg-sign",
        "-m",
        message,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
    )


def _run_git(
    cmd: git.Git, work_tree: Path, *args: str, env: Mapping[str, str] | None = None
) -> None:
    """Run one git command with the samples' fixed identity; failures name the command and path."""
    try:
        cmd.execute([git.Git.GIT_PYTHON_GIT_EXECUTABLE, *args], env={**_GIT_ENV, **(env or {})})
    except git.GitCommandError as error:
        raise SampleRepoError(
            f"git {' '.join(args)} failed while creating a sample repository in {work_tree}: "
            f"{error}"
        ) from error


def _remove(path: Path) -> None:
    """Delete a half-made sample at `path`; a symlink is unlinked, never followed."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    except OSError as error:
        raise SampleRepoError(
            f"cannot remove the half-made sample repository {path}: {error}; "
            "delete it by hand and start again"
        ) from error
