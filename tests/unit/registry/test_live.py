"""The live registry: re-read when a file, an ORCH__ override or PATH changes; otherwise the
same parsed registry is handed out again."""

from __future__ import annotations

from orchestration.registry.live import LiveRegistry
from tests.support.registry import RegistryDir


def test_unchanged_files_give_the_same_registry(registry_dir: RegistryDir) -> None:
    registry_dir.project("alpha")
    live = LiveRegistry(registry_dir.settings, environ={})
    assert live.current() is live.current()


def test_added_edited_and_removed_files_are_seen(registry_dir: RegistryDir) -> None:
    registry_dir.project("alpha")
    live = LiveRegistry(registry_dir.settings, environ={})
    assert live.current().names == ("alpha",)

    beta = registry_dir.project("beta")
    assert live.current().names == ("alpha", "beta")

    beta.write_text(beta.read_text() + "priority: high\n")
    assert live.current().spec("beta").priority == 75

    beta.unlink()
    assert live.current().names == ("alpha",)


def test_config_files_and_templates_are_watched(registry_dir: RegistryDir) -> None:
    registry_dir.project("alpha", "extends: base\n")
    registry_dir.write("projects/templates/base.yaml", "priority: low\n")
    live = LiveRegistry(registry_dir.settings, environ={})
    assert live.current().spec("alpha").priority == 25

    registry_dir.write("projects/templates/base.yaml", "priority: critical\n")
    assert live.current().spec("alpha").priority == 100

    pools = registry_dir.root / "config" / "pools.yaml"
    pools.write_text("nonsense: [\n")
    assert live.current().config_errors


def test_overrides_and_path_change_the_fingerprint(registry_dir: RegistryDir) -> None:
    registry_dir.project("alpha")
    environ = {"PATH": "/usr/bin"}
    live = LiveRegistry(registry_dir.settings, environ=environ)
    live.current()
    first = live.fingerprint
    live.current()
    assert live.fingerprint == first

    environ["ORCH__ALPHA__PRIORITY"] = "high"
    assert live.current().spec("alpha").priority == 75
    second = live.fingerprint
    assert second != first

    environ["PATH"] = "/usr/local/bin:/usr/bin"
    live.current()
    assert live.fingerprint != second


def test_one_live_registry_per_process_and_settings(registry_dir: RegistryDir) -> None:
    settings = registry_dir.settings
    assert LiveRegistry.of(settings) is LiveRegistry.of(settings)


def test_a_project_is_found_by_name_as_it_is_listed(registry_dir: RegistryDir) -> None:
    for name in ("alpha", "beta", "gamma"):
        registry_dir.project(name)
    registry = LiveRegistry(registry_dir.settings, environ={}).current()
    for project in registry.projects:
        assert registry.spec(project.name) is project.spec
        assert registry.project(project.name) is project
    assert registry.spec("delta") is None
