"""`orch up` and `orch samples`: serve the UI and daemon, and make the sample repositories.

Before it serves, `orch up` detects the dependencies between projects, so the first screen
already draws the cross-project lineage (the definitions only read the last detected graph)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestration.cli.deps import detect_with_progress
from orchestration.cli.output import fail
from orchestration.cli.state import current_registry, current_settings
from orchestration.instance import InstanceError, open_instance
from orchestration.settings import WEBSERVER_URL_FILE, WEBSERVER_URL_VAR, Settings
from orchestration.sharding import MAX_SHARDS, workspace_document

if TYPE_CHECKING:
    from orchestration.dependencies.graph import DependencyGraph

INSTANCE_CONFIG = "dagster.yaml"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the UI on.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port of the UI.")
@click.option(
    "--workspace",
    default="workspace.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Dagster workspace file.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, MAX_SHARDS),
    default=None,
    help="Split the projects over this many code locations (one code server each), written "
    "to ORCH_HOME/workspace.yaml and served instead of --workspace: each loads and reloads "
    "only its share, for registries of thousands of projects.",
)
def up(host: str, port: int, workspace: Path, shards: int | None) -> None:
    """Make the sample repositories, detect the dependencies between projects, then run the
    Dagster webserver and daemon.

    State is kept in ORCH_HOME/dagster (SQLite), whose dagster.yaml links to the one beside the
    workspace file, so it survives restarts.
    """
    from orchestration.samples import ensure_sample_repos  # GitPython: only when run

    settings = current_settings()
    ensure_sample_repos(settings.samples_dir)
    detect_before_serving(settings)
    dagster_home = prepare_dagster_home(settings, workspace.resolve().parent / INSTANCE_CONFIG)
    if shards is not None:
        workspace = write_sharded_workspace(settings.home, shards, workspace.resolve().parent)
    # Create the instance's databases now, under our lock, so the webserver and the daemon,
    # which start together and do not take it, find them made.
    try:
        open_instance(dagster_home).dispose()
    except InstanceError as exc:
        fail(str(exc))
    for notice in settings.notices:
        click.echo(f"warning: {notice}", err=True)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    # `orch task add` beside it submits a task's run through this webserver at once.
    (settings.home / WEBSERVER_URL_FILE).write_text(f"http://{shown_host}:{port}\n")
    env = {
        **os.environ,
        # Absolute paths: the webserver, daemon and code servers read the same files wherever
        # they run from.
        **settings.environment(),
        "DAGSTER_HOME": str(dagster_home),
        WEBSERVER_URL_VAR: f"http://{shown_host}:{port}",
    }
    click.echo(f"Dagster UI on http://{host}:{port} (state in {dagster_home})", err=True)
    argv = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(workspace),
    ]
    os.execve(sys.executable, argv, env)


def write_sharded_workspace(home: Path, shards: int, checkout: Path) -> Path:
    """ORCH_HOME/workspace.yaml: `shards` code locations of the package in `checkout`."""
    import yaml

    path = home / "workspace.yaml"
    home.mkdir(parents=True, exist_ok=True)
    document = workspace_document(shards, str(checkout))
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@click.group()
def samples() -> None:
    """The sample projects' git repositories."""


@samples.command("init")
def samples_init() -> None:
    """Create the sample repositories under ORCH_HOME/samples (existing ones are kept)."""
    from orchestration.samples import ensure_sample_repos  # GitPython: only when run

    for name, path in ensure_sample_repos(current_settings().samples_dir).items():
        click.echo(f"{name}: {path}")


def detect_before_serving(settings: Settings) -> DependencyGraph | None:
    """Detect the dependency graph over the registry as `orch deps detect` does, so the
    definitions the webserver loads first draw the lineage. Progress and problems go to stderr;
    nothing here stops the start: a repository that cannot be read is a warning, and a
    detection that fails as a whole leaves the last graph (or none) in place."""
    try:
        graph, _ = detect_with_progress(current_registry(settings).projects, settings)
    except Exception as exc:  # the UI must start even when detection cannot run
        click.echo(
            f"warning: dependency detection failed ({type(exc).__name__}: {exc}); the asset "
            "graph shows the last detected lineage until `orch deps detect` or a `manifest` "
            "run succeeds",
            err=True,
        )
        return None
    click.echo(f"dependencies: {len(graph.nodes)} project(s), {len(graph.edges)} edge(s)", err=True)
    return graph


def prepare_dagster_home(settings: Settings, instance_config: Path) -> Path:
    """ORCH_HOME/dagster with a dagster.yaml that links to the repository's instance config.

    A dagster.yaml already there that is not such a link is the user's own and is kept.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    link = home / INSTANCE_CONFIG
    if link.is_symlink() and link.resolve() != instance_config.resolve():
        link.unlink()
    if not link.exists() and not link.is_symlink():
        link.symlink_to(instance_config.resolve())
    return home
