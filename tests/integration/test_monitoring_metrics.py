"""`orch metrics serve` as a user runs it: a separate process on a free port, over a real
registry, the real SQLite task store and a real Dagster instance, scraped over HTTP with
urllib; each scrape reads the state then; Ctrl-C (SIGINT) stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.test_utils import create_run_for_test

from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.allocation.providers import ProviderStates
from orchestration.cli import main
from orchestration.control.states import ProjectState
from orchestration.control.store import ProjectStates
from orchestration.tags import PROJECT_TAG, TASK_TAG
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

#: The child: `orch ARGS...` with Ctrl-C delivered as a terminal delivers it (a shell without
#: job control may have started the test run with SIGINT ignored, which a child inherits).
CHILD = """\
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.allocation.providers import ProviderStates
from orchestration.cli import main
main(sys.argv[1:], prog_name="orch")
"""
SERVING = re.compile(r"serving metrics on (http://\S+)")


@pytest.fixture
def store(registry_dir: RegistryDir) -> Iterator[TaskStore]:
    registry_dir.project("alpha")
    registry_dir.project("beta")
    opened = TaskStore.from_settings(registry_dir.settings, environ={})
    yield opened
    opened.dispose()


@pytest.fixture
def server(
    registry_dir: RegistryDir, dagster_home: Path, tmp_path: Path, store: TaskStore
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`orch metrics serve --port 0` running; the process, its URL and its stderr file."""
    settings = registry_dir.settings
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ORCH_TASKS_DB_URL")}
    env |= {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "DAGSTER_HOME": str(dagster_home),
    }
    stderr = tmp_path / "metrics.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, "metrics", "serve", "--host", "127.0.0.1", "--port", "0"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 120
        while not (found := SERVING.search(stderr.read_text())):
            assert process.poll() is None, f"the exporter exited: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"the exporter did not start: {stderr.read_text()}"
            time.sleep(0.1)
        yield process, found.group(1), stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def scrape(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode().splitlines()


def test_scrape_then_ctrl_c(
    server: tuple[subprocess.Popen[bytes], str, Path],
    store: TaskStore,
    instance: dg.DagsterInstance,
) -> None:
    process, url, stderr = server
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    done = store.add("alpha", "done")
    running = store.add("alpha", "running")
    assert done and running
    store.claim(done.id, "run-done")
    store.finish(
        done.id,
        TaskStatus.SUCCEEDED,
        run_id="run-done",
        cost_usd=1.25,
        tokens_in=120,
        tokens_out=30,
    )
    store.claim(running.id, "run-running")
    create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={TASK_TAG: running.id, PROJECT_TAG: "alpha"},
    )
    ProjectStates(store).set("beta", ProjectState.STOPPED, expected=ProjectState.ACTIVE)

    lines = scrape(url)
    for line in [
        'orch_tasks{project="alpha",status="succeeded"} 1.0',
        'orch_tasks{project="alpha",status="running"} 1.0',
        'orch_tasks{project="alpha",status="queued"} 0.0',
        'orch_running_agents{project="alpha"} 1.0',
        'orch_running_agents{project="beta"} 0.0',
        'orch_cost_usd_total{project="alpha"} 1.25',
        'orch_tokens_total{direction="in",project="alpha"} 120.0',
        'orch_tokens_total{direction="out",project="alpha"} 30.0',
        'orch_project_state{project="beta",state="stopped"} 1.0',
        'orch_project_state{project="beta",state="active"} 0.0',
        'orch_project_state{project="alpha",state="active"} 1.0',
        'orch_pool_slots{pool="agents"} 4.0',
        'orch_pool_slots{pool="heavy"} 1.0',
        'orch_pool_in_use{pool="agents"} 1.0',
        'orch_pool_in_use{pool="heavy"} 0.0',
        # both tasks of alpha started within a second or so of being added
        'orch_queue_wait_seconds_count{project="alpha"} 2.0',
        'orch_queue_wait_seconds_bucket{le="+Inf",project="alpha"} 2.0',
        'orch_queue_wait_seconds_bucket{le="5.0",project="alpha"} 2.0',
        "# TYPE orch_queue_wait_seconds histogram",
        "# TYPE orch_cost_usd_total counter",
        "# TYPE orch_provider_paused gauge",
    ]:
        assert line in lines, f"{line!r} not in the scrape:\n" + "\n".join(lines)

    # the next scrape reads the state as it is then
    assert store.add("alpha", "one more")
    store.cancel(running.id)
    lines = scrape(url)
    assert 'orch_tasks{project="alpha",status="queued"} 1.0' in lines
    assert 'orch_tasks{project="alpha",status="cancelled"} 1.0' in lines
    assert 'orch_running_agents{project="alpha"} 0.0' in lines

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, stderr.read_text()
    assert "stopped" in stderr.read_text()
    assert "Traceback" not in stderr.read_text()


def test_sigterm_stops_it_too(server: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, url, stderr = server
    assert any(line.startswith("orch_tasks") for line in scrape(url))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, stderr.read_text()
    assert "stopped" in stderr.read_text()


def test_a_provider_paused_by_a_usage_limit(
    server: tuple[subprocess.Popen[bytes], str, Path], store: TaskStore
) -> None:
    _process, url, _stderr = server
    lines = scrape(url)
    assert 'orch_provider_paused{provider="anthropic"} 0.0' in lines
    assert 'orch_pool_slots{pool="provider_anthropic"} 4.0' in lines

    now = datetime.now(UTC)
    states = ProviderStates(store)
    limit = UsageLimit(LimitKind.USAGE_LIMIT, now + timedelta(hours=1), "rate_limit_event")
    states.hit_limit("anthropic", limit, task=None, now=now, grace_s=90.0)
    lines = scrape(url)
    assert 'orch_provider_paused{provider="anthropic"} 1.0' in lines
    assert 'orch_provider_paused{provider="openai"} 0.0' in lines
    assert 'orch_pool_slots{pool="provider_anthropic"} 0.0' in lines

    states.resume("anthropic", now, "test")
    assert 'orch_provider_paused{provider="anthropic"} 0.0' in scrape(url)


def test_a_port_in_use_is_an_error(registry_dir: RegistryDir, store: TaskStore) -> None:
    settings = registry_dir.settings
    env = {
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "ORCH_TASKS_DB_URL": None,
        "DAGSTER_HOME": None,
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["metrics", "serve", "--port", str(port)], env=env)
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
