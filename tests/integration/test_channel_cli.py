"""`orch channel post|list|log` against a real registry on disk whose projects publish and
subscribe to channels of every kind, and the real SQLite task database that holds the
channels' ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from orchestration.channels.log import MAX_MESSAGE_BYTES, ChannelLog
from orchestration.cli import main
from orchestration.registry.live import LiveRegistry
from orchestration.tasks.store import TASKS_DB_URL_VAR, TaskStore
from tests.integration.test_cli_imports import run_orch
from tests.support.registry import RegistryDir

Invoke = Callable[..., Result]
CORE = """
channels:
  publish:
    - {name: api, kind: contract, paths: ["openapi.yaml", "src/*.pyi"]}
    - {name: notes, kind: messages}
    - {name: staging_db, kind: lease, slots: 2}
    - {name: internal, kind: messages, allow: [acme_api]}
"""
API = """
channels:
  publish:
    - {name: changes, kind: messages}
  subscribe: [acme_core.api, acme_core.notes, acme_core.internal]
"""
WEB = """
channels:
  subscribe: [acme_core.notes, acme_core.staging_db, acme_api.changes]
"""
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def registry(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> RegistryDir:
    """acme_core publishes a contract, two messages channels (one only acme_api may read) and
    a lease; acme_api publishes one messages channel; acme_web subscribes to both; quiet
    publishes nothing."""
    registry_dir.project("acme_core", CORE)
    registry_dir.project("acme_api", API)
    registry_dir.project("acme_web", WEB)
    registry_dir.project("quiet")
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv(TASKS_DB_URL_VAR, raising=False)
    return registry_dir


@pytest.fixture
def orch(registry: RegistryDir) -> Invoke:
    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def ledger(store: TaskStore) -> list[tuple[str, str, str, str | None]]:
    """Every entry as (channel, kind, project, body)."""
    return [
        (event.ref, str(event.kind), event.project, event.body)
        for event in ChannelLog(store).events()
    ]


def test_a_post_is_recorded_for_the_publisher_and_shown_by_log(
    orch: Invoke, store: TaskStore
) -> None:
    posted = orch("channel", "post", "acme_core.notes", "the API moves to v2 on Monday")
    assert posted.exit_code == 0, posted.output
    (event,) = ChannelLog(store).events()
    assert posted.stdout == f"{event.id}\n"
    assert "2 subscriber(s) get it with their next task: acme_api, acme_web" in posted.stderr
    assert (event.ref, event.kind, event.project, event.task) == (
        "acme_core.notes",
        "post",
        "acme_core",
        None,
    )
    assert event.body == "the API moves to v2 on Monday"

    shown = orch("channel", "log", "acme_core.notes")
    assert shown.exit_code == 0, shown.output
    head, body = shown.stdout.splitlines()
    assert head.split() == [
        f"#{event.id}",
        event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "post",
        "acme_core",
    ]
    assert body == "    the API moves to v2 on Monday"

    data = json.loads(orch("channel", "log", "acme_core.notes", "--json").stdout)
    assert data == {"channel": "acme_core.notes", "kind": "messages", "events": [event.as_json()]}


def test_post_json_prints_the_recorded_event(orch: Invoke, store: TaskStore) -> None:
    posted = orch("channel", "post", "acme_api.changes", "renamed /v1/users", "--json")
    assert posted.exit_code == 0, posted.output
    data = json.loads(posted.stdout)
    (event,) = ChannelLog(store).events()
    assert data == event.as_json()
    assert (data["channel"], data["kind"], data["project"], data["task"]) == (
        "acme_api.changes",
        "post",
        "acme_api",
        None,
    )


def test_post_reads_standard_input_for_dash(orch: Invoke, store: TaskStore) -> None:
    text = "line one\nline two: ünïcode\n"
    posted = orch("channel", "post", "acme_core.notes", "-", input=text)
    assert posted.exit_code == 0, posted.output
    assert [event.body for event in ChannelLog(store).events()] == [text]
    shown = orch("channel", "log", "acme_core.notes").stdout.splitlines()
    assert shown[1:] == ["    line one", "    line two: ünïcode"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "acme_core.api",
            "acme_core.api is a contract channel: its subscribers get files from the "
            "repository; post to a messages channel",
        ),
        (
            "acme_core.staging_db",
            "acme_core.staging_db is a lease channel: its subscribers' runs share a resource",
        ),
    ],
)
def test_posts_to_a_contract_or_lease_channel_are_refused(
    orch: Invoke, registry: RegistryDir, store: TaskStore, ref: str, expected: str
) -> None:
    refused = orch("channel", "post", ref, "hello")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert expected in refused.stderr
    core_file = str(registry.root / "projects" / "acme_core.yaml")
    assert (
        f"({core_file} publishes the messages channel(s) acme_core.notes, acme_core.internal)"
        in refused.stderr
    )
    assert ledger(store) == []


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "nobody.notes",
            "error: nobody.notes: no project named 'nobody' (known projects: acme_api, "
            "acme_core, acme_web, quiet); channels: acme_api.changes, acme_core.api, "
            "acme_core.internal, acme_core.notes, acme_core.staging_db",
        ),
        ("acme_core.news", "publishes no channel 'news' (it publishes: api (contract), "),
        ("quiet.notes", "publishes no channel 'notes' (it publishes: none)"),
        ("acme_core", "'acme_core': name a channel as PUBLISHER.CHANNEL; channels: acme_api."),
    ],
)
@pytest.mark.parametrize("command", ["post", "log"])
def test_an_unknown_channel_is_an_error_naming_the_known_ones(
    orch: Invoke, store: TaskStore, command: str, ref: str, expected: str
) -> None:
    args = ["channel", command, ref, *(["hello"] if command == "post" else [])]
    result = orch(*args)
    assert result.exit_code == 1
    assert expected in result.stderr
    assert result.stdout == ""
    assert ledger(store) == []


def test_an_unknown_channel_names_its_publishers_file(orch: Invoke, registry: RegistryDir) -> None:
    result = orch("channel", "post", "acme_core.news", "hello")
    core_file = registry.root / "projects" / "acme_core.yaml"
    assert (
        f"error: acme_core.news: {core_file} publishes no channel 'news' (it publishes: "
        "api (contract), notes (messages), staging_db (lease), internal (messages))\n"
    ) == result.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x" * (MAX_MESSAGE_BYTES + 1), f"a message may hold {MAX_MESSAGE_BYTES}"),
        ("é" * (MAX_MESSAGE_BYTES // 2 + 1), f"is {MAX_MESSAGE_BYTES + 2} bytes"),
        ("   \n\t", "the message is empty"),
        ("a\x00b", "NUL character"),
    ],
    ids=["over-size", "over-size-in-utf8", "blank", "nul"],
)
def test_a_message_that_cannot_be_posted_is_refused_and_not_recorded(
    orch: Invoke, store: TaskStore, text: str, problem: str
) -> None:
    refused = orch("channel", "post", "acme_core.notes", text)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: acme_core.notes: ")
    assert problem in refused.stderr and "nothing was posted" in refused.stderr
    assert ledger(store) == []
    # From standard input alike.
    assert orch("channel", "post", "acme_core.notes", "-", input=text).exit_code == 1
    assert ledger(store) == []


def test_exactly_the_largest_message_is_posted(orch: Invoke, store: TaskStore) -> None:
    text = "x" * MAX_MESSAGE_BYTES
    assert orch("channel", "post", "acme_core.notes", text).exit_code == 0
    assert [event.body for event in ChannelLog(store).events()] == [text]


def test_list_shows_every_published_channel_with_its_activity(
    orch: Invoke, store: TaskStore
) -> None:
    log = ChannelLog(store)
    log.post("acme_core", "notes", "one", project="acme_core", now=T0)
    log.post("acme_core", "notes", "two", project="acme_core", now=T0 + timedelta(minutes=1))
    log.delivered(
        "acme_core", "notes", project="acme_web", task="t1", upto=2, now=T0 + timedelta(hours=1)
    )
    log.delivered("acme_core", "api", project="acme_api", task="t2", commit="c" * 40, now=T0)
    log.refused(
        "acme_core",
        "internal",
        "acme_web may not read acme_core.internal",
        project="acme_web",
        now=T0 + timedelta(days=1),
    )

    listed = orch("channel", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {
        "channels": [
            {
                "channel": "acme_api.changes",
                "publisher": "acme_api",
                "name": "changes",
                "kind": "messages",
                "subscribers": ["acme_web"],
                "allow": None,
                "paths": [],
                "slots": None,
                "last_activity": None,
                "messages": 0,
            },
            {
                "channel": "acme_core.api",
                "publisher": "acme_core",
                "name": "api",
                "kind": "contract",
                "subscribers": ["acme_api"],
                "allow": None,
                "paths": ["openapi.yaml", "src/*.pyi"],
                "slots": None,
                "last_activity": "2026-11-30T09:00:00+00:00",
                "messages": 0,
            },
            {
                "channel": "acme_core.internal",
                "publisher": "acme_core",
                "name": "internal",
                "kind": "messages",
                "subscribers": ["acme_api"],
                "allow": ["acme_api"],
                "paths": [],
                "slots": None,
                "last_activity": "2026-12-01T09:00:00+00:00",
                "messages": 0,
            },
            {
                "channel": "acme_core.notes",
                "publisher": "acme_core",
                "name": "notes",
                "kind": "messages",
                "subscribers": ["acme_api", "acme_web"],
                "allow": None,
                "paths": [],
                "slots": None,
                "last_activity": "2026-11-30T10:00:00+00:00",
                "messages": 2,
            },
            {
                "channel": "acme_core.staging_db",
                "publisher": "acme_core",
                "name": "staging_db",
                "kind": "lease",
                "subscribers": ["acme_web"],
                "allow": None,
                "paths": [],
                "slots": 2,
                "last_activity": None,
                "messages": 0,
            },
        ]
    }

    table = orch("channel", "list").stdout.splitlines()
    assert table[0].split() == [
        "CHANNEL",
        "KIND",
        "SUBSCRIBERS",
        "ALLOW",
        "PATHS/SLOTS",
        "LAST",
        "ACTIVITY",
        "MESSAGES",
    ]
    rows = {line.split()[0]: line for line in table[1:]}
    assert list(rows) == [
        "acme_api.changes",
        "acme_core.api",
        "acme_core.internal",
        "acme_core.notes",
        "acme_core.staging_db",
    ]
    assert rows["acme_api.changes"].split() == [
        "acme_api.changes",
        "messages",
        "acme_web",
        "any",
        "-",
        "never",
        "0",
    ]
    assert rows["acme_core.api"].split() == [
        "acme_core.api",
        "contract",
        "acme_api",
        "any",
        "openapi.yaml,",
        "src/*.pyi",
        "2026-11-30T09:00:00Z",
        "0",
    ]
    assert rows["acme_core.internal"].split()[2:4] == ["acme_api", "acme_api"]
    assert rows["acme_core.notes"].split()[2:] == [
        "acme_api,",
        "acme_web",
        "any",
        "-",
        "2026-11-30T10:00:00Z",
        "2",
    ]
    assert rows["acme_core.staging_db"].split()[1:] == [
        "lease",
        "acme_web",
        "any",
        "2",
        "slot(s)",
        "never",
        "0",
    ]


def test_list_without_channels_says_so(
    registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_dir.project("alone")
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv(TASKS_DB_URL_VAR, raising=False)
    result = CliRunner().invoke(main, ["channel", "list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "no project publishes a channel" in result.stdout
    as_json = CliRunner().invoke(main, ["channel", "list", "--json"], catch_exceptions=False)
    assert json.loads(as_json.stdout) == {"channels": []}


def test_log_shows_every_kind_of_entry_and_limit_keeps_the_last(
    orch: Invoke, store: TaskStore
) -> None:
    log = ChannelLog(store)
    first = log.post("acme_core", "notes", "one", project="acme_core", now=T0)
    second = log.post("acme_core", "notes", "two\nlines", project="acme_core", now=T0)
    delivery = log.delivered(
        "acme_core", "notes", project="acme_web", task="t1", upto=second.id, now=T0
    )
    refusal = log.refused(
        "acme_core", "notes", "the ledger said no", project="acme_api", task="t2", now=T0
    )
    log.post("acme_api", "changes", "elsewhere", project="acme_api", now=T0)

    text = orch("channel", "log", "acme_core.notes").stdout.splitlines()
    stamp = "2026-11-30T09:00:00Z"
    assert [line.split() for line in text] == [
        [f"#{first.id}", stamp, "post", "acme_core"],
        ["one"],
        [f"#{second.id}", stamp, "post", "acme_core"],
        ["two"],
        ["lines"],
        [
            f"#{delivery.id}",
            stamp,
            "delivery",
            "acme_web",
            "task",
            "t1",
            "messages",
            "up",
            "to",
            f"#{second.id}",
        ],
        [f"#{refusal.id}", stamp, "refusal", "acme_api", "task", "t2"],
        ["the", "ledger", "said", "no"],
    ]

    limited = json.loads(orch("channel", "log", "acme_core.notes", "--limit", "2", "--json").stdout)
    assert [event["id"] for event in limited["events"]] == [delivery.id, refusal.id]
    assert [event["kind"] for event in limited["events"]] == ["delivery", "refusal"]
    assert limited["events"][0]["upto"] == second.id
    assert limited["events"][1]["body"] == "the ledger said no"
    last = orch("channel", "log", "acme_core.notes", "--limit", "1").stdout.splitlines()
    assert last[0].split()[:3] == [f"#{refusal.id}", stamp, "refusal"]
    assert orch("channel", "log", "acme_core.notes", "--limit", "0").exit_code == 2


def test_log_of_a_declared_channel_without_entries(orch: Invoke) -> None:
    empty = orch("channel", "log", "acme_core.staging_db")
    assert empty.exit_code == 0
    assert empty.stdout == "acme_core.staging_db: nothing posted, delivered or refused yet\n"
    data = json.loads(orch("channel", "log", "acme_core.staging_db", "--json").stdout)
    assert data == {"channel": "acme_core.staging_db", "kind": "lease", "events": []}


def test_log_of_an_archived_publisher_shows_what_it_recorded(
    orch: Invoke, registry: RegistryDir, store: TaskStore
) -> None:
    posted = orch("channel", "post", "acme_api.changes", "last words")
    assert posted.exit_code == 0, posted.output
    archived = registry.root / "projects" / ".archived"
    archived.mkdir()
    (registry.root / "projects" / "acme_api.yaml").rename(archived / "acme_api.yaml")
    assert "acme_api" in LiveRegistry.of(registry.settings).current().archived

    shown = orch("channel", "log", "acme_api.changes")
    assert shown.exit_code == 0, shown.output
    assert "project 'acme_api' is archived" in shown.stderr
    assert "showing what its ledger recorded" in shown.stderr
    assert shown.stdout.splitlines()[1] == "    last words"
    data = json.loads(orch("channel", "log", "acme_api.changes", "--json").stdout)
    assert data["kind"] is None and [e["body"] for e in data["events"]] == ["last words"]
    # Posting to it is refused; a channel it never used is unknown.
    refused = orch("channel", "post", "acme_api.changes", "more")
    assert refused.exit_code == 1 and "is archived" in refused.stderr
    assert orch("channel", "log", "acme_api.other").exit_code == 1
    assert len(ChannelLog(store).events()) == 1


def test_channel_commands_do_not_import_dagster(registry: RegistryDir) -> None:
    TaskStore.from_settings(registry.settings, environ={}).dispose()
    posted = run_orch(registry, "channel", "post", "acme_core.notes", "hello")
    assert posted.returncode == 0, posted.stderr
    listed = run_orch(registry, "channel", "list")
    assert listed.returncode == 0, listed.stderr
    assert "acme_core.notes" in listed.stdout
    shown = run_orch(registry, "channel", "log", "acme_core.notes")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1] == "    hello"
