"""A task whose agent stops at its provider account's usage limit, run as the Dagster asset runs
it (`AgentTasks.execute`) with the stand-in `claude` speaking Claude Code's stream-json: the task
goes back to the queue with its session and its work so far, that attempt not counted, and the
account is paused until its reset plus the grace; run again after the reset it continues its
session and succeeds. A plain 429 pauses the account briefly; a profile that names no account
fails the task as any agent error."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orchestration.allocation.providers import (
    DEFAULT_GRACE_S,
    TRANSIENT_MIN_S,
    ProviderStates,
    ProviderStatus,
)
from orchestration.defs.resources import AgentTasks
from orchestration.tasks.execution import ProviderLimited
from orchestration.tasks.models import USAGE_LIMIT, TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.agent_log import events
from tests.support.git import git
from tests.support.paths import FAKE_CLAUDE, path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_provider_limits")
AGENT = "agent:\n  profile: claude_code\n"


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryDir]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    monkeypatch.delenv("ORCH_CLOCK_OFFSET_S", raising=False)
    registry_dir.project("alpha", AGENT)
    yield registry_dir


@pytest.fixture
def store(registry: RegistryDir) -> Iterator[TaskStore]:
    opened = TaskStore.from_settings(registry.settings, environ={})
    yield opened
    opened.dispose()


def execute(store: TaskStore, task_id: str, run_id: str) -> None:
    store.mark_dispatched(task_id)
    AgentTasks().execute("alpha", task_id, run_id, LOG)


def starts(registry: RegistryDir) -> list[dict]:
    logs = sorted(registry.settings.home.glob("workspaces/alpha/agents/*/fake_claude.jsonl"))
    return events("start", *logs)


def test_a_usage_limit_queues_the_task_to_continue_after_the_reset(
    registry: RegistryDir, store: TaskStore
) -> None:
    reset = int(time.time()) + 3
    task = store.add("alpha", f"limited\nAPPEND notes.txt begun\nLIMITUNTIL{reset}")

    with pytest.raises(ProviderLimited) as raised:
        execute(store, task.id, "run-1")
    assert raised.value.account == "anthropic"

    queued = store.require(task.id)
    assert queued.status is TaskStatus.QUEUED and queued.attempts == 0
    (entry,) = queued.interruptions
    assert entry["kind"] == USAGE_LIMIT and entry["limit"]["source"] == "rate_limit_event"
    session = starts(registry)[0]["session_id"]
    assert queued.resume_session == session
    # The work so far is on the task's branch, never taken for its result.
    clone = registry.settings.home / "workspaces" / "alpha" / "repo.git"
    branch = f"orch/alpha/{task.id}"
    assert git(clone, "show", f"{branch}:notes.txt") == "begun"
    assert "Orch-Interrupted: true" in git(clone, "log", "-1", "--format=%B", branch)

    state = ProviderStates(store).get("anthropic")
    assert state.status is ProviderStatus.PAUSED and state.source_task == task.id
    assert state.until == datetime.fromtimestamp(reset, UTC) + timedelta(seconds=DEFAULT_GRACE_S)

    time.sleep(max(0.0, reset - time.time()) + 0.2)
    execute(store, task.id, "run-2")
    done = store.require(task.id)
    assert done.status is TaskStatus.SUCCEEDED, done.reason
    assert done.attempts == 1
    second = starts(registry)[1]
    assert second["options"].get("resume") == session
    assert git(clone, "show", f"{done.commit}:notes.txt") == "begun\nbegun"
    # A task that succeeds while the account is still paused (it started before the pause)
    # does not end the pause: only the canary or the clock does.
    assert ProviderStates(store).get("anthropic").status is ProviderStatus.PAUSED


def test_a_plain_429_pauses_the_account_briefly(registry: RegistryDir, store: TaskStore) -> None:
    task = store.add("alpha", "busy RATE429")
    before = datetime.now(UTC)
    with pytest.raises(ProviderLimited):
        execute(store, task.id, "run-1")
    assert store.require(task.id).status is TaskStatus.QUEUED
    state = ProviderStates(store).get("anthropic")
    assert state.status is ProviderStatus.PAUSED and state.until is not None
    paused_for = (state.until - before).total_seconds()
    assert TRANSIENT_MIN_S - 1 <= paused_for <= TRANSIENT_MIN_S + 30


def test_a_profile_without_an_account_fails_the_task_as_any_agent_error(
    registry: RegistryDir, store: TaskStore
) -> None:
    registry.add_profile("plain", FAKE_CLAUDE)
    registry.project("beta", "agent:\n  profile: plain\n")
    task = store.add("beta", f"limited LIMITUNTIL{int(time.time()) + 60}")
    store.mark_dispatched(task.id)
    outcome = AgentTasks().execute("beta", task.id, "run-1", LOG)
    assert outcome.agent.limit is not None, "the limit is read, only not acted on"
    failed = store.require(task.id)
    assert failed.status is TaskStatus.FAILED and "hit your limit" in (failed.reason or "")
    assert ProviderStates(store).all() == {}
