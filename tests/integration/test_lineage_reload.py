"""Lineage that is always current, and freshness: `orch up` detects before it serves, a changed
dependency graph makes `orch deps detect` and the `lineage_reload` sensor ask the webserver (a
stand-in HTTP server on 127.0.0.1) to reload, and a scheduled project's `verification` carries
a freshness policy that Dagster's freshness daemon evaluates.

Real git repositories, the real registry loader and detection, a real Dagster instance; only
the webserver is a stand-in, answering `/graphql` as the real one answers `reloadWorkspace`."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from orchestration.cli import main
from orchestration.cli.up import detect_before_serving
from orchestration.defs.definitions import build_definitions
from orchestration.defs.factory import build_project_defs, verification_freshness
from orchestration.defs.orchestration_assets import lineage_sensor
from orchestration.defs.reload import WEBSERVER_URL_VAR
from orchestration.defs.resources import ProjectWorkspaces
from orchestration.dependencies.detection import DetectionCache
from orchestration.dependencies.graph import DependencyGraph
from orchestration.samples import SAMPLE_PROJECTS, ensure_sample_repos
from orchestration.settings import Settings
from tests.support.git import commit, make_git_repo
from tests.support.paths import REPO_ROOT
from tests.support.registry import RegistryDir

CORE = '[project]\nname = "acme-core"\nversion = "1.0.0"\n'
API = '[project]\nname = "acme-api"\nversion = "0.1.0"\ndependencies = ["acme-core>=1"]\n'
API_ALONE = '[project]\nname = "acme-api"\nversion = "0.2.0"\ndependencies = []\n'
WAIT_S = 10


# --- a stand-in webserver ----------------------------------------------------------------------


@dataclass
class Webserver:
    """An HTTP server on 127.0.0.1 that records what is posted and answers `reloadWorkspace`
    as the real webserver does once the code location has reloaded."""

    url: str
    posts: list[dict] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def reloads(self) -> int:
        return sum("reloadWorkspace" in post["body"]["query"] for post in self.posts)


@pytest.fixture
def webserver() -> Iterator[Webserver]:
    state = Webserver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.posts.append({"path": self.path, "body": body})
            answer = {"data": {"reloadWorkspace": {"__typename": "Workspace"}}}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            state.arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- a registry where api depends on core ------------------------------------------------------


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> RegistryDir:
    monkeypatch.delenv(WEBSERVER_URL_VAR, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(registry_dir.root)  # no git command may reach another repository
    registry_dir.use_in(monkeypatch)  # the resources read the directories from the environment
    for name, text in {"core": CORE, "api": API}.items():
        repo = make_git_repo(registry_dir.root / "repos" / name, {"pyproject.toml": text})
        registry_dir.project(name, repo=str(repo))
    return registry_dir


def orch(registry: RegistryDir, *args: str, webserver: Webserver | None = None) -> Result:
    env = {
        **registry.settings.environment(),
        WEBSERVER_URL_VAR: webserver.url if webserver else None,
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def edges(graph: DependencyGraph | None) -> list[tuple[str, str]]:
    assert graph is not None
    return [(e.consumer, e.provider) for e in graph.edges]


# --- orch deps detect --------------------------------------------------------------------------


def test_detect_asks_the_webserver_to_reload_only_when_the_lineage_changed(
    registry: RegistryDir, webserver: Webserver
) -> None:
    first = orch(registry, "deps", "detect", webserver=webserver)
    assert webserver.reloads() == 1, first.stderr
    (post,) = webserver.posts
    assert post["path"] == "/graphql"
    assert post["body"]["query"].startswith("mutation { reloadWorkspace")
    assert "lineage changed (api -> core added)" in first.stderr
    assert f"{webserver.url}/graphql reloaded the code location" in first.stderr

    # Nothing moved: the graph is the same, nobody is asked.
    again = orch(registry, "deps", "detect", webserver=webserver)
    assert webserver.reloads() == 1
    assert "lineage changed" not in again.stderr

    # A new commit that changes a version but no dependency: a new graph, the same lineage.
    commit(registry.root / "repos" / "core", {"pyproject.toml": CORE.replace("1.0.0", "1.1.0")})
    orch(registry, "deps", "detect", webserver=webserver)
    assert webserver.reloads() == 1

    # api drops its dependency: the edge goes, the UI is asked again; --json keeps stdout JSON.
    commit(registry.root / "repos" / "api", {"pyproject.toml": API_ALONE})
    dropped = orch(registry, "deps", "detect", "--json", webserver=webserver)
    assert json.loads(dropped.stdout)["edges"] == []
    assert "lineage changed (api -> core removed)" in dropped.stderr
    assert webserver.reloads() == 2


def test_detect_without_a_webserver_says_the_ui_must_reload(registry: RegistryDir) -> None:
    result = orch(registry, "deps", "detect")
    assert "lineage changed (api -> core added)" in result.stderr
    assert f"{WEBSERVER_URL_VAR} is not set" in result.stderr
    assert "press Reload in the UI" in result.stderr
    assert result.stdout.startswith("2 project(s), 1 edge(s)")


def test_detect_says_when_the_webserver_cannot_be_reached(registry: RegistryDir) -> None:
    # A port nothing listens on: the command still succeeds and says what to do.
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    gone = f"http://127.0.0.1:{server.server_port}"
    server.server_close()
    env = {**registry.settings.environment(), WEBSERVER_URL_VAR: gone}
    result = CliRunner().invoke(main, ["deps", "detect"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"could not reload the code location through {gone}/graphql" in result.stderr
    assert "press Reload in the UI" in result.stderr


# --- the lineage_reload sensor (a manifest run changed the graph) ------------------------------


def tick(sensor: dg.SensorDefinition, registry: RegistryDir, instance: dg.DagsterInstance) -> str:
    resources = {"workspaces": ProjectWorkspaces(home=str(registry.settings.home))}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return result.skip_message or ""


def test_the_sensor_asks_for_a_reload_when_a_run_changed_the_lineage(
    registry: RegistryDir, webserver: Webserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Definitions loaded before any detection draw no lineage; once a `manifest` run (here the
    same detection, through the resource those runs use) writes a graph with api -> core, the
    sensor of those definitions asks for a reload, once, and not again while it waits."""
    monkeypatch.setenv(WEBSERVER_URL_VAR, webserver.url)
    sensor = lineage_sensor(loaded=None)
    with dg.instance_for_test() as instance:
        assert "draws the last detected lineage" in tick(sensor, registry, instance)
        assert webserver.posts == []

        workspaces = ProjectWorkspaces(home=str(registry.settings.home))
        for project in registry.load().projects:  # each project's `manifest` run
            workspaces.detect_dependencies(project.spec)

        message = tick(sensor, registry, instance)
        assert "lineage changed (api -> core added)" in message
        assert webserver.arrived.wait(WAIT_S), "no reload was requested"
        assert webserver.reloads() == 1
        assert "waiting for the reload" in tick(sensor, registry, instance)
        assert webserver.reloads() == 1

    # The reloaded code location was built from the new graph: its sensor sees nothing to do.
    reloaded = lineage_sensor(loaded=DetectionCache(registry.settings.home).load_graph())
    with dg.instance_for_test() as instance:
        assert "draws the last detected lineage" in tick(reloaded, registry, instance)
    assert webserver.reloads() == 1


def test_the_sensor_is_part_of_the_definitions(registry: RegistryDir) -> None:
    defs = build_definitions(registry.load())
    sensor = defs.resolve_sensor_def("lineage_reload")
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None
    assert sensor.minimum_interval_seconds <= 30  # with a reload of seconds: under a minute


# --- orch up: detection before serving ---------------------------------------------------------


@pytest.fixture
def samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped registry on a fresh ORCH_HOME with the sample repositories, as `orch up`
    makes them before it detects."""
    settings = Settings(REPO_ROOT / "projects", REPO_ROOT / "config", tmp_path / "orch_home")
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)  # the projects' `repo: ${ORCH_HOME}/samples/...`
    monkeypatch.chdir(tmp_path)
    ensure_sample_repos(settings.samples_dir)
    return settings


def test_up_detects_before_serving_so_the_first_load_draws_the_lineage(
    samples: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert DetectionCache(samples.home).load_graph() is None  # a fresh ORCH_HOME

    graph = detect_before_serving(samples)

    assert ("acme_api", "acme_core") in edges(graph)
    assert edges(DetectionCache(samples.home).load_graph()) == edges(graph)  # written for the load
    err = capsys.readouterr().err
    assert "scanning manifests" in err
    assert f"dependencies: {len(SAMPLE_PROJECTS)} project(s)" in err

    # The definitions the webserver loads first: acme_api's tests follow acme_core's code.
    from orchestration.registry import load_registry

    defs = build_definitions(load_registry(samples))
    api = dg.AssetKey(["acme_api", "verification"])
    deps = {dep.asset_key for dep in defs.resolve_assets_def(api).specs_by_key[api].deps}
    assert dg.AssetKey(["acme_core", "source"]) in deps


def test_up_starts_even_when_a_repository_cannot_be_read(
    samples: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = samples.samples_dir / "acme_web"
    for path in sorted((broken / ".git" / "objects").iterdir()):
        if path.is_dir() and path.name not in {"info", "pack"}:
            for item in path.iterdir():
                item.unlink()
    graph = detect_before_serving(samples)
    assert ("acme_api", "acme_core") in edges(graph)
    assert "warning: acme_web:" in capsys.readouterr().err


def test_up_starts_even_when_detection_fails_as_a_whole(
    samples: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # The dependency cache cannot be made: its directory is a file.
    (samples.home / "cache").mkdir(parents=True)
    (samples.home / "cache" / "dependencies").write_text("not a directory")
    assert detect_before_serving(samples) is None
    assert "warning: dependency detection failed" in capsys.readouterr().err


# --- freshness ---------------------------------------------------------------------------------


def test_a_scheduled_projects_verification_carries_a_freshness_policy(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("nightly", 'schedule: "0 3 * * *"\nverify: [python3, -V]\n')
    registry_dir.project("adhoc", "verify: [python3, -V]\n")
    registry = registry_dir.load()
    policies = {}
    for project in registry.projects:
        for item in build_project_defs(project.spec).assets or []:
            specs = item.specs if isinstance(item, dg.AssetsDefinition) else [item]
            for spec in specs:
                assert isinstance(spec, dg.AssetSpec)
                policies[spec.key.to_user_string()] = spec.freshness_policy
    for name in ("nightly", "adhoc"):
        assert {f"{name}/{role}" for role in ("source", "manifest", "verification", "tasks")} <= (
            set(policies)
        )
    assert policies.pop("nightly/verification") == verification_freshness("0 3 * * *")
    assert verification_freshness("0 3 * * *") == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=49), warn_window=timedelta(hours=25)
    )
    assert set(policies.values()) == {None}  # nothing else, and nothing for `adhoc`


def test_the_freshness_daemon_marks_late_verification_warn_then_fail(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's own freshness daemon, on the code location as the orchestrator loads it: a
    daily project's tests last run 26 hours ago are late (WARN), 50 hours ago stale (FAIL); a
    project without a schedule is not evaluated."""
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    registry_dir.project("nightly", 'schedule: "0 3 * * *"\nverify: [python3, -V]\n')
    registry_dir.project("adhoc", "verify: [python3, -V]\n")
    registry_dir.use_in(monkeypatch)
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                module_name="orchestration.defs.definitions", working_directory=str(REPO_ROOT)
            ),
            location_name="orchestration",
        )
    )
    nightly = dg.AssetKey(["nightly", "verification"])
    adhoc = dg.AssetKey(["adhoc", "verification"])
    start = datetime(2025, 3, 3, 3, 5, tzinfo=UTC)

    def state_after(hours: float) -> dict[dg.AssetKey, FreshnessState]:
        with freeze_time(start + timedelta(hours=hours)):
            list(FreshnessDaemon().run_iteration(context))
        records = instance.get_freshness_state_records([nightly, adhoc])
        return {key: record.freshness_state for key, record in records.items()}

    with (
        dg.instance_for_test() as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        with freeze_time(start):
            for key in (nightly, adhoc):
                instance.report_runless_asset_event(dg.AssetMaterialization(key))
        assert state_after(1)[nightly] is FreshnessState.PASS
        assert state_after(26)[nightly] is FreshnessState.WARN
        states = state_after(50)
        assert states[nightly] is FreshnessState.FAIL
        assert states.get(adhoc, FreshnessState.NOT_APPLICABLE) is FreshnessState.NOT_APPLICABLE
