"""Dependency automation through the real daemon: a provider's new commit, once its `source` is
observed, re-runs its consumer's verification on its own (the `verification_automation`
sensor), with no run requested by anyone."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.definitions import build_definitions
from orchestration.dependencies.detection import detect
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from tests.support.daemon import (
    daemon_environment,
    running_daemon,
    write_instance,
    write_workspace,
)
from tests.support.git import commit, make_git_repo
from tests.support.registry import RegistryDir

pytestmark = pytest.mark.slow

UNITTEST = ["python3", "-m", "unittest", "discover", "-s", "tests", "-t", "."]
PASSING_TEST = (
    "import unittest\n\nclass T(unittest.TestCase):\n    def test_ok(self):\n        pass\n"
)
AUTOMATION_TIMEOUT_S = 180.0


def _verify_key(project: str) -> dg.AssetKey:
    return dg.AssetKey([project, "verification"])


def _source_key(project: str) -> dg.AssetKey:
    return dg.AssetKey([project, "source"])


def test_a_providers_new_commit_reruns_its_consumers_verification(
    registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = "verify: [" + ", ".join(UNITTEST) + "]\n"
    core = make_git_repo(
        registry_dir.root / "repos" / "core",
        {
            "pyproject.toml": '[project]\nname = "acme-core"\nversion = "1.0.0"\n',
            "tests/__init__.py": "",
            "tests/test_core.py": PASSING_TEST,
        },
    )
    api = make_git_repo(
        registry_dir.root / "repos" / "api",
        {
            "pyproject.toml": '[project]\nname = "acme-api"\ndependencies = ["acme-core>=1"]\n',
            "tests/__init__.py": "",
            "tests/test_api.py": PASSING_TEST,
        },
    )
    registry_dir.project("core", verify, repo=str(core))
    registry_dir.project("api", verify, repo=str(api))
    registry = registry_dir.load()
    assert not registry.errors
    settings = registry.settings
    graph, _ = detect(registry.projects, settings)
    assert graph.providers_of("api") == ("core",)

    dagster_home = write_instance(tmp_path)
    env = daemon_environment(
        {
            PROJECTS_DIR_VAR: str(settings.projects_dir),
            CONFIG_DIR_VAR: str(settings.config_dir),
            HOME_VAR: str(settings.home),
            "DAGSTER_HOME": str(dagster_home),
        }
    )
    for name in (PROJECTS_DIR_VAR, CONFIG_DIR_VAR, HOME_VAR):
        monkeypatch.setenv(name, env[name])
    # Observe both repositories and verify both once, before the daemon watches.
    defs = build_definitions(registry)
    keys = [_source_key(p) for p in ("core", "api")] + [_verify_key(p) for p in ("core", "api")]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assets = [defs.resolve_assets_def(key) for key in keys]
        assert dg.materialize(assets, instance=instance, selection=keys).success

        needed = ("SENSOR", "ASSET", "QUEUED_RUN_COORDINATOR")
        workspace = write_workspace(tmp_path)
        with running_daemon(tmp_path, workspace, env, needed=needed) as (_, log_path):
            before = instance.get_latest_materialization_event(_verify_key("api"))
            assert before is not None

            # A new commit in the provider, then an observation of its source.
            commit(core, {"CHANGES.md": "a new release\n"}, message="release")
            source = [defs.resolve_assets_def(_source_key("core"))]
            observed = dg.materialize(source, instance=instance, selection=[_source_key("core")])
            assert observed.success

            deadline = time.monotonic() + AUTOMATION_TIMEOUT_S
            while time.monotonic() < deadline:
                latest = instance.get_latest_materialization_event(_verify_key("api"))
                if latest is not None and latest.run_id != before.run_id:
                    break
                time.sleep(2)
            else:
                pytest.fail(
                    "api/verification was not re-run after core's new commit; daemon log tail:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            run = instance.get_run_by_id(latest.run_id)
            assert run is not None
            assert run.tags.get("dagster/sensor_name") == "verification_automation" or any(
                key.startswith("dagster/from_automation_condition") for key in run.tags
            ), run.tags
            # Nothing re-ran the verification of the unrelated direction: api has no consumers, and
            # core's own verification re-runs too, since its own source changed.
            core_latest = instance.get_latest_materialization_event(_verify_key("core"))
            assert core_latest is not None
