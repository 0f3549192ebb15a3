"""Project lifecycle through the real `dagster-daemon`: a paused project's work waits while the
others' runs, a stopped project's agent is interrupted with its work kept and its session
continued on resume, an archived project leaves the definitions with its history kept.

One daemon serves the module: `agents: {slots: 2}`, projects `pa` and `pb` (max_parallel 2),
real git repositories, the shipped `claude_code` profile running the stand-in `claude` first
on PATH (unsandboxed: every stand-in logs to the one file FAKE_CLAUDE_LOG names). Prompt words:
`HOLD<name>` works until `release/<name>` exists beside the log; `SLEEP<n>`; directive lines
(`WRITE <path> <text>`) run first.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from orchestration.control.store import ProjectStates
from orchestration.tags import project_pool
from orchestration.tasks.models import TaskStatus
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import (
    INSTANCE_CHANGES,
    LOG_VAR,
    Monitor,
    Orchestrator,
    starts,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

PROJECTS = {"pa": ("normal", 2), "pb": ("normal", 2), "lo": ("low", 2), "crit": ("critical", 2)}
#: The preemption rule of the preemption test (seconds).
PREEMPT_AFTER_S = 5
#: A critical task must start within `after` plus one dispatch tick (about 5 s) plus the time
#: the run queue and a fresh run worker take to start an agent (a few seconds here).
PREEMPT_START_BOUND_S = PREEMPT_AFTER_S + 5 + 10
#: How long after `stop` the interrupted agent must be gone.
STOP_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    root = tmp_path_factory.mktemp("lifecycle")
    (root / "agents" / "release").mkdir(parents=True)
    env = write_registry(root, PROJECTS, slots=2)
    env["DAGSTER_HOME"] = str(write_instance(root, INSTANCE_CHANGES))
    env[LOG_VAR] = str(root / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)
    with running_daemon(root, write_workspace(root), daemon_env) as (daemon, daemon_log):
        system = Orchestrator(root, env, daemon, daemon_log)
        try:
            warm = [system.add("pb", "warm up") for _ in range(2)]
            tasks = system.wait_finished(*warm, timeout_s=240)
            assert all(t.status is TaskStatus.SUCCEEDED for t in tasks), system.explain("warm-up")
            system.wait_idle()
            yield system
        finally:
            for path in (root / "agents" / "release").iterdir():
                path.unlink()
            system.close()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_pause_drains_and_resume_starts_the_waiting_tasks(system: Orchestrator) -> None:
    in_flight = system.add("pa", "in flight HOLDdrain")
    system.wait_started(in_flight)
    system.orch("projects", "pause", "pa", "--reason", "freeze")
    with Monitor(system) as monitor:
        waiting = [system.add("pa", f"paused work {i} SLEEP1") for i in range(2)]
        others = [system.add("pb", f"other work {i} SLEEP1") for i in range(2)]
        system.wait_finished(*others)
        system.release("drain")
        done = system.wait_finished(in_flight)
        assert done[0].status is TaskStatus.SUCCEEDED  # the run in flight finished its work
        time.sleep(5)  # several dispatch ticks and queue passes with a free slot
    # Nothing new of the paused project started at any sample; the other project ran.
    assert all(sample.active.get("pa", 0) <= 1 for sample in monitor.samples)
    calls = system.calls()
    assert not set(waiting) & set(calls), "a task of the paused project started"
    assert all(t.status is TaskStatus.SUCCEEDED for t in system.store.tasks(ids=others))
    assert all(t.status is TaskStatus.QUEUED for t in system.store.tasks(ids=waiting))
    limits = {p.name: p.limit for p in system.instance.event_log_storage.get_pool_limits()}
    assert limits[project_pool("pa")] == 0
    shown = json.loads(system.orch("allocation", "show", "--json"))
    assert {p["name"]: p["state"] for p in shown["projects"]}["pa"] == "paused"

    system.orch("projects", "resume", "pa")
    finished = system.wait_finished(*waiting)
    assert all(t.status is TaskStatus.SUCCEEDED for t in finished)
    log = [(e.from_state, e.to_state) for e in ProjectStates(system.store).log(["pa"])]
    assert log == [("active", "paused"), ("paused", "active")]
    system.wait_idle()


def test_stop_interrupts_keeps_the_work_and_resume_continues_the_session(
    system: Orchestrator,
) -> None:
    prompt = "WRITE progress.md step one\nkeep going HOLDstopped"
    task_id = system.add("pa", prompt)
    system.wait_started(task_id)
    first = [e for e in starts(system) if task_id in e["cwd"]][-1]
    session = first["options"]["session_id"]  # chosen by the orchestrator (--session-id)
    pgid = first["pgid"]

    stopped_at = time.monotonic()
    system.orch("projects", "stop", "pa", "--reason", "wrong approach")

    def agent_gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    system.wait_for("the agent's process group to end", agent_gone, timeout_s=STOP_WITHIN_S)
    assert time.monotonic() - stopped_at <= STOP_WITHIN_S
    task = system.wait_for(
        "the task to be queued again",
        lambda: (
            (t := system.store.require(task_id)).status is TaskStatus.QUEUED
            and not t.dispatched
            and t.interruptions
            and t
        ),
    )
    assert task.resume_session == session
    assert task.attempts == 0  # the interrupted attempt is not counted
    assert task.interruptions[0]["kind"] == "stopped"
    assert task.interruptions[0]["reason"] == "wrong approach"
    clone = Path(system.env["ORCH_HOME"]) / "workspaces" / "pa" / "repo.git"
    branch = f"refs/heads/orch/pa/{task_id}"
    message = git(clone, "log", "-1", "--format=%B", branch)
    assert "Orch-Interrupted: true" in message and f"Orch-Task: {task_id}" in message
    assert git(clone, "show", f"{branch}:progress.md") == "step one\n"
    transcript = Path(system.env["ORCH_HOME"]) / "workspaces" / "pa" / "logs" / f"{task_id}.log"
    assert "interrupted ===" in transcript.read_text()
    wip = git(clone, "rev-parse", branch).strip()
    assert task.commit == wip
    runs = system.task_runs(task_id)
    assert runs and runs[0].status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING)
    time.sleep(3)  # a few dispatch ticks: the stopped project starts nothing
    assert sum(task_id in e["cwd"] for e in starts(system)) == 1

    system.release("stopped")
    system.orch("projects", "resume", "pa")
    done = system.wait_finished(task_id)[0]
    assert done.status is TaskStatus.SUCCEEDED, done.reason
    again = [e for e in starts(system) if task_id in e["cwd"]]
    assert len(again) == 2
    assert again[1]["options"].get("resume") == session  # `--resume <session>`
    assert "--resume" in again[1]["argv"]
    # The same branch: the interrupted work is in the final commit's history.
    tip = git(clone, "rev-parse", branch).strip()
    assert git(clone, "merge-base", "--is-ancestor", wip, tip) == ""
    assert done.extra["base"] == git(clone, "rev-parse", f"{wip}~1").strip()
    assert done.interruptions and done.interruptions[0]["commit"] == wip
    system.wait_idle()


def history(system: Orchestrator, project: str) -> tuple[int, int, int]:
    """(runs, task materializations, task partitions) the instance keeps for `project`."""
    instance = system.instance
    runs = instance.get_runs_count(dg.RunsFilter(tags={"project": project}))
    materialized = len(
        instance.fetch_materializations(dg.AssetKey([project, "tasks"]), limit=10_000).records
    )
    partitions = len(instance.get_dynamic_partitions(f"{project}_tasks"))
    return runs, materialized, partitions


def test_archive_keeps_history_unarchive_restores_it_and_remove_purges(
    system: Orchestrator,
) -> None:
    from click.testing import CliRunner

    from orchestration.cli import main
    from orchestration.defs.definitions import build_definitions
    from orchestration.registry.loader import load_registry
    from orchestration.settings import Settings

    project = "pa"
    done = system.wait_finished(system.add(project, "before archiving"))[0]
    assert done.status is TaskStatus.SUCCEEDED
    system.wait_idle()
    before = history(system, project)
    assert before[0] >= 3 and before[1] >= 3
    clone = Path(system.env["ORCH_HOME"]) / "workspaces" / project / "repo.git"
    refs = git(clone, "for-each-ref", "--format=%(objectname) %(refname)")
    assert f"refs/heads/orch/{project}/{done.id}" in refs
    user_repo = system.root / "repos" / project
    user_head = subprocess.run(
        ["git", "-C", str(user_repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout

    refused = CliRunner().invoke(main, ["projects", "archive", project], env=system.env)
    assert refused.exit_code == 1 and "allowed only from paused, stopped" in refused.output
    system.orch("projects", "pause", project)
    system.orch("projects", "archive", project)

    settings = Settings.from_env(system.env)
    defs = build_definitions(load_registry(settings, system.env))
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert not [key for key in keys if key.path[0] == project]  # the group left the graph
    assert history(system, project) == before  # runs and materializations stay browsable
    assert not clone.exists()
    add = CliRunner().invoke(main, ["task", "add", project, "more work"], env=system.env)
    assert add.exit_code == 1 and "is archived" in add.output
    listed = json.loads(system.orch("projects", "list", "--json", "--state", "archived"))
    assert [row["name"] for row in listed] == [project]

    system.orch("projects", "unarchive", project)
    assert git(clone, "for-each-ref", "--format=%(objectname) %(refname)") == refs
    assert history(system, project) == before
    defs = build_definitions(load_registry(settings, system.env))
    assert dg.AssetKey([project, "tasks"]) in defs.resolve_asset_graph().get_all_asset_keys()

    system.orch("projects", "pause", project)
    system.orch("projects", "remove", project, "--purge", "--yes")
    assert history(system, project) == (0, 0, 0)
    assert not clone.exists()
    assert not system.store.tasks(project=project)
    assert (user_repo / ".git").is_dir()  # never the user's own repository
    after_head = subprocess.run(
        ["git", "-C", str(user_repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    assert after_head == user_head
    assert history(system, "pb")[0] > 0  # the other project's history is untouched
    log = [(e.from_state, e.to_state) for e in ProjectStates(system.store).log([project])]
    assert log[-4:] == [
        ("paused", "archived"),
        ("archived", "active"),
        ("active", "paused"),
        ("paused", "removed"),
    ]


def set_preemption(system: Orchestrator, rule: dict | None) -> None:
    import yaml

    path = system.root / "config" / "pools.yaml"
    pools = yaml.safe_load(path.read_text())
    pools.pop("preemption", None)
    if rule is not None:
        pools["preemption"] = rule
    path.write_text(yaml.safe_dump(pools, sort_keys=False))


def agent_start(system: Orchestrator, task_id: str, after: float = 0.0) -> float | None:
    """When the (latest) agent of `task_id` started, if it did after `after`."""
    times = [e["time"] for e in starts(system) if e["cwd"].endswith(task_id) and e["time"] > after]
    return times[-1] if times else None


def test_a_critical_task_preempts_the_lowest_and_the_preempted_resume(
    system: Orchestrator, record_property
) -> None:
    low = [system.add("lo", f"long low work {i} HOLDpreempt") for i in range(2)]
    system.wait_started(*low)
    set_preemption(
        system, {"after": PREEMPT_AFTER_S, "min_priority": "critical", "max_per_task": 1}
    )
    try:
        # 1. A critical task waits `after`, then the most recently started low task yields.
        added = time.time()
        first = system.add("crit", "urgent fix SLEEP1")
        started = system.wait_for(
            "the critical task's agent to start",
            lambda: agent_start(system, first, added),
            timeout_s=PREEMPT_START_BOUND_S + 30,
        )
        waited = started - added
        record_property("critical_wait_s", round(waited, 2))
        assert waited <= PREEMPT_START_BOUND_S, f"waited {waited:.1f} s"
        newest = max(low, key=lambda t: agent_start(system, t) or 0)
        victim = system.wait_for(
            "the victim's checkpoint",
            lambda: (t := system.store.require(newest)).interruptions and t,
        )
        assert victim.interruptions[0]["kind"] == "preempted"
        assert victim.interruptions[0]["by"] == first
        assert [p["task"] for p in system.store.require(first).extra["preempted_others"]] == [
            newest
        ]
        other = next(t for t in low if t != newest)
        assert not system.store.require(other).interruptions
        assert system.wait_finished(first)[0].status is TaskStatus.SUCCEEDED

        # 2. The victim continues its session; the next critical task takes the other slot.
        resumed_at = system.wait_for(
            "the victim to resume", lambda: agent_start(system, newest, started)
        )
        second = system.add("crit", "second urgent fix SLEEP1")
        system.wait_for("the second critical task to start", lambda: agent_start(system, second))
        assert system.store.require(other).times_preempted == 1
        assert system.store.require(newest).times_preempted == 1  # max_per_task: not again
        system.wait_finished(second)
        system.wait_for("the other to resume", lambda: agent_start(system, other, resumed_at))

        # 3. Both holders have been preempted max_per_task times: a third critical task waits.
        third_added = time.time()
        third = system.add("crit", "third urgent fix SLEEP1")
        time.sleep(PREEMPT_AFTER_S + 12)
        assert agent_start(system, third) is None
        assert [system.store.require(t).times_preempted for t in low] == [1, 1]
    finally:
        set_preemption(system, None)
        system.release("preempt")
    finished = system.wait_finished(*low, third)
    assert all(t.status is TaskStatus.SUCCEEDED for t in finished), [t.reason for t in finished]
    assert agent_start(system, third, third_added) is not None
    for task_id in low:
        calls = [e for e in starts(system) if e["cwd"].endswith(task_id)]
        session = calls[0]["options"]["session_id"]
        assert calls[-1]["options"].get("resume") == session  # continued, not restarted
    system.wait_idle()
