"""The channels' ledger in the task database (`orch_channel_events`, revision 0006): every
message posted, every delivery to a task and every refusal, so that a subscriber gets the
messages since its last task, `orch channel log` shows a channel's history and the UI records
each as an observation of the channel's asset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from orchestration.tasks.store import as_utc

if TYPE_CHECKING:
    from orchestration.tasks.store import TaskStore

#: The most a message may hold, in bytes of UTF-8: notes, not files (a contract carries files).
MAX_MESSAGE_BYTES = 8 * 1024


class EventKind(StrEnum):
    POST = "post"  # a message posted (body: its text; project: who posted it)
    DELIVERY = "delivery"  # a channel handed to a subscriber's task (project: the subscriber)
    REFUSAL = "refusal"  # a post or a read refused (body: why; project: who asked)


_metadata = sa.MetaData()
#: Made by the task database's migrations (orchestration.tasks.migrations, revision 0006).
events_table = sa.Table(
    "orch_channel_events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("publisher", sa.String(63), nullable=False),
    sa.Column("channel", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("project", sa.String(63), nullable=False),
    sa.Column("task", sa.String(32)),
    sa.Column("commit", sa.String(64)),
    sa.Column("body", sa.Text),
    sa.Column("upto", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_orch_channel_events_channel", "publisher", "channel"),
)


@dataclass(frozen=True)
class ChannelEvent:
    """One entry of the ledger. `commit`: the publisher's commit a contract was copied from;
    `upto`: the newest message id a delivery handed over."""

    id: int
    publisher: str
    channel: str
    kind: EventKind
    project: str
    task: str | None
    commit: str | None
    body: str | None
    upto: int | None
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.publisher}.{self.channel}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.ref,
            "kind": str(self.kind),
            "project": self.project,
            "task": self.task,
            "commit": self.commit,
            "body": self.body,
            "upto": self.upto,
            "created_at": self.created_at.isoformat(),
        }


class MessageTooLong(ValueError):
    """A message over MAX_MESSAGE_BYTES."""


class ChannelLog:
    """The ledger, over a task store's database."""

    def __init__(self, store: TaskStore) -> None:
        self.engine = store.engine

    def post(
        self,
        publisher: str,
        channel: str,
        body: str,
        *,
        project: str,
        task: str | None = None,
        now: datetime | None = None,
    ) -> ChannelEvent:
        """Record a message on `publisher.channel`; MessageTooLong over MAX_MESSAGE_BYTES, and
        ValueError for an empty one or one with a NUL character (PostgreSQL cannot store it in
        text). Whether `project` may post is the caller's check."""
        size = len(body.encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLong(
                f"the message is {size} bytes; a message may hold {MAX_MESSAGE_BYTES} "
                "(a contract channel carries files)"
            )
        if not body.strip():
            raise ValueError("the message is empty")
        if "\x00" in body:
            raise ValueError("the message contains a NUL character")
        return self._add(EventKind.POST, publisher, channel, project, task, body=body, now=now)

    def delivered(
        self,
        publisher: str,
        channel: str,
        *,
        project: str,
        task: str,
        commit: str | None = None,
        upto: int | None = None,
        now: datetime | None = None,
    ) -> ChannelEvent:
        """Record that `project`'s `task` got the channel (a contract as of `commit`, the
        messages up to id `upto`)."""
        return self._add(
            EventKind.DELIVERY, publisher, channel, project, task, commit=commit, upto=upto, now=now
        )

    def refused(
        self,
        publisher: str,
        channel: str,
        reason: str,
        *,
        project: str,
        task: str | None = None,
        now: datetime | None = None,
    ) -> ChannelEvent:
        """Record that `project` (its `task`) was refused on `publisher.channel`, and why."""
        return self._add(EventKind.REFUSAL, publisher, channel, project, task, body=reason, now=now)

    def cursor(self, publisher: str, channel: str, subscriber: str) -> int | None:
        """The newest message id of `publisher.channel` `subscriber` was handed so far; None
        before its first delivery of messages."""
        table = events_table
        with self.engine.connect() as conn:
            seen = conn.execute(
                sa.select(sa.func.max(table.c.upto)).where(
                    table.c.publisher == publisher,
                    table.c.channel == channel,
                    table.c.kind == EventKind.DELIVERY.value,
                    table.c.project == subscriber,
                )
            ).scalar()
        return None if seen is None else int(seen)

    def unread(self, publisher: str, channel: str, subscriber: str) -> list[ChannelEvent]:
        """The messages of `publisher.channel` posted after the last ones `subscriber` was
        handed (all of them before its first delivery), oldest first."""
        table = events_table
        on_channel = sa.and_(table.c.publisher == publisher, table.c.channel == channel)
        seen = self.cursor(publisher, channel, subscriber)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table)
                .where(
                    on_channel,
                    table.c.kind == EventKind.POST.value,
                    table.c.id > (seen or 0),
                )
                .order_by(table.c.id)
            ).all()
        return [_event(row._mapping) for row in rows]

    def events(
        self,
        publisher: str | None = None,
        channel: str | None = None,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[ChannelEvent]:
        """Entries oldest first: of one channel (or all), with ids above `after`; with `limit`,
        at most that many (the oldest of those)."""
        table = events_table
        query = sa.select(table).where(table.c.id > after).order_by(table.c.id)
        if publisher is not None:
            query = query.where(table.c.publisher == publisher)
        if channel is not None:
            query = query.where(table.c.channel == channel)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_event(row._mapping) for row in conn.execute(query).all()]

    def last_activity(self) -> dict[tuple[str, str], datetime]:
        """When each channel last had an entry, by (publisher, channel)."""
        table = events_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    table.c.publisher, table.c.channel, sa.func.max(table.c.created_at)
                ).group_by(table.c.publisher, table.c.channel)
            ).all()
        return {(row[0], row[1]): as_utc(row[2]) for row in rows}

    def message_counts(self) -> dict[tuple[str, str], int]:
        """How many messages each channel holds, by (publisher, channel); none: not listed."""
        table = events_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.publisher, table.c.channel, sa.func.count())
                .where(table.c.kind == EventKind.POST.value)
                .group_by(table.c.publisher, table.c.channel)
            ).all()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def forget_project(self, project: str) -> int:
        """Delete every entry of `project`'s channels and every entry it made (it is being
        removed); how many."""
        table = events_table
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    table.delete().where(
                        sa.or_(table.c.publisher == project, table.c.project == project)
                    )
                ).rowcount
            )

    def _add(
        self,
        kind: EventKind,
        publisher: str,
        channel: str,
        project: str,
        task: str | None,
        *,
        body: str | None = None,
        commit: str | None = None,
        upto: int | None = None,
        now: datetime | None = None,
    ) -> ChannelEvent:
        row = {
            "publisher": publisher,
            "channel": channel,
            "kind": kind.value,
            "project": project,
            "task": task,
            "commit": commit,
            "body": body,
            "upto": upto,
            "created_at": now or datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            result = conn.execute(events_table.insert().values(**row))
            (new_id,) = result.inserted_primary_key or (None,)
        return _event({**row, "id": new_id})


def _event(row: Any) -> ChannelEvent:
    return ChannelEvent(
        id=int(row["id"]),
        publisher=row["publisher"],
        channel=row["channel"],
        kind=EventKind(row["kind"]),
        project=row["project"],
        task=row["task"],
        commit=row["commit"],
        body=row["body"],
        upto=row["upto"],
        created_at=as_utc(row["created_at"]),
    )


def latest_ids(events: Sequence[ChannelEvent]) -> int:
    """The newest id among `events`, 0 for none: a cursor for the next read."""
    return max((event.id for event in events), default=0)
