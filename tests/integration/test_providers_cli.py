"""`orch providers list|resume`, `orch allocation show` and `orch status` on provider accounts:
a real registry with the shipped agent profiles in a temporary directory, the real SQLite task
store where a usage limit is recorded as a run records it (`ProviderStates.hit_limit`), and a
real Dagster instance whose pool limits `resume` sets."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.allocation.control import apply_pool_limits, settings_now
from orchestration.allocation.providers import ProviderStates, ProviderStatus, provider_pools
from orchestration.cli import main
from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

Invoke = Callable[..., Result]
NOW = datetime.now(UTC).replace(microsecond=0)
RESETS_AT = NOW + timedelta(hours=2)
#: As `orch` prints a moment: UTC to the second.
UNTIL = (RESETS_AT + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    """One project; the shipped agent profiles (claude_code spends `anthropic`) and pools
    (the global pool has 4 slots, no provider pool is configured)."""
    registry_dir.project("alpha")
    return registry_dir


@pytest.fixture
def orch(registry: RegistryDir, dagster_home: Path) -> Invoke:
    """`orch ARGS...` against `registry`, with DAGSTER_HOME at the test's instance."""
    settings = registry.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "ORCH_TASKS_DB_URL": None,
        "ORCH_CLOCK_OFFSET_S": None,
        "DAGSTER_HOME": str(dagster_home),
    }

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def paused(store: TaskStore) -> str:
    """`anthropic` paused by a five-hour usage limit that resets in two hours, hit by a task of
    alpha; the task's id."""
    task = store.add("alpha", "work")
    assert task is not None
    limit = UsageLimit(
        LimitKind.USAGE_LIMIT,
        RESETS_AT,
        "rate_limit_event",
        window="five_hour",
        message="You've hit your limit",
    )
    state = ProviderStates(store).hit_limit("anthropic", limit, task=task.id, now=NOW, grace_s=90.0)
    assert state.status is ProviderStatus.PAUSED
    return task.id


def pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    return {limit.name: limit.limit for limit in instance.event_log_storage.get_pool_limits()}


def test_list_names_every_account_of_the_profiles(registry: RegistryDir, orch: Invoke) -> None:
    accounts = provider_pools(registry.load().agents.profiles)  # type: ignore[union-attr]
    assert "anthropic" in accounts

    result = orch("providers", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [row["name"] for row in data] == accounts
    for row in data:
        assert (row["status"], row["paused"], row["until"]) == ("open", False, None)
        assert (row["pool"], row["limit"], row["configured"]) == (f"provider_{row['name']}", 4, 4)


def test_list_shows_a_pause_with_until_reason_window_and_task(
    registry: RegistryDir, orch: Invoke, store: TaskStore, paused: str
) -> None:
    ProviderStates(store).hit_limit(
        "gone",
        UsageLimit(LimitKind.TRANSIENT, None, "retry_429"),
        task=None,
        now=NOW,
        grace_s=90.0,
    )
    data = {row["name"]: row for row in json.loads(orch("providers", "list", "--json").stdout)}
    anthropic = data["anthropic"]
    assert anthropic["status"] == "paused" and anthropic["paused"] is True
    assert anthropic["until"] == UNTIL
    assert (anthropic["window"], anthropic["source_task"]) == ("five_hour", paused)
    assert anthropic["reason"].startswith("usage limit; resets ")
    assert "You've hit your limit" in anthropic["reason"]
    assert anthropic["since"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (anthropic["limit"], anthropic["configured"]) == (0, 4)
    assert data["openai"]["status"] == "open"
    # An account recorded but no longer named by a profile is still listed.
    assert data["gone"]["status"] == "paused" and data["gone"]["window"] is None

    result = orch("providers", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["ACCOUNT", "STATUS", "LIMIT", "UNTIL"]
    line = next(row for row in rows if row.startswith("anthropic "))
    assert "paused" in line and "4 -> 0" in line and UNTIL in line
    assert "five_hour" in line and paused in line


def test_resume_opens_the_account_and_its_pool_at_once(
    registry: RegistryDir,
    orch: Invoke,
    store: TaskStore,
    instance: dg.DagsterInstance,
    paused: str,
) -> None:
    # The pool limits as the dispatch sensor set them while the account was paused.
    apply_pool_limits(instance, settings_now(registry.load(), store).pool_limits())
    assert pool_limits(instance)["provider_anthropic"] == 0

    result = orch("providers", "resume", "anthropic")
    assert result.exit_code == 0, result.output
    assert "provider anthropic: paused -> open" in result.stdout
    assert "pool provider_anthropic: 0 -> 4" in result.stdout
    assert "pool limits changed: provider_anthropic" in result.stderr
    assert pool_limits(instance)["provider_anthropic"] == 4
    state = ProviderStates(store).get("anthropic")
    assert state.status is ProviderStatus.OPEN and state.until is None
    assert state.actor == getpass.getuser()
    assert state.reason == f"resumed by {getpass.getuser()}"

    again = orch("providers", "resume", "anthropic")
    assert again.exit_code == 0, again.output
    assert "provider anthropic is open already" in again.stdout


def test_resume_of_an_unknown_account_names_the_known_ones(
    registry: RegistryDir, orch: Invoke, paused: str
) -> None:
    result = orch("providers", "resume", "anthropics")
    assert result.exit_code == 1
    assert result.stdout == ""
    accounts = ", ".join(provider_pools(registry.load().agents.profiles))  # type: ignore[union-attr]
    assert f"error: no provider account 'anthropics': the accounts are {accounts}" in result.stderr
    assert str(registry.settings.config_dir / "agents.yaml") in result.stderr


def test_allocation_show_has_a_line_per_provider_pool(
    orch: Invoke, store: TaskStore, paused: str
) -> None:
    result = orch("allocation", "show")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    anthropic = next(line for line in lines if line.startswith("provider_anthropic "))
    assert anthropic.split()[1:] == [
        "0/4",
        "paused",
        "until",
        UNTIL,
        "(five_hour,",
        "from",
        "task",
        f"{paused})",
    ]
    openai = next(line for line in lines if line.startswith("provider_openai "))
    assert openai.split()[1:] == ["4/4", "open"]

    data = json.loads(orch("allocation", "show", "--json").stdout)
    providers = {row["name"]: row for row in data["providers"]}
    assert providers["anthropic"]["status"] == "paused"
    assert (providers["anthropic"]["limit"], providers["anthropic"]["until"]) == (0, UNTIL)
    assert providers["anthropic"]["backoff_s"] == 0.0
    assert data["pools"]["provider_anthropic"] == 0


def test_status_lists_the_providers(orch: Invoke, store: TaskStore, paused: str) -> None:
    data = json.loads(orch("status", "--json").stdout)
    providers = {row["name"]: row for row in data["providers"]}
    assert providers["anthropic"]["paused"] is True
    assert providers["anthropic"]["until"] == UNTIL
    assert providers["openai"]["paused"] is False

    result = orch("status")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("providers: "))
    assert f"anthropic 0/4 paused until {UNTIL} (five_hour, from task {paused})" in line
    assert "openai 4/4 open" in line


def test_list_does_not_import_dagster(registry: RegistryDir, store: TaskStore, paused: str) -> None:
    settings = registry.settings
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ORCH_TASKS_DB_URL")}
    env |= {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
    }
    child = (
        "import sys\n"
        "from orchestration.cli import main\n"
        "try:\n"
        "    main(['providers', 'list'], prog_name='orch', standalone_mode=False)\n"
        "finally:\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster')\n"
        "    print('dagster modules:', len(loaded), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dagster modules: 0" in result.stderr
    assert "anthropic" in result.stdout and UNTIL in result.stdout
