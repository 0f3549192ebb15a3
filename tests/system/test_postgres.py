"""The production instance config (deploy/dagster.yaml) on the real PostgreSQL server.

Each test gets a fresh database on 127.0.0.1:5432, dropped afterwards. The server is part of the
test environment (CI starts it), so a server that does not answer fails the tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import REFRESH_JOB, ProjectKeys
from orchestration.defs.orchestration_assets import DEPENDENCIES_KEY, REGISTRY_KEY
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from tests.support.git import make_git_repo
from tests.support.paths import REPO_ROOT
from tests.support.postgres import PG_HOST, PG_PORT, Database, throwaway_database
from tests.support.registry import RegistryDir

DEPLOY_CONFIG = REPO_ROOT / "deploy" / "dagster.yaml"
PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD")
PROJECT = "calc"


@pytest.fixture
def database() -> Iterator[Database]:
    with throwaway_database("orch_test") as made:
        yield made


@pytest.fixture
def dagster_home(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME holding a copy of deploy/dagster.yaml, its variables pointing at `database`."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", PG_HOST)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(PG_PORT))
    monkeypatch.setenv("DAGSTER_PG_USER", database.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_DB", database.name)
    return home


def test_deploy_config_matches_the_local_one_apart_from_storage() -> None:
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    deploy = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    storage = deploy.pop("storage")
    assert deploy == local
    postgres_db = storage["postgres"]["postgres_db"]
    assert postgres_db.pop("scheme") == "postgresql+psycopg2"
    assert postgres_db == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


@pytest.mark.postgres
def test_refresh_run_is_recorded_in_postgres(
    dagster_home: Path,
    database: Database,
    registry_dir: RegistryDir,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = make_git_repo(
        tmp_path / "user" / PROJECT,
        {
            "pyproject.toml": '[project]\nname = "calc"\n',
            "tests/__init__.py": "",
            "tests/test_ok.py": (
                "import unittest\n\n\nclass Ok(unittest.TestCase):\n"
                "    def test_ok(self):\n        self.assertTrue(True)\n"
            ),
        },
    )
    registry_dir.project(
        PROJECT, "verify: [python3, -m, unittest, discover, -s, tests, -t, .]\n", repo=str(repo)
    )
    settings = registry_dir.settings
    monkeypatch.setenv(PROJECTS_DIR_VAR, str(settings.projects_dir))
    monkeypatch.setenv(CONFIG_DIR_VAR, str(settings.config_dir))
    monkeypatch.setenv(HOME_VAR, str(settings.home))
    keys = ProjectKeys(PROJECT)
    defs = build_definitions(registry_dir.load())

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id

    # A new instance object reads what the first one wrote.
    with dg.DagsterInstance.get() as fresh:
        run = fresh.get_run_by_id(run_id)
        assert run is not None
        assert run.job_name == REFRESH_JOB
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for key in [*keys.repository, REGISTRY_KEY]:
            event = fresh.get_latest_materialization_event(key)
            assert event is not None and event.run_id == run_id, key
        verification = fresh.get_latest_materialization_event(keys.verification)
        assert verification is not None and verification.asset_materialization is not None
        assert verification.asset_materialization.metadata["passed"].value == 1

    # And the rows are in PostgreSQL itself.
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run_id,))
        assert cursor.fetchall() == [(REFRESH_JOB, "SUCCESS")]
        cursor.execute(
            "SELECT asset_key FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        )
        stored = {dg.AssetKey.from_db_string(row[0]) for row in cursor.fetchall()}
        assert stored == {*keys.repository, REGISTRY_KEY, DEPENDENCIES_KEY}
        cursor.execute(
            "SELECT count(*) FROM event_logs "
            "WHERE run_id = %s AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
            (run_id,),
        )
        assert cursor.fetchone() == (3,)  # verify_passed, all_projects_valid and acyclic
    connection.close()
