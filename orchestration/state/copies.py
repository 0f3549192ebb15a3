"""How each kind of file is copied into a backup and put back: SQLite databases through SQLite's
backup API, directory trees with their links kept as links, agent session folders as tar files,
and the sha256 of what was written.

A SQLite database is copied with `sqlite3.Connection.backup`, which reads one consistent
snapshot of it even while Dagster writes to it in WAL mode (a plain file copy could take the
main file and its `-wal` at different moments). The copy is switched out of WAL mode so that it
is one self-contained file; Dagster switches it back when it opens it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import tarfile
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from orchestration.state.parallel import each_by

#: How long the copy of a SQLite database waits for a writer's lock.
SQLITE_TIMEOUT_S = 60.0
#: SQLite's companion files of a database in WAL mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
_CHUNK = 1024 * 1024


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database `source` at `target`, as one file."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not `mode=ro`: a reader of a WAL database needs its shared-memory file, which a
    # read-only connection cannot make when no writer has it open.
    with (
        closing(sqlite3.connect(source, timeout=SQLITE_TIMEOUT_S)) as reader,
        closing(sqlite3.connect(target)) as writer,
    ):
        reader.backup(writer)
        writer.execute("PRAGMA journal_mode=DELETE")
        writer.commit()


def copy_closed_sqlite(source: Path, target: Path) -> bool:
    """Copy the SQLite database `source` to `target` as a plain file when nothing has it open
    for writing (it has no companion file: a WAL database's last connection checkpoints and
    removes them); False, copying nothing, otherwise. For databases that are no longer
    written (the event shard of a finished run): a tenth of the cost of the backup API."""
    if any(source.with_name(source.name + suffix).exists() for suffix in SQLITE_COMPANIONS):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def remove_sqlite(path: Path) -> None:
    """Delete a SQLite database and its companion files."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        candidate.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest records of one file: its sha256 and size, or a link's target."""
    if path.is_symlink():
        return {"link": os.readlink(path)}
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def tree_entries(root: Path, prefix: str = "") -> dict[str, dict[str, Any]]:
    """`file_entry` of every regular file and link below `root`, by path relative to it
    (under `prefix`); directories are implied, anything else is left out."""
    paths: list[Path] = []
    if not root.is_dir():
        return {}
    for directory, subdirectories, files in os.walk(root):
        base = Path(directory)
        for name in sorted([*files, *[d for d in subdirectories if (base / d).is_symlink()]]):
            path = base / name
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                paths.append(path)
    return {
        f"{prefix}{path.relative_to(root).as_posix()}": entry
        for path, entry in each_by(file_entry, paths).items()
    }


def copy_tree(source: Path, target: Path, *, links_within: Path | None = None) -> None:
    """Copy a directory; links are copied as links, never followed, and sockets, pipes and
    devices are left out. With `links_within`, so is a link that is absolute or points
    outside that directory once copied (what an agent left in its home never points out of
    its project's workspace after a restore)."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        ignored = special_files(directory, names)
        if links_within is None:
            return ignored
        place = target / Path(directory).relative_to(source)
        return ignored + [
            name
            for name in names
            if name not in ignored
            and os.path.islink(os.path.join(directory, name))
            and not _link_stays_in(place, os.readlink(os.path.join(directory, name)), links_within)
        ]

    shutil.copytree(source, target, symlinks=True, ignore=ignore, dirs_exist_ok=True)


def _link_stays_in(place: Path, link: str, root: Path) -> bool:
    """Whether a link in the directory `place` to `link` stays inside `root` (lexically)."""
    if os.path.isabs(link):
        return False
    resolved = os.path.normpath(os.path.join(place, link))
    return os.path.commonpath([resolved, os.path.normpath(root)]) == os.path.normpath(root)


def extract_tar(source: Path, target: Path) -> None:
    """Unpack a tar file of agent sessions (the form of backups made before sessions were
    kept as folders) into `target`; a member that would land outside it is refused
    (tarfile's `tar` filter), links are made as they were."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source, "r") as archive:
        archive.extractall(target, filter="tar")


def remove_tree(path: Path) -> None:
    """Delete a directory (a link to one: the link only), making read-only directories in it
    (an agent's cache) writable first when they are in the way."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        for directory, subdirectories, _files in os.walk(path):
            for name in [directory, *(os.path.join(directory, d) for d in subdirectories)]:
                with suppress(OSError):
                    if not os.path.islink(name):
                        os.chmod(name, stat.S_IMODE(os.stat(name).st_mode) | stat.S_IRWXU)
        shutil.rmtree(path)


def is_empty_dir(path: Path) -> bool:
    """True when `path` is missing or an empty directory."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def special_files(directory: str, names: list[str]) -> list[str]:
    """`shutil.copytree`'s `ignore`: of `names` in `directory`, what is no regular file,
    directory or symbolic link (sockets, pipes, devices), or is gone meanwhile."""
    ignored = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            ignored.append(name)  # gone meanwhile
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            ignored.append(name)
    return ignored
