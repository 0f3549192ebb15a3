"""Channels and a change set through the real `dagster-daemon`, with the stand-in `claude`:

- `lib` publishes a contract (`lib.py`) and a messages channel; `svc` subscribes to both; `web`
  subscribes to nothing. A note posted with `orch channel post` reaches svc's agent, the
  contract is svc's read-only copy of lib's branch, and web's agent gets no `.orch/` at all.
- `orch change create` over lib -> svc -> app: the sensor starts each consumer's task only
  after its providers' tasks succeeded; svc's agent reads lib's diff; the `change_sets` sensor
  verifies the change together (svc's `verify_in_change` passes only against lib's changed
  code); `orch change deliver` delivers all members or none.
- The `channels` sensor records the delivery and the post on the channels' assets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from orchestration.changes.sets import ChangeSets, ChangeStatus
from orchestration.cli import main
from orchestration.tasks.models import TaskStatus
from tests.support.agent_log import events
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.git import git
from tests.support.orchestrator import INSTANCE_CHANGES, LOG_VAR, Orchestrator, write_registry
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

PROJECTS = {name: ("normal", 1) for name in ("lib", "svc", "app", "web")}
CHECK = """\
import os, pathlib, sys
namespace = {}
exec((pathlib.Path(os.environ["ORCH_CHANGE_LIB"]) / "lib.py").read_text(), namespace)
sys.exit(0 if namespace["VALUE"] == 2 else 1)
"""
KEYS = {
    "lib": {
        "channels": {
            "publish": [
                {"name": "api", "kind": "contract", "paths": ["lib.py"]},
                {"name": "notes", "kind": "messages"},
            ]
        }
    },
    "svc": {
        "depends_on": ["lib"],
        "verify_in_change": ["python3", "check.py"],
        "channels": {"subscribe": ["lib.api", "lib.notes"]},
    },
    "app": {"depends_on": ["svc"]},
}


def prepare(root: Path, env: dict[str, str]) -> None:
    """Give lib and svc their files and every project its keys."""
    for project, files in (("lib", {"lib.py": "VALUE = 1\n"}), ("svc", {"check.py": CHECK})):
        repo = root / "repos" / project
        for name, text in files.items():
            (repo / name).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{project} files")
    for project, keys in KEYS.items():
        path = Path(env["ORCH_PROJECTS_DIR"]) / f"{project}.yaml"
        spec = yaml.safe_load(path.read_text()) | keys
        path.write_text(yaml.safe_dump(spec, sort_keys=False))


def starts_by_project(agent_log: Path) -> dict[str, dict]:
    found = {}
    for entry in events("start", agent_log):
        found[Path(entry["cwd"]).parent.parent.name] = entry
    return found


def test_channels_and_a_change_set_through_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, PROJECTS, slots=4)
    prepare(tmp_path, env)
    env["DAGSTER_HOME"] = str(write_instance(tmp_path, INSTANCE_CHANGES))
    agent_log = tmp_path / "agents" / "fake_claude.jsonl"
    env[LOG_VAR] = str(agent_log)
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)

    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            system.orch("channel", "post", "lib.notes", "VALUE becomes 2 in the next release")
            made = system.orch(
                "change",
                "create",
                "Raise VALUE\nWRITE lib.py VALUE = 2",
                "--projects",
                "app,svc,lib",
            ).splitlines()
            change_id = made[0]
            tasks = dict(reversed(line.split()) for line in made[1:])
            assert list(tasks) == ["lib", "svc", "app"]
            other = system.add("web", "NOOP unrelated")

            done = system.wait_finished(*tasks.values(), other, timeout_s=240)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done), system.explain("change")
            calls = system.calls()
            lib, svc, app = (calls[tasks[p]] for p in ("lib", "svc", "app"))
            assert lib.end is not None and svc.end is not None
            assert lib.end <= svc.start and svc.end <= app.start, "a consumer started too early"

            changes = ChangeSets(system.store)
            system.wait_for(
                "the change verified together",
                lambda: changes.require(change_id).status is ChangeStatus.VERIFIED,
                timeout_s=180,
            )
            shown = json.loads(system.orch("change", "show", change_id, "--json"))
            assert shown["all_verified"] is True
            assert [m["verified"] for m in shown["members"]] == [True, True, True]
            system.wait_for(
                "the verification run to end",
                lambda: (
                    [
                        run.status
                        for run in system.instance.get_runs(
                            dg.RunsFilter(tags={"orch/change": change_id})
                        )
                    ]
                    == [dg.DagsterRunStatus.SUCCESS]
                ),
            )

            # The channels sensor records the post and the deliveries on the channels' assets.
            def observed(channel: str) -> list[str]:
                records = system.instance.fetch_observations(
                    dg.AssetKey(["lib", f"channel_{channel}"]), limit=20
                ).records
                return [r.asset_observation.metadata["kind"].value for r in records]  # type: ignore[union-attr]

            system.wait_for(
                "the ledger on the channels' assets",
                lambda: (
                    sorted(observed("notes")) == ["delivery", "post"]
                    and observed("api") == ["delivery"]
                ),
                timeout_s=90,
            )

            # All or nothing: app's branch name is taken in its repository.
            app_repo = tmp_path / "repos" / "app"
            branch = f"orch/app/{tasks['app']}"
            git(app_repo, "branch", branch, "HEAD")
            git(app_repo, "checkout", "-q", branch)
            (app_repo / "mine.txt").write_text("someone else's work\n")
            git(app_repo, "add", "mine.txt")
            git(app_repo, "commit", "-q", "-m", "someone else's work")
            git(app_repo, "checkout", "-q", "main")
            refused = CliRunner().invoke(main, ["change", "deliver", change_id], env=env)
            assert refused.exit_code == 1 and "nothing delivered" in refused.output
            for project in ("lib", "svc"):
                listed = git(tmp_path / "repos" / project, "branch", "--list", "orch/*")
                assert listed == "", project
            git(app_repo, "branch", "-q", "-D", branch)
            system.orch("change", "deliver", change_id)
            lib_branch = f"orch/lib/{tasks['lib']}"
            assert git(tmp_path / "repos" / "lib", "show", f"{lib_branch}:lib.py") == "VALUE = 2"
            system.wait_idle()
        finally:
            system.close()

    seen = starts_by_project(agent_log)
    svc_files = seen["svc"]["orch_files"]
    assert sorted(svc_files) == [
        "change/lib.diff",
        "change/lib.md",
        "channels/lib/api/lib.py",
        "channels/lib/notes/messages.md",
    ]
    # The contract is lib's branch as it stands (main), the change is lib's task's work. (These
    # agents run unsandboxed, as root here: that the copies are read-only to an agent is
    # tested in the sandbox, tests/integration/test_channel_delivery.py.)
    assert svc_files["channels/lib/api/lib.py"]["text"] == "VALUE = 1\n"
    assert (
        "VALUE becomes 2 in the next release" in svc_files["channels/lib/notes/messages.md"]["text"]
    )
    assert "+VALUE = 2" in svc_files["change/lib.diff"]["text"]
    assert seen["svc"]["change_checkouts"]["ORCH_CHANGE_LIB"]["names"] == [
        ".git",
        "README.md",
        "lib.py",
    ]
    assert sorted(seen["app"]["change_checkouts"]) == ["ORCH_CHANGE_LIB", "ORCH_CHANGE_SVC"]
    assert seen["web"]["orch_files"] == {} and seen["web"]["change_checkouts"] == {}
    assert seen["lib"]["orch_files"] == {}
