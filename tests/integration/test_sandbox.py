"""The sandbox, attacked from inside: a hostile stand-in agent (tests/support/fakes/
hostile_agent) and a hostile verify command try to read other projects' secrets, clones and
homes, the task database and the Dagster instance, and to write outside their worktree.

Real bubblewrap, real git repositories, and a real run worker: a separate process started with
every project's secrets in its environment (as Dagster's run workers are), which runs the task
through `tasks/execution.run_task`. Whatever the agent reports is checked again from outside.
The registry, ORCH_HOME and the Dagster instance live outside /tmp (under the user's home
directory), as they do in use: the sandbox's private /tmp must not be what hides them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.registry import load_registry
from orchestration.settings import SANDBOX_VAR
from orchestration.tasks.execution import TaskOutcome, run_task
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace import sandbox as sandbox_module
from tests.support.paths import FAKES_DIR, REPO_ROOT, path_with_fakes
from tests.support.registry import RegistryDir

HOSTILE = FAKES_DIR / "hostile_agent"
#: What a run worker process does: run one task the way the `tasks` asset does.
WORKER = """
import json, logging, os, sys
from orchestration.registry import load_registry
from orchestration.settings import Settings
from orchestration.tasks.execution import run_task
from orchestration.tasks.store import TaskStore

settings = Settings.from_env()
store = TaskStore.from_settings(settings)
try:
    outcome = run_task(
        store=store, registry=load_registry(settings), project=sys.argv[1], task_id=sys.argv[2],
        run_id=sys.argv[3], home=settings.home, parent_env=os.environ,
        log=logging.getLogger("run worker"),
    )
finally:
    store.dispose()
verification = outcome.verification
print(json.dumps({"status": outcome.task.status.value, "reason": outcome.task.reason,
                  "verified": verification.passed if verification else None}))
"""
SECRETS = {"SECRET_A": "value-a", "SECRET_B": "value-b", "UNLISTED_X": "value-x"}


@dataclass
class Lab:
    """A registry with projects alpha (hostile, secret A) and beta (secret B), and what the
    attack aims at."""

    registry: RegistryDir
    base: Path  # outside /tmp
    monkeypatch: pytest.MonkeyPatch

    @property
    def home(self) -> Path:
        return self.registry.settings.home.resolve()

    def define(self, project: str, text: str) -> None:
        """projects/<project>.yaml, keeping the project's repository once it has one."""
        repo = self.registry.root / "repos" / project
        self.registry.project(project, text, repo=str(repo) if repo.exists() else None)

    def root(self, project: str) -> Path:
        return self.home / "workspaces" / project

    def add(self, project: str, prompt: str) -> str:
        store = TaskStore.from_settings(self.registry.settings, environ={})
        try:
            return store.add(project, prompt).id
        finally:
            store.dispose()

    def worker(self, project: str, task_id: str, **extra_env: str) -> dict:
        """Run the task in a run worker process holding every project's secrets."""
        env = {**os.environ, **SECRETS, "DAGSTER_HOME": str(self.dagster_home), **extra_env}
        done = subprocess.run(
            [sys.executable, "-c", WORKER, project, task_id, f"run-{task_id}"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def report(self, project: str, name: str) -> dict:
        return json.loads((self.root(project) / "home" / f"{name}.json").read_text())

    @property
    def dagster_home(self) -> Path:
        return self.base / "dagster-instance"


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix=".orch-sandbox-test-", dir=Path.home())).resolve()
    try:
        yield from _lab(base, monkeypatch)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _lab(base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    registry_dir = RegistryDir.create(base / "registry")
    # The hostile stand-in, with and without network.
    registry_dir.add_profile("hostile", HOSTILE, config_dir_env="HOSTILE_CONFIG_DIR")
    registry_dir.add_profile("hostile_offline", HOSTILE, network=False)
    registry_dir.use_in(monkeypatch)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    for name in ("ORCH_TASKS_DB_URL", SANDBOX_VAR, "FAKE_CLAUDE_LOG", *SECRETS):
        monkeypatch.delenv(name, raising=False)
    lab = Lab(registry_dir, base, monkeypatch)
    lab.define("alpha", "agent:\n  profile: hostile\nsecrets: [SECRET_A]\n")
    lab.define("beta", "agent:\n  profile: claude_code\nsecrets: [SECRET_B]\n")
    (lab.dagster_home).mkdir()
    (lab.dagster_home / "dagster.yaml").write_text("# the Dagster instance\n")
    yield lab


@pytest.fixture
def host_tmp() -> Iterator[Path]:
    """A directory in the host's /tmp (not pytest's, whatever --basetemp says)."""
    path = Path("/tmp") / f"orch-sandbox-test-{uuid.uuid4().hex}"
    path.mkdir()
    (path / "host-secret.txt").write_text("a file in the host's /tmp\n")
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _targets(lab: Lab, host_tmp: Path) -> tuple[list[str], list[str]]:
    """What the attack tries to read, and where it tries to write (outside its worktree)."""
    beta = lab.root("beta")
    secret_file = beta / "home" / "beta-secret.txt"
    secret_file.write_text("beta's own file\n")
    orch_dagster = lab.home / "dagster"
    orch_dagster.mkdir(exist_ok=True)
    (orch_dagster / "dagster.yaml").write_text("# ORCH_HOME/dagster\n")
    escape = f"escape-{uuid.uuid4().hex}"
    reads = [
        str(beta / "repo.git" / "config"),
        str(beta / "repo.git"),
        str(beta / "home"),
        str(secret_file),
        str(beta / "agents"),
        str(lab.home / "tasks.db"),
        str(orch_dagster / "dagster.yaml"),
        str(lab.dagster_home / "dagster.yaml"),
        str(host_tmp / "host-secret.txt"),
        str(lab.registry.root / "repos" / "beta" / "README.md"),  # beta's own checkout
    ]
    writes = [
        str(lab.home / escape),
        str(lab.home / "workspaces" / escape),
        str(beta / "home" / escape),
        str(beta / "repo.git" / escape),
        str(lab.root("alpha") / "repo.git" / escape),
        str(lab.root("alpha") / "repo.git" / "hooks" / escape),
        str(lab.root("alpha") / "repo.git" / "config"),
        str(host_tmp / escape),
        str(REPO_ROOT / escape),
        str(Path("/etc") / escape),
        str(Path(sys.executable).parent / escape),
    ]
    return reads, writes


def _assert_found_nothing(lab: Lab, report: dict, reads: list[str], writes: list[str]) -> None:
    """Nothing read, nothing written outside, no other project's secret anywhere in sight."""
    for path in reads:
        assert not report["read"][path]["ok"], f"{path} was readable: {report['read'][path]}"
        assert report["read"][path]["error"].startswith("FileNotFoundError"), path
    for path in writes:  # whatever the agent believed, nothing reached the host
        assert not Path(path).exists() or Path(path).name == "config", path
    config = (lab.root("alpha") / "repo.git" / "config").read_text()
    assert "written by the hostile agent" not in config
    assert not report["write"][str(lab.root("alpha") / "repo.git" / "config")]["ok"]
    assert "value-b" not in json.dumps(report)
    assert "value-x" not in json.dumps(report)


def _visible_environments(report: dict) -> list[dict]:
    return [p["environ"]["value"] for p in report["processes"].values() if p["environ"]["ok"]]


def test_a_hostile_agent_finds_no_other_secret_and_writes_nothing_outside(
    lab: Lab, host_tmp: Path
) -> None:
    beta_task = lab.add("beta", "warm up beta\nWRITE beta.txt b")
    assert lab.worker("beta", beta_task)["status"] == "succeeded"
    reads, writes = _targets(lab, host_tmp)
    own = lab.root("alpha")
    plan = {
        "report": "attack",
        "proc": True,
        "read": [*reads, str(lab.home), str(lab.home / "workspaces"), str(own), "/proc/1/environ"],
        "write": [*writes, "inside-worktree.txt", str(own / "home" / "inside-home.txt")],
        "run": [
            ["sh", "-c", "grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status"],  # no capability
            ["mount", "-o", "remount,rw", "/"],
        ],
    }
    outcome = lab.worker("alpha", lab.add("alpha", json.dumps(plan)))
    assert outcome["status"] == "succeeded", outcome["reason"]

    report = lab.report("alpha", "attack")
    _assert_found_nothing(lab, report, reads, writes)
    # Its own environment is exactly the allowlisted one, with its own project's secret.
    env = report["env"]
    assert env["SECRET_A"] == "value-a"
    assert "SECRET_B" not in env and "UNLISTED_X" not in env and "DAGSTER_HOME" not in env
    assert set(env) <= {
        *("PATH", "LANG", "LC_ALL", "TZ", "TERM", "HOME", "HOSTILE_CONFIG_DIR", "LC_CTYPE"),
        "SECRET_A",
    }
    # Only the sandbox's own processes are visible; none holds the run worker's environment.
    assert len(report["processes"]) <= 4, report["processes"].keys()
    for environ in _visible_environments(report):
        assert "SECRET_B" not in environ and "ORCH_HOME" not in environ
    assert report["parent_environ"]["ok"] is False or "SECRET_B" not in json.dumps(
        report["parent_environ"]
    )
    # Of ORCH_HOME it sees its own project's directories only.
    assert report["read"][str(lab.home)]["value"] == ["workspaces"]
    assert report["read"][str(lab.home / "workspaces")]["value"] == ["alpha"]
    assert set(report["read"][str(own)]["value"]) <= {"agents", "home", "repo.git", "worktrees"}
    no_capabilities, remount = report["run"]
    assert no_capabilities["ok"] and not remount["ok"], report["run"]
    # It can write where its work goes: its worktree (committed) and its home.
    assert report["write"]["inside-worktree.txt"]["ok"]
    assert (own / "home" / "inside-home.txt").is_file()


def test_without_the_sandbox_the_same_agent_reads_all_of_it(lab: Lab, host_tmp: Path) -> None:
    """The attack is real: with ORCH_SANDBOX=off (the switch works: the task runs) it finds
    another project's secret in its parent's environment and reads every target."""
    beta_task = lab.add("beta", "warm up beta\nWRITE beta.txt b")
    assert lab.worker("beta", beta_task)["status"] == "succeeded"
    reads, _ = _targets(lab, host_tmp)
    plan = {"report": "unsandboxed", "proc": True, "read": reads}
    outcome = lab.worker("alpha", lab.add("alpha", json.dumps(plan)), **{SANDBOX_VAR: "off"})
    assert outcome["status"] == "succeeded", outcome["reason"]
    report = lab.report("alpha", "unsandboxed")
    assert report["parent_environ"]["ok"]
    assert report["parent_environ"]["value"]["SECRET_B"] == "value-b"
    assert all(report["read"][path]["ok"] for path in reads), report["read"]


def test_verify_runs_in_the_sandbox_too(lab: Lab, host_tmp: Path) -> None:
    beta_task = lab.add("beta", "warm up beta\nWRITE beta.txt b")
    assert lab.worker("beta", beta_task)["status"] == "succeeded"
    reads, writes = _targets(lab, host_tmp)
    plan = {"report": "verify", "proc": True, "read": reads, "write": writes}
    verify = json.dumps([sys.executable, str(HOSTILE), "--", json.dumps(plan)])
    lab.define("alpha", f"agent:\n  profile: hostile\nsecrets: [SECRET_A]\nverify: {verify}\n")
    outcome = lab.worker("alpha", lab.add("alpha", json.dumps({"report": "agent"})))
    assert outcome["status"] == "succeeded", outcome["reason"]
    assert outcome["verified"] is True

    report = lab.report("alpha", "verify")
    _assert_found_nothing(lab, report, reads, writes)
    assert report["env"]["SECRET_A"] == "value-a"
    assert "HOSTILE_CONFIG_DIR" not in report["env"]  # the profile's variables are the agent's
    for environ in _visible_environments(report):
        assert "SECRET_B" not in environ


def test_verify_of_the_branch_tip_runs_in_the_sandbox(lab: Lab, host_tmp: Path) -> None:
    """The `verify` asset check's path: `ProjectWorkspaces.verify` on a fresh checkout."""
    from orchestration.defs.resources import ProjectWorkspaces

    beta_task = lab.add("beta", "warm up beta\nWRITE beta.txt b")
    assert lab.worker("beta", beta_task)["status"] == "succeeded"
    reads, writes = _targets(lab, host_tmp)
    plan = {"report": "tip", "read": reads, "write": writes}
    verify = json.dumps([sys.executable, str(HOSTILE), "--", json.dumps(plan)])
    lab.define("alpha", f"agent:\n  profile: hostile\nverify: {verify}\n")
    lab.monkeypatch.setenv("DAGSTER_HOME", str(lab.dagster_home))  # as in the code server
    workspaces = ProjectWorkspaces()
    result = workspaces.verify(workspaces.spec("alpha"))
    assert result.passed, result.output_tail
    _assert_found_nothing(lab, lab.report("alpha", "tip"), reads, writes)


@pytest.mark.parametrize(("profile", "reachable"), [("hostile", True), ("hostile_offline", False)])
def test_network_follows_the_profile(lab: Lab, profile: str, reachable: bool) -> None:
    lab.define("alpha", f"agent:\n  profile: {profile}\n")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        plan = {"report": "net", "run": [[sys.executable, "-c", connect]]}
        outcome = lab.worker("alpha", lab.add("alpha", json.dumps(plan)))
    assert outcome["status"] == "succeeded", outcome["reason"]
    (attempt,) = lab.report("alpha", "net")["run"]
    assert attempt["ok"] is reachable, attempt


# --- when the sandbox cannot be built -------------------------------------------------------


def _run_in_process(lab: Lab, task_id: str, parent_env: dict[str, str]) -> TaskOutcome:
    settings = lab.registry.settings
    store = TaskStore.from_settings(settings, environ={})
    try:
        return run_task(
            store=store,
            registry=load_registry(settings, environ={}),
            project="alpha",
            task_id=task_id,
            run_id=f"run-{task_id}",
            home=settings.home,
            parent_env=parent_env,
            log=logging.getLogger("test_sandbox"),
        )
    finally:
        store.dispose()


def _task(lab: Lab, task_id: str) -> Task:
    store = TaskStore.from_settings(lab.registry.settings, environ={})
    try:
        return store.require(task_id)
    finally:
        store.dispose()


def test_a_missing_bwrap_fails_the_task_saying_how_to_fix_it(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "no-bwrap-here"
    empty.mkdir()
    lab.monkeypatch.setattr(sandbox_module, "FALLBACK_PATH", str(empty))
    task_id = lab.add("alpha", json.dumps({"report": "never"}))
    env = {"PATH": f"{FAKES_DIR}:{Path(sys.executable).parent}:{empty}"}
    with pytest.raises(sandbox_module.SandboxError, match="bubblewrap"):
        _run_in_process(lab, task_id, env)
    task = _task(lab, task_id)
    assert task.status is TaskStatus.FAILED
    assert "apt-get install bubblewrap" in (task.reason or "")
    assert f"{SANDBOX_VAR}=off" in (task.reason or "")
    assert not (lab.root("alpha") / "home" / "never.json").exists()  # the agent never ran
    assert not (lab.root("alpha") / "worktrees" / task_id).exists()


def test_namespaces_refused_fail_the_task_with_bwraps_words(lab: Lab) -> None:
    task_id = lab.add("alpha", json.dumps({"report": "never"}))
    env = {"PATH": f"{FAKES_DIR / 'no_namespaces'}:{os.environ['PATH']}"}
    with pytest.raises(sandbox_module.SandboxError, match="namespaces"):
        _run_in_process(lab, task_id, env)
    reason = _task(lab, task_id).reason or ""
    assert "does not allow non-privileged user namespaces" in reason
    assert f"{SANDBOX_VAR}=off" in reason
    assert not (lab.root("alpha") / "home" / "never.json").exists()


# --- the switch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "warning"),
    [
        ("off", f"warning: {SANDBOX_VAR}=off: agents and verify commands run without the sandbox"),
        ("of", f"warning: {SANDBOX_VAR}='of' is neither 'on' nor 'off': the sandbox stays on"),
        ("", None),
        ("on", None),
    ],
)
def test_orch_validate_warns_when_the_sandbox_is_off(
    lab: Lab, value: str, warning: str | None
) -> None:
    settings = lab.registry.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        SANDBOX_VAR: value,
    }
    result = CliRunner().invoke(main, ["validate"], env=env)
    assert result.exit_code == 0, result.output
    if warning is None:
        assert SANDBOX_VAR not in result.stderr
    else:
        assert warning in result.stderr
