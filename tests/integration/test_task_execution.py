"""Running tasks end to end: real git repositories, a real task store and the stand-in `claude`
CLI (tests/support/fakes/claude: Claude Code's argv-in, JSON-out protocol), through
`AgentTasks.execute` exactly as the Dagster asset calls it."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.defs.metadata import task_metadata
from orchestration.defs.resources import AgentTasks
from orchestration.registry.models import ProjectSpec
from orchestration.tasks.execution import AGENT_IDENTITY, TaskOutcome
from orchestration.tasks.models import TaskStatus, is_task_id, new_task_id
from orchestration.tasks.store import TaskError, TaskStore
from orchestration.workspace.isolation import IsolationError, path_inside, project_dir
from orchestration.workspace.workspace import ProjectWorkspace
from tests.support.agent_log import events
from tests.support.git import commit, git
from tests.support.paths import FAKE_CLAUDE, path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_task_execution")

#: Projects run the shipped `claude_code` profile: the stand-in `claude` (tests/support/fakes/
#: claude) is first on PATH. A prompt's first line names the task; directive lines (WRITE, MARK,
#: ...) say what the agent does. The stand-in's log, in each project's CLAUDE_CONFIG_DIR, is the
#: record of what it saw.
AGENT = "agent:\n  profile: claude_code\n"
#: The shipped profile's own variable: its agents may see it, verify commands may not.
PROFILE_VAR = "ANTHROPIC_API_KEY"
#: The `command` profile running the same stand-in; `secrets` lets its log variable through.
COMMAND_AGENT = (
    f"agent:\n  profile: command\n  command: {json.dumps([sys.executable, str(FAKE_CLAUDE)])}\n"
    "secrets: [FAKE_CLAUDE_LOG]\n"
)
SCRUBBED = ("SECRET_A", "SECRET_B", "UNLISTED_X", "ANTHROPIC_BASE_URL", "CLAUDE_CONFIG_DIR")


@dataclass
class Harness:
    registry: RegistryDir
    command_log: Path  # where the `command` profile's stand-in logs (in alpha's agent home)
    monkeypatch: pytest.MonkeyPatch

    @property
    def home(self) -> Path:
        return self.registry.settings.home

    def agent_tasks(self) -> AgentTasks:
        # As definitions.py builds it: the registry and ORCH_HOME are read at run time.
        return AgentTasks()

    def store(self) -> TaskStore:
        return TaskStore.from_settings(self.registry.settings, environ={})

    def project(self, name: str, text: str = "") -> Path:
        self.registry.project(name, text)
        return self.registry.root / "repos" / name

    def spec(self, name: str) -> ProjectSpec:
        registry = self.registry.load()
        assert not registry.errors, registry.errors
        return registry.project(name).spec

    def add(self, project: str, prompt: str, **kwargs) -> str:
        store = self.store()
        try:
            return store.add(project, prompt, **kwargs).id
        finally:
            store.dispose()

    def execute(self, project: str, task_id: str, run_id: str | None = None) -> TaskOutcome:
        return self.agent_tasks().execute(project, task_id, run_id or f"run-{task_id}", LOG)

    def run(self, project: str, prompt: str) -> TaskOutcome:
        return self.execute(project, self.add(project, prompt))

    def calls(self) -> list[dict]:
        """The stand-in's start lines, from every project's log and the `command` one."""
        logs = sorted(self.home.glob("workspaces/*/agents/*/fake_claude.jsonl"))
        return events("start", *logs, self.command_log)

    def report(self, name: str) -> dict:
        """What the one agent whose prompt's first line is `name` saw (argv, env, cwd, ...)."""
        (call,) = [c for c in self.calls() if c["prompt"].splitlines()[0] == name]
        return call

    def clone(self, project: str) -> Path:
        return self.home / "workspaces" / project / "repo.git"

    def task(self, task_id: str):
        store = self.store()
        try:
            return store.require(task_id)
        finally:
            store.dispose()


@pytest.fixture
def harness(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    settings = registry_dir.settings
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    monkeypatch.delenv("ORCH_SANDBOX", raising=False)  # agents run in the sandbox
    # The sandboxed agent writes only to its worktree and its project's agent home: the
    # `command` profile (used with project alpha) logs there.
    command_log = settings.home / "workspaces" / "alpha" / "home" / "fake_claude_command.jsonl"
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(command_log))
    for name in (*SCRUBBED, PROFILE_VAR):
        monkeypatch.delenv(name, raising=False)
    yield Harness(registry_dir, command_log, monkeypatch)


# --- one task, end to end -------------------------------------------------------------------


def test_commit_lands_on_the_task_branch_of_the_private_clone(harness: Harness) -> None:
    repo = harness.project("alpha", AGENT)
    user_refs = git(repo, "for-each-ref")
    user_head = git(repo, "rev-parse", "HEAD")

    task_id = harness.add("alpha", "feature\nWRITE feature.txt hello from the agent")
    outcome = harness.execute("alpha", task_id)

    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    clone = harness.clone("alpha")
    branch = f"orch/alpha/{task_id}"
    assert outcome.branch == branch
    assert git(clone, "rev-parse", f"refs/heads/{branch}") == outcome.commit
    assert git(clone, "show", f"{outcome.commit}:feature.txt") == "hello from the agent"
    assert git(clone, "rev-parse", f"{outcome.commit}^") == outcome.base == user_head
    name, email = AGENT_IDENTITY
    assert git(clone, "log", "-1", "--format=%an <%ae>|%cn <%ce>", outcome.commit) == (
        f"{name} <{email}>|{name} <{email}>"
    )
    trailer = git(clone, "log", "-1", "--format=%(trailers:key=Orch-Task,valueonly)", branch)
    assert trailer == task_id
    assert git(clone, "log", "-1", "--format=%s", branch).startswith("orch: feature WRITE")

    # The user's repository is only read.
    assert git(repo, "rev-parse", "HEAD") == user_head
    assert git(repo, "for-each-ref") == user_refs
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (repo / "feature.txt").exists()

    # The worktree is gone; the branch stays.
    assert not (harness.home / "workspaces" / "alpha" / "worktrees" / task_id).exists()
    worktrees = git(clone, "worktree", "list", "--porcelain")
    assert task_id not in worktrees

    recorded = harness.task(task_id)
    assert recorded.status is TaskStatus.SUCCEEDED
    assert (recorded.branch, recorded.commit) == (branch, outcome.commit)
    assert recorded.session_id == harness.report("feature")["session_id"]
    assert recorded.cost_usd == 0.0123 and recorded.turns == 3
    assert recorded.summary == "Done: feature"
    assert recorded.profile == "claude_code"
    assert recorded.extra["files_changed"] == 1 and recorded.extra["lines_added"] == 1
    assert recorded.run_id == f"run-{task_id}"

    metadata = task_metadata(outcome)
    assert metadata["task"] == task_id and metadata["status"] == "succeeded"
    assert metadata["branch"] == branch and metadata["commit"] == outcome.commit
    assert metadata["cost_usd"] == 0.0123 and metadata["files_changed"] == 1
    assert metadata["tokens_in"] == 150 and metadata["tokens_out"] == 40
    assert "reason" not in metadata


def test_agent_that_changes_nothing_records_no_commit(harness: Harness) -> None:
    harness.project("alpha", AGENT)
    outcome = harness.run("alpha", "noop NOOP")
    assert outcome.task.status is TaskStatus.SUCCEEDED
    assert outcome.commit is None
    assert outcome.diff.files_changed == 0
    assert harness.task(outcome.task.id).commit is None


def test_command_profile_runs_the_projects_program(harness: Harness) -> None:
    harness.project("alpha", COMMAND_AGENT)
    outcome = harness.run("alpha", "cmd\nWRITE out.txt via command")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    report = harness.report("cmd")
    # The command profile hands the prompt over on standard input, never as an argument.
    assert report["argv"] == [str(FAKE_CLAUDE)]
    assert report["prompt"] == "cmd\nWRITE out.txt via command"
    assert outcome.agent.summary == "Done: cmd"  # the program's text output
    assert git(harness.clone("alpha"), "show", f"{outcome.commit}:out.txt") == "via command"


# --- isolation ------------------------------------------------------------------------------


def test_two_tasks_running_at_once_are_isolated(harness: Harness) -> None:
    """Both agents run at the same time, each in its own worktree on its own branch, and in its
    sandbox neither sees the other's worktree.

    The first agent waits until the second has finished, so both worktrees exist together;
    git commands of the two tasks do not overlap (the tests at the end of this file overlap
    them). The two agents signal through their project's agent home, which both sandboxes
    share (the test's own temporary directory is not visible inside)."""
    harness.project("alpha", AGENT)
    shared = harness.home / "workspaces" / "alpha" / "home"
    started, go = shared / "one-started", shared / "go"
    one = harness.add(
        "alpha", f"one\nWRITE one.txt 1\nMARK {started}\nWAITFOR {go}\nABSENT two.txt"
    )
    two = harness.add("alpha", "two\nABSENT one.txt\nWRITE two.txt 2")
    outcomes: dict[str, TaskOutcome | BaseException] = {}

    def execute(task_id: str) -> None:
        try:
            outcomes[task_id] = harness.execute("alpha", task_id)
        except BaseException as exc:  # reported by the assertions below
            outcomes[task_id] = exc

    first = threading.Thread(target=execute, args=(one,))
    first.start()
    wait_for(started.exists, "the first agent to start")
    second = threading.Thread(target=execute, args=(two,))
    second.start()
    second.join(timeout=120)
    go.touch()
    first.join(timeout=120)

    results = [outcomes[one], outcomes[two]]
    assert all(
        isinstance(r, TaskOutcome) and r.task.status is TaskStatus.SUCCEEDED for r in results
    ), results
    report_one, report_two = harness.report("one"), harness.report("two")
    assert report_one["cwd"] != report_two["cwd"]
    assert Path(report_one["cwd"]).name == one and Path(report_two["cwd"]).name == two
    assert report_two["siblings"] == [two]  # the other task's worktree is not in its sandbox
    clone = harness.clone("alpha")
    files_one = git(clone, "ls-tree", "--name-only", f"orch/alpha/{one}").split()
    files_two = git(clone, "ls-tree", "--name-only", f"orch/alpha/{two}").split()
    assert sorted(files_one) == ["README.md", "one.txt"]
    assert sorted(files_two) == ["README.md", "two.txt"]


def test_agent_environment_is_built_from_allowlists(harness: Harness) -> None:
    harness.project("alpha", AGENT + "secrets: [SECRET_A]\n")
    harness.project("beta", AGENT + "secrets: [SECRET_B]\n")
    harness.monkeypatch.setenv("SECRET_A", "value-a")
    harness.monkeypatch.setenv("SECRET_B", "value-b")
    harness.monkeypatch.setenv("UNLISTED_X", "value-x")
    harness.monkeypatch.setenv(PROFILE_VAR, "profile-key")

    assert harness.run("alpha", "env_a").task.status is TaskStatus.SUCCEEDED
    assert harness.run("beta", "env_b").task.status is TaskStatus.SUCCEEDED

    env_a, env_b = harness.report("env_a")["env"], harness.report("env_b")["env"]
    assert env_a["SECRET_A"] == "value-a" and "SECRET_B" not in env_a
    assert env_b["SECRET_B"] == "value-b" and "SECRET_A" not in env_b
    assert "UNLISTED_X" not in env_a and "UNLISTED_X" not in env_b
    assert env_a[PROFILE_VAR] == env_b[PROFILE_VAR] == "profile-key"
    for project, env in (("alpha", env_a), ("beta", env_b)):
        root = harness.home.resolve() / "workspaces" / project
        assert env["HOME"] == str(root / "home")
        assert Path(env["HOME"]).is_dir()
        assert env["CLAUDE_CONFIG_DIR"] == str(root / "agents" / "claude_code")
        assert Path(env["CLAUDE_CONFIG_DIR"]).is_dir()
    allowed = {"PATH", "LANG", "LC_ALL", "TZ", "TERM", "HOME", PROFILE_VAR}
    allowed |= {"CLAUDE_CONFIG_DIR", "LC_CTYPE"}  # LC_CTYPE: Python's own locale coercion
    assert set(env_a) <= allowed | {"SECRET_A"}
    assert set(env_b) <= allowed | {"SECRET_B"}


def test_verify_sees_only_base_env_and_secrets(harness: Harness) -> None:
    check = (
        f"import os, sys; bad = [n for n in ('UNLISTED_X', '{PROFILE_VAR}') if n in os.environ]; "
        "sys.exit(1 if bad or os.environ.get('SECRET_A') != 'value-a' else 0)"
    )
    verify = json.dumps([sys.executable, "-c", check])
    harness.project("alpha", AGENT + f"secrets: [SECRET_A]\nverify: {verify}\n")
    harness.monkeypatch.setenv("SECRET_A", "value-a")
    harness.monkeypatch.setenv("UNLISTED_X", "value-x")
    harness.monkeypatch.setenv(PROFILE_VAR, "profile-key")
    outcome = harness.run("alpha", "verified\nWRITE v.txt v")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    assert outcome.verification is not None and outcome.verification.passed


def test_a_run_that_starts_after_its_project_was_paused_starts_no_agent(
    harness: Harness,
) -> None:
    harness.project("alpha", AGENT)
    task_id = harness.add("alpha", "held back")
    store = harness.store()
    try:
        ProjectStates(store).set(
            "alpha", ProjectState.PAUSED, expected=ProjectState.ACTIVE, reason="budget"
        )
        attempts = store.require(task_id).attempts
    finally:
        store.dispose()

    with pytest.raises(TaskError, match="project alpha is paused \\(budget\\)"):
        harness.execute("alpha", task_id)

    assert harness.calls() == []
    task = harness.task(task_id)
    assert task.status is TaskStatus.QUEUED and not task.dispatched and task.run_id is None
    assert task.attempts == attempts and "paused" in (task.reason or "")


def test_a_project_with_a_budget_caps_each_run_at_what_is_left(harness: Harness) -> None:
    harness.project("alpha", AGENT + "budget: {daily_usd: 1.0}\n")
    harness.project("beta", AGENT)

    assert harness.run("alpha", "first COST0.7").task.status is TaskStatus.SUCCEEDED
    assert harness.run("alpha", "second").task.status is TaskStatus.SUCCEEDED
    assert harness.run("beta", "free").task.status is TaskStatus.SUCCEEDED

    assert harness.report("first COST0.7")["options"]["max_budget_usd"] == "1.00"
    assert harness.report("second")["options"]["max_budget_usd"] == "0.30"  # 1.00 - 0.70
    assert "--max-budget-usd" not in harness.report("free")["argv"]


def test_resume_uses_the_projects_own_last_session(harness: Harness) -> None:
    harness.project("alpha", AGENT + "  resume: true\n")
    harness.project("beta", AGENT + "  resume: true\n")
    harness.project("gamma", AGENT)  # resume off

    assert harness.run("alpha", "first").task.status is TaskStatus.SUCCEEDED
    assert "--resume" not in harness.report("first")["argv"]
    first_session = harness.report("first")["session_id"]
    assert harness.run("alpha", "second").task.status is TaskStatus.SUCCEEDED
    assert harness.report("second")["argv"][-4:] == ["--resume", first_session, "--", "second"]

    assert harness.run("beta", "other").task.status is TaskStatus.SUCCEEDED
    argv_b = harness.report("other")["argv"]
    assert "--resume" not in argv_b and first_session not in argv_b
    other_session = harness.report("other")["session_id"]
    assert other_session != first_session

    assert harness.run("gamma", "g1").task.status is TaskStatus.SUCCEEDED
    assert harness.run("gamma", "g2").task.status is TaskStatus.SUCCEEDED
    assert "--resume" not in harness.report("g2")["argv"]

    store = harness.store()
    try:
        assert store.last_session("alpha", "claude_code") == first_session
        assert store.last_session("beta", "claude_code") == other_session
    finally:
        store.dispose()


# --- failures -------------------------------------------------------------------------------


def test_failed_verification_fails_the_task(harness: Harness) -> None:
    verify = json.dumps(
        [sys.executable, "-c", "import sys; print('1 failed, 3 passed'); sys.exit(1)"]
    )
    harness.project("alpha", AGENT + f"verify: {verify}\n")
    outcome = harness.run("alpha", "unverified\nWRITE broken.txt x")
    assert outcome.task.status is TaskStatus.FAILED
    assert outcome.task.reason.startswith("verification failed")
    assert outcome.verification is not None and not outcome.verification.passed
    assert outcome.commit is not None  # the work is kept on the branch for a look
    metadata = task_metadata(outcome)
    assert metadata["status"] == "failed" and metadata["reason"].startswith("verification")


def test_agent_exit_status_fails_the_task_with_the_output_tail(harness: Harness) -> None:
    harness.project("alpha", COMMAND_AGENT)
    outcome = harness.run("alpha", "crash\nWRITE half.txt partial\nEXIT3")
    assert outcome.task.status is TaskStatus.FAILED
    assert "exited with status 3" in outcome.task.reason
    assert "fake claude: exiting with status 3" in outcome.task.reason
    clone = harness.clone("alpha")
    assert "(failed, partial work)" in git(clone, "log", "-1", "--format=%s", outcome.branch)


def test_agent_timeout_fails_the_task(harness: Harness) -> None:
    harness.project("alpha", AGENT + "  timeout: 1\n")
    started = time.monotonic()
    outcome = harness.run("alpha", "slow\nWRITE slow.txt s\nSLEEP60")
    assert time.monotonic() - started < 30
    assert outcome.task.status is TaskStatus.FAILED
    assert "timed out" in outcome.task.reason
    assert not (harness.home / "workspaces" / "alpha" / "worktrees" / outcome.task.id).exists()


def test_a_failed_task_run_again_continues_on_its_branch(harness: Harness) -> None:
    harness.project("alpha", AGENT)
    task_id = harness.add("alpha", "retry\nEXIT_IF_NEW attempts.txt 5\nAPPEND attempts.txt attempt")
    first = harness.execute("alpha", task_id, "run-1")
    assert first.task.status is TaskStatus.FAILED
    assert "exited with status 5" in first.task.reason
    second = harness.execute("alpha", task_id, "run-2")
    assert second.task.status is TaskStatus.SUCCEEDED, second.task.reason
    # It started from the first attempt's commit; its change counts from the task's start.
    assert second.base == first.base
    clone = harness.clone("alpha")
    assert git(clone, "merge-base", "--is-ancestor", first.commit, second.commit) == ""
    assert git(clone, "show", f"{second.commit}:attempts.txt").splitlines() == ["attempt"] * 2
    assert harness.task(task_id).run_id == "run-2"


def test_execute_refuses_a_task_it_may_not_run(harness: Harness) -> None:
    harness.project("alpha", AGENT)
    harness.project("beta", AGENT)
    store = harness.store()
    try:
        held = store.add("alpha", "held").id
        store.claim(held, "other-run")
        with pytest.raises(TaskError, match="by run other-run"):
            harness.execute("alpha", held, "this-run")
        assert store.get(held).run_id == "other-run"

        foreign = store.add("beta", "foreign").id
        with pytest.raises(TaskError, match="belongs to project beta"):
            harness.execute("alpha", foreign)

        unknown_profile = store.add("alpha", "p", profile="no_such_profile").id
        with pytest.raises(TaskError, match="unknown agent profile 'no_such_profile'"):
            harness.execute("alpha", unknown_profile)
        # A set-up problem never burns the task: it goes back to the queue with the reason.
        requeued = store.require(unknown_profile)
        assert requeued.status is TaskStatus.QUEUED and not requeued.dispatched
        assert "no_such_profile" in (requeued.reason or "")
    finally:
        store.dispose()
    assert harness.calls() == []  # no agent ever started


def test_work_the_agent_committed_itself_is_recorded(harness: Harness) -> None:
    harness.project("alpha", AGENT)
    outcome = harness.run("alpha", "selfcommit\nWRITE mine.txt mine\nGITCOMMIT agent's own commit")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    head = git(harness.clone("alpha"), "rev-parse", f"refs/heads/{outcome.branch}")
    assert head != outcome.base  # the work is on the branch...
    assert outcome.commit == head  # ...and the record should say so
    assert outcome.diff.files_changed == 1
    assert harness.task(outcome.task.id).commit == head


def test_command_profile_without_agent_command_never_runs_the_prompt(harness: Harness) -> None:
    harness.project("alpha", AGENT)  # no agent.command
    task_id = harness.add("alpha", "true", profile="command")  # `true` is a program on PATH
    with pytest.raises(TaskError, match="agent.command"):
        harness.execute("alpha", task_id)
    task = harness.store().require(task_id)
    assert task.status is TaskStatus.QUEUED  # back in the queue until the file sets one
    assert "agent.command" in (task.reason or "")


# --- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "", "/etc", "a/b", "a\\b", "../x", "x\x00y"])
def test_path_inside_refuses_names_that_leave_the_base(tmp_path: Path, name: str) -> None:
    with pytest.raises(IsolationError):
        path_inside(tmp_path, name)
    with pytest.raises(IsolationError):
        path_inside(tmp_path, "ok", name)


def test_path_inside_accepts_plain_names(tmp_path: Path) -> None:
    assert (
        path_inside(tmp_path, "workspaces", "alpha") == tmp_path.resolve() / "workspaces" / "alpha"
    )


def test_path_inside_refuses_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "link").symlink_to("/etc")
    with pytest.raises(IsolationError, match="outside"):
        path_inside(tmp_path / "base", "link")


@pytest.mark.parametrize("project", ["..", "/etc", "a/b", "Alpha", "../alpha"])
def test_project_workspace_refuses_names_that_are_not_slugs(tmp_path: Path, project: str) -> None:
    with pytest.raises(IsolationError):
        project_dir(tmp_path, project)
    spec = ProjectSpec.model_construct(name=project, repo=str(tmp_path), branch="main")
    with pytest.raises(IsolationError):
        ProjectWorkspace(tmp_path, spec)


@pytest.mark.parametrize("task_id", ["../escape", "/etc/passwd", "..", "a/b"])
def test_task_worktree_refuses_ids_that_are_not_plain_names(harness: Harness, task_id: str) -> None:
    harness.project("alpha", AGENT)
    workspace = ProjectWorkspace(harness.home, harness.spec("alpha"))
    with pytest.raises(IsolationError):
        workspace.open_task_worktree(task_id)
    with pytest.raises(IsolationError):
        workspace.close_task_worktree(task_id)


@pytest.mark.parametrize("task_id", ["../../etc", "/etc", "..", "T0000000000", "t1"])
def test_invalid_task_ids_never_become_paths(harness: Harness, task_id: str) -> None:
    assert not is_task_id(task_id)
    harness.project("alpha", AGENT)
    with pytest.raises(TaskError, match="no task with id"):
        harness.execute("alpha", task_id)
    assert not (harness.home / "workspaces").exists()


def test_generated_task_ids_are_plain_path_segments(tmp_path: Path) -> None:
    for _ in range(200):
        task_id = new_task_id()
        assert is_task_id(task_id)
        assert path_inside(tmp_path, task_id).parent == tmp_path.resolve()


# --- concurrent git operations of one project ------------------------------------------------


def run_at_once(harness: Harness, project: str, prompts: list[str]) -> list[object]:
    """Execute tasks of one project in threads released at the same moment."""
    task_ids = [harness.add(project, prompt) for prompt in prompts]
    barrier = threading.Barrier(len(task_ids))
    results: list[object] = [None] * len(task_ids)

    def execute(index: int) -> None:
        agent_tasks = harness.agent_tasks()
        barrier.wait(timeout=60)
        try:
            results[index] = agent_tasks.execute(project, task_ids[index], f"run-{index}", LOG)
        except Exception as exc:  # reported by the caller's assertions
            results[index] = exc

    threads = [threading.Thread(target=execute, args=(i,)) for i in range(len(task_ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_first_tasks_of_a_project_started_at_once_both_succeed(harness: Harness) -> None:
    for round_ in range(3):
        project = f"fresh{round_}"
        harness.project(project, AGENT)
        results = run_at_once(
            harness, project, [f"a{round_}\nWRITE a.txt a", f"b{round_}\nWRITE b.txt b"]
        )
        assert all(
            isinstance(r, TaskOutcome) and r.task.status is TaskStatus.SUCCEEDED for r in results
        ), results


def test_tasks_started_at_once_after_the_branch_moved_both_succeed(harness: Harness) -> None:
    for round_ in range(3):
        project = f"moved{round_}"
        repo = harness.project(project, AGENT)
        assert (
            harness.run(project, f"warm{round_}").task.status is TaskStatus.SUCCEEDED
        )  # the clone exists
        commit(repo, {"new.txt": "upstream moved\n"}, message="moved")
        results = run_at_once(
            harness, project, [f"c{round_}\nWRITE c.txt c", f"d{round_}\nWRITE d.txt d"]
        )
        assert all(
            isinstance(r, TaskOutcome) and r.task.status is TaskStatus.SUCCEEDED for r in results
        ), results


def test_task_branches_do_not_write_tracking_config(harness: Harness) -> None:
    harness.project("alpha", AGENT)
    outcome = harness.run("alpha", "tracked\nWRITE t.txt t")
    assert outcome.task.status is TaskStatus.SUCCEEDED
    config = git(harness.clone("alpha"), "config", "--list", "--local")
    assert f"branch.{outcome.branch}." not in config


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- secrets stay out of what is recorded -----------------------------------------------------

SECRET_VALUE = "s3cr3t-value-for-masking"
#: A project program that prints its secret, then fails: its output tail becomes the reason.
LEAKING_AGENT = (
    "agent:\n  profile: command\n  command: "
    + json.dumps(
        [sys.executable, "-c", "import os,sys; print('leak', os.environ['SECRET_A']); sys.exit(3)"]
    )
    + "\nsecrets: [SECRET_A]\n"
)
LEAKING_VERIFY = (
    "verify: "
    + json.dumps(
        [
            sys.executable,
            "-c",
            "import os,sys; print('tests see', os.environ['SECRET_A']); sys.exit(1)",
        ]
    )
    + "\nsecrets: [SECRET_A]\n"
)


def test_a_secret_the_agent_prints_is_masked_in_the_recorded_reason(harness: Harness) -> None:
    harness.monkeypatch.setenv("SECRET_A", SECRET_VALUE)
    harness.project("alpha", LEAKING_AGENT)
    outcome = harness.run("alpha", "leak it")
    assert outcome.task.status is TaskStatus.FAILED
    assert "leak ***" in (outcome.task.reason or "")
    recorded = harness.task(outcome.task.id)
    assert SECRET_VALUE not in json.dumps(recorded.to_dict())
    assert SECRET_VALUE not in repr(task_metadata(outcome))


def test_a_secret_the_tests_print_is_masked_in_the_reason_and_metadata(harness: Harness) -> None:
    harness.monkeypatch.setenv("SECRET_A", SECRET_VALUE)
    harness.project("alpha", AGENT + LEAKING_VERIFY)
    outcome = harness.run("alpha", "change\nWRITE a.txt a")
    assert outcome.task.status is TaskStatus.FAILED
    assert outcome.verification is not None
    assert "tests see ***" in outcome.verification.output_tail
    assert "tests see ***" in (outcome.task.reason or "")
    assert SECRET_VALUE not in json.dumps(harness.task(outcome.task.id).to_dict())
    assert SECRET_VALUE not in repr(task_metadata(outcome))


# --- what a run leaves for the user ----------------------------------------------------------


def test_the_agents_output_is_kept_as_the_tasks_transcript(harness: Harness) -> None:
    harness.project("alpha", AGENT + "secrets: [FAKE_TOKEN]\n")
    harness.monkeypatch.setenv("FAKE_TOKEN", "s3cr3t-value")
    outcome = harness.run("alpha", "say it\nWRITE said.txt s3cr3t-value")
    assert outcome.transcript is not None and outcome.transcript.is_file()
    text = outcome.transcript.read_text()
    assert f"run run-{outcome.task.id}" in text and '"type": "result"' in text
    assert "Done: say it" in text and "s3cr3t-value" not in text


def test_a_project_with_deliver_local_gets_the_branch_in_its_own_repository(
    harness: Harness,
) -> None:
    repo = harness.project("alpha", AGENT + "deliver: local\n")
    head = git(repo, "rev-parse", "HEAD")
    outcome = harness.run("alpha", "feature\nWRITE delivered.txt yes")
    assert outcome.task.status is TaskStatus.SUCCEEDED
    branch = f"orch/alpha/{outcome.task.id}"
    assert git(repo, "rev-parse", f"refs/heads/{branch}") == outcome.commit
    assert git(repo, "rev-parse", "HEAD") == head  # the checked-out branch is untouched
    recorded = harness.task(outcome.task.id)
    assert recorded.delivered_to == "local" and recorded.delivered_at is not None
    assert recorded.delivery_error is None


def test_a_failed_delivery_is_recorded_and_the_task_stays_succeeded(harness: Harness) -> None:
    repo = harness.project("alpha", AGENT + "deliver: local\n")
    task_id = harness.add("alpha", "feature\nWRITE delivered.txt yes")
    # A branch of that name with a commit of the user's own: delivery must not move it.
    git(repo, "branch", f"orch/alpha/{task_id}")
    git(repo, "commit", "--allow-empty", "-q", "-m", "mine")
    theirs = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "-f", f"orch/alpha/{task_id}", theirs)
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    outcome = harness.execute("alpha", task_id)
    recorded = harness.task(task_id)
    assert recorded.status is TaskStatus.SUCCEEDED
    assert recorded.delivered_to is None and recorded.delivery_error
    assert theirs[:12] in recorded.delivery_error and outcome.commit[:12] in recorded.delivery_error
    assert git(repo, "rev-parse", f"refs/heads/orch/alpha/{task_id}") == theirs
