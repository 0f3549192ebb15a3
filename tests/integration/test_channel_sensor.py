"""The `channels` sensor on a real instance and task store: each post, delivery and refusal in the
channels' ledger becomes one observation of its channel's asset, with the project, task, commit
and the start of the text, exactly once (the cursor); an entry of a channel whose asset is not
loaded is passed over."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from orchestration.channels.ledger_view import PREVIEW_CHARS
from orchestration.channels.log import ChannelLog
from orchestration.defs.channels import build_channel_sensor, channel_key
from orchestration.defs.resources import AgentTasks
from orchestration.tasks.store import TaskStore
from tests.support.registry import RegistryDir

LOADED = [("hub", "api"), ("hub", "notes")]


@dataclass
class Channels:
    instance: dg.DagsterInstance
    log: ChannelLog
    cursor: str | None = None

    def tick(self) -> dg.SensorResult | dg.SkipReason:
        """One evaluation of a newly built sensor, its events recorded as the sensor daemon
        records a tick's, its cursor kept as the daemon keeps it."""
        sensor = build_channel_sensor(LOADED)
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"agent_tasks": AgentTasks()}
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult | dg.SkipReason), result
        if isinstance(result, dg.SensorResult):
            for event in result.asset_events:
                self.instance.report_runless_asset_event(event)
            self.cursor = result.cursor
        return result

    def observations(self, channel: str) -> list[tuple[str | None, dict[str, Any]]]:
        """(description, metadata) of each observation of hub's `channel`, oldest first."""
        records = self.instance.fetch_observations(
            channel_key("hub", channel), limit=100, ascending=True
        ).records
        found = []
        for record in records:
            observation = record.asset_observation
            assert observation is not None
            metadata = {k: v.value for k, v in observation.metadata.items()}
            found.append((observation.description, metadata))
        return found


@pytest.fixture
def channels(
    registry_dir: RegistryDir, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Channels]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Channels(instance, ChannelLog(store))
    store.dispose()


def test_each_entry_is_observed_once_on_its_channel(channels: Channels) -> None:
    log = channels.log
    long_note = "schema v2 is out:\n" + "x" * 400
    post = log.post("hub", "notes", long_note, project="hub", task="t_hub")
    contract = log.delivered("hub", "api", project="one", task="t_one", commit="a" * 40)
    notes = log.delivered("hub", "notes", project="one", task="t_one", upto=post.id)
    refusal = log.refused("hub", "notes", "two may not read hub.notes", project="two", task="t_two")
    gone = log.post("hub", "retired", "nobody sees this", project="hub")

    result = channels.tick()
    assert isinstance(result, dg.SensorResult)
    assert channels.cursor == str(gone.id)
    assert len(result.asset_events) == 4  # not the one of the channel that is not loaded

    (api,) = channels.observations("api")
    assert api[1] == {
        "kind": "delivery",
        "project": "one",
        "task": "t_one",
        "commit": "a" * 40,
        "upto": None,
        "allowed": True,
        "event_id": contract.id,
        "at": contract.created_at.isoformat(),
    }
    assert api[0] == f"delivered to one (task t_one), as of {'a' * 12}"

    posted, delivered, refused = channels.observations("notes")
    assert posted[1]["kind"] == "post" and posted[1]["project"] == "hub"
    assert posted[1]["task"] == "t_hub" and posted[1]["allowed"] is True
    body = posted[1]["body"]
    assert body.startswith("schema v2 is out: xxx") and body.endswith("…")
    assert len(body) == PREVIEW_CHARS
    assert delivered[1]["kind"] == "delivery" and delivered[1]["upto"] == post.id
    assert delivered[1]["event_id"] == notes.id and "body" not in delivered[1]
    assert refused[1] | {"at": None} == {
        "kind": "refusal",
        "project": "two",
        "task": "t_two",
        "commit": None,
        "upto": None,
        "allowed": False,
        "body": "two may not read hub.notes",
        "event_id": refusal.id,
        "at": None,
    }
    assert refused[0] == "two (task t_two) refused: two may not read hub.notes"

    # Nothing new: nothing recorded again.
    assert isinstance(channels.tick(), dg.SkipReason)
    assert channels.cursor == str(gone.id)
    assert len(channels.observations("notes")) == 3 and len(channels.observations("api")) == 1

    # One new entry: only it is recorded.
    later = log.post("hub", "notes", "v2.1 too", project="hub")
    channels.tick()
    assert channels.cursor == str(later.id)
    notes_seen = channels.observations("notes")
    assert [m["event_id"] for _, m in notes_seen] == [post.id, notes.id, refusal.id, later.id]
    assert len(channels.observations("api")) == 1


def test_entries_of_unloaded_channels_alone_move_the_cursor(channels: Channels) -> None:
    gone = channels.log.post("hub", "retired", "old news", project="hub")
    result = channels.tick()
    assert isinstance(result, dg.SensorResult) and result.asset_events == []
    assert channels.cursor == str(gone.id)
    assert channels.observations("notes") == []
