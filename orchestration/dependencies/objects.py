"""Reading a commit's manifests straight from git's object store, in this process.

Detection reads a few small files from each of hundreds of repositories; starting git
processes for that costs far more than the reading. libgit2 (through pygit2) opens the
repository, walks the commit's tree and reads the wanted blobs without starting any program:
it runs no hook, filter, fsmonitor or configured command, and never looks at the work tree.
Whatever libgit2 cannot do (a repository format it does not know, a damaged object store, an
unusual layout) is read by git itself through `read_tree_files`, whose errors say what went
wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.workspace.git import read_branch_sha

if TYPE_CHECKING:
    import pygit2

_SHA = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
#: git's mode of a submodule (gitlink) entry, and of a folder.
_GITLINK = 0o160000
_TREE = 0o040000


def branch_commit(repo_path: Path | str, branch: str) -> str | None:
    """The sha `refs/heads/<branch>` of the repository at `repo_path` points at, or None.

    A repository with a `.git` folder and the branch as a loose ref (what a checkout that
    committed since its last `gc` has) costs one small read; every other layout is read by
    `read_branch_sha`.
    """
    try:
        handle = os.open(f"{repo_path}/.git/refs/heads/{branch}", os.O_RDONLY)
    except OSError:
        return read_branch_sha(Path(repo_path), branch)
    try:
        value = os.read(handle, 200).strip()
    except OSError:
        return read_branch_sha(Path(repo_path), branch)
    finally:
        os.close(handle)
    if _SHA.fullmatch(value):
        return value.decode()
    return read_branch_sha(Path(repo_path), branch)


def read_files_in_process(
    repo_path: Path,
    commit: str,
    wanted: Callable[[str, str, int], bool],
    skipped_dirs: frozenset[str] = frozenset(),
) -> dict[str, bytes] | None:
    """The bytes of every file at `commit` that `wanted(path, mode, size)` accepts, as
    `read_tree_files` gives them (the same calls of `wanted`, in the same order, with the same
    sizes; modes as libgit2 normalises them, `100664` read as `100644`), read in this process;
    None when libgit2 cannot read this repository (or pygit2 is not installed), and the caller
    should ask git (`read_tree_files`) with a fresh `wanted`.

    `wanted` sees each blob's mode and size (from the object's header, its content unread)
    before anything is read. Folders named in `skipped_dirs` are not entered; submodules are
    never offered.
    """
    try:
        import pygit2
        from pygit2.enums import RepositoryOpenFlag
    except ImportError:
        return None
    try:
        repo = pygit2.Repository(str(repo_path), RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError, ValueError, OSError):
        return None
    try:
        tree = repo[commit].peel(pygit2.Tree)
        chosen: dict[str, pygit2.Oid] = {}
        _walk(repo, tree, "", wanted, skipped_dirs, chosen)
        odb = repo.odb
        return {path: odb.read(oid)[1] for path, oid in chosen.items()}
    except (pygit2.GitError, KeyError, ValueError, TypeError, OSError):
        return None
    finally:
        repo.free()


def _walk(
    repo: pygit2.Repository,
    tree: pygit2.Tree,
    prefix: str,
    wanted: Callable[[str, str, int], bool],
    skipped_dirs: frozenset[str],
    chosen: dict[str, pygit2.Oid],
) -> None:
    """Depth first in tree order, as `git ls-tree -r` lists."""
    odb = repo.odb
    for entry in tree:
        mode, name = entry.filemode, entry.name
        if name is None:
            continue
        if mode == _TREE:
            if name not in skipped_dirs:
                subtree = repo[entry.id].peel(type(tree))
                _walk(repo, subtree, f"{prefix}{name}/", wanted, skipped_dirs, chosen)
        elif mode != _GITLINK:
            _, size = odb.read_header(entry.id)
            path = prefix + name
            if wanted(path, f"{mode:06o}", size):
                chosen[path] = entry.id
