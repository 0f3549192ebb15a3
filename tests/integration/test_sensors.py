"""The `task_dispatch` sensor evaluated in this process (`dg.build_sensor_context` on a real
instance, the real task store and a real registry on disk): it reads the live registry, never
burns a task on a broken set-up, and asks for a reload when a project is new."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.defs.resources import AgentTasks
from orchestration.defs.sensors import build_dispatch_sensor, build_import_sensor
from orchestration.sharding import WHOLE, Shard
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.registry import RegistryDir

TASKS = dg.AssetSelection.all()
MISSING_PROGRAM_PROFILE = """
  missing:
    description: A CLI that is not installed.
    argv: [orch-test-no-such-agent, -p, --, "{prompt}"]
    output: text
"""


@dataclass
class Setup:
    registry: RegistryDir
    instance: dg.DagsterInstance
    store: TaskStore

    def tick(self, loaded: set[str], shard: Shard = WHOLE) -> dg.SensorResult | dg.SkipReason:
        """One evaluation of the sensor of definitions that hold the projects `loaded` (of
        `shard`)."""
        sensor = build_dispatch_sensor(loaded, TASKS, shard)
        context = dg.build_sensor_context(
            instance=self.instance, resources={"agent_tasks": AgentTasks()}
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult | dg.SkipReason), result
        return result

    def requested(self, loaded: set[str], shard: Shard = WHOLE) -> list[str]:
        result = self.tick(loaded, shard)
        assert isinstance(result, dg.SensorResult), result
        return [request.partition_key for request in result.run_requests or []]

    def add(self, project: str, prompt: str = "work", **options: object) -> Task:
        task = self.store.add(project, prompt, **options)  # type: ignore[arg-type]
        assert task is not None
        return task

    def task(self, task_id: str) -> Task:
        return self.store.require(task_id)


@pytest.fixture
def setup(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.delenv("ORCH_WEBSERVER_URL", raising=False)
    registry_dir.project("alpha")
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    with dg.instance_for_test() as instance:
        yield Setup(registry_dir, instance, store)
    store.dispose()


def test_queued_tasks_of_a_valid_project_are_requested_once(setup: Setup) -> None:
    task = setup.add("alpha")
    assert setup.requested({"alpha"}) == [task.id]
    assert setup.requested({"alpha"}) == []  # dispatched already
    assert setup.instance.has_dynamic_partition("alpha_tasks", task.id)


def test_a_broken_agents_file_dispatches_nothing_and_burns_nothing(setup: Setup) -> None:
    agents = setup.registry.root / "config" / "agents.yaml"
    agents.write_text("profiles: [not, a, map]\n")
    tasks = [setup.add("alpha"), setup.add("alpha")]

    result = setup.tick({"alpha"})

    assert isinstance(result, dg.SkipReason)
    assert str(agents) in (result.skip_message or "")
    for task in tasks:
        current = setup.task(task.id)
        assert current.status is TaskStatus.QUEUED and not current.dispatched

    agents.unlink()  # a missing file is the same
    assert isinstance(setup.tick({"alpha"}), dg.SkipReason)
    assert [setup.task(t.id).status for t in tasks] == [TaskStatus.QUEUED] * 2


def test_a_project_added_while_running_waits_for_the_reload_then_runs(setup: Setup) -> None:
    setup.registry.project("beta")  # a new file: the loaded definitions only have alpha
    task = setup.add("beta")

    assert setup.requested({"alpha"}) == []
    waiting = setup.task(task.id)
    assert waiting.status is TaskStatus.QUEUED  # not blocked: the live registry has beta
    assert "code location" in (waiting.reason or "")

    # Once the code location has reloaded, its sensor knows beta.
    assert setup.requested({"alpha", "beta"}) == [task.id]


def test_a_new_project_makes_the_sensor_ask_the_webserver_to_reload(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[dict] = []
    arrived = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": {}}')
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ORCH_WEBSERVER_URL", f"http://127.0.0.1:{server.server_port}")
        setup.registry.project("beta")
        setup.add("beta")
        setup.tick({"alpha"})
        assert arrived.wait(10), "no reload was requested"
    finally:
        server.shutdown()
    (request,) = received
    assert request["path"] == "/graphql"
    assert "reloadWorkspace" in request["body"]["query"]


def test_a_broken_project_file_keeps_its_tasks_queued_until_fixed(setup: Setup) -> None:
    task = setup.add("alpha")
    good = (setup.registry.root / "projects" / "alpha.yaml").read_text()
    (setup.registry.root / "projects" / "alpha.yaml").write_text(good + "priority: urgent\n")

    assert setup.requested({"alpha"}) == []
    waiting = setup.task(task.id)
    assert waiting.status is TaskStatus.QUEUED
    assert "registry errors" in (waiting.reason or "")

    (setup.registry.root / "projects" / "alpha.yaml").write_text(good)
    assert setup.requested({"alpha"}) == [task.id]


def test_a_task_of_a_project_that_is_gone_is_blocked_and_can_be_retried(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = setup.add("alpha")
    alpha = setup.registry.root / "projects" / "alpha.yaml"
    text = alpha.read_text()
    alpha.unlink()
    assert setup.requested({"alpha"}) == []
    assert setup.task(task.id).status is TaskStatus.BLOCKED

    alpha.write_text(text)
    result = CliRunner().invoke(main, ["task", "retry", task.id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    retried = setup.task(task.id)
    assert retried.status is TaskStatus.QUEUED and retried.reason is None
    assert setup.requested({"alpha"}) == [task.id]


def test_a_missing_agent_program_fails_one_task_and_holds_the_rest(setup: Setup) -> None:
    agents = setup.registry.root / "config" / "agents.yaml"
    agents.write_text(agents.read_text().rstrip("\n") + "\n" + MISSING_PROGRAM_PROFILE)
    first = setup.add("alpha", profile="missing")
    second = setup.add("alpha", profile="missing")
    other = setup.add("alpha")  # the project's own profile is installed

    assert setup.requested({"alpha"}) == [other.id]
    failed = setup.task(first.id)
    assert failed.status is TaskStatus.FAILED
    assert "'orch-test-no-such-agent'" in (failed.reason or "")
    assert "not on PATH" in (failed.reason or "")
    held = setup.task(second.id)
    assert held.status is TaskStatus.QUEUED and "held" in (held.reason or "")

    assert setup.requested({"alpha"}) == []  # still held while nothing changed
    assert setup.task(second.id).status is TaskStatus.QUEUED

    agents.write_text(agents.read_text() + "# edited\n")  # the registry changed: try again
    assert setup.requested({"alpha"}) == []
    assert setup.task(second.id).status is TaskStatus.FAILED


def test_an_unknown_task_profile_waits_instead_of_failing(setup: Setup) -> None:
    task = setup.add("alpha", profile="gone_profile")
    assert setup.requested({"alpha"}) == []
    waiting = setup.task(task.id)
    assert waiting.status is TaskStatus.QUEUED
    assert "unknown agent profile 'gone_profile'" in (waiting.reason or "")


@pytest.mark.parametrize("status", ["running", "succeeded", "queued"])
def test_retry_refuses_a_task_that_is_not_over_or_succeeded(setup: Setup, status: str) -> None:
    task = setup.add("alpha")
    if status != "queued":
        setup.store.claim(task.id, "run-1")
    if status == "succeeded":
        setup.store.finish(task.id, TaskStatus.SUCCEEDED)
    result = CliRunner().invoke(main, ["task", "retry", task.id])
    assert result.exit_code == 1
    assert f"task {task.id} is {status}" in result.stderr
    assert setup.task(task.id).status is TaskStatus(status)


def test_retry_of_a_failed_task_is_a_new_attempt(setup: Setup, tmp_path: Path) -> None:
    task = setup.add("alpha")
    assert setup.requested({"alpha"}) == [task.id]
    setup.store.claim(task.id, "run-1")
    setup.store.finish(task.id, TaskStatus.FAILED, "agent failed")

    result = CliRunner().invoke(main, ["task", "retry", task.id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "attempt 2" in result.stdout

    sensor_result = setup.tick({"alpha"})
    assert isinstance(sensor_result, dg.SensorResult)
    (request,) = sensor_result.run_requests or []
    assert request.run_key == f"{task.id}.2"


def test_each_shard_launches_its_own_projects_tasks_and_the_primary_keeps_the_pools(
    setup: Setup,
) -> None:
    names = [f"p{i}" for i in range(8)]
    for name in names:
        setup.registry.project(name)
    shards = [Shard(i, 2) for i in range(2)]
    held = [{n for n in names if shard.holds(n)} for shard in shards]
    assert all(held)
    tasks = {name: setup.add(name) for name in names}

    assert set(setup.requested(held[1], shards[1])) == {tasks[n].id for n in held[1]}
    # Shard 1 launched its own projects' tasks only, left shard 0's alone (not waiting for a
    # reload), and set no pool limits: the primary keeps them.
    for name in names:
        current = setup.task(tasks[name].id)
        assert current.dispatched == (name in held[1]), name
        assert "code location" not in (current.reason or "")
    assert not setup.instance.event_log_storage.get_pool_limits()

    launched = set(setup.requested(held[0], shards[0]))
    assert launched == {tasks[n].id for n in held[0]}
    assert {limit.name for limit in setup.instance.event_log_storage.get_pool_limits()}


def test_the_import_sensor_takes_projects_in_turn_within_its_budget(setup: Setup) -> None:
    setup.registry.project("beta")
    setup.registry.project("gamma")
    sensor = build_import_sensor(budget_s=0)  # one project a tick
    cursor: str | None = None
    seen = []
    for _ in range(4):
        context = dg.build_sensor_context(
            instance=setup.instance, resources={"agent_tasks": AgentTasks()}, cursor=cursor
        )
        result = sensor(context)
        assert isinstance(result, dg.SkipReason)
        assert "from 1 project(s); the other 2 next tick" in (result.skip_message or "")
        cursor = context.cursor
        seen.append(cursor)
    assert seen == ["alpha", "beta", "gamma", "alpha"]

    everything = build_import_sensor()(
        dg.build_sensor_context(
            instance=setup.instance, resources={"agent_tasks": AgentTasks()}, cursor="beta"
        )
    )
    assert isinstance(everything, dg.SkipReason)
    assert "from 3 project(s)" in (everything.skip_message or "")
    assert "next tick" not in (everything.skip_message or "")
