"""The project files as last read, kept under ORCH_HOME for the next process: used while the
files (and the repository directories they name) are as they were, never otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestration.registry import cache as cache_module
from orchestration.registry import loader
from orchestration.registry.live import LiveRegistry
from tests.support.registry import RegistryDir


@pytest.fixture(autouse=True)
def keep_small_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "KEEP_FROM", 1)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the project files were read (not taken from the cache)."""
    counted: list[int] = []
    real = loader._ProjectLoader.load_all

    def load_all(self: loader._ProjectLoader, errors: list) -> list:
        counted.append(1)
        return real(self, errors)

    monkeypatch.setattr(loader._ProjectLoader, "load_all", load_all)
    return counted


def _entries(registry_dir: RegistryDir) -> list[Path]:
    return sorted((registry_dir.settings.home / cache_module.CACHE_DIR).glob("*.pickle"))


def test_another_process_takes_the_projects_from_the_cache(
    registry_dir: RegistryDir, reads: list[int]
) -> None:
    registry_dir.project("alpha", "priority: high\n")
    first = LiveRegistry(registry_dir.settings, environ={}).current()
    assert len(reads) == 1 and len(_entries(registry_dir)) == 1
    second = LiveRegistry(registry_dir.settings, environ={}).current()  # a new process's
    assert len(reads) == 1
    assert second.projects == first.projects and second.spec("alpha").priority == 75


def test_a_changed_file_or_override_is_read_again(
    registry_dir: RegistryDir, reads: list[int]
) -> None:
    alpha = registry_dir.project("alpha")
    LiveRegistry(registry_dir.settings, environ={}).current()
    alpha.write_text(alpha.read_text() + "priority: critical\n")
    os.utime(alpha, ns=(1, 1))  # a different time, whatever the clock's resolution
    assert LiveRegistry(registry_dir.settings, environ={}).current().spec("alpha").priority == 100
    overridden = LiveRegistry(registry_dir.settings, environ={"ORCH__ALPHA__PRIORITY": "low"})
    assert overridden.current().spec("alpha").priority == 25
    assert len(reads) == 3


def test_a_repository_directory_that_appeared_makes_the_entry_stale(
    registry_dir: RegistryDir, reads: list[int], tmp_path: Path
) -> None:
    missing = tmp_path / "later"
    registry_dir.project("alpha", repo=str(missing))
    assert LiveRegistry(registry_dir.settings, environ={}).current().errors
    missing.mkdir()
    again = LiveRegistry(registry_dir.settings, environ={}).current()
    assert again.errors == () and again.names == ("alpha",)
    assert len(reads) == 2


def test_an_entry_others_may_write_or_that_is_broken_is_not_used(
    registry_dir: RegistryDir, reads: list[int]
) -> None:
    registry_dir.project("alpha")
    LiveRegistry(registry_dir.settings, environ={}).current()
    (entry,) = _entries(registry_dir)
    entry.chmod(0o666)
    LiveRegistry(registry_dir.settings, environ={}).current()
    assert len(reads) == 2
    (entry,) = _entries(registry_dir)
    entry.write_bytes(b"not a pickle")
    entry.chmod(0o600)
    assert LiveRegistry(registry_dir.settings, environ={}).current().names == ("alpha",)
    assert len(reads) == 3


def test_a_small_registry_creates_nothing(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "KEEP_FROM", 2)
    registry_dir.project("alpha")
    LiveRegistry(registry_dir.settings, environ={}).current()
    assert _entries(registry_dir) == []
