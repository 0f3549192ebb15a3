"""Channels in the registry: each project file's declarations, and the checks across files
(a subscription names a declared channel that allows the subscriber), with errors naming both
files; inheritance and provenance as for every key."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from orchestration.cli import main
from orchestration.registry.channels import lease_pools, subscribers, subscriptions
from tests.support.registry import RegistryDir

PUBLISHER = """
channels:
  publish:
    - {name: api, kind: contract, paths: ["openapi.yaml", "src/acme_core/*.pyi"]}
    - {name: notes, kind: messages}
    - {name: staging_db, kind: lease, slots: 2}
    - {name: internal, kind: contract, paths: ["docs/internal/*"], allow: [acme_api]}
"""


def shown(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_a_valid_set_of_channels_loads(registry_dir: RegistryDir) -> None:
    registry_dir.project("acme_core", PUBLISHER)
    registry_dir.project(
        "acme_api",
        "channels:\n  subscribe: [acme_core.api, acme_core.notes, acme_core.internal]\n",
    )
    registry_dir.project("acme_web", "channels:\n  subscribe: [acme_core.staging_db]\n")
    registry = registry_dir.load()
    assert registry.errors == ()
    specs = {p.name: p.spec for p in registry.projects}
    api = [
        (s.publisher, s.channel.name, s.channel.kind)
        for s in subscriptions(specs, specs["acme_api"])
    ]
    assert api == [
        ("acme_core", "api", "contract"),
        ("acme_core", "notes", "messages"),
        ("acme_core", "internal", "contract"),
    ]
    assert subscribers(specs, "acme_core", "notes") == ["acme_api"]
    assert subscribers(specs, "acme_core", "staging_db") == ["acme_web"]
    assert lease_pools(specs) == {"lease_acme_core_staging_db": 2}


def test_a_channel_the_publisher_does_not_declare_names_both_files(
    registry_dir: RegistryDir,
) -> None:
    core = registry_dir.project("acme_core", PUBLISHER)
    api = registry_dir.project("acme_api", "channels:\n  subscribe: [acme_core.apj]\n")
    registry = registry_dir.load()
    (error,) = registry.errors
    assert Path(error.file).resolve() == api.resolve()
    assert error.key == "channels.subscribe[0]"
    assert error.line == 4
    assert shown(core) in error.message
    assert "publishes no channel 'apj'" in error.message
    assert "api, notes, staging_db, internal" in error.message
    # the subscriber is what is broken; the publisher still loads
    assert [p.name for p in registry.projects] == ["acme_core"]


def test_an_allow_list_that_leaves_the_subscriber_out_is_an_error(
    registry_dir: RegistryDir,
) -> None:
    core = registry_dir.project("acme_core", PUBLISHER)
    registry_dir.project("acme_api", "")
    web = registry_dir.project("acme_web", "channels:\n  subscribe: [acme_core.internal]\n")
    registry = registry_dir.load()
    (error,) = registry.errors
    assert Path(error.file).resolve() == web.resolve()
    assert shown(core) in error.message
    assert "allows only acme_api" in error.message and "not acme_web" in error.message
    assert sorted(p.name for p in registry.projects) == ["acme_api", "acme_core"]


def test_unknown_publisher_own_channel_and_unknown_allowed_project(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("acme_core", PUBLISHER + "  subscribe: [acme_core.notes]\n")
    registry_dir.project("acme_api", "channels:\n  subscribe: [nobody.api]\n")
    registry_dir.project(
        "acme_web",
        "channels:\n  publish:\n    - {name: x, kind: messages, allow: [ghost]}\n",
    )
    messages = sorted(f"{e.key}: {e.message}" for e in registry_dir.load().errors)
    assert len(messages) == 3, messages
    own, nobody, ghost = sorted(messages, key=lambda m: ("its own" not in m, "nobody" not in m))
    assert own.startswith("channels.subscribe[0]: acme_core.notes: a project cannot subscribe")
    assert nobody.startswith("channels.subscribe[0]: nobody.api: unknown project 'nobody'")
    assert ghost.startswith("channels.publish[0].allow[0]: unknown project 'ghost'")


def test_declarations_are_checked_in_their_own_file(registry_dir: RegistryDir) -> None:
    registry_dir.project(
        "p",
        """
        channels:
          publish:
            - {name: api, kind: contract}
            - {name: db, kind: lease, paths: [x]}
            - {name: up, kind: contract, paths: ["../secrets/*"]}
            - {name: log, kind: messages, slots: 2}
          subscribe: [no_dot]
        """,
    )
    text = "\n".join(str(error) for error in registry_dir.load().errors)
    assert "contract channel 'api' needs paths" in text
    assert "paths are for contract channels; 'db' is lease" in text
    assert "'../secrets/*' is not a channel path" in text
    assert "slots are for lease channels" in text
    assert "'no_dot' is not a channel: write PUBLISHER.CHANNEL" in text


def test_a_broken_or_archived_publisher_is_a_warning_for_its_subscribers(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("acme_core", "priority: nonsense\n" + PUBLISHER)
    registry_dir.project("acme_api", "channels:\n  subscribe: [acme_core.api]\n")
    registry = registry_dir.load()
    assert [p.name for p in registry.projects] == ["acme_api"]
    assert any("'acme_core' has errors" in warning for warning in registry.warnings)
    specs = {p.name: p.spec for p in registry.projects}
    assert subscriptions(specs, specs["acme_api"]) == []


def test_channels_inherit_from_a_template_with_their_origin(
    registry_dir: RegistryDir, monkeypatch
) -> None:
    template = registry_dir.write(
        "projects/templates/consumer.yaml", "channels:\n  subscribe: [acme_core.notes]\n"
    )
    registry_dir.project("acme_core", PUBLISHER)
    registry_dir.project("acme_api", "extends: consumer\n")
    registry = registry_dir.load()
    assert registry.errors == ()
    assert registry.project("acme_api").spec.channels.subscribe == ("acme_core.notes",)
    registry_dir.use_in(monkeypatch)
    result = CliRunner().invoke(main, ["config", "show", "acme_api", "--origin"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if "channels.subscribe" in line]
    assert "acme_core.notes" in line
    assert line.endswith(f"{template.name}:2")
