"""A provider's usage limit, through the real `dagster-daemon`: the stand-in `claude` answers as
Claude Code does when its account's plan is used up (a `rate_limit_event` rejected with
`resetsAt`, then an error result with HTTP 429) until a moment the test chose. The runs that hit
it put their tasks back in the queue (session kept, attempt not counted), the account's pool
closes at once and stays closed until the reset plus the grace, while another account's
project works on; then one canary task, then the whole pool, and every task succeeds, the
limited ones continuing their sessions.

Projects `alpha` and `beta` spend the account `anthropic` (the shipped `claude_code` profile,
pool `provider_anthropic`: 2 slots, grace 5 s); `gamma` spends `other` (a copy of the profile).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from orchestration.allocation.providers import ProviderStates, ProviderStatus
from orchestration.tags import provider_pool
from orchestration.tasks.models import USAGE_LIMIT, TaskStatus
from tests.support.agent_log import entries
from tests.support.daemon import daemon_environment, running_daemon, write_instance, write_workspace
from tests.support.orchestrator import (
    INSTANCE_CHANGES,
    LOG_VAR,
    Orchestrator,
    write_registry,
)
from tests.support.paths import path_with_fakes

pytestmark = pytest.mark.slow

PROJECTS = {"alpha": ("normal", 2), "beta": ("normal", 2), "gamma": ("normal", 2)}
POOL = provider_pool("anthropic")
GRACE_S = 5
#: From when the tasks are added until the limit resets: time for the daemon's first ticks
#: and the first runs to start and hit it.
LIMITED_FOR_S = 45


def test_a_usage_limit_pauses_the_account_until_its_reset(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    env = write_registry(tmp_path, PROJECTS, slots=4)
    config = Path(env["ORCH_CONFIG_DIR"])
    pools = yaml.safe_load((config / "pools.yaml").read_text())
    pools[POOL] = {"slots": 2, "grace_seconds": GRACE_S}
    (config / "pools.yaml").write_text(yaml.safe_dump(pools, sort_keys=False))
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    assert agents["profiles"]["claude_code"]["provider_pool"] == "anthropic"
    agents["profiles"]["claude_other"] = agents["profiles"]["claude_code"] | {
        "provider_pool": "other"
    }
    (config / "agents.yaml").write_text(yaml.safe_dump(agents, sort_keys=False))
    gamma = Path(env["ORCH_PROJECTS_DIR"]) / "gamma.yaml"
    spec = yaml.safe_load(gamma.read_text())
    spec["agent"]["profile"] = "claude_other"
    gamma.write_text(yaml.safe_dump(spec, sort_keys=False))

    env["DAGSTER_HOME"] = str(write_instance(tmp_path, INSTANCE_CHANGES))
    agent_log = tmp_path / "agents" / "fake_claude.jsonl"
    env[LOG_VAR] = str(agent_log)
    daemon_env = daemon_environment(env, path=path_with_fakes(os.environ["PATH"]), sandbox=False)

    with running_daemon(tmp_path, write_workspace(tmp_path), daemon_env) as (daemon, log):
        system = Orchestrator(tmp_path, env, daemon, log)
        try:
            reset = int(time.time()) + LIMITED_FOR_S
            limited = [
                system.add(project, f"SLEEP1 LIMITUNTIL{reset} step {i}")
                for project in ("alpha", "beta")
                for i in range(3)
            ]
            others = [system.add("gamma", f"SLEEP2 step {i}") for i in range(2)]

            def closed() -> bool:
                limits = {
                    p.name: p.limit for p in system.instance.event_log_storage.get_pool_limits()
                }
                return limits.get(POOL) == 0

            system.wait_for("the account's pool closed", closed, timeout_s=LIMITED_FOR_S)
            state = ProviderStates(system.store).get("anthropic")
            assert state.status is ProviderStatus.PAUSED
            assert state.until is not None and int(state.until.timestamp()) == reset + GRACE_S
            requeued = [
                t
                for t in system.store.tasks(ids=limited)
                if any(i.get("kind") == USAGE_LIMIT for i in t.interruptions)
            ]
            assert requeued, "no task was put back in the queue by the limit"
            for task in requeued:
                assert task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
                assert task.resume_session

            done_others = system.wait_finished(*others, timeout_s=LIMITED_FOR_S + 60)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done_others)
            done = system.wait_finished(*limited, timeout_s=LIMITED_FOR_S + 240)
            assert all(t.status is TaskStatus.SUCCEEDED for t in done), system.explain("limits")
            assert ProviderStates(system.store).get("anthropic").status is ProviderStatus.OPEN
            system.wait_idle()
        finally:
            system.close()

    lines = entries(agent_log)
    starts = {e["agent"]: e for e in lines if e["event"] == "start"}
    ends = {e["agent"]: e for e in lines if e["event"] == "end"}
    on_account = [e for e in starts.values() if "/gamma/" not in e["cwd"]]
    hit = [a for a in on_account if ends[a["agent"]].get("limited")]
    # Only the runs already working when the limit came hit it: at most the pool's two.
    assert 1 <= len(hit) <= 2, hit
    assert all(a["time"] < reset for a in hit)
    detected = min(ends[a["agent"]]["time"] for a in hit)
    reopened = reset + GRACE_S
    during = [a for a in on_account if detected < a["time"] < reopened and a not in hit]
    assert during == [], "an agent on the paused account started before its reset and grace"
    # Work on the other account went on meanwhile.
    assert any(detected < e["time"] < reopened for e in starts.values() if "/gamma/" in e["cwd"])
    # After the reset: one canary first, alone; the rest once it succeeded.
    after = sorted((a for a in on_account if a["time"] >= reopened), key=lambda a: a["time"])
    assert len(after) == len(limited)
    canary = after[0]
    assert ends[canary["agent"]]["time"] <= after[1]["time"], "the canary did not run alone"
    assert len(on_account) == len(limited) + len(hit)
    # A limited task continued its session.
    sessions = {a["session_id"] for a in hit}
    resumed = [a for a in after if a["options"].get("resume") in sessions]
    assert len(resumed) == len(hit), [a["options"] for a in after]
    tasks = {t.id: t for t in system.store.tasks(ids=limited)}
    assert all(t.attempts == 1 for t in tasks.values()), {t.id: t.attempts for t in tasks.values()}
