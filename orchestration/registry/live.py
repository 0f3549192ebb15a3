"""The one live registry: the registry as it is on disk now, re-read only when a file changed.

Every run-time reader (the dispatch and import sensors, the assets' resources, the CLI) asks
`LiveRegistry.current()`, so a project added, removed or edited while the daemon runs is seen by
all of them alike; nothing keeps a copy captured when the definitions loaded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from orchestration.registry.cache import DiskProjectsCache
from orchestration.registry.loader import ARCHIVED_DIR, TEMPLATES_DIR, Registry, load_registry
from orchestration.settings import Settings

#: Environment variables whose value changes what the registry resolves to.
OVERRIDE_PREFIX = "ORCH__"


class LiveRegistry:
    """The registry of one set of directories, re-read when a file under them changed.

    Checking costs one `stat` per file; parsing happens only after a change. `fingerprint` names
    the state the current registry was read from (files, overrides and PATH), so decisions
    taken for one state can be dropped when it changes.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._registry: Registry | None = None

    @classmethod
    def of(cls, settings: Settings) -> LiveRegistry:
        """The process's live registry for `settings`.

        One per process and directory set, kept here because Dagster builds resources afresh
        for every run and sensor tick: a new watcher each time would parse every file each time.
        """
        with _SHARED_LOCK:
            found = _SHARED.get(settings)
            if found is None:
                found = _SHARED[settings] = cls(settings)
            return found

    def current(self) -> Registry:
        """The registry as the files say now."""
        fingerprint = self._fingerprint_now()
        with self._lock:
            if self._registry is None or fingerprint != self._fingerprint:
                cache = DiskProjectsCache(self.settings.home, (fingerprint, repr(self.settings)))
                self._registry = load_registry(self.settings, self.environ, cache)
                self._fingerprint = fingerprint
            return self._registry

    @property
    def fingerprint(self) -> str:
        """A short digest of the state the last `current()` was read from."""
        if self._fingerprint is None:
            self.current()
        return hashlib.sha256(repr(self._fingerprint).encode()).hexdigest()[:16]

    def _fingerprint_now(self) -> tuple:
        entries = []
        for directory in (
            self.settings.projects_dir,
            self.settings.projects_dir / TEMPLATES_DIR,
            self.settings.projects_dir / ARCHIVED_DIR,
            self.settings.config_dir,
        ):
            entries.extend(_listing(directory))
        environ = os.environ if self.environ is None else self.environ
        overrides = sorted((k, v) for k, v in environ.items() if k.startswith(OVERRIDE_PREFIX))
        return tuple(sorted(entries)), tuple(overrides), environ.get("PATH", "")


def _listing(directory: Path) -> list[tuple[str, int, int]]:
    try:
        with os.scandir(directory) as listing:
            return [
                (entry.path, stat.st_mtime_ns, stat.st_size)
                for entry in listing
                if entry.is_file() and (stat := entry.stat())
            ]
    except OSError:
        return []


_SHARED: dict[Settings, LiveRegistry] = {}
_SHARED_LOCK = threading.Lock()
