"""The real dagster-webserver on the shipped workspace.yaml and registry, asked over GraphQL and
looked at in a real browser (Debian's headless Chromium through its ChromeDriver).

The browser tests skip when Chromium or ChromeDriver is missing, unless ORCH_REQUIRE_BROWSER is
set (CI sets it, after installing both), so a developer without a browser can still run the
rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.cli.up import detect_before_serving
from orchestration.defs.monitoring import PORTFOLIO_KEY, build_monitoring_sensor, usage_key
from orchestration.defs.reload import WEBSERVER_URL_VAR
from orchestration.defs.resources import AgentTasks
from orchestration.registry import load_registry
from orchestration.samples import SAMPLE_PROJECTS, ensure_sample_repos
from orchestration.settings import CONFIG_DIR_VAR, HOME_VAR, PROJECTS_DIR_VAR, Settings
from orchestration.tags import PRIORITY_TAG, TASK_TAG
from orchestration.tasks.lifecycle import dispatch, task_run_tags
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from tests.support.daemon import evaluate_sensor, stop, write_instance
from tests.support.git import commit, git
from tests.support.paths import REPO_ROOT
from tests.support.webserver import WORKSPACE_QUERY, free_port, serving

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 10.0
ROLES = ("source", "manifest", "verification", "tasks", "usage")


ASSETS_QUERY = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        assetGroups { groupName assetKeys { path } }
      }
    }
    ... on PythonError { message }
  }
  assetNodes {
    assetKey { path }
    groupName
    hasAssetChecks
    jobNames
  }
}
"""


@dataclass
class Webserver:
    """A running webserver: where it answers, where its output goes, and the environment `orch`
    needs to work on the same instance and registry."""

    url: str
    log: Path
    env: dict[str, str]

    def graphql(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            body = json.load(response)
        assert "errors" not in body, f"GraphQL errors: {body['errors']}"
        return body["data"]

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def wait_until_up(
    server: Webserver, process: subprocess.Popen[bytes], deadline: float
) -> dict[str, Any]:
    """Poll /server_info, then the workspace, until the code location has loaded."""
    while True:
        if process.poll() is not None:
            pytest.fail(f"the webserver exited with {process.returncode}:\n{server.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the webserver did not load the workspace in time:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=2) as response:
                json.load(response)
            workspace = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        entries = workspace.get("locationEntries") or []
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            return workspace
        time.sleep(0.5)


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    root = tmp_path_factory.mktemp("webserver")
    # The shipped dagster.yaml, without the UI's first-visit prompt to join the community: it
    # opens a modal dialog one second after a page has loaded, whatever the test is doing then,
    # and its backdrop takes the click meant for the page (seen as a flaky test).
    dagster_home = write_instance(root, {"nux": {"enabled": False}})
    orch_home = root / "orch_home"
    ensure_sample_repos(orch_home / "samples")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        HOME_VAR: str(orch_home),
        PROJECTS_DIR_VAR: str(REPO_ROOT / "projects"),
        CONFIG_DIR_VAR: str(REPO_ROOT / "config"),
    }
    # As `orch up` does on a fresh ORCH_HOME: detect before serving, so the first load draws
    # the cross-project lineage.
    detect_before_serving(Settings.from_env(env))
    log = root / "webserver.log"
    target = ["-w", str(REPO_ROOT / "workspace.yaml")]
    with serving(target, env, log, cwd=root, timeout_s=STARTUP_TIMEOUT_S) as served:
        yield Webserver(url=served.url, log=log, env=env)


def test_workspace_location_loads(webserver: Webserver) -> None:
    workspace = webserver.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace"
    (entry,) = workspace["locationEntries"]
    assert entry["name"] == "orchestration"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_sample_projects_are_asset_groups(webserver: Webserver) -> None:
    data = webserver.graphql(ASSETS_QUERY)
    repositories = data["repositoriesOrError"]
    assert repositories["__typename"] == "RepositoryConnection", repositories
    groups = {
        group["groupName"]: {"/".join(key["path"]) for key in group["assetKeys"]}
        for repository in repositories["nodes"]
        for group in repository["assetGroups"]
    }
    channels = {"acme_core": {"acme_core/channel_api", "acme_core/channel_notes"}}
    for project in SAMPLE_PROJECTS:
        expected = {f"{project}/{role}" for role in ROLES} | channels.get(project, set())
        assert groups.get(project) == expected
    assert {"orchestration/registry", "orchestration/changes"} <= groups.get("orchestration", set())

    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert nodes["orchestration/registry"]["hasAssetChecks"] is True
    for project in SAMPLE_PROJECTS:
        for role in ROLES:
            assert nodes[f"{project}/{role}"]["groupName"] == project
        assert "refresh" in nodes[f"{project}/source"]["jobNames"]
    assert nodes["acme_api/verification"]["hasAssetChecks"] is True


def test_task_add_queues_its_run_at_once_through_the_webserver(webserver: Webserver) -> None:
    """With the webserver known, `orch task add` queues the task's run itself (there is no
    daemon here, so no sensor could have): the run the dispatch sensor would make, which the
    sensor then leaves alone. With other tasks waiting it leaves the order to the sensor; a
    webserver that does not answer leaves the task queued for the sensor, nothing counted."""
    env = {**webserver.env, WEBSERVER_URL_VAR: webserver.url}

    def add(prompt: str, environ: dict[str, str]) -> str:
        result = CliRunner().invoke(
            main, ["task", "add", "acme_core", prompt], env=environ, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    settings = Settings.from_env(env)
    registry = load_registry(settings)
    spec = registry.spec("acme_core")
    assert spec is not None
    store = TaskStore.from_settings(settings, environ={})
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        first = add("Direct one", env)
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: first}))
        task = store.require(first)
        assert task.dispatched and task.dispatches == 1 and task.attempts == 1
        assert run.status is dg.DagsterRunStatus.QUEUED
        assert run.asset_selection == {dg.AssetKey(["acme_core", "tasks"])}
        assert {key: run.tags.get(key) for key in task_run_tags(task, spec)} == task_run_tags(
            task, spec
        )
        assert (run.tags["dagster/partition"], run.tags["dagster/run_key"]) == (
            first,
            f"{first}.1",
        )
        assert run.run_op_concurrency is not None
        assert {"agents", "project_acme_core", "provider_demo"} <= set(
            run.run_op_concurrency.all_pools
        )
        # The dispatch sensor's planning finds nothing left to launch for it.
        outcome = dispatch(store, instance, registry, fingerprint="test")
        assert first not in {launch.task.id for launch in outcome.launches}

        # The first task still waits in the run queue: the next is left to the sensor.
        second = add("Behind the first", env)
        assert not instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: second}))
        assert not store.require(second).dispatched
        for task_id in (first, second):
            store.cancel(task_id)

        # A webserver that does not answer: the task waits for the sensor, nothing counted.
        closed = {**env, WEBSERVER_URL_VAR: f"http://127.0.0.1:{free_port()}"}
        third = add("Nobody answers", closed)
        waiting = store.require(third)
        assert (waiting.status, waiting.dispatched, waiting.attempts) == (
            TaskStatus.QUEUED,
            False,
            0,
        )
        assert "direct submission failed" in (waiting.reason or "")
        assert not instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: third}))
        store.cancel(third)
    finally:
        instance.dispose()
        store.dispose()


# --- in a real browser -------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_TIMEOUT_S = 60.0

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        message = (
            f"no browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("ORCH_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.screenshots = tmp_path_factory.mktemp("screenshots")  # see fail_in_browser
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver: Any, url: str, *expected: str) -> str:
    """Open `url` and wait until the rendered page shows every one of `expected` and has
    nothing left "Loading"; its text."""
    driver.get(url)
    return wait_for_text(driver, *expected)


def wait_for_text(driver: Any, *expected: str) -> str:
    """Wait until the page shows every one of `expected` and nothing "Loading"; its text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d: Any) -> str | bool:
        text = d.find_element(By.TAG_NAME, "body").text
        done = all(item in text for item in expected) and "Loading" not in text
        return text if done else False

    try:
        return WebDriverWait(driver, BROWSER_TIMEOUT_S, poll_frequency=0.5).until(shown)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        missing = [item for item in expected if item not in text]
        fail_in_browser(driver, f"never showed {missing}; it shows:\n{text[:3000]}")


def click_button(driver: Any, label: str) -> None:
    """Click the button labelled `label` once a user could: it is shown and enabled, and no
    dialog's backdrop covers the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def clickable(d: Any) -> Any:
        if d.find_elements(By.CSS_SELECTOR, ".bp5-overlay-backdrop"):
            return False
        buttons = d.find_elements(By.XPATH, f"//button[normalize-space()='{label}']")
        return next((b for b in buttons if b.is_displayed() and b.is_enabled()), False)

    try:
        button = WebDriverWait(driver, BROWSER_TIMEOUT_S, poll_frequency=0.2).until(clickable)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        fail_in_browser(driver, f"no button {label!r} to click; it shows:\n{text[:3000]}")
    button.click()


def fail_in_browser(driver: Any, message: str) -> None:
    """Fail the test with `message` about the page, and a screenshot of it to look at."""
    shot = driver.screenshots / f"failure-{len(list(driver.screenshots.iterdir())) + 1}.png"
    driver.save_screenshot(str(shot))
    pytest.fail(f"{driver.current_url}: {message}\n(screenshot: {shot})")


def wait_for_script(driver: Any, what: str, script: str, *args: Any) -> Any:
    """Wait until `script`, JavaScript run in the page with `args`, returns something; that."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, BROWSER_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: d.execute_script(script, *args)
        )
    except TimeoutException:
        fail_in_browser(driver, f"never showed {what}")


RESULTS = REPO_ROOT / "bench" / "results"  # gitignored: screenshots to look at


def save_result(driver: Any, name: str, *, width: int | None = None) -> Path:
    """A screenshot of the page under bench/results/; with `width`, taken in a window that
    wide (a wide table is cut at the default width), which is then given its size back."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    size = driver.get_window_size()
    if width is not None:
        driver.set_window_size(width, size["height"])
    try:
        driver.save_screenshot(str(path))
    finally:
        if width is not None:
            driver.set_window_size(size["width"], size["height"])
    return path


def orch_in(server: Webserver, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=server.env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_concurrency_page_shows_the_agent_pools(webserver: Webserver, browser: Any) -> None:
    """Deployment > Concurrency lists the global pool, the named one and one per project, with
    the limits from config/pools.yaml and each project's max_parallel."""
    orch_in(webserver, "allocation", "apply")
    instance = dg.DagsterInstance.from_config(webserver.env["DAGSTER_HOME"])
    try:
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    finally:
        instance.dispose()
    pools = ["agents", "heavy", *(f"project_{name}" for name in SAMPLE_PROJECTS)]
    assert set(pools) <= set(limits)
    text = page_text(browser, f"{webserver.url}/deployment/concurrency", *pools)
    lines = [line.strip() for line in text.splitlines()]
    table = lines[lines.index("Limit") + 1 :]  # the Pools table: a name, then its limit
    shown = dict(zip(table[::2], table[1::2], strict=False))
    assert {pool: shown.get(pool) for pool in pools} == {pool: str(limits[pool]) for pool in pools}
    assert limits["agents"] == 4 and limits["project_acme_web"] == 1  # pools.yaml, acme_web.yaml


def test_a_task_run_shows_its_project_and_priority(webserver: Webserver, browser: Any) -> None:
    """A task run launched as the dispatch sensor launches it (same asset, partition and tags)
    waits in the queue (no daemon here), and its page shows the `project` and
    `dagster/priority` tags."""
    task_id = orch_in(webserver, "task", "add", "acme_api", "Document parse_version").strip()
    registry = load_registry(Settings.from_env(webserver.env))
    (spec,) = [p.spec for p in registry.projects if p.name == "acme_api"]
    store = TaskStore.from_settings(Settings.from_env(webserver.env), environ={})
    try:
        tags = task_run_tags(store.require(task_id), spec)
    finally:
        store.dispose()
    params = {
        "selector": {
            "repositoryLocationName": "orchestration",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["acme_api", "tasks"]}],
        },
        "executionMetadata": {
            "tags": [
                {"key": key, "value": value}
                for key, value in {**tags, "dagster/partition": task_id}.items()
            ]
        },
    }
    request = urllib.request.Request(
        f"{webserver.url}/graphql",
        data=json.dumps({"query": LAUNCH_RUN, "variables": {"params": params}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        launched = json.load(response)["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert launched["run"]["status"] == "QUEUED"

    # The run's page says it is queued; its tags are behind "View tags and config" (the UI
    # shows `dagster/priority` as `priority`).
    page_text(browser, f"{webserver.url}/runs/{run_id}", "Queued", "View tags and config")
    click_button(browser, "View tags and config")
    wait_for_text(
        browser,
        "Run configuration",
        "project: acme_api",
        f"priority: {tags[PRIORITY_TAG]}",
        f"{TASK_TAG}: {task_id}",
    )

    # A live priority change re-ranks the queued run, and the UI shows its new priority.
    orch_in(webserver, "allocation", "set", "acme_api", "--priority", "critical")
    instance = dg.DagsterInstance.from_config(webserver.env["DAGSTER_HOME"])
    try:
        run = instance.get_run_by_id(run_id)
    finally:
        instance.dispose()
    assert run is not None
    reranked = run.tags[PRIORITY_TAG]
    assert reranked != tags[PRIORITY_TAG]
    page_text(browser, f"{webserver.url}/runs/{run_id}", "Queued", "View tags and config")
    click_button(browser, "View tags and config")
    wait_for_text(browser, "Run configuration", f"priority: {reranked}")
    orch_in(webserver, "allocation", "apply")


def test_a_paused_project_shows_on_the_registry_asset(webserver: Webserver, browser: Any) -> None:
    """`orch projects pause` records an observation of `orchestration/registry` that the asset's
    events list, saying which project went from what to what and why; `resume` undoes it. The
    `project_control` job, the same actions from the UI, is in the code location."""
    orch_in(webserver, "projects", "pause", "acme_web", "--reason", "release freeze")
    try:
        text = page_text(
            browser,
            f"{webserver.url}/assets/orchestration/registry?view=events",
            "acme_web: active -> paused (release freeze)",
        )
        # The observation's `lifecycle` table: every project whose state was set.
        assert "acme_web paused" in text and "release freeze" in text
        browser.save_screenshot(str(browser.screenshots / "registry-events-paused.png"))
        listed = json.loads(orch_in(webserver, "projects", "list", "--json"))
        assert {p["name"]: p["state"] for p in listed}["acme_web"] == "paused"
    finally:
        orch_in(webserver, "projects", "resume", "acme_web")
    page_text(
        browser,
        f"{webserver.url}/locations/orchestration/jobs/project_control",
        "project_control",
        "control_project",
    )


# --- the portfolio and each project's usage, as the monitoring sensor records them ------------


@dataclass
class Monitoring:
    """The `monitoring` sensor ticked in this process on the webserver's instance and task
    store, with the clock the test gives, its events recorded as the daemon records a sensor's
    (no daemon runs here)."""

    instance: dg.DagsterInstance
    store: TaskStore
    cursor: str | None = None

    def finish(self, project: str, cost: float) -> datetime:
        """A task of `project` added, started and succeeded, having spent `cost`; when it
        ended."""
        task = self.store.add(project, "work")
        assert task is not None
        run_id = f"run-{task.id}"
        self.store.claim(task.id, run_id)
        done = self.store.finish(
            task.id,
            TaskStatus.SUCCEEDED,
            run_id=run_id,
            cost_usd=cost,
            tokens_in=1000,
            tokens_out=200,
        )
        assert done.finished_at is not None
        return done.finished_at

    def tick(self, now: datetime) -> list[dg.AssetKey]:
        """One evaluation of the sensor at `now`; the keys of the events it recorded."""
        sensor = build_monitoring_sensor(SAMPLE_PROJECTS, lambda: now)
        result = evaluate_sensor(sensor, self.instance, self.cursor, {"agent_tasks": AgentTasks()})
        self.cursor = result.cursor
        return [event.asset_key for event in result.asset_events]


@pytest.fixture
def monitoring(webserver: Webserver, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitoring]:
    # The sensor's resource reads the registry and the task store the environment names: the
    # webserver's.
    for var in (HOME_VAR, PROJECTS_DIR_VAR, CONFIG_DIR_VAR):
        monkeypatch.setenv(var, webserver.env[var])
    monkeypatch.delenv(TASKS_DB_URL_VAR, raising=False)
    instance = dg.DagsterInstance.from_config(webserver.env["DAGSTER_HOME"])
    store = TaskStore.from_settings(Settings.from_env(webserver.env), environ={})
    try:
        yield Monitoring(instance, store)
    finally:
        store.dispose()
        instance.dispose()


#: The table a `MetadataValue.table` entry (named by the argument) is drawn as in an asset's
#: Metadata section: the entry's row (key, timestamp, table), column names and rows of cell
#: texts.
METADATA_TABLE = """
const entry = [...document.querySelectorAll('tr')].find(
  tr => tr.cells.length > 0 && tr.cells[0].textContent.trim() === arguments[0]);
const table = entry && entry.querySelector('table');
if (!table || !table.tHead || table.tBodies.length === 0) return null;
const cells = tr => [...tr.cells].map(cell => cell.textContent.trim());
return {element: entry, columns: cells(table.tHead.rows[0]),
        rows: [...table.tBodies[0].rows].map(cells)};
"""

#: The plot of the numeric metadata key named by the argument, once drawn: its element, the
#: points Dagster handed to Chart.js (the `data` prop of the chart's React component, the
#: canvas's nearest owner that has one) and how many pixels of the canvas are in the series'
#: colour (something was drawn).
METADATA_PLOT = """
for (const title of document.querySelectorAll('span')) {
  if (title.textContent.trim() !== arguments[0]) continue;
  const canvas = title.parentElement.parentElement.querySelector('canvas');
  if (!canvas) continue;
  const fiberKey = Object.keys(canvas).find(key => key.startsWith('__reactFiber$'));
  let fiber = fiberKey && canvas[fiberKey];
  while (fiber && !(fiber.memoizedProps && fiber.memoizedProps.data
                    && fiber.memoizedProps.data.datasets)) fiber = fiber.return;
  if (!fiber) return null;
  const series = fiber.memoizedProps.data.datasets[0];
  const [r, g, b] = series.borderColor.match(/[0-9.]+/g).map(Number);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] === r && pixels[i + 1] === g && pixels[i + 2] === b && pixels[i + 3] > 200) {
      inked++;
    }
  }
  if (series.data.length === 0 || inked === 0) return null;
  return {element: canvas, label: series.label, points: series.data.map(p => p.y), inked};
}
return null;
"""


def test_the_portfolio_table_shows_every_sample_project(
    webserver: Webserver, browser: Any, monitoring: Monitoring
) -> None:
    """A task of each sample project ends having spent something; the `monitoring` sensor,
    ticking at the moment the last one ended, records `orchestration/portfolio`, and the
    asset's page shows its latest `projects` table: one row per sample project, with what
    each spent today."""
    costs = {"acme_core": 1.25, "acme_web": 0.75, "acme_api": 2.35}
    for project, cost in costs.items():
        ended = monitoring.finish(project, cost)
    assert PORTFOLIO_KEY in monitoring.tick(ended)

    page_text(
        browser,
        f"{webserver.url}/assets/orchestration/portfolio",
        "Metadata",
        "projects",
        *SAMPLE_PROJECTS,
    )
    table = wait_for_script(browser, "the portfolio's projects table", METADATA_TABLE, "projects")
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["rows"]}
    assert sorted(rows) == sorted(SAMPLE_PROJECTS)
    assert table["columns"][:2] == ["project", "state"] and "cost_today_usd" in table["columns"]
    # acme_api's one task that ended today ended last, when the sensor ticked.
    assert rows["acme_api"]["cost_today_usd"] == "2.35"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", table["element"])
    save_result(browser, "portfolio-table.png", width=2600)


def test_a_projects_usage_is_plotted_over_time(
    webserver: Webserver, browser: Any, monitoring: Monitoring
) -> None:
    """Three tasks of acme_core end one after another, having spent different amounts, and
    the `monitoring` sensor ticks at each end: three more `acme_core/usage` materializations.
    The asset's Metadata section, switched to Plots, draws `cost_today_usd` with a point for
    each materialization, at the values recorded."""
    for cost in (0.4, 1.1, 0.6):
        assert usage_key("acme_core") in monitoring.tick(monitoring.finish("acme_core", cost))
    records = monitoring.instance.fetch_materializations(usage_key("acme_core"), limit=100)
    recorded = [
        record.asset_materialization.metadata["cost_today_usd"].value  # type: ignore[union-attr]
        for record in reversed(records.records)
    ]
    assert len(recorded) >= 3 and len(set(recorded[-3:])) == 3

    page_text(browser, f"{webserver.url}/assets/acme_core/usage", "Metadata", "cost_today_usd")
    click_button(browser, "Plots")
    plot = wait_for_script(browser, "a plot of cost_today_usd", METADATA_PLOT, "cost_today_usd")
    assert plot["label"] == "cost_today_usd"
    assert plot["points"] == recorded
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot["element"])
    save_result(browser, "usage-plots-acme-core.png")


# --- lineage on a fresh start, and after a change ----------------------------------------------

LINEAGE_QUERY = """
query Lineage($key: AssetKeyInput!) {
  assetNodes(assetKeys: [$key]) {
    dependencyKeys { path }
    internalFreshnessPolicy {
      __typename
      ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
    }
  }
}
"""


def upstream(server: Webserver, project: str, asset: str = "verification") -> set[str]:
    """What the webserver's asset graph has upstream of `project`'s `asset`."""
    variables = {"key": {"path": [project, asset]}}
    request = urllib.request.Request(
        f"{server.url}/graphql",
        data=json.dumps({"query": LINEAGE_QUERY, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        (node,) = json.load(response)["data"]["assetNodes"]
    return {"/".join(key["path"]) for key in node["dependencyKeys"]}


def upstream_on_page(driver: Any, server: Webserver, project: str, *expected: str) -> list[str]:
    """The "Upstream assets" the asset page of `project`'s verification lists, once it shows
    `expected` (the UI keeps what it loaded before, and follows a reloaded code location when
    it next polls the workspace)."""
    text = page_text(
        driver,
        f"{server.url}/assets/{project}/verification",
        "Upstream assets",
        "Downstream",
        *expected,
    )
    lines = [line.strip() for line in text.splitlines()]
    return lines[lines.index("Upstream assets") + 1 : lines.index("Downstream assets")]


def test_a_fresh_start_shows_the_cross_project_lineage(webserver: Webserver, browser: Any) -> None:
    """On a fresh ORCH_HOME, with no manual step after `orch up`'s detection: acme_api's tests
    follow acme_core's code in the asset graph, its page lists acme_core upstream, and the
    lineage view draws both groups. acme_api's schedule (weekdays at 6) gives its verification
    a freshness policy of one longest gap (Friday to Monday, 72 h) + 1 h to warn, two + 1 h
    to fail, which the page shows."""
    assert "acme_core/source" in upstream(webserver, "acme_api")
    assert "acme_core/source" not in upstream(webserver, "acme_web")

    listed = upstream_on_page(browser, webserver, "acme_api")
    assert listed == ["acme_api / source", "acme_core / source"]
    text = wait_for_text(browser, "Freshness policy", "Warns if more than 3 days")
    assert "Fails if more than 6 days since last materialization" in text
    save_result(browser, "lineage-fresh-start-asset-page.png")

    page_text(
        browser,
        f"{webserver.url}/assets/acme_api/verification?view=lineage",
        "acme_api",
        "acme_core",
        "verification",
    )
    save_result(browser, "lineage-fresh-start-graph.png")


def test_the_channels_and_their_subscribers_show_in_the_asset_graph(
    webserver: Webserver, browser: Any
) -> None:
    """acme_core's channels are assets of its group, upstream of acme_api's `tasks` (which
    subscribes to both) and not of acme_web's; the lineage view draws them, and
    `orchestration/changes` is there with its `all_verified` check."""
    assert upstream(webserver, "acme_api", "tasks") == {
        "acme_api/source",
        "acme_core/channel_api",
        "acme_core/channel_notes",
    }
    assert upstream(webserver, "acme_web", "tasks") == {"acme_web/source"}
    text = page_text(
        browser,
        f"{webserver.url}/assets/acme_core/channel_api",
        "Channel acme_core.api (contract)",
        "Downstream assets",
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "acme_api / tasks" in lines[lines.index("Downstream assets") :]
    save_result(browser, "channel-asset-page.png")
    page_text(
        browser,
        f"{webserver.url}/assets/acme_core/channel_api?view=lineage",
        "channel_api",
        "tasks",
    )
    save_result(browser, "channel-lineage.png")
    page_text(browser, f"{webserver.url}/assets/orchestration/changes?view=checks", "all_verified")
    save_result(browser, "changes-asset-page.png")


def test_the_asset_graph_follows_a_new_dependency_without_a_manual_reload(
    webserver: Webserver, browser: Any
) -> None:
    """acme_web starts to require acme-core: `orch deps detect`, pointed at this webserver as
    `orch up` points it, asks it to reload, and the asset graph and page show the new edge;
    when the requirement goes, the edge goes. (Last in this module: it reloads the code
    location, and leaves it as it found it.)"""
    repo = Path(webserver.env[HOME_VAR]) / "samples" / "acme_web"
    env = {**webserver.env, WEBSERVER_URL_VAR: webserver.url}

    def detect() -> str:
        result = CliRunner().invoke(main, ["deps", "detect"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stderr

    assert "acme_core/source" not in upstream(webserver, "acme_web")
    commit(repo, {"requirements.txt": "acme-core>=0.3\n"}, message="use acme-core")
    try:
        said = detect()
        assert "lineage changed (acme_web -> acme_core added)" in said
        assert f"{webserver.url}/graphql reloaded the code location" in said
        assert "acme_core/source" in upstream(webserver, "acme_web")
        listed = upstream_on_page(browser, webserver, "acme_web", "acme_core / source")
        assert listed == ["acme_core / source", "acme_web / source"]
        save_result(browser, "lineage-after-reload-acme-web.png")
    finally:
        git(repo, "rm", "-q", "requirements.txt")
        git(repo, "commit", "-q", "--no-gpg-sign", "-m", "drop acme-core")
        said = detect()
    assert "lineage changed (acme_web -> acme_core removed)" in said
    assert "acme_core/source" not in upstream(webserver, "acme_web")


# --- the same through a real `orch up` (webserver + daemon) and a `manifest` run ---------------

#: `orch up` makes the samples, detects, creates the instance and starts `dagster dev`.
ORCH_UP_TIMEOUT_S = 180.0
#: The run (queued, started, one repository scanned), the sensor's next tick (20 s), the
#: reload: about a minute; the deadline leaves room on a loaded machine.
FOLLOW_TIMEOUT_S = 180.0

LAUNCH_MANIFEST = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_orch_up_lineage_follows_a_manifest_run(tmp_path: Path) -> None:
    """A real `orch up` on a fresh ORCH_HOME: its first load draws acme_api <- acme_core. Then
    acme_web starts to require acme-core and its `manifest` asset is materialized from the
    UI's GraphQL: the run writes the new graph, the `lineage_reload` sensor (run by the daemon)
    asks the webserver to reload, and the asset graph shows acme_web <- acme_core with nobody
    pressing Reload."""
    orch_home = tmp_path / "orch_home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DAGSTER_"))}
    env |= {
        HOME_VAR: str(orch_home),
        PROJECTS_DIR_VAR: str(REPO_ROOT / "projects"),
        CONFIG_DIR_VAR: str(REPO_ROOT / "config"),
    }
    server = Webserver(url=f"http://127.0.0.1:{port}", log=tmp_path / "orch-up.log", env=env)
    argv = [str(Path(sys.executable).parent / "orch"), "up", "--port", str(port)]
    argv += ["--workspace", str(REPO_ROOT / "workspace.yaml")]
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(server, process, time.monotonic() + ORCH_UP_TIMEOUT_S)
        assert "dependencies: 3 project(s), 1 edge(s)" in server.output()
        assert "acme_core/source" in upstream(server, "acme_api")  # the first load
        assert "acme_core/source" not in upstream(server, "acme_web")

        commit(
            orch_home / "samples" / "acme_web",
            {"requirements.txt": "acme-core>=0.3\n"},
            message="use acme-core",
        )
        params = {
            "selector": {
                "repositoryLocationName": "orchestration",
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["acme_web", "manifest"]}],
            },
        }
        launched = server_post(server, LAUNCH_MANIFEST, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while "acme_core/source" not in upstream_or_none(server, "acme_web"):
            if process.poll() is not None:
                pytest.fail(f"orch up exited with {process.returncode}:\n{server.output()}")
            if time.monotonic() > deadline:
                status = server_post(server, RUN_STATUS, {"id": run_id})["runOrError"]
                pytest.fail(
                    f"the asset graph did not follow (manifest run {status}):\n{server.output()}"
                )
            time.sleep(2)
        status = server_post(server, RUN_STATUS, {"id": run_id})["runOrError"]
        assert status == {"status": "SUCCESS"}
    finally:
        stop(process)  # dagster dev's whole group: webserver, daemon, code servers, run workers


def server_post(server: Webserver, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


def upstream_or_none(server: Webserver, project: str) -> set[str]:
    """`upstream`, or nothing while the webserver is reloading the code location."""
    try:
        return upstream(server, project)
    except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, ValueError):
        return set()
