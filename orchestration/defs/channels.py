"""The `channels` sensor: every post, delivery to a task and refusal in the channels' ledger,
recorded as an observation of its channel's asset (`<publisher>/channel_<name>`), once each (its
cursor is the ledger's last id read). A thin shell: `orchestration/channels/ledger_view.py`
decides what an observation says."""

# No `from __future__ import annotations` here: Dagster reads the annotations of sensor
# functions (context and resource types) when the definitions are built.

from collections.abc import Collection

import dagster as dg

from orchestration.channels.ledger_view import BATCH, ChannelRecord, channel_records
from orchestration.channels.log import ChannelLog, latest_ids
from orchestration.defs.resources import AgentTasks
from orchestration.tags import channel_asset_name

CHANNELS_SENSOR = "channels"
CHANNELS_INTERVAL_S = 30


def build_channel_defs(channels: Collection[tuple[str, str]]) -> dg.Definitions:
    """The `channels` sensor of definitions that hold the assets of `channels` (publisher,
    channel)."""
    return dg.Definitions(sensors=[build_channel_sensor(channels)])


def channel_key(publisher: str, channel: str) -> dg.AssetKey:
    return dg.AssetKey([publisher, channel_asset_name(channel)])


def build_channel_sensor(channels: Collection[tuple[str, str]]) -> dg.SensorDefinition:
    """The `channels` sensor; entries of a channel not among `channels` are passed over."""
    known = frozenset(channels)

    @dg.sensor(
        name=CHANNELS_SENSOR,
        minimum_interval_seconds=CHANNELS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Record every message posted on a channel, every delivery of a channel to "
        "a subscriber's task and every refusal as an observation of the channel's asset "
        "(project, task, commit), once each.",
    )
    def channels_sensor(
        context: dg.SensorEvaluationContext, agent_tasks: AgentTasks
    ) -> dg.SensorResult | dg.SkipReason:
        store = agent_tasks.store()
        try:
            events = ChannelLog(store).events(after=_cursor(context.cursor), limit=BATCH)
        finally:
            store.dispose()
        if not events:
            return dg.SkipReason("no new entry in the channels' ledger")
        return dg.SensorResult(
            asset_events=[_observation(record) for record in channel_records(events, known)],
            cursor=str(latest_ids(events)),
        )

    return channels_sensor


def _cursor(cursor: str | None) -> int:
    """The ledger's last id recorded; 0 (from the start) for none, or one not an id (a cursor
    reset by hand)."""
    try:
        return max(0, int(cursor or 0))
    except ValueError:
        return 0


def _observation(record: ChannelRecord) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=channel_key(record.publisher, record.channel),
        description=record.description,
        metadata=dict(record.metadata),
    )
