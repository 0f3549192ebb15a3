"""`config/backup.yaml`: the scheduled backup is off without the file, validated with the file
and key named when it is there, and a broken one never stops tasks."""

from __future__ import annotations

from tests.support.registry import RegistryDir


def test_without_the_file_there_is_no_scheduled_backup(registry_dir: RegistryDir) -> None:
    registry = registry_dir.load()
    assert registry.backup is None and registry.errors == ()


def test_the_file_gives_the_schedule_and_its_defaults(registry_dir: RegistryDir) -> None:
    registry_dir.write("config/backup.yaml", "schedule: '0 3 * * *'\nkeep: 3\n")
    backup = registry_dir.load().backup
    assert backup is not None
    assert (backup.schedule, backup.keep, backup.to, backup.verify) == ("0 3 * * *", 3, None, True)


def test_a_broken_file_is_an_error_naming_it_and_does_not_stop_tasks(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.write("config/backup.yaml", "schedule: every night\nkeep: 0\n")
    registry = registry_dir.load()
    assert registry.backup is None
    found = {(e.file.rsplit("/", 1)[-1], e.key) for e in registry.errors}
    assert found == {("backup.yaml", "schedule"), ("backup.yaml", "keep")}
    assert registry.config_errors == ()  # agents and pools load: tasks still run


def test_a_bad_preemption_rule_is_an_error_naming_the_pools_file_and_key(
    registry_dir: RegistryDir,
) -> None:
    pools = (registry_dir.root / "config" / "pools.yaml").read_text()
    registry_dir.write("config/pools.yaml", pools + "preemption:\n  after: soon\n")
    registry = registry_dir.load()
    found = {(e.file.rsplit("/", 1)[-1], e.key) for e in registry.errors}
    assert ("pools.yaml", "preemption.after") in found
    assert registry.pools is None  # a broken pools file holds every start, as before
