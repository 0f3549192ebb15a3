"""Opening the Dagster instance with `open_instance`: processes opening a brand-new SQLite
instance at the same moment all succeed, a creation race that clears is retried, one that left
the storage broken is reported with what to do, and `orch up` has the storage made before it
becomes `dagster dev`."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import dagster as dg  # imported before forking, so the children start with it
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.instance import InstanceError, open_instance
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

OPENERS = 5
ROUNDS = 3
#: fork: Dagster is already imported here; spawned children would each import it again.
START_METHOD = "fork"
#: The revision Dagster stamps on a runs database it finds without a version table: what a
#: second process stamps when it sees the runs table another has just made.
OLD_RUNS_REVISION = "5771160a95ad"  # dagster._core.storage.sqlite.LAST_KNOWN_STAMPED_...REVISION


def new_home(root: Path) -> Path:
    """A DAGSTER_HOME with the shipped dagster.yaml and no storage yet."""
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def storage_databases(home: Path) -> list[Path]:
    return sorted(home.rglob("*.db"))


def _open(home: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        with open_instance(home) as instance:
            instance.get_runs(limit=1)
        results.put("ok")
    except Exception as exc:  # reported by the caller's assertion
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_opening_a_new_instance_at_once_all_succeed(tmp_path: Path, round_: int) -> None:
    home = new_home(tmp_path)
    context = multiprocessing.get_context(START_METHOD)
    barrier = context.Barrier(OPENERS)
    results = context.Queue()
    workers = [
        context.Process(target=_open, args=(str(home), barrier, results)) for _ in range(OPENERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)

    assert outcomes == ["ok"] * OPENERS
    databases = storage_databases(home)
    assert databases, "the instance made no SQLite databases"
    for database in databases:
        assert len(versions(database)) == 1, database  # stamped once
    with open_instance(home) as instance:
        assert instance.get_runs() == []


def test_creation_race_that_clears_is_retried(tmp_path: Path) -> None:
    """The runs database says two versions while another process is still at work; once it
    has finished, the next try opens the instance."""
    home = new_home(tmp_path)
    open_instance(home).dispose()
    runs = home / "history" / "runs.db"
    with sqlite3.connect(runs) as connection:
        connection.execute("INSERT INTO alembic_version VALUES (?)", (OLD_RUNS_REVISION,))
    with pytest.raises(Exception, match="more than one head"):
        dg.DagsterInstance.from_config(str(home)).dispose()

    def other_process_finishes() -> None:
        with sqlite3.connect(runs) as connection:
            connection.execute(
                "DELETE FROM alembic_version WHERE version_num = ?", (OLD_RUNS_REVISION,)
            )

    finisher = threading.Timer(0.5, other_process_finishes)
    finisher.start()
    try:
        with open_instance(home, attempts=20, pause_s=0.2) as instance:
            assert instance.get_runs() == []
    finally:
        finisher.cancel()
        finisher.join()


def test_storage_left_with_two_versions_is_reported(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    open_instance(home).dispose()
    with sqlite3.connect(home / "history" / "runs.db") as connection:
        connection.execute("INSERT INTO alembic_version VALUES (?)", (OLD_RUNS_REVISION,))

    with pytest.raises(InstanceError) as raised:
        open_instance(home, attempts=2, pause_s=0)

    message = str(raised.value)
    assert f"cannot open the Dagster instance in {home}" in message
    assert "more than one head" in message
    assert "records two schema versions" in message
    assert f"delete its storage (the folders history, schedules in {home})" in message


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    (home / "dagster.yaml").write_text("run_queue: [not, a, mapping]\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        open_instance(home, attempts=3, pause_s=60)  # a retry would take a minute


def test_orch_up_creates_the_storage_before_it_starts_dagster(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: dict[str, Any] = {}

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        # The edge: here the process would become `dagster dev` (webserver and daemon).
        started["argv"] = argv
        started["databases"] = storage_databases(Path(env["DAGSTER_HOME"]))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    result = CliRunner().invoke(
        main,
        ["up", "--workspace", str(REPO_ROOT / "workspace.yaml")],
        env=registry_dir.settings.environment(),
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert started["argv"][2:4] == ["dagster", "dev"]
    home = registry_dir.settings.dagster_home
    assert {p.relative_to(home).as_posix() for p in started["databases"]} >= {
        "history/runs.db",
        "history/runs/index.db",
        "schedules/schedules.db",
    }
