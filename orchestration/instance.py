"""Opening the Dagster instance of a DAGSTER_HOME, with its storage created by one process only.

Two processes opening a brand-new SQLite instance at the same moment (an `orch` command and the
daemon, say) can both create its databases and both stamp their schema version, and the instance
is then left saying "Version table alembic_version has more than one head present". So every
process of ours opens the instance through `open_instance`, which does it under a lock file in
DAGSTER_HOME and touches each storage there, so that all the databases are made inside the lock;
and `orch up` does it before it starts the webserver and daemon, so they find them made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

#: The lock file, in DAGSTER_HOME, held while the instance is opened.
LOCK_NAME = ".orch-instance.lock"
#: How long to wait for another process of ours to finish opening the instance.
LOCK_TIMEOUT_S = 120.0
#: A process outside the lock (a bare `dagster-daemon`) may be creating the storage at the same
#: moment; its half-made databases raise errors that are gone once it has finished.
ATTEMPTS = 5
RETRY_PAUSE_S = 0.5
#: What the storage of a new instance raises while another process is creating it.
CREATION_RACE_SIGNS = (
    "more than one head present",
    "already exists",
    "UNIQUE constraint failed: alembic_version",
    "Online migration expected to match one row",
)
#: The folders in DAGSTER_HOME where Dagster keeps SQLite storage.
STORAGE_DIRS = ("history", "schedules", "storage")


class InstanceError(Exception):
    """The Dagster instance cannot be opened; the message says why and what to do."""


def open_instance(
    dagster_home: str | Path, *, attempts: int = ATTEMPTS, pause_s: float = RETRY_PAUSE_S
) -> dg.DagsterInstance:
    """The instance of `dagster_home`, its databases created if they were not there yet.

    The caller disposes of it. Dagster is imported by the call, not with this module, so
    commands that never open the instance do not pay for the import.
    """
    from filelock import FileLock, Timeout

    home = Path(dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    lock_path = home / LOCK_NAME
    attempt = 1
    while True:
        try:
            with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
                return _open_every_storage(home)
        except Timeout as exc:
            raise InstanceError(
                f"waited {LOCK_TIMEOUT_S:.0f} s for another process to finish opening the Dagster "
                f"instance in {home} (it holds {lock_path}); look for a stuck `orch` process and "
                "stop it, then try again"
            ) from exc
        except Exception as exc:
            if not _creation_race(exc):
                raise
            if attempt >= attempts:
                raise InstanceError(_race_message(home, exc)) from exc
        attempt += 1
        time.sleep(pause_s)


def _open_every_storage(home: Path) -> dg.DagsterInstance:
    """Open the instance and read once from each storage: Dagster makes some of its databases
    only when they are first used, and here they are made inside the lock."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.get_runs(limit=1)  # runs
        instance.get_daemon_heartbeats()  # daemon heartbeats, beside the runs
        instance.event_log_storage.get_concurrency_keys()  # event log index and pools
        instance.all_instigator_state()  # schedules and sensors
    except BaseException:
        instance.dispose()
        raise
    return instance


def _creation_race(exc: BaseException) -> bool:
    """Whether `exc`, or an error it came from, is what a storage being created elsewhere at
    the same moment raises."""
    return any(sign in message for message in _messages(exc) for sign in CREATION_RACE_SIGNS)


def _messages(exc: BaseException) -> list[str]:
    """The messages of `exc` and of the errors it was raised from or while handling."""
    messages, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        messages.append(str(current))
        current = current.__cause__ or current.__context__
    return messages


def _race_message(home: Path, exc: BaseException) -> str:
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    opening = f"cannot open the Dagster instance in {home}: {first_line}."
    if not any("more than one head" in message for message in _messages(exc)):
        return (
            f"{opening} Another process (a `dagster-daemon` or `dagster dev` started by hand "
            "beside `orch`?) was still creating its storage after several tries; wait for it "
            "and run the command again."
        )
    folders = [name for name in STORAGE_DIRS if (home / name).is_dir()]
    where = (
        f" (the folders {', '.join(folders)} in {home})"
        if folders
        else " (where dagster.yaml's storage points)"
    )
    return (
        f"{opening} Its storage was created by two processes at the same moment (a "
        "`dagster-daemon` or `dagster dev` started by hand beside `orch`?) and now records two "
        "schema versions, which Dagster cannot resolve. If the instance is new, stop every "
        f"Dagster process, delete its storage{where} and run the command again; `orch up` "
        "creates the storage before it starts the daemon, so this does not recur."
    )
