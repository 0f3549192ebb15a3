"""The project files as last read, kept on disk for the next process that reads the same files.

Every code location of a split registry (`sharding.py`) reads the whole registry, since a
project's file may name any other project, and so does every run worker and command: about
0.8 ms a project, 7 s for 10,000. What they read is the same as long as the files are, so the
first process to read them keeps the result under `ORCH_HOME/cache/registry/`, and the others
load it in a fraction of that.

An entry is named by a digest of everything the result depends on: the listing of the project,
template, archive and config directories with each file's modification time and size (the
state `LiveRegistry` watches), the `ORCH__` overrides and PATH, the settings, and the version of
the code that read them (this package's files). It also keeps whether each local repository
directory the files name existed; one that appeared or went since makes the entry stale.

The entry is a pickle, written atomically with the process's umask and read only when this user
owns it and nobody else may write it: ORCH_HOME is the orchestrator's own state, like the task
database, and agents never get write access to it outside their worktree.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from orchestration.registry.loader import LoadedProjects

CACHE_DIR = Path("cache") / "registry"
#: Entries kept besides the newest: the processes of a deployment may briefly disagree.
KEEP = 3
#: A registry of fewer projects is not kept (reading it costs under half a second), so that
#: reading a registry creates nothing anywhere until it is this large.
KEEP_FROM = 500
_CODE_DIR = Path(__file__).resolve().parent.parent


def code_stamp() -> str:
    """The version of the code that reads the registry: its source files' times and sizes."""
    entries = sorted(
        (str(path.relative_to(_CODE_DIR)), path.stat().st_mtime_ns, path.stat().st_size)
        for path in _CODE_DIR.rglob("*.py")
        if "registry" in path.parts or path.name == "settings.py"
    )
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


_CODE_STAMP: str | None = None


class DiskProjectsCache:
    """One entry of the cache: the projects read from the files in the state `key` names."""

    def __init__(self, home: Path, key: object) -> None:
        global _CODE_STAMP
        if _CODE_STAMP is None:
            _CODE_STAMP = code_stamp()
        self.directory = home / CACHE_DIR
        digest = hashlib.sha256(repr((key, _CODE_STAMP)).encode()).hexdigest()[:32]
        self.path = self.directory / f"{digest}.pickle"

    def get(self) -> LoadedProjects | None:
        """The entry, when there is one this user alone may have written, it loads, and every
        repository directory it looked for is still as it was; else None."""
        try:
            with self.path.open("rb") as file:
                info = os.fstat(file.fileno())
                if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    return None
                loaded = _unpickled(file)
        except FileNotFoundError:
            return None
        except Exception:  # an entry of another version or cut short: read the files instead
            return None
        if not isinstance(loaded, LoadedProjects):
            return None
        if any(os.path.isdir(path) != existed for path, existed in loaded.checked_dirs.items()):
            return None
        return loaded

    def put(self, loaded: LoadedProjects) -> None:
        """Keep `loaded` when it has `KEEP_FROM` projects or more (never raises: without a
        cache the files are read again), and drop all but the newest few entries."""
        if len(loaded.projects) < KEEP_FROM:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    pickle.dump(loaded, file, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            entries = sorted(
                self.directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True
            )
            for old in entries[KEEP + 1 :]:
                old.unlink(missing_ok=True)
        except OSError:
            return


def _unpickled(file: BinaryIO) -> object:
    """`pickle.load`, with the cyclic collector paused: it would walk the growing heap again
    and again while tens of thousands of objects are made (a third of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.load(file)
    finally:
        if enabled:
            gc.enable()
