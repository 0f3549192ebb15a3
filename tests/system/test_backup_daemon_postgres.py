"""An online backup taken while agents work, restored on a fresh machine, through the real
`dagster-daemon` and the real PostgreSQL server in the production layout: deploy/dagster.yaml
(with the faster polling of the other daemon tests) and the task tables in Dagster's database,
so one `pg_dump` holds both.

The first machine runs one project with two agent slots and two stand-in agents held until
released (`HOLD<name>`, tests/support/fakes/claude; unsandboxed, so that they log to one file);
`orch backup create --online` copies its state meanwhile, then it is stopped. The second
machine has a new database, an empty DAGSTER_HOME and an empty ORCH_HOME and registry folders:
`orch backup restore` fills them all, then its daemon is started.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration.allocation.control import IN_PROGRESS
from orchestration.cli import main
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.state.reconcile import RESTORE_KIND, RESTORE_MESSAGE
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import (
    LOG_VAR,
    Orchestrator,
    agent_groups,
    final_commits,
    starts,
    write_registry,
)
from tests.support.paths import path_with_fakes
from tests.support.postgres import PG_HOST, PG_PORT, admin_connection
from tests.system.test_backup_postgres import Server
from tests.system.test_postgres import DEPLOY_CONFIG

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROJECT = "alpha"
#: The word holding both agents until `release/<HOLD>` exists beside their log.
HOLD = "restore"
AGENT_LOG = Path("agents") / "fake_claude.jsonl"


def kill_agents(root: Path) -> None:
    """SIGKILL the stand-in agents of the machine in `root` that are still running."""
    for pgid in agent_groups(root / AGENT_LOG):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """The first machine's database (made now) and the second's (made by the test); both
    dropped, and every held agent killed, however the test ends."""
    user, admin = admin_connection()
    admin.close()
    first, second = (Server(f"orch_test_{uuid.uuid4().hex[:12]}", user) for _ in range(2))
    first.create()
    try:
        yield first, second
    finally:
        for root in tmp_path.iterdir():
            kill_agents(root)
        first.drop()
        second.drop()


def machine(root: Path, database: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The variables of a machine in `root` whose instance and tasks are in `database`; the
    database's are set in this process too, where the test opens the instance."""
    (root / AGENT_LOG).parent.joinpath("release").mkdir(parents=True)
    postgres = {
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": database.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database.name,
    }
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    return postgres | {
        PROJECTS_DIR_VAR: str(root / "projects"),
        CONFIG_DIR_VAR: str(root / "config"),
        HOME_VAR: str(root / "home"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        LOG_VAR: str(root / AGENT_LOG),
        TASKS_DB_URL_VAR: database.url,
    }


def agents_noted(system: Orchestrator, ids: list[str]) -> list[Task] | None:
    """The tasks, once each is running and has recorded its agent's session."""
    tasks = system.store.tasks(ids=ids, statuses=[TaskStatus.RUNNING])
    noted = len(tasks) == len(ids) and all(t.extra.get("agent_session") for t in tasks)
    return tasks if noted else None


def daemon_env(env: dict[str, str]) -> dict[str, str]:
    return daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)


def test_an_online_backup_restored_fails_the_runs_in_flight_and_their_tasks_succeed(
    databases: tuple[Server, Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup taken while two agents work holds both their runs in progress. Restored into a
    fresh database on a fresh machine, exactly those two runs are failed `interrupted by
    restore` and their tasks queued again to continue their agents' sessions; the restored
    daemon resumes both sessions, each task succeeds with one result commit on its branch,
    and no run is left in progress."""
    old_db, new_db = databases
    first, second = tmp_path / "first", tmp_path / "second"
    env = machine(first, old_db, monkeypatch)
    env |= write_registry(first, {PROJECT: ("normal", 2)}, slots=2)
    env["DAGSTER_HOME"] = str(write_instance(first, source=DEPLOY_CONFIG))
    with running_daemon(first, write_workspace(first), daemon_env(env)) as (daemon, log):
        system = Orchestrator(first, env, daemon, log)
        try:
            ids = sorted(system.add(PROJECT, f"in flight HOLD{HOLD}") for _ in range(2))
            system.wait_started(*ids)
            running = system.wait_for(
                "both tasks to record their agent's session", lambda: agents_noted(system, ids)
            )
            backup = json.loads(
                system.orch(
                    "backup", "create", "--online", "--to", str(tmp_path / "backups"), "--json"
                )
            )
        finally:
            system.close()
    kill_agents(first)
    sessions = {t.id: t.extra["agent_session"] for t in running}
    assert len(sessions) == 2
    assert {Path(e["cwd"]).name: e["options"]["session_id"] for e in starts(system)} == sessions
    runs = {t.run_id for t in running}
    assert backup["online"] and backup["tasks"] == "in dagster/dagster.dump"

    new_db.create()
    env = machine(second, new_db, monkeypatch)
    restored = CliRunner().invoke(
        main, ["backup", "restore", backup["path"], "--json"], env=env, catch_exceptions=False
    )
    assert restored.exit_code == 0, restored.output
    report = json.loads(restored.stdout)
    assert report["digest"] == backup["digest"] and report["wiped"] == []
    assert sorted(report["reconcile"]["runs_failed"]) == sorted(runs)
    assert sorted(report["reconcile"]["tasks_requeued"]) == ids
    assert report["reconcile"]["problems"] == []
    assert all(said.startswith("restored to") for said in report["registry"].values())
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
        for run_id in runs:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status is dg.DagsterRunStatus.FAILURE
            failures = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.RUN_FAILURE
            ).records
            assert [r.event_log_entry.message for r in failures] == [RESTORE_MESSAGE]
    store = TaskStore(new_db.url)
    try:
        queued = store.tasks(ids=ids)
        assert sorted(task.id for task in queued) == ids
        for task in queued:
            assert task.status is TaskStatus.QUEUED and not task.dispatched, task
            assert task.resume_session == sessions[task.id]
            assert [i["kind"] for i in task.interruptions] == [RESTORE_KIND]
            assert RESTORE_MESSAGE in (task.reason or "")
    finally:
        store.dispose()

    with running_daemon(second, write_workspace(second), daemon_env(env)) as (daemon, log):
        system = Orchestrator(second, env, daemon, log)
        try:
            system.wait_started(*ids)
            system.release(HOLD)
            done = system.wait_finished(*ids)
            system.wait_idle()
            left = system.instance.get_runs(
                filters=dg.RunsFilter(statuses=[*IN_PROGRESS, dg.DagsterRunStatus.QUEUED])
            )
        finally:
            system.close()
    resumed = {Path(e["cwd"]).name: e["options"].get("resume") for e in starts(system)}
    assert resumed == sessions
    for task in done:
        assert task.status is TaskStatus.SUCCEEDED, task.reason
        assert [i["kind"] for i in task.interruptions] == [RESTORE_KIND]
        clone = Path(env[HOME_VAR]) / "workspaces" / PROJECT / "repo.git"
        assert final_commits(clone, PROJECT, task) == [task.commit]
    assert not left, [(run.run_id, run.status.value) for run in left]
