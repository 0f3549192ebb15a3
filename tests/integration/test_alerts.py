"""The `alerts` sensor on a real instance and task store, posting to HTTP servers on 127.0.0.1:
one POST per failed task, failed verification and stuck run, even when it ticks again or is
built anew (a restarted daemon); delivered after retries; a dead webhook never slows a tick."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.test_utils import create_run_for_test

from orchestration.alerts.delivery import WebhookSender
from orchestration.cli import main
from orchestration.defs.alerts import ALERTS_SENSOR, build_alerts_sensor
from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import ProjectKeys
from orchestration.defs.resources import AgentTasks, ProjectWorkspaces
from orchestration.tags import PROJECT_TAG, TASK_TAG
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.registry import RegistryDir
from tests.support.webhooks import Post, Sink

LOGGER = "tests.alerts"
#: The part of a webhook URL that is its secret; it must never reach a log.
SECRET = "T0KEN-s3cr3t-path"
FAILING_VERIFY = "verify: [python3, -c, \"raise SystemExit('2 tests failed')\"]\n"


@dataclass
class Alerting:
    """A registry with project alpha, its task store, a real instance, and the sensor."""

    registry: RegistryDir
    instance: dg.DagsterInstance
    store: TaskStore
    sender: WebhookSender
    cursor: str | None = None

    def configure(self, text: str) -> None:
        self.registry.write("config/alerts.yaml", text)

    def tick(self, clock: Callable[[], float] = time.time) -> dg.SensorResult:
        """One evaluation of a newly built sensor (as after a restart), from the last cursor."""
        sensor = build_alerts_sensor(self.sender, clock)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"agent_tasks": AgentTasks()},
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult), result
        if result.cursor is not None:
            self.cursor = result.cursor
        return result

    def delivered(self) -> None:
        assert self.sender.wait_idle(30), "the sender did not finish in time"

    def fail_task(self, reason: str = "agent exited 1: out of memory") -> str:
        task = self.store.add("alpha", "Add a /version endpoint\nand its tests")
        assert task is not None
        self.store.finish(task.id, TaskStatus.FAILED, reason)
        return task.id


def said(result: dg.SensorResult) -> str:
    """What a tick shows in the UI."""
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


@pytest.fixture
def alerting(
    registry_dir: RegistryDir, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Alerting]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.delenv("ORCH_WEBSERVER_URL", raising=False)
    registry_dir.project("alpha", FAILING_VERIFY)
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Alerting(registry_dir, instance, store, WebhookSender(log=logging.getLogger(LOGGER)))
    store.dispose()


def hook(sink: Sink, **keys: object) -> str:
    """An alerts.yaml with one webhook on `sink` (its secret part through ${ORCH_TEST_HOOK})."""
    webhook = {"name": "ops", "url": sink.url + "/hook/${ORCH_TEST_HOOK}", **keys}
    return json.dumps({"webhooks": [webhook], "backoff_s": 0.05})


def test_a_failed_task_posts_one_json_alert_however_often_the_sensor_ticks(
    alerting: Alerting, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_TEST_HOOK", SECRET)
    monkeypatch.setenv("ORCH_WEBSERVER_URL", "http://127.0.0.1:3000")
    alerting.configure(hook(sink))
    assert said(alerting.tick()) == "nothing new to alert"  # the first look

    task_id = alerting.fail_task()
    result = alerting.tick()
    alerting.delivered()
    assert "1 alert(s), posted to 1 webhook(s)" in said(result)

    (post,) = sink.posts
    assert post.path == f"/hook/{SECRET}"
    assert post.content_type.startswith("application/json")
    body = post.body
    assert {k: body[k] for k in ("source", "event", "project", "task_id", "title", "text")} == {
        "source": "orchestration",
        "event": "task_failed",
        "project": "alpha",
        "task_id": task_id,
        "title": f"Task {task_id} of alpha failed",
        "text": "agent exited 1: out of memory",
    }
    assert body["details"]["prompt"] == "Add a /version endpoint"
    assert body["at"].endswith("+00:00")

    for _ in range(3):  # ticks again, each by a sensor built anew as after a restart
        alerting.tick()
    alerting.delivered()
    assert len(sink.posts) == 1


def test_a_stuck_run_posts_once(alerting: Alerting, sink: Sink) -> None:
    alerting.configure(
        json.dumps({"webhooks": [{"name": "ops", "url": sink.url}], "stuck_after_s": 60})
    )
    run = create_run_for_test(
        alerting.instance,
        status=dg.DagsterRunStatus.STARTING,
        tags={PROJECT_TAG: "alpha", TASK_TAG: "t123456789"},
    )
    alerting.instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value,
            job_name=run.job_name,
            message="started",
        ),
        run_id=run.run_id,
    )
    young = alerting.tick()
    assert said(young) == "nothing new to alert"

    later = lambda: time.time() + 90  # noqa: E731 - the run is 90 s old now
    alerting.tick(later)
    alerting.tick(later)
    alerting.delivered()
    (post,) = sink.posts
    assert (post.body["event"], post.body["run_id"]) == ("run_stuck", run.run_id)
    assert (post.body["project"], post.body["task_id"]) == ("alpha", "t123456789")
    assert "in progress for 1 min" in post.body["title"]


def test_a_failed_verification_posts_once(alerting: Alerting, sink: Sink) -> None:
    alerting.configure(json.dumps({"webhooks": [{"name": "ops", "url": sink.url}]}))
    alerting.tick()
    keys = ProjectKeys("alpha")
    defs = build_definitions(alerting.registry.load())
    result = dg.materialize(
        [defs.get_assets_def(keys.verification)],
        selection=[keys.verification],
        instance=alerting.instance,
        resources={"workspaces": ProjectWorkspaces()},
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed

    alerting.tick()
    alerting.tick()
    alerting.delivered()
    (post,) = sink.posts
    assert post.body["event"] == "verification_failed"
    assert (post.body["project"], post.body["run_id"]) == ("alpha", result.run_id)
    assert post.body["title"] == "Verification of alpha failed"
    assert "2 tests failed" in post.body["text"]


def test_a_verification_run_that_failed_before_its_check_posts_that_it_could_not_run(
    alerting: Alerting, sink: Sink
) -> None:
    alerting.configure(json.dumps({"webhooks": [{"name": "ops", "url": sink.url}]}))
    alerting.tick()
    keys = ProjectKeys("alpha")
    defs = build_definitions(alerting.registry.load())
    # The project's file breaks after the definitions loaded: its run fails before the check.
    project_file = alerting.registry.root / "projects" / "alpha.yaml"
    original = project_file.read_text()
    project_file.write_text("name: alpha\nrepo: [not, a, path]\n")
    result = dg.materialize(
        [defs.get_assets_def(keys.verification)],
        selection=[keys.verification],
        instance=alerting.instance,
        resources={"workspaces": ProjectWorkspaces()},
        raise_on_error=False,
    )
    assert not result.success
    # The project is broken now, so the registry has no verification for it: the run is
    # alerted once the file is fixed.
    assert said(alerting.tick()) == "nothing new to alert"
    project_file.write_text(original)
    alerting.tick()
    alerting.tick()
    alerting.delivered()
    (post,) = sink.posts
    assert post.body["event"] == "verification_failed"
    assert post.body["title"] == "Verification of alpha could not run"
    assert "alpha" in post.body["text"] and "repo" in post.body["text"]


def test_a_webhook_that_fails_twice_gets_the_alert_on_the_third_try(
    alerting: Alerting,
    sink: Sink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_TEST_HOOK", SECRET)
    sink.answer = lambda _post: (503, "busy") if len(sink.posts) <= 2 else (200, "ok")
    alerting.configure(hook(sink))
    alerting.tick()
    task_id = alerting.fail_task()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        alerting.tick()
        alerting.delivered()

    assert len(sink.posts) == 3
    assert {post.body["task_id"] for post in sink.posts} == {task_id}
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("HTTP 503" in m and "trying again" in m for m in messages) == 2
    assert any("delivered to webhook ops (http://127.0.0.1:" in m for m in messages)
    assert any("try 3 of 4" in m for m in messages)
    assert not any(SECRET in m for m in messages)


def test_a_dead_webhook_never_slows_a_tick_and_its_failure_is_logged(
    alerting: Alerting, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook accepts connections and never answers: each POST waits out its timeout (2 s),
    twice (one retry); the tick that queued the alert does not wait for any of it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("ORCH_TEST_HOOK", SECRET)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook/${{ORCH_TEST_HOOK}}"
    alerting.configure(
        json.dumps(
            {
                "webhooks": [{"name": "ops", "url": url, "timeout_s": 2}],
                "retries": 1,
                "backoff_s": 0.1,
            }
        )
    )
    alerting.tick()
    alerting.fail_task()
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            started = time.monotonic()
            result = alerting.tick()
            took = time.monotonic() - started
            assert "1 alert(s), posted to 1 webhook(s)" in said(result)
            assert alerting.sender.pending == 1  # still trying, in the background
            alerting.delivered()
    finally:
        silent.close()
    assert took < 1.0, f"the tick waited for the webhook ({took:.2f} s)"
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    (failure,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert "was not delivered to webhook ops" in failure.getMessage()
    assert "gave up after try 2 of 2" in failure.getMessage()
    assert not any(SECRET in m for m in messages)


def test_the_slack_format_is_what_slack_accepts(alerting: Alerting, sink: Sink) -> None:
    """The sink answers as Slack does: 400 `invalid_blocks` unless the shape is right."""

    def slack(post: Post) -> tuple[int, str]:
        body = post.body
        ok = (
            isinstance(body.get("text"), str)
            and body["text"]
            and isinstance(body.get("blocks"), list)
            and 0 < len(body["blocks"]) <= 50
            and all(valid_block(block) for block in body["blocks"])
        )
        return (200, "ok") if ok else (400, "invalid_blocks")

    sink.answer = slack
    alerting.configure(
        json.dumps({"webhooks": [{"name": "team", "url": sink.url, "format": "slack"}]})
    )
    alerting.tick()
    task_id = alerting.fail_task("tests failed: <2> & more")
    alerting.tick()
    alerting.delivered()
    (post,) = sink.posts
    assert slack(post) == (200, "ok")
    assert task_id in post.body["text"] and "&lt;2&gt; &amp; more" in post.body["text"]


def valid_block(block: dict[str, Any]) -> bool:
    """The rules of Slack's Block Kit for the blocks an alert uses."""
    kind = block.get("type")
    if kind == "header":
        text = block["text"]
        return text["type"] == "plain_text" and 0 < len(text["text"]) <= 150
    if kind == "section":
        if "text" in block:
            return block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
        fields = block.get("fields", [])
        return 0 < len(fields) <= 10 and all(len(f["text"]) <= 2000 for f in fields)
    if kind == "context":
        return 0 < len(block["elements"]) <= 10
    return False


def test_the_sensor_exists_only_with_the_alerts_file(alerting: Alerting, sink: Sink) -> None:
    defs = build_definitions(alerting.registry.load())
    assert ALERTS_SENSOR not in {s.name for s in defs.sensors or []}

    alerting.configure("webhooks: [{name: ops, url: 'ftp://nowhere'}]\n")
    defs = build_definitions(alerting.registry.load())
    assert ALERTS_SENSOR in {s.name for s in defs.sensors or []}  # broken: says why on ticks
    result = alerting.tick()
    assert "config/alerts.yaml is fixed" in said(result)
    assert "webhooks[0].url" in said(result)
    assert result.cursor is None

    alerting.configure(json.dumps({"webhooks": [{"name": "ops", "url": sink.url}]}))
    assert said(alerting.tick()) == "nothing new to alert"


def test_a_webhook_that_wants_other_events_gets_nothing(alerting: Alerting, sink: Sink) -> None:
    alerting.configure(
        json.dumps({"webhooks": [{"name": "ops", "url": sink.url, "events": ["run_stuck"]}]})
    )
    alerting.tick()
    alerting.fail_task()
    result = alerting.tick()
    alerting.delivered()
    assert "1 alert(s), posted to 0 webhook(s)" in said(result)
    assert sink.posts == []


def test_orch_validate_reports_the_alerts_file(alerting: Alerting) -> None:
    alerting.configure(f"webhooks:\n  - name: ops\n    url: ftp://hooks.example.com/{SECRET}\n")
    result = CliRunner().invoke(main, ["validate"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "alerts.yaml" in result.output and "webhooks[0].url" in result.output
    assert SECRET not in result.output

    alerting.configure("webhooks:\n  - {name: ops, url: '${ORCH_TEST_UNSET_HOOK}'}\n")
    result = CliRunner().invoke(main, ["validate"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "warning:" in result.output and "${ORCH_TEST_UNSET_HOOK} is not set" in result.output
