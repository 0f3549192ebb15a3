"""What the UI records of the channels' ledger: each post, delivery and refusal as the data of one
observation of its channel's asset (the `channels` sensor in `defs/channels.py` records them).
Pure: entries in, plain data out."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from orchestration.channels.log import ChannelEvent, EventKind

#: How much of a message or a refusal's reason an observation shows.
PREVIEW_CHARS = 200
#: How many entries one tick records at most; the rest wait for the next ticks.
BATCH = 500

MetadataValue = str | int | bool | None


@dataclass(frozen=True)
class ChannelRecord:
    """One entry of the ledger as an observation of `publisher`'s channel `channel`."""

    publisher: str
    channel: str
    description: str
    metadata: dict[str, MetadataValue]


def preview(text: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    """`text` on one line, cut to `limit` characters (an ellipsis shows a cut)."""
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def channel_records(
    events: Iterable[ChannelEvent], known: Collection[tuple[str, str]]
) -> list[ChannelRecord]:
    """The records of `events`, oldest first, leaving out those of a channel not in `known`
    (publisher, channel): its asset is not in the loaded definitions (the channel, or its
    publisher, is gone)."""
    return [_record(event) for event in events if (event.publisher, event.channel) in known]


def _record(event: ChannelEvent) -> ChannelRecord:
    metadata: dict[str, MetadataValue] = {
        "kind": str(event.kind),
        "project": event.project,
        "task": event.task,
        "commit": event.commit,
        "upto": event.upto,
        "allowed": event.kind is not EventKind.REFUSAL,
        "event_id": event.id,
        "at": event.created_at.isoformat(),
    }
    if event.kind is not EventKind.DELIVERY:
        metadata["body"] = preview(event.body)
    return ChannelRecord(event.publisher, event.channel, _describe(event), metadata)


def _describe(event: ChannelEvent) -> str:
    task = f" (task {event.task})" if event.task else ""
    if event.kind is EventKind.POST:
        return f"{event.project}{task} posted: {preview(event.body, 80)}"
    if event.kind is EventKind.REFUSAL:
        return f"{event.project}{task} refused: {preview(event.body, 80)}"
    what = []
    if event.commit:
        what.append(f"as of {event.commit[:12]}")
    if event.upto is not None:
        what.append(f"messages up to #{event.upto}")
    return f"delivered to {event.project}{task}" + (f", {', '.join(what)}" if what else "")
