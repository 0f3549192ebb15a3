"""A `lease` channel through the real `dagster-daemon`: `hub` publishes the one-slot lease `gpu`,
which `sub_a` and `sub_b` subscribe to; `free` subscribes to nothing. With 4 agent slots and
each project allowed 2 at once, the subscribers' agents still run one at a time (every task run
of a subscriber holds the lease's pool, whose limit the dispatch sensor sets to the lease's
slots), while `free`'s agents run meanwhile, and every task succeeds.

Each project is a real git repository whose agent is the stand-in `claude`
(tests/support/fakes/claude) first on PATH: `SLEEPn` works n seconds; `BARRIER2:overlap` waits
until two agents with that word have started, here one of `free` and one of `sub_a`: proof
that they ran at the same time. The instance is sampled every 0.2 s in a thread of its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from orchestration.monitoring.portfolio import pools_in_use
from orchestration.settings import PROJECTS_DIR_VAR
from orchestration.tags import GLOBAL_POOL, lease_pool
from orchestration.tasks.models import TaskStatus
from tests.support.agent_log import events
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import (
    ACTIVE,
    INSTANCE_CHANGES,
    LOG_VAR,
    SAMPLE_EVERY_S,
    Orchestrator,
    Sample,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

PROJECTS = {name: ("normal", 2) for name in ("hub", "sub_a", "sub_b", "free")}
SUBSCRIBERS = ("sub_a", "sub_b")
POOL = lease_pool("hub", "gpu")
SLOTS = 4


@dataclass(frozen=True)
class LeaseSample:
    """One look at the instance: the task runs in progress per project, the slots of each pool
    the runs that started hold (those not yet queued hold none), and the lease pool's limit."""

    runs: Sample
    pools: dict[str, int]
    limit: int | None


class Sampler:
    """Samples the instance every SAMPLE_EVERY_S in a thread of its own (its own instance)."""

    def __init__(self, system: Orchestrator) -> None:
        self.system = system
        self.samples: list[LeaseSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        instance = dg.DagsterInstance.from_config(self.system.env["DAGSTER_HOME"])
        try:
            while not self._stop.is_set():
                limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
                started = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE))
                held = pools_in_use(
                    run.run_op_concurrency.all_pools or () if run.run_op_concurrency else ()
                    for run in started
                )
                self.samples.append(
                    LeaseSample(self.system.sample(instance), held, limits.get(POOL))
                )
                self._stop.wait(SAMPLE_EVERY_S)
        finally:
            instance.dispose()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _amend(path: Path, keys: dict[str, Any]) -> None:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(spec | keys, sort_keys=False), encoding="utf-8")


def test_a_one_slot_lease_runs_one_subscriber_agent_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, PROJECTS, SLOTS)
    projects = Path(env[PROJECTS_DIR_VAR])
    lease = {"name": "gpu", "kind": "lease", "description": "The one GPU box."}
    _amend(projects / "hub.yaml", {"channels": {"publish": [lease]}})
    for name in SUBSCRIBERS:
        _amend(projects / f"{name}.yaml", {"channels": {"subscribe": ["hub.gpu"]}})
    env["DAGSTER_HOME"] = str(write_instance(tmp_path, INSTANCE_CHANGES))
    env[LOG_VAR] = str(tmp_path / "agents" / "fake_claude.jsonl")
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)

    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            with Sampler(system) as sampler:
                leased = [
                    system.add("sub_a", "lease work BARRIER2:overlap SLEEP1"),
                    system.add("sub_a", "lease work SLEEP2"),
                    system.add("sub_b", "lease work SLEEP2"),
                    system.add("sub_b", "lease work SLEEP2"),
                ]
                free = [
                    system.add("free", "free work BARRIER2:overlap SLEEP1"),
                    system.add("free", "free work SLEEP2"),
                ]
                done = system.wait_finished(*leased, *free, timeout_s=300)
                system.wait_idle()
            failed = [t.id for t in done if t.status is not TaskStatus.SUCCEEDED]
            assert not failed, system.explain(f"tasks {failed} did not succeed")

            runs = {task: system.task_runs(task) for task in [*leased, *free]}
            for task, (run, *_) in runs.items():
                concurrency = run.run_op_concurrency
                pools = (concurrency.all_pools if concurrency else None) or set()
                assert GLOBAL_POOL in pools
                assert (POOL in pools) is (task in leased), (task, pools)
            calls = system.calls()
            barrier = _barrier_lines(system)
        finally:
            system.close()

    samples = sampler.samples
    assert samples and all(s.limit == 1 for s in samples if s.pools.get(POOL)), "limit not 1"
    over = [s for s in samples if s.pools.get(POOL, 0) > 1]
    assert not over, f"two runs held the one-slot lease at once: {over[:3]}"
    both = [s for s in samples if sum(s.runs.active.get(p, 0) for p in SUBSCRIBERS) > 1]
    assert not both, f"two subscribers' task runs at once: {both[:3]}"
    assert any(s.pools.get(POOL) == 1 and s.runs.active.get("free") for s in samples), (
        "`free` never ran while a subscriber held the lease"
    )

    # The agents themselves, from the stand-in's log: one subscriber's at a time.
    ordered = sorted((calls[t] for t in leased), key=lambda c: c.start)
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert before.end is not None and before.end <= after.start, (before, after)
    # `free`'s agent and `sub_a`'s met at the barrier: they ran at the same time.
    assert barrier == [True, True], barrier


def _barrier_lines(system: Orchestrator) -> list[bool]:
    """Whether each agent that waited at a barrier saw the other arrive."""
    return [entry["met"] for entry in events("barrier", system.agent_log)]
