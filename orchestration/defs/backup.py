"""The scheduled backup (`config/backup.yaml`): the `orchestration/backup` asset, its `backup` job
and schedule. Each materialization is one backup, verified and pruned to the newest `keep`, with
its size, duration and digest, so the backups' history shows in the UI."""

# No `from __future__ import annotations` here: Dagster reads the annotations of asset and
# schedule functions (context and resource types) when the definitions are built.

import time
from pathlib import Path

import dagster as dg

from orchestration.defs.resources import AgentTasks
from orchestration.registry.loader import HOME_PLACEHOLDER
from orchestration.registry.models import BackupFile
from orchestration.settings import Settings
from orchestration.tags import ROLE_TAG

BACKUP_KEY = dg.AssetKey(["orchestration", "backup"])
BACKUP_JOB = "backup"
#: Where backups go when `config/backup.yaml` names no `to`, under ORCH_HOME.
DEFAULT_DIR = "backups"


def backup_dir(backup: BackupFile, settings: Settings) -> Path:
    """The directory `backup.to` names (`${ORCH_HOME}` expanded), else ORCH_HOME/backups."""
    if not backup.to:
        return settings.home / DEFAULT_DIR
    return Path(backup.to.replace(HOME_PLACEHOLDER, str(settings.home))).expanduser()


def build_backup_defs(backup: BackupFile) -> dg.Definitions:
    """The asset, job and schedule of the scheduled backup `backup` describes."""

    @dg.asset(
        key=BACKUP_KEY,
        group_name="orchestration",
        description=(
            f"One backup of all state (`orch backup create --online`), verified "
            f"(`orch backup verify`) and the newest {backup.keep} kept, on `{backup.schedule}` "
            "(config/backup.yaml). A run of Dagster's takes it, so it is online: a quiesced "
            "backup would wait for its own run; a restore fails what was in flight and queues "
            "its tasks again."
        ),
        tags={ROLE_TAG: "backup"},
        kinds={"backup"},
    )
    def backup_asset(
        context: dg.AssetExecutionContext, agent_tasks: AgentTasks
    ) -> dg.MaterializeResult:
        from orchestration.state.backup import create_backup, prune_backups, verify_backup

        registry = agent_tasks.registry()
        current = registry.backup or backup  # the file as it is now
        settings = registry.settings
        target = backup_dir(current, settings)
        started = time.monotonic()
        store = agent_tasks.store()
        try:
            manifest = create_backup(
                settings,
                context.instance,
                store,
                to=target,
                online=True,
                progress=context.log.info,
                registry=registry,
            )
        finally:
            store.dispose()
        verified = False
        if current.verify:
            verify_backup(manifest.path, progress=context.log.info)
            verified = True
        deleted = prune_backups(target, current.keep)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(manifest.path)),
                "size_bytes": manifest.bytes,
                "files": len(manifest.files),
                "duration_s": round(time.monotonic() - started, 3),
                "digest": manifest.state_digest.digest,
                "mode": manifest.mode,
                "verified": verified,
                "deleted": dg.MetadataValue.json([str(path) for path in deleted]),
            }
        )

    job = dg.define_asset_job(BACKUP_JOB, selection=[BACKUP_KEY])
    schedule = dg.ScheduleDefinition(
        name=BACKUP_JOB,
        job=job,
        cron_schedule=backup.schedule,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Back up all state, verify the backup, keep the newest ones.",
    )
    return dg.Definitions(assets=[backup_asset], jobs=[job], schedules=[schedule])
