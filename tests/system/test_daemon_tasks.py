"""Tasks end to end through the real `dagster-daemon`: `orch task add` -> dispatch sensor ->
queued run -> run worker -> the real `claude_code` adapter running the stand-in `claude` CLI
(tests/support/fakes/claude) -> commit, verification, task record, materialization.

One daemon serves the whole module. Its registry has three projects, each a real git repository
with a verify command: `alpha` (secret SECRET_A, two agents at once), `beta` (secret SECRET_B,
resumes its last session, one agent at a time) and `gamma` (a 4 s agent timeout). The
stand-in logs what it saw (argv, environment, cwd) to `fake_claude.jsonl` in the project's
CLAUDE_CONFIG_DIR, the one variable the orchestrator always sets for it.

Agents run in the sandbox, each in a PID namespace of its own, so what an agent could log about
its processes (its pid, its group, its parents) says nothing about the host: the tests find its
processes from outside, starting at the process group the orchestrator records for the task
(`extra["agent_pgid"]`, the sandbox's group on the host), and tell the stand-in's log lines
apart by the random `agent` id each of them carries.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml

from orchestration.process import kill_process_group
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.tasks.models import Task, TaskStatus
from tests.support.agent_log import entries
from tests.support.daemon import (
    DaemonClient,
    daemon_environment,
    running_daemon,
    write_instance,
    write_workspace,
)
from tests.support.git import git, make_git_repo
from tests.support.paths import REPO_ROOT, path_with_fakes

pytestmark = pytest.mark.slow


TASK_TIMEOUT_S = 120.0
FAKE_LOG_NAME = "fake_claude.jsonl"
SECRETS = {"SECRET_A": "alpha-secret-value", "SECRET_B": "beta-secret-value"}
UNLISTED = {"UNLISTED_PARENT_VAR": "nobody-may-see-this"}  # in no allowlist
MISSING_PROFILE = "missing_agent"  # a profile whose CLI is not installed
GAMMA_TIMEOUT_S = 4


CHECK_PY = """\
import sys
print("===== 1 passed in 0.01s =====")
sys.exit(0)
"""


# --- the running system -------------------------------------------------------------------------


class Orchestrator(DaemonClient):
    """A daemon on a throwaway registry, instance and state directory, and ways to ask it."""

    def add(self, project: str, prompt: str, *options: str) -> str:
        return self.orch("task", "add", project, prompt, *options).strip()

    def task(self, task_id: str) -> Task:
        return self.store.require(task_id)

    def run(self, task: Task) -> dg.DagsterRun:
        assert task.run_id, self.explain(task.id, "the task has no run id")
        run = self.instance.get_run_by_id(task.run_id)
        assert run is not None, self.explain(task.id, f"run {task.run_id} not found")
        return run

    def fake_log(self, project: str) -> list[dict[str, Any]]:
        path = self.home / "workspaces" / project / "agents" / "claude_code" / FAKE_LOG_NAME
        return entries(path)

    def agent_calls(self, project: str, task_id: str) -> list[dict[str, Any]]:
        """The stand-in's log lines for one task (its worktree is named after the task), each
        start line merged with what the same process logged later (the same `agent` id: pids
        repeat across sandboxes)."""
        entries = self.fake_log(project)
        starts = [e for e in entries if e["event"] == "start" and Path(e["cwd"]).name == task_id]
        for start in starts:
            for later in entries:
                if later["agent"] == start["agent"] and later["event"] != "start":
                    start[later["event"]] = later
        return starts

    def release(self, project: str, name: str) -> None:
        """Let the agents whose prompts hold `HOLD<name>` finish."""
        release = self.home / "workspaces" / project / "agents" / "claude_code" / "release"
        release.mkdir(parents=True, exist_ok=True)
        (release / name).touch()

    def wait_for(
        self, what: str, task_id: str, ready: Callable[[], Any], timeout_s: float = TASK_TIMEOUT_S
    ) -> Any:
        """Poll `ready` until it returns something truthy; fail with the whole story if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = ready()
            if value:
                return value
            if self.daemon.poll() is not None:
                pytest.fail(self.explain(task_id, f"the daemon exited ({self.daemon.returncode})"))
            if time.monotonic() > deadline:
                pytest.fail(self.explain(task_id, f"timed out after {timeout_s:.0f}s: {what}"))
            time.sleep(0.25)

    def after_dispatch_tick(self) -> None:
        """Return right after the dispatch sensor's next tick has ended: tasks added now are
        all seen by the same later tick (ticks are at least DISPATCH_INTERVAL_S apart)."""
        from dagster._core.definitions.run_request import InstigatorType

        (state,) = [
            s
            for s in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if s.instigator_name == "task_dispatch"
        ]
        called = time.time()

        def ticked() -> bool:
            ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            return bool(ticks and ticks[0].timestamp > called and ticks[0].end_timestamp)

        self.wait_for("a dispatch sensor tick", "", ticked, timeout_s=60)

    def wait_status(
        self, task_id: str, *statuses: TaskStatus, timeout_s: float = TASK_TIMEOUT_S
    ) -> Task:
        def reached() -> Task | None:
            task = self.task(task_id)
            return task if task.status in statuses else None

        wanted = " or ".join(statuses)
        return self.wait_for(f"task {task_id} to be {wanted}", task_id, reached, timeout_s)

    def wait_finished(self, task_id: str, timeout_s: float = TASK_TIMEOUT_S) -> Task:
        finished = [s for s in TaskStatus if s.finished]
        return self.wait_status(task_id, *finished, timeout_s=timeout_s)

    def wait_run_finished(self, task_id: str, timeout_s: float = TASK_TIMEOUT_S) -> dg.DagsterRun:
        def finished() -> dg.DagsterRun | None:
            task = self.task(task_id)
            run = self.instance.get_run_by_id(task.run_id) if task.run_id else None
            return run if run is not None and run.is_finished else None

        return self.wait_for(f"the run of {task_id} to end", task_id, finished, timeout_s)

    def explain(self, task_id: str, message: str) -> str:
        """A failure message with the task record, its runs and the daemon's last output."""
        task = self.store.get(task_id)
        record = json.dumps(task.to_dict(), indent=2, default=str) if task else "(no such task)"
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={"orch/task": task_id}))
        run_lines = [f"  {r.run_id} {r.status.value} tags={dict(r.tags)}" for r in runs]
        events = []
        for run in runs[:1]:
            for entry in self.instance.all_logs(run.run_id)[-15:]:
                text = entry.message or (entry.dagster_event.message if entry.dagster_event else "")
                events.append(f"  {entry.level} {text[:300]}")
        daemon_tail = self.daemon_log.read_text(errors="replace")[-3000:]
        return "\n".join(
            [
                message,
                f"task record: {record}",
                "runs:",
                *run_lines,
                "last events of the latest run:",
                *events,
                "daemon log tail:",
                daemon_tail,
            ]
        )


def _write_registry(root: Path) -> dict[str, str]:
    """projects/, config/ and three real repositories under `root`; the ORCH_* variables."""
    shutil.copytree(REPO_ROOT / "config", root / "config")
    agents_file = root / "config" / "agents.yaml"
    agents = yaml.safe_load(agents_file.read_text())
    agents["profiles"][MISSING_PROFILE] = {
        "description": "A CLI that is not installed.",
        "argv": ["orch-test-no-such-agent", "-p", "--", "{prompt}"],
        "output": "text",
    }
    agents_file.write_text(yaml.safe_dump(agents, sort_keys=False))
    projects = root / "projects"
    (projects / "templates").mkdir(parents=True)
    settings = {
        "alpha": "agent: {profile: claude_code, max_parallel: 2}\nsecrets: [SECRET_A]\n",
        "beta": "agent: {profile: claude_code, resume: true}\nsecrets: [SECRET_B]\n",
        "gamma": f"agent: {{profile: claude_code, timeout: {GAMMA_TIMEOUT_S}}}\n",
    }
    for name, text in settings.items():
        repo = make_git_repo(
            root / "repos" / name, {"README.md": f"{name}\n", "check.py": CHECK_PY}
        )
        (projects / f"{name}.yaml").write_text(
            f"name: {name}\nrepo: {repo}\nverify: [python3, check.py]\n{text}"
        )
    return {
        PROJECTS_DIR_VAR: str(projects),
        CONFIG_DIR_VAR: str(root / "config"),
        HOME_VAR: str(root / "home"),
    }


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    root = tmp_path_factory.mktemp("daemon")
    orch_env = _write_registry(root)
    orch_env["DAGSTER_HOME"] = str(write_instance(root))
    # The parent environment: ours without the machine's ANTHROPIC_/CLAUDE_ settings either,
    # the stand-in CLI first on PATH, the projects' secrets and one unlisted variable.
    env = daemon_environment(
        {**orch_env, **SECRETS, **UNLISTED},
        drop=("ANTHROPIC_", "CLAUDE_"),
        path=path_with_fakes(os.environ["PATH"]),
    )
    with running_daemon(root, write_workspace(root), env) as (daemon, log_path):
        orchestrator = Orchestrator(root=root, env=orch_env, daemon=daemon, daemon_log=log_path)
        try:
            yield orchestrator
        finally:
            orchestrator.close()


# --- helpers ------------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/`pid`/stat after the command (state, ppid, pgrp, ...); None if the
    process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def _live(fields: list[str] | None) -> bool:
    """A zombie (dead, not yet reaped) counts as dead."""
    return fields is not None and fields[0] not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` on the host (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if _live(fields) and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _gone(process: psutil.Process) -> bool:
    """Whether `process` has exited (a zombie counts; a new process with its pid does not
    make it alive again)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass(frozen=True)
class AgentGroup:
    """A hanging agent seen from the host while it runs: the process group the orchestrator
    recorded for its task (the sandbox's) and, found in that group, the stand-in's process and
    the `sleep` it started."""

    pgid: int
    started: float  # the group leader's start time, so cleanup never hits a reused id
    agent: psutil.Process
    child: psutil.Process

    def gone(self) -> bool:
        """The group has no live process left, and neither the agent nor its child lives."""
        return not _group_members(self.pgid) and _gone(self.agent) and _gone(self.child)

    def kill(self) -> None:
        kill_process_group(self.pgid, self.started)


def _recorded_group(
    orchestrator: Orchestrator, task_id: str, call: dict[str, Any]
) -> tuple[psutil.Process, psutil.Process]:
    """The running agent of `task_id` (`call`: its start line) found from the host: the leader
    of the process group recorded in the task's `agent_pgid`, checked to be live and to lead
    its group, and the stand-in's process, checked to be in that group."""
    pgid = int(orchestrator.task(task_id).extra["agent_pgid"])
    leader = psutil.Process(pgid)
    assert _live(_stat(pgid)) and os.getpgid(pgid) == pgid, f"{pgid} leads no live group"
    argv = call["argv"]
    descendants = leader.children(recursive=True)
    agents = [p for p in descendants if p.cmdline()[-len(argv) :] == argv]
    assert len(agents) == 1, (argv, [p.cmdline() for p in descendants])
    assert os.getpgid(agents[0].pid) == pgid, "the agent left its sandbox's process group"
    return leader, agents[0]


def _agent_group(orchestrator: Orchestrator, task_id: str, call: dict[str, Any]) -> AgentGroup:
    """The hanging agent of `task_id` (`call`: its start line, with `child`), found from the
    host through its task's recorded process group, which holds it and its child."""
    leader, agent = _recorded_group(orchestrator, task_id, call)
    children = [p for p in agent.children() if p.cmdline() == ["sleep", "300"]]
    assert len(children) == 1, [p.cmdline() for p in agent.children()]
    assert os.getpgid(children[0].pid) == leader.pid, "the agent's child left its group"
    return AgentGroup(leader.pid, leader.create_time(), agent, children[0])


def _run_worker(group: AgentGroup) -> psutil.Process:
    """The run worker: the parent of the sandbox process (the group's leader), itself started
    by the code server."""
    worker = psutil.Process(group.pgid).parent()
    assert worker is not None, f"the sandbox {group.pgid} has no parent"
    server = worker.parent()
    server_argv = server.cmdline() if server else []
    assert "grpc" in server_argv and "api" in server_argv, (worker.cmdline(), server_argv)
    return worker


def _events(orchestrator: Orchestrator, run_id: str, kind: dg.DagsterEventType) -> list[Any]:
    return [
        entry.dagster_event.event_specific_data
        for entry in orchestrator.instance.all_logs(run_id, of_type=kind)
        if entry.dagster_event is not None
    ]


# --- the tests ----------------------------------------------------------------------------------


def test_task_runs_through_daemon_and_records_everything(orchestrator: Orchestrator) -> None:
    prompt = "Add a changelog line"
    task_id = orchestrator.add("alpha", prompt)
    task = orchestrator.wait_finished(task_id)
    assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(task_id, "not succeeded")

    run = orchestrator.wait_run_finished(task_id)
    assert run.status is dg.DagsterRunStatus.SUCCESS, orchestrator.explain(task_id, "run")
    assert run.tags["project"] == "alpha"
    assert run.tags["orch/task"] == task_id
    assert int(run.tags["dagster/priority"]) > 0  # set by the allocation policy
    assert run.tags["dagster/partition"] == task_id
    assert run.asset_selection == {dg.AssetKey(["alpha", "tasks"])}

    # The real claude_code adapter ran the CLI headless, in the task's own worktree.
    (call,) = orchestrator.agent_calls("alpha", task_id)
    # A new session under the id the orchestrator chose, so it could be continued if stopped.
    session = call["options"]["session_id"]
    assert call["argv"][1:] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--session-id",
        session,
        "--",
        prompt,
    ]
    assert Path(call["cwd"]) == orchestrator.home / "workspaces/alpha/worktrees" / task_id
    assert call["end"]["exit"] == 0

    # The work is committed on the task's branch of the private clone, with the trailer.
    clone = orchestrator.home / "workspaces" / "alpha" / "repo.git"
    branch = f"orch/alpha/{task_id}"
    assert task.branch == branch
    assert task.commit == git(clone, "rev-parse", branch)
    message = git(clone, "log", "-1", "--format=%B", branch)
    assert f"Orch-Task: {task_id}" in message
    assert git(clone, "show", f"{branch}:CHANGES.md") == f"- {prompt}"
    assert not (orchestrator.home / "workspaces/alpha/worktrees" / task_id).exists()

    # The task record and the materialization carry the agent's numbers, as numbers.
    assert (task.cost_usd, task.tokens_in, task.tokens_out, task.turns) == (0.0123, 150, 40, 3)
    assert task.session_id == call["session_id"]
    assert task.extra["files_changed"] == 1 and task.extra["verify_passed"] == 1
    (materialization,) = _events(
        orchestrator, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    assert materialization.materialization.partition == task_id
    metadata = materialization.materialization.metadata
    numeric = {
        "duration_s": dg.FloatMetadataValue,
        "cost_usd": dg.FloatMetadataValue,
        "tokens_in": dg.IntMetadataValue,
        "tokens_out": dg.IntMetadataValue,
        "turns": dg.IntMetadataValue,
        "files_changed": dg.IntMetadataValue,
        "lines_added": dg.IntMetadataValue,
        "lines_removed": dg.IntMetadataValue,
    }
    for key, kind in numeric.items():
        assert isinstance(metadata[key], kind), f"{key}: {metadata[key]!r}"
    values = {key: metadata[key].value for key in numeric}
    assert values["duration_s"] > 0
    assert values | {"duration_s": 0} == {
        "duration_s": 0,
        "cost_usd": 0.0123,
        "tokens_in": 150,
        "tokens_out": 40,
        "turns": 3,
        "files_changed": 1,
        "lines_added": 1,
        "lines_removed": 0,
    }
    checks = _events(orchestrator, run.run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    # verify_passed, and the step that held the provider account's pool slot.
    assert sorted((c.asset_key, c.check_name, c.passed) for c in checks) == [
        (dg.AssetKey(["alpha", "tasks"]), "holds_provider_anthropic_slot", True),
        (dg.AssetKey(["alpha", "tasks"]), "verify_passed", True),
    ]


def test_two_tasks_of_one_project_run_at_once(orchestrator: Orchestrator) -> None:
    # Each agent waits until the other has started too (BARRIER), so they overlap however
    # slowly the second one is launched, but only if both may run at once. Then each works
    # until released (HOLD), so that the test sees both process groups while they run.
    first = orchestrator.add("alpha", "First parallel change BARRIER2:pair HOLDpair")
    second = orchestrator.add("alpha", "Second parallel change BARRIER2:pair HOLDpair")
    try:
        leaders = []
        for task_id in (first, second):

            def past_barrier(task_id: str = task_id) -> dict[str, Any] | None:
                calls = orchestrator.agent_calls("alpha", task_id)
                recorded = orchestrator.task(task_id).extra.get("agent_pgid")
                return calls[0] if calls and "barrier" in calls[0] and recorded else None

            call = orchestrator.wait_for(
                f"the agent of {task_id} to pass the barrier", task_id, past_barrier
            )
            leaders.append(_recorded_group(orchestrator, task_id, call)[0])
        # Both agents run now, each in a process group of its own (its sandbox's).
        assert all(leader.is_running() for leader in leaders)
        assert leaders[0].pid != leaders[1].pid, leaders
    finally:
        orchestrator.release("alpha", "pair")
    for task_id in (first, second):
        task = orchestrator.wait_finished(task_id)
        assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(task_id, "failed")
    (one,) = orchestrator.agent_calls("alpha", first)
    (two,) = orchestrator.agent_calls("alpha", second)
    assert one["barrier"]["met"] and two["barrier"]["met"], "the agents did not run at once"
    assert one["time"] < two["end"]["time"] and two["time"] < one["end"]["time"], (one, two)
    assert one["cwd"] != two["cwd"]
    clone = orchestrator.home / "workspaces" / "alpha" / "repo.git"
    for task_id in (first, second):
        assert "parallel change" in git(clone, "show", f"orch/alpha/{task_id}:CHANGES.md")


def test_each_agent_sees_only_its_projects_secrets(orchestrator: Orchestrator) -> None:
    ids = {
        "alpha": orchestrator.add("alpha", "Show me the environment"),
        "beta": orchestrator.add("beta", "Show me the environment"),
    }
    envs = {}
    for project, task_id in ids.items():
        task = orchestrator.wait_finished(task_id)
        assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(task_id, "failed")
        (call,) = orchestrator.agent_calls(project, task_id)
        envs[project] = call["env"]
    assert envs["alpha"]["SECRET_A"] == SECRETS["SECRET_A"]
    assert "SECRET_B" not in envs["alpha"]
    assert envs["beta"]["SECRET_B"] == SECRETS["SECRET_B"]
    assert "SECRET_A" not in envs["beta"]
    # Only the allowlist gets through: base_env, the profile's env, the project's secrets, and
    # what the orchestrator sets (LC_CTYPE is Python's own locale coercion in the child).
    allowed = {"PATH", "LANG", "LC_ALL", "TZ", "TERM", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    allowed |= {"HOME", "CLAUDE_CONFIG_DIR", "LC_CTYPE"}
    for project, env in envs.items():
        assert not set(UNLISTED) & set(env), project
        secret = {"alpha": "SECRET_A", "beta": "SECRET_B"}[project]
        assert set(env) <= allowed | {secret}, sorted(set(env) - allowed)
        workspace = orchestrator.home / "workspaces" / project
        assert env["HOME"] == str(workspace / "home")
        assert env["CLAUDE_CONFIG_DIR"] == str(workspace / "agents" / "claude_code")


def test_resume_passes_the_previous_session(orchestrator: Orchestrator) -> None:
    first = orchestrator.add("beta", "First session")
    task = orchestrator.wait_finished(first)
    assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(first, "failed")
    assert task.session_id
    second = orchestrator.add("beta", "Carry on")
    task = orchestrator.wait_finished(second)
    assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(second, "failed")
    (call,) = orchestrator.agent_calls("beta", second)
    assert call["argv"][1:] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        orchestrator.task(first).session_id,
        "--",
        "Carry on",
    ]
    sessions = json.loads(orchestrator.orch("session", "list", "beta", "--json"))
    assert [(s["profile"], s["session_id"], s["task_id"]) for s in sessions] == [
        ("claude_code", task.session_id, second)
    ]
    # A project without `agent.resume` never resumes.
    starts = [e for e in orchestrator.fake_log("alpha") if e["event"] == "start"]
    assert starts and all("--resume" not in e["argv"] for e in starts)


def _wait_hanging_agent(orchestrator: Orchestrator, project: str, task_id: str) -> AgentGroup:
    """The agent of `task_id` (a HANG prompt) once it hangs, seen from the host."""
    orchestrator.wait_status(task_id, TaskStatus.RUNNING)

    def child_started() -> dict | None:
        calls = orchestrator.agent_calls(project, task_id)
        recorded = orchestrator.task(task_id).extra.get("agent_pgid")
        return calls[0] if calls and "child" in calls[0] and recorded else None

    call = orchestrator.wait_for(f"the agent of {task_id} to hang", task_id, child_started)
    return _agent_group(orchestrator, task_id, call)


def test_cancel_terminates_the_run_and_the_agents_process_group(
    orchestrator: Orchestrator,
) -> None:
    task_id = orchestrator.add("alpha", "Work forever HANG")
    # The agent's sandbox leads its own process group, which holds the agent and its child.
    group = _wait_hanging_agent(orchestrator, "alpha", task_id)
    try:
        out = orchestrator.orch("task", "cancel", task_id)
        assert f"cancelled {task_id}" in out and "terminated run" in out, out
        run = orchestrator.wait_run_finished(task_id, timeout_s=60)
        assert run.status is dg.DagsterRunStatus.CANCELED, orchestrator.explain(task_id, "run")
        task = orchestrator.wait_finished(task_id, timeout_s=30)
        assert task.status is TaskStatus.CANCELLED
        orchestrator.wait_for(
            "the agent and its child to be gone", task_id, group.gone, timeout_s=15
        )
        assert not (orchestrator.home / "workspaces/alpha/worktrees" / task_id).exists()
    finally:
        group.kill()


#: Every way an agent can fail, in project gamma (4 s timeout): (prompt, *options) -> what the
#: task's reason must say, output tail included.
FAILURES: dict[tuple[str, ...], list[str]] = {
    ("Never finish HANG",): ["timed out after", "fake claude: hanging"],
    ("Crash EXIT3",): ["exit status 3", '"subtype": "succ', "exiting with status 3"],
    ("Babble GARBAGE",): ["malformed agent output", "<<<GARBAGE>>>"],
    ("Give up ERROR",): ["agent reported an error", "fake claude failed on purpose"],
}


@pytest.fixture(scope="module")
def gamma_tasks(
    orchestrator: Orchestrator,
) -> Iterator[tuple[dict[tuple[str, ...], str], AgentGroup]]:
    """The FAILURES, queued together: prompt and options -> task id, and the hanging agent's
    process group, seen while it ran (before its timeout)."""
    ids = {args: orchestrator.add("gamma", *args) for args in FAILURES}
    hanging = _wait_hanging_agent(orchestrator, "gamma", ids[("Never finish HANG",)])
    try:
        yield ids, hanging
    finally:
        hanging.kill()


@pytest.fixture(scope="module")
def failed_tasks(
    orchestrator: Orchestrator, gamma_tasks: tuple[dict[tuple[str, ...], str], AgentGroup]
) -> dict[tuple[str, ...], str]:
    """The FAILURES, run to their end: prompt and options -> task id."""
    ids, _ = gamma_tasks
    for task_id in ids.values():
        orchestrator.wait_finished(task_id)
        orchestrator.wait_run_finished(task_id)
    return ids


def test_agent_failures_fail_the_task_with_reason_and_tail(
    orchestrator: Orchestrator, failed_tasks: dict[tuple[str, ...], str]
) -> None:
    for args, task_id in failed_tasks.items():
        task = orchestrator.task(task_id)
        assert task.status is TaskStatus.FAILED, orchestrator.explain(task_id, f"{args}: status")
        for text in FAILURES[args]:
            assert text in (task.reason or ""), (args, task.reason)
        run = orchestrator.run(task)
        assert run.status is dg.DagsterRunStatus.FAILURE, orchestrator.explain(task_id, "run")
        assert not (orchestrator.home / "workspaces/gamma/worktrees" / task_id).exists()


def test_a_missing_agent_program_fails_one_task_and_holds_the_rest(
    orchestrator: Orchestrator,
) -> None:
    """The first task of a profile whose program is not installed fails saying so, without a
    run; the next ones stay queued until the registry (or PATH) changes."""
    first = orchestrator.add("gamma", "One", "--profile", MISSING_PROFILE)
    task = orchestrator.wait_finished(first)
    assert task.status is TaskStatus.FAILED
    assert "'orch-test-no-such-agent'" in (task.reason or "") and "not on PATH" in task.reason
    assert task.run_id is None  # nothing was launched for it
    second = orchestrator.add("gamma", "Two", "--profile", MISSING_PROFILE)
    held = orchestrator.wait_for(
        "the second task is held",
        second,
        lambda: (t := orchestrator.task(second)).reason and "held" in t.reason and t,
    )
    assert held.status is TaskStatus.QUEUED and not held.dispatched
    # Editing the registry lets the next task try again: it fails the same way, once.
    agents_file = Path(orchestrator.env[CONFIG_DIR_VAR]) / "agents.yaml"
    agents_file.write_text(agents_file.read_text() + "\n# touched\n")
    retried = orchestrator.wait_finished(second)
    assert retried.status is TaskStatus.FAILED and "not on PATH" in (retried.reason or "")


def test_agent_timeout_kills_the_agents_process_group(
    orchestrator: Orchestrator,
    gamma_tasks: tuple[dict[tuple[str, ...], str], AgentGroup],
    failed_tasks: dict[tuple[str, ...], str],
) -> None:
    task_id = failed_tasks[("Never finish HANG",)]
    # While it ran, the agent and its child were in the sandbox's group (checked by
    # `_agent_group`); after the timeout nothing of that group lives.
    _, group = gamma_tasks
    assert not _group_members(group.pgid), "the timed-out agent's process group still runs"
    assert _gone(group.agent), "the timed-out agent still runs"
    assert _gone(group.child), "the timed-out agent's child still runs"
    task = orchestrator.task(task_id)
    assert task.duration_s is not None and task.duration_s >= GAMMA_TIMEOUT_S


@pytest.fixture(scope="module")
def crashed_task(orchestrator: Orchestrator) -> Iterator[tuple[str, AgentGroup]]:
    """A task whose run worker was SIGKILLed while its agent hung, once its run has failed:
    the task id and the agent's process group, seen before the kill."""
    task_id = orchestrator.add("alpha", "Be killed HANG")
    group = _wait_hanging_agent(orchestrator, "alpha", task_id)
    try:
        _run_worker(group).send_signal(signal.SIGKILL)
        run = orchestrator.wait_run_finished(task_id, timeout_s=60)
        assert run.status is dg.DagsterRunStatus.FAILURE, orchestrator.explain(task_id, "run")
        yield task_id, group
    finally:
        group.kill()


def test_killed_run_worker_never_leaves_the_task_running(
    orchestrator: Orchestrator, crashed_task: tuple[str, AgentGroup]
) -> None:
    task_id, _ = crashed_task
    task = orchestrator.wait_status(task_id, TaskStatus.FAILED, TaskStatus.QUEUED, timeout_s=60)
    assert task.reason and orchestrator.run(task).run_id in task.reason, task.reason


def test_killed_run_worker_leaves_no_agent_behind(
    orchestrator: Orchestrator, crashed_task: tuple[str, AgentGroup]
) -> None:
    task_id, group = crashed_task
    orchestrator.wait_status(task_id, TaskStatus.FAILED, TaskStatus.QUEUED, timeout_s=60)
    orchestrator.wait_for(
        "the crashed run's agent and its child to be gone", task_id, group.gone, timeout_s=10
    )


def test_task_runs_are_bounded_by_run_monitoring(
    orchestrator: Orchestrator, failed_tasks: dict[tuple[str, ...], str]
) -> None:
    """With the DefaultRunLauncher, run monitoring cannot check a run worker's health: only the
    code server that started the worker notices its death. Kill both (checked by hand: the run
    stayed STARTED and the task running for as long as we watched) and only a max runtime, per
    run (`dagster/max_runtime` tag) or per instance, can ever end the run so that
    reconcile_ended_runs fails the task."""
    run = orchestrator.run(orchestrator.task(failed_tasks[("Crash EXIT3",)]))
    per_run = float(run.tags.get("dagster/max_runtime", 0))
    per_instance = orchestrator.instance.run_monitoring_max_runtime_seconds
    assert per_run >= GAMMA_TIMEOUT_S or per_instance > 0, dict(run.tags)


def test_max_parallel_one_runs_a_projects_tasks_one_at_a_time(
    orchestrator: Orchestrator,
) -> None:
    orchestrator.after_dispatch_tick()  # so that, unlimited, they would be launched together
    first = orchestrator.add("beta", "One at a time SLEEP3")
    second = orchestrator.add("beta", "Then the other SLEEP3")
    for task_id in (first, second):
        task = orchestrator.wait_finished(task_id)
        assert task.status is TaskStatus.SUCCEEDED, orchestrator.explain(task_id, "failed")
    (one,) = orchestrator.agent_calls("beta", first)
    (two,) = orchestrator.agent_calls("beta", second)
    assert one["end"]["time"] <= two["time"] or two["end"]["time"] <= one["time"], (one, two)
