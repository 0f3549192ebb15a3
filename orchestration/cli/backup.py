"""`orch backup`: one consistent backup of all state, checked and restored.

Every command here talks to the Dagster instance or makes one, so each imports
`orchestration.state.backup` (and Dagster with it) when it runs. Progress goes to stderr, the
result to stdout (as JSON with `--json`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestration.cli.output import echo_json, fail
from orchestration.cli.state import current_registry, current_settings, dagster_instance, task_store

#: Below ORCH_HOME: where `orch backup create` writes when not told otherwise.
DEFAULT_BACKUPS_DIR = "backups"


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


@click.group()
def backup() -> None:
    """Back up all state (the Dagster instance, tasks, private clones, sessions, registry),
    check a backup, restore one."""


@backup.command("create")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the backup (a new folder is made in it). Default: ORCH_HOME/backups.",
)
@click.option(
    "--online",
    is_flag=True,
    help="Do not hold new starts or wait for runs; a restore fails the runs that were in "
    "flight and queues their tasks again.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for runs in progress to end (not with --online).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's summary as JSON.")
def create(to: Path | None, online: bool, timeout_s: float, as_json: bool) -> None:
    """Write one consistent backup of all state. By default new starts are held and the
    backup waits for the runs in progress to end; they are released again afterwards."""
    from orchestration.state.backup import BackupError, create_backup

    settings = current_settings()
    instance = dagster_instance(settings)
    if instance is None:
        fail("no Dagster instance yet: start it with `orch up`, or set DAGSTER_HOME")
    store = task_store(settings)
    try:
        manifest = create_backup(
            settings,
            instance,
            store,
            to=to or settings.home / DEFAULT_BACKUPS_DIR,
            online=online,
            quiesce_timeout_s=timeout_s,
            progress=_progress,
            registry=None if online else current_registry(settings),
        )
    except BackupError as exc:
        fail(str(exc))
    finally:
        store.dispose()
        instance.dispose()
    summary = manifest.summary()
    if as_json:
        echo_json(summary)
        return
    how = "online" if manifest.online else "quiesced"
    click.echo(
        f"{manifest.path}: {summary['files']} files, {_size(manifest.bytes)}, {manifest.mode}, "
        f"{how}, digest {manifest.state_digest.digest[:16]}, "
        f"{manifest.durations_s.get('total', 0):.1f} s"
    )


@backup.command("verify")
@click.argument("path", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(path: Path, as_json: bool) -> None:
    """Check every file of a backup against its manifest, restore it into a scratch place and
    compare the state digest with the recorded one."""
    from orchestration.state.backup import BackupError, verify_backup

    try:
        report = verify_backup(path, progress=_progress)
    except BackupError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(
        f"{report.path}: ok, {report.files} files, {_size(report.bytes)}, digest "
        f"{report.digest[:16]} ({report.duration_s:.1f} s)"
    )


@backup.command("restore")
@click.argument("path", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--wipe",
    is_flag=True,
    help="Delete the state already there first (instance databases, task database, "
    "ORCH_HOME workspaces and archive; registry folders that differ are moved aside).",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Restore a backup made with another Dagster version, then migrate the instance.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restore(path: Path, wipe: bool, migrate: bool, as_json: bool) -> None:
    """Restore a backup into DAGSTER_HOME (else ORCH_HOME/dagster) and ORCH_HOME, then set
    right what was in flight: stop the daemon and webserver (`orch up`) first."""
    from orchestration.state.backup import BackupError, restore_backup

    settings = current_settings()
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    try:
        report = restore_backup(
            path,
            settings,
            dagster_home=dagster_home,
            wipe=wipe,
            migrate=migrate,
            progress=_progress,
        )
    except BackupError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report.to_dict())
        return
    reconciled = report.reconcile
    click.echo(
        f"restored {report.path} into {report.dagster_home} and {report.home} "
        f"(digest {report.digest[:16]}, {report.duration_s:.1f} s): "
        f"{len(reconciled.runs_failed)} run(s) failed as interrupted, "
        f"{len(reconciled.tasks_requeued)} task(s) queued again, "
        f"{len(reconciled.clones_reset)} clone(s) reset"
        + ("; the backup's hold on new starts was lifted" if reconciled.hold_released else "")
    )
    for part, status in report.registry.items():
        click.echo(f"registry {part}: {status}")
    for problem in reconciled.problems:
        click.echo(f"warning: {problem}", err=True)
