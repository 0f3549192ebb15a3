"""A running orchestrator seen from outside, for the system tests that drive the real
`dagster-daemon` with stand-in agents: adding tasks with `orch`, reading the stand-in's log,
sampling the instance, waiting with a diagnosis when something never happens."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml

from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR
from orchestration.tags import PRIORITY_TAG, PROJECT_TAG, TASK_TAG
from orchestration.tasks.execution import INTERRUPTED_TRAILER
from orchestration.tasks.models import Task, TaskStatus
from tests.support.agent_log import entries, events
from tests.support.daemon import DaemonClient
from tests.support.git import git, make_git_repo
from tests.support.paths import FAKE_CLAUDE, REPO_ROOT

#: The variable naming the stand-in's log (a project secret, so it reaches every agent).
LOG_VAR = "FAKE_CLAUDE_LOG"
WAIT_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 0.2
DEQUEUE_INTERVAL_S = 1
ACTIVE = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: The shipped instance config, with faster run monitoring (a crashed run is failed sooner).
INSTANCE_CHANGES = {
    "run_queue": {"dequeue_interval_seconds": DEQUEUE_INTERVAL_S},
    "run_monitoring": {"poll_interval_seconds": 2},
}


@dataclass(frozen=True)
class AgentCall:
    project: str
    task: str
    agent: str  # the stand-in's own id: inside the sandbox every agent has the same pid
    start: float
    end: float | None


@dataclass(frozen=True)
class Sample:
    """What the instance said at one moment: task runs holding slots and queued, per project."""

    time: float
    active: dict[str, int]
    queued: dict[str, int]

    @property
    def in_use(self) -> int:
        return sum(self.active.values())


@dataclass
class Orchestrator(DaemonClient):
    _added: int = 0

    @property
    def agent_log(self) -> Path:
        return Path(self.env[LOG_VAR])

    # --- asking and telling

    def add(self, project: str, prompt: str) -> str:
        """`orch task add`; the task id. Prompts get a serial number, so each is unique."""
        self._added += 1
        return self.orch("task", "add", project, f"{prompt} #{self._added}").strip()

    def release(self, name: str) -> None:
        (self.agent_log.parent / "release" / name).touch()

    def calls(self) -> dict[str, AgentCall]:
        """Per task id, the stand-in's (last) start and end. Its working directory is the
        task's worktree, ORCH_HOME/workspaces/<project>/worktrees/<task id>."""
        starts: dict[str, tuple[str, float, str]] = {}
        ends: dict[str, float] = {}
        for entry in entries(self.agent_log):
            if entry["event"] == "start":
                cwd = Path(entry["cwd"])
                starts[cwd.name] = (cwd.parent.parent.name, entry["time"], entry["agent"])
            elif entry["event"] == "end":
                ends[entry["agent"]] = entry["time"]
        return {
            task: AgentCall(project, task, agent, start, ends.get(agent))
            for task, (project, start, agent) in starts.items()
        }

    def task_runs(self, task_id: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task_id})))

    def sample(self, instance: dg.DagsterInstance | None = None) -> Sample:
        instance = instance or self.instance
        now = time.time()
        counts: dict[str, dict[str, int]] = {"active": {}, "queued": {}}
        for key, statuses in (("active", ACTIVE), ("queued", [dg.DagsterRunStatus.QUEUED])):
            for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
                if TASK_TAG in run.tags:
                    project = run.tags.get(PROJECT_TAG, "")
                    counts[key][project] = counts[key].get(project, 0) + 1
        return Sample(now, counts["active"], counts["queued"])

    # --- waiting

    def wait_for(
        self, what: str, ready: Callable[[], Any], timeout_s: float = WAIT_TIMEOUT_S
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = ready()
            if value:
                return value
            if self.daemon.poll() is not None:
                pytest.fail(self.explain(f"the daemon exited ({self.daemon.returncode})"))
            if time.monotonic() > deadline:
                pytest.fail(self.explain(f"timed out after {timeout_s:.0f}s waiting for {what}"))
            time.sleep(0.1)

    def wait_started(self, *task_ids: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
        self.wait_for(
            f"the agents of {', '.join(task_ids)} to start",
            lambda: set(task_ids) <= set(self.calls()),
            timeout_s,
        )

    def wait_queued(self, *task_ids: str) -> dict[str, dg.DagsterRun]:
        """Each task's run, once every one is in the run queue (QUEUED)."""

        def queued() -> dict[str, dg.DagsterRun] | None:
            found = {}
            for task_id in task_ids:
                runs = [
                    r for r in self.task_runs(task_id) if r.status is dg.DagsterRunStatus.QUEUED
                ]
                if not runs:
                    return None
                found[task_id] = runs[0]
            return found

        return self.wait_for(f"queued runs of {', '.join(task_ids)}", queued)

    def wait_finished(self, *task_ids: str, timeout_s: float = WAIT_TIMEOUT_S) -> list[Task]:
        def finished() -> list[Task] | None:
            tasks = self.store.tasks(ids=list(task_ids))
            done = len(tasks) == len(task_ids) and all(t.status.finished for t in tasks)
            return tasks if done else None

        return self.wait_for(f"tasks {', '.join(task_ids)} to finish", finished, timeout_s)

    def wait_idle(self, timeout_s: float = WAIT_TIMEOUT_S) -> None:
        """No task queued or running, and no task run queued or holding a slot."""

        def idle() -> bool:
            busy = self.store.tasks(statuses=[TaskStatus.QUEUED, TaskStatus.RUNNING])
            sample = self.sample()
            return not busy and not sample.active and not sample.queued

        self.wait_for("the system to be idle", idle, timeout_s)

    def explain(self, message: str) -> str:
        busy = self.store.tasks(statuses=[TaskStatus.QUEUED, TaskStatus.RUNNING])
        runs = self.instance.get_runs(limit=15)
        return "\n".join(
            [
                message,
                "unfinished tasks: "
                + json.dumps([(t.id, t.project, t.status.value, t.run_id) for t in busy]),
                "latest runs:",
                *(
                    f"  {r.run_id[:8]} {r.status.value} {r.tags.get(PROJECT_TAG)} "
                    f"{r.tags.get(TASK_TAG)} priority={r.tags.get(PRIORITY_TAG)}"
                    for r in runs
                ),
                "last agent calls:",
                *(
                    f"  {c.project} {c.task} agent={c.agent} start={c.start:.2f} end={c.end}"
                    for c in sorted(self.calls().values(), key=lambda c: c.start)[-15:]
                ),
                "daemon log tail:",
                self.daemon_log.read_text(errors="replace")[-3000:],
            ]
        )


class Monitor:
    """Samples the instance every SAMPLE_EVERY_S in a thread of its own (its own instance)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        instance = dg.DagsterInstance.from_config(self.orchestrator.env["DAGSTER_HOME"])
        try:
            while not self._stop.is_set():
                self.samples.append(self.orchestrator.sample(instance))
                self._stop.wait(SAMPLE_EVERY_S)
        finally:
            instance.dispose()

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def write_runnable_project(
    root: Path, projects: Path, name: str, priority: str = "normal", max_parallel: int = 1
) -> None:
    """`projects/<name>.yaml` of a project whose repository is a real git repository under
    `root/repos` and whose agent is the shipped `claude_code` profile (the stand-in `claude`,
    first on PATH), its log variable passed as a secret."""
    repo = make_git_repo(root / "repos" / name, {"README.md": f"{name}\n"})
    spec = {
        "name": name,
        "repo": str(repo),
        "priority": priority,
        "agent": {"profile": "claude_code", "max_parallel": max_parallel, "timeout": 600},
        "secrets": [LOG_VAR],
    }
    (projects / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def write_registry(
    root: Path, projects_wanted: Mapping[str, tuple[str, int]], slots: int
) -> dict[str, str]:
    """A registry under `root`: the shipped config with `slots` agent slots, and one project
    per entry (name -> (priority, max_parallel)), each a real git repository whose agent is
    the shipped `claude_code` profile (the stand-in `claude`, first on PATH), its log variable
    passed as a secret. The variables that point `orch` and the daemon at it."""
    shutil.copytree(REPO_ROOT / "config", root / "config")
    pools_file = root / "config" / "pools.yaml"
    pools = yaml.safe_load(pools_file.read_text())
    pools["agents"]["slots"] = slots
    pools_file.write_text(yaml.safe_dump(pools, sort_keys=False))
    projects = root / "projects"
    (projects / "templates").mkdir(parents=True)
    for name, (priority, max_parallel) in projects_wanted.items():
        write_runnable_project(root, projects, name, priority, max_parallel)
    return {
        PROJECTS_DIR_VAR: str(projects),
        CONFIG_DIR_VAR: str(root / "config"),
        HOME_VAR: str(root / "home"),
    }


def starts(system: Orchestrator) -> list[dict]:
    """The stand-in's start lines, oldest first."""
    return events("start", system.agent_log)


def agent_groups(agent_log: Path) -> list[int]:
    """The process groups of the stand-in agents that have started and not ended, still led
    by a stand-in."""
    started: dict[str, int] = {}
    ended: set[str] = set()
    for entry in entries(agent_log):
        if entry["event"] == "start":
            started[entry["agent"]] = int(entry["pgid"])
        elif entry["event"] == "end":
            ended.add(entry["agent"])
    groups = []
    for agent, pgid in started.items():
        if agent in ended:
            continue
        try:
            leader = psutil.Process(pgid)
            if os.getpgid(pgid) == pgid and str(FAKE_CLAUDE) in " ".join(leader.cmdline()):
                groups.append(pgid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return groups


def final_commits(clone: Path, project: str, task: Task) -> list[str]:
    """The commits the task made on its branch (those not on the project's branch) that carry
    its trailer and not the interrupted one: its results."""
    log = git(
        clone,
        "log",
        "--format=%H%n%B%x00",
        f"refs/heads/orch/{project}/{task.id}",
        "--not",
        "refs/remotes/origin/main",
    )
    finals = []
    for entry in filter(None, (chunk.strip() for chunk in log.split("\0"))):
        sha, _, message = entry.partition("\n")
        if f"Orch-Task: {task.id}" in message and INTERRUPTED_TRAILER not in message:
            finals.append(sha)
    return finals
