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


#: What `os.stat` tells of a loose ref file: inode, size, modification and change times (ns).
#: git replaces a ref file (writes a lock file, renames it over the ref) and never rewrites it
#: in place, so an equal stamp means an unchanged file.
RefStamp = tuple[int, int, int, int]


def loose_ref(repo_path: Path | str, branch: str) -> str:
    """The path of the loose ref file of `branch` in the repository at `repo_path`."""
    return f"{repo_path}/.git/refs/heads/{branch}"


def ref_stamp(path: str) -> RefStamp | None:
    """The stamp of the loose ref file at `path`; None when there is none (a packed ref)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def branch_commit(repo_path: Path | str, branch: str) -> str | None:
    """The sha `refs/heads/<branch>` of the repository at `repo_path` points at, or None.

    A repository with a `.git` folder and the branch as a loose ref (what a checkout that
    committed since its last `gc` has) costs one small read; every other layout is read by
    `read_branch_sha`.
    """
    return stamped_branch_commit(repo_path, branch)[0]


def stamped_branch_commit(repo_path: Path | str, branch: str) -> tuple[str | None, RefStamp | None]:
    """`branch_commit`, with the stamp of the loose ref file it was read from: while the file
    keeps that stamp, the branch points at that commit (a loose ref outranks `packed-refs`, and
    `git pack-refs` deletes the file). No stamp when the branch was read any other way (packed,
    a symbolic ref, a `.git` file), since then the file alone does not say where it points."""
    try:
        handle = os.open(loose_ref(repo_path, branch), os.O_RDONLY)
    except OSError:
        return read_branch_sha(Path(repo_path), branch), None
    try:
        found = os.fstat(handle)  # the stamp of the very file read below
        value = os.read(handle, 200).strip()
    except OSError:
        return read_branch_sha(Path(repo_path), branch), None
    finally:
        os.close(handle)
    if _SHA.fullmatch(value):
        stamp = found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns
        return value.decode(), stamp
    return read_branch_sha(Path(repo_path), branch), None


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
