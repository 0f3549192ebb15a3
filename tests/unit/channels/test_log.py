"""The channels' ledger on the real task database (SQLite, and PostgreSQL on loopback): what a
subscriber has not read yet across deliveries, reading on from a cursor, when each channel was
last active, how many messages it holds, and the messages refused before they are recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration.channels.log import (
    MAX_MESSAGE_BYTES,
    ChannelEvent,
    ChannelLog,
    EventKind,
    MessageTooLong,
    latest_ids,
)
from orchestration.tasks.store import TaskStore

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    opened = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    opened.dispose()


@pytest.fixture
def log(store: TaskStore) -> ChannelLog:
    return ChannelLog(store)


def bodies(events: list[ChannelEvent]) -> list[str | None]:
    return [event.body for event in events]


def test_a_subscriber_reads_every_message_until_its_first_delivery(log: ChannelLog) -> None:
    assert log.unread("core", "notes", "web") == []
    first = log.post("core", "notes", "one", project="core", now=T0)
    second = log.post("core", "notes", "two", project="core", now=T0)
    log.post("core", "other", "elsewhere", project="core", now=T0)
    log.post("api", "notes", "same name, other publisher", project="api", now=T0)

    unread = log.unread("core", "notes", "web")
    assert [event.id for event in unread] == [first.id, second.id]
    assert bodies(unread) == ["one", "two"]
    assert {(event.kind, event.ref, event.project) for event in unread} == {
        (EventKind.POST, "core.notes", "core")
    }


def test_a_delivery_moves_only_its_subscribers_cursor(log: ChannelLog) -> None:
    first = log.post("core", "notes", "one", project="core", now=T0)
    second = log.post("core", "notes", "two", project="core", now=T0)
    log.delivered("core", "notes", project="web", task="t1", upto=first.id, now=T0)

    assert bodies(log.unread("core", "notes", "web")) == ["two"]
    assert bodies(log.unread("core", "notes", "api")) == ["one", "two"]

    third = log.post("core", "notes", "three", project="core", now=T0)
    log.delivered("core", "notes", project="web", task="t2", upto=third.id, now=T0)
    assert log.unread("core", "notes", "web") == []
    # A delivery of another channel, a contract's (no `upto`) and a refusal move nothing.
    log.delivered("core", "other", project="api", task="t3", upto=third.id, now=T0)
    log.delivered("core", "notes", project="api", task="t3", commit="c" * 40, now=T0)
    log.refused("core", "notes", "not allowed", project="api", task="t3", now=T0)
    assert bodies(log.unread("core", "notes", "api")) == ["one", "two", "three"]
    # A delivery that handed over less than an earlier one does not bring old messages back.
    log.delivered("core", "notes", project="web", task="t4", upto=second.id, now=T0)
    assert log.unread("core", "notes", "web") == []
    fourth = log.post("core", "notes", "four", project="core", now=T0)
    assert [event.id for event in log.unread("core", "notes", "web")] == [fourth.id]


def test_events_read_on_from_a_cursor_oldest_first(log: ChannelLog) -> None:
    posted = [log.post("core", "notes", f"m{i}", project="core", now=T0) for i in range(4)]
    delivery = log.delivered("core", "notes", project="web", task="t1", upto=posted[1].id)
    refusal = log.refused("core", "notes", "too late", project="api")
    log.post("core", "other", "elsewhere", project="core", now=T0)

    notes = log.events("core", "notes")
    assert [event.id for event in notes] == [*(e.id for e in posted), delivery.id, refusal.id]
    assert [event.kind for event in notes[-2:]] == [EventKind.DELIVERY, EventKind.REFUSAL]
    assert notes[-2].upto == posted[1].id and notes[-2].task == "t1"
    assert notes[-1].body == "too late" and notes[-1].project == "api"

    cursor = posted[1].id
    assert [e.id for e in log.events("core", "notes", after=cursor)] == [
        posted[2].id,
        posted[3].id,
        delivery.id,
        refusal.id,
    ]
    assert [e.id for e in log.events("core", "notes", after=cursor, limit=2)] == [
        posted[2].id,
        posted[3].id,
    ]
    assert log.events("core", "notes", after=latest_ids(notes)) == []
    assert len(log.events()) == 7 and len(log.events("core")) == 7
    assert latest_ids([]) == 0


def test_last_activity_and_message_counts_by_channel(log: ChannelLog) -> None:
    assert log.last_activity() == {} and log.message_counts() == {}
    log.post("core", "notes", "one", project="core", now=T0)
    log.post("core", "notes", "two", project="core", now=T0 + timedelta(minutes=5))
    log.delivered("core", "notes", project="web", task="t1", upto=2, now=T0 + timedelta(hours=1))
    log.delivered("core", "api", project="web", task="t1", commit="c" * 40, now=T0)
    log.refused("core", "lease", "busy", project="web", now=T0 - timedelta(days=1))

    assert log.last_activity() == {
        ("core", "notes"): T0 + timedelta(hours=1),
        ("core", "api"): T0,
        ("core", "lease"): T0 - timedelta(days=1),
    }
    assert all(moment.tzinfo is not None for moment in log.last_activity().values())
    assert log.message_counts() == {("core", "notes"): 2}


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("x" * (MAX_MESSAGE_BYTES + 1), MessageTooLong, f"may hold {MAX_MESSAGE_BYTES}"),
        ("é" * (MAX_MESSAGE_BYTES // 2) + "x", MessageTooLong, f"{MAX_MESSAGE_BYTES + 1} bytes"),
        ("", ValueError, "the message is empty"),
        (" \n\t ", ValueError, "the message is empty"),
        ("a\x00b", ValueError, "NUL character"),
    ],
    ids=["over-size", "over-size-in-utf8", "empty", "blank", "nul"],
)
def test_a_message_too_long_or_empty_is_refused_and_not_recorded(
    log: ChannelLog, body: str, error: type[ValueError], message: str
) -> None:
    with pytest.raises(error, match=message):
        log.post("core", "notes", body, project="core")
    assert log.events() == [] and log.message_counts() == {}


def test_a_message_of_exactly_the_limit_is_recorded(log: ChannelLog) -> None:
    body = "é" * (MAX_MESSAGE_BYTES // 2)
    event = log.post("core", "notes", body, project="core", task="t1", now=T0)
    assert log.events() == [event]
    assert (event.body, event.task, event.created_at) == (body, "t1", T0)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_ledger_on_each_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'tasks.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = TaskStore(url)
    try:
        log = ChannelLog(store)
        first = log.post("core", "notes", "ünïcode ✓", project="core", now=T0)
        second = log.post("core", "notes", "two", project="core", now=T0 + timedelta(seconds=1))
        delivery = log.delivered(
            "core", "notes", project="web", task="t1", upto=first.id, now=T0 + timedelta(hours=1)
        )
        assert first.id < second.id < delivery.id
        assert log.events("core", "notes") == [first, second, delivery]
        assert [e.id for e in log.unread("core", "notes", "web")] == [second.id]
        assert [e.id for e in log.unread("core", "notes", "api")] == [first.id, second.id]
        assert log.events("core", "notes", after=first.id, limit=1) == [second]
        assert log.last_activity() == {("core", "notes"): T0 + timedelta(hours=1)}
        assert log.message_counts() == {("core", "notes"): 2}
        with pytest.raises(MessageTooLong):
            log.post("core", "notes", "x" * (MAX_MESSAGE_BYTES + 1), project="core")
        assert len(log.events()) == 3
        assert first.as_json() == {
            "id": first.id,
            "channel": "core.notes",
            "kind": "post",
            "project": "core",
            "task": None,
            "commit": None,
            "body": "ünïcode ✓",
            "upto": None,
            "created_at": "2026-11-30T09:00:00+00:00",
        }
    finally:
        store.dispose()


def test_forgetting_a_project_deletes_its_channels_and_its_entries_only(log: ChannelLog) -> None:
    log.post("core", "notes", "from core", project="core")
    log.delivered("core", "notes", project="api", task="t1", upto=1)
    log.post("api", "notes", "from api", project="api")
    log.refused("web", "notes", "not published", project="core", task="t2")
    log.post("web", "notes", "from web", project="web")
    assert log.forget_project("core") == 3
    assert [(e.publisher, e.project) for e in log.events()] == [("api", "api"), ("web", "web")]
