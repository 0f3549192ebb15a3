"""Channels at a task's start and end, through `AgentTasks.execute` as the Dagster asset runs
it, in the sandbox, with the stand-in `claude` (its start line's `orch_files` is what the agent
found under `.orch/`): a subscriber's agent gets its contracts' files read-only as of the
publisher's branch tip and the messages since its last task; the notes an agent leaves in
`.orch/outbox/` are posted when its task succeeds, on a messages channel its project publishes;
`.orch/` is never committed."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestration.channels.delivery import EXCLUDE_LINE
from orchestration.channels.log import ChannelEvent, ChannelLog, EventKind
from orchestration.defs.metadata import task_metadata
from orchestration.defs.resources import AgentTasks
from orchestration.tasks.execution import TaskOutcome
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from tests.support.agent_log import events
from tests.support.git import commit, git
from tests.support.paths import path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_channel_delivery")
AGENT = "agent:\n  profile: claude_code\n"
CORE = (
    AGENT
    + """
channels:
  publish:
    - name: api
      kind: contract
      paths: ["api/*", "docs/interface.md"]
    - name: notes
      kind: messages
"""
)
APP = (
    AGENT
    + """
channels:
  publish:
    - name: status
      kind: messages
    - name: news
      kind: messages
  subscribe: [core.api, core.notes]
"""
)
#: What the publisher's contract carries, and what it holds besides that must never cross.
CONTRACT = {
    "api/openapi.yaml": "openapi: 3.1.0\n",
    "api/v1/schema.json": '{"type": "object"}\n',
    "docs/interface.md": "# The interface\n",
}
PRIVATE = {
    ".env": "API_TOKEN=hunter2\n",
    "src/app.py": "print('private')\n",
    "docs/internals.md": "# Internals\n",
}


@dataclass
class Channels:
    registry: RegistryDir
    store: TaskStore

    @property
    def home(self) -> Path:
        return self.registry.settings.home

    @property
    def ledger(self) -> ChannelLog:
        return ChannelLog(self.store)

    def run(self, project: str, prompt: str) -> TaskOutcome:
        task = self.store.add(project, prompt)
        assert task is not None
        self.store.mark_dispatched(task.id)
        return AgentTasks().execute(project, task.id, f"run-{task.id}", LOG)

    def seen(self, outcome: TaskOutcome) -> dict[str, dict]:
        """The files the task's agent found under `.orch/` (from the stand-in's start line)."""
        project = outcome.task.project
        logs = self.home.glob(f"workspaces/{project}/agents/*/fake_claude.jsonl")
        (start,) = [
            line for line in events("start", *logs) if line["prompt"] == outcome.task.prompt
        ]
        return start["orch_files"]

    def events(self, publisher: str, channel: str, kind: EventKind) -> list[ChannelEvent]:
        return [e for e in self.ledger.events(publisher, channel) if e.kind is kind]

    def clone(self, project: str) -> Path:
        return self.home / "workspaces" / project / "repo.git"

    def committed(self, project: str, ref: str) -> list[str]:
        return git(self.clone(project), "ls-tree", "-r", "--name-only", ref).splitlines()


@pytest.fixture
def channels(registry_dir: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    registry_dir.use_in(monkeypatch)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    monkeypatch.delenv("ORCH_SANDBOX", raising=False)  # agents run in the sandbox
    monkeypatch.delenv("FAKE_CLAUDE_LOG", raising=False)
    registry_dir.project("core", CORE)
    core = registry_dir.root / "repos" / "core"
    (core / "api").mkdir()
    os.symlink("../.env", core / "api" / "env.yaml")  # matches `api/*`: a link never crosses
    commit(core, {**CONTRACT, **PRIVATE, "api/huge.json": "x" * (1024 * 1024 + 1)})
    registry_dir.project("app", APP)
    registry_dir.project("solo", AGENT)
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Channels(registry_dir, store)
    store.dispose()


def contract_files(seen: dict[str, dict]) -> dict[str, str]:
    prefix = "channels/core/api/"
    return {path[len(prefix) :]: f["text"] for path, f in seen.items() if path.startswith(prefix)}


def test_a_subscriber_gets_exactly_the_contracts_files_read_only(channels: Channels) -> None:
    tip = git(channels.registry.root / "repos" / "core", "rev-parse", "HEAD")
    outcome = channels.run("app", "use the api\nWRITE feature.txt done")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason

    seen = channels.seen(outcome)
    # Only the matching regular files: no link, no file over the size cap, nothing outside.
    assert contract_files(seen) == CONTRACT
    assert set(seen) == {f"channels/core/api/{path}" for path in CONTRACT} | {
        "channels/core/notes/messages.md"
    }
    assert not any(f["writable"] for f in seen.values()), seen

    (delivery,) = channels.events("core", "api", EventKind.DELIVERY)
    assert (delivery.project, delivery.task, delivery.commit) == ("app", outcome.task.id, tip)
    assert outcome.task.extra["channels_read"] == {"core.api": tip, "core.notes": 0}
    assert task_metadata(outcome)["channels_read"].data == {"core.api": tip, "core.notes": 0}

    # The channels are never part of the task's work, and the worktree is gone.
    assert channels.committed("app", outcome.commit or "") == ["README.md", "feature.txt"]
    assert not (channels.home / "workspaces" / "app" / "worktrees" / outcome.task.id).exists()


def test_the_next_task_gets_the_publishers_new_commit(channels: Channels) -> None:
    first = channels.run("app", "first\nWRITE one.txt 1")
    core = channels.registry.root / "repos" / "core"
    changed = commit(core, {"api/openapi.yaml": "openapi: 3.2.0\n", "api/new.yaml": "new\n"})

    second = channels.run("app", "second\nWRITE two.txt 2")

    assert contract_files(channels.seen(first))["api/openapi.yaml"] == "openapi: 3.1.0\n"
    files = contract_files(channels.seen(second))
    assert files["api/openapi.yaml"] == "openapi: 3.2.0\n" and files["api/new.yaml"] == "new\n"
    commits = [e.commit for e in channels.events("core", "api", EventKind.DELIVERY)]
    assert commits[-1] == changed != commits[0]
    assert second.task.extra["channels_read"]["core.api"] == changed


def test_messages_posted_before_a_task_reach_it_and_only_newer_ones_the_next(
    channels: Channels,
) -> None:
    ledger = channels.ledger
    one = ledger.post("core", "notes", "the v2 endpoint is live", project="core", task="t1")
    two = ledger.post("core", "notes", "v1 goes away on Friday", project="core")

    first = channels.run("app", "read notes\nWRITE a.txt a")
    text = channels.seen(first)["channels/core/notes/messages.md"]["text"]
    assert "the v2 endpoint is live" in text and "v1 goes away on Friday" in text
    assert text.index("v2 endpoint") < text.index("v1 goes away")
    assert "(core, task t1)" in text
    assert first.task.extra["channels_read"]["core.notes"] == 2

    three = ledger.post("core", "notes", "Friday is now Monday", project="core")
    second = channels.run("app", "read again\nWRITE b.txt b")
    text = channels.seen(second)["channels/core/notes/messages.md"]["text"]
    assert "Friday is now Monday" in text and "endpoint" not in text and "v1 goes" not in text

    third = channels.run("app", "nothing new\nWRITE c.txt c")
    text = channels.seen(third)["channels/core/notes/messages.md"]["text"]
    assert "No new messages." in text and "Monday" not in text
    assert third.task.extra["channels_read"]["core.notes"] == 0

    uptos = [e.upto for e in channels.events("core", "notes", EventKind.DELIVERY)]
    assert uptos == [two.id, three.id, three.id] and one.id < two.id


def test_a_project_that_subscribes_to_nothing_gets_no_orch_folder(channels: Channels) -> None:
    outcome = channels.run("solo", "alone\nWRITE solo.txt s")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    assert channels.seen(outcome) == {}
    assert "channels_read" not in outcome.task.extra
    assert channels.ledger.events() == []


def test_the_orch_folder_is_ignored_even_when_the_agent_commits_itself(
    channels: Channels,
) -> None:
    outcome = channels.run(
        "app", "commit it\nWRITE mine.txt m\nWRITE .orch/scratch.txt s\nGITCOMMIT my own commit"
    )
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    branch = outcome.branch
    assert channels.committed("app", branch) == ["README.md", "mine.txt"]
    exclude = (channels.clone("app") / "info" / "exclude").read_text()
    assert EXCLUDE_LINE in exclude.splitlines()


def test_the_outbox_is_posted_on_the_projects_messages_channels_and_refused_elsewhere(
    channels: Channels,
) -> None:
    outcome = channels.run(
        "app",
        "report\nWRITE .orch/outbox/status.md all green\nWRITE .orch/outbox/other.md hello\n"
        "WRITE .orch/outbox/notes.md not mine\nLINK .orch/outbox/news.md /etc/hostname",
    )
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    task = outcome.task.id

    (post,) = channels.events("app", "status", EventKind.POST)
    assert (post.body, post.project, post.task) == ("all green\n", "app", task)
    (other,) = channels.events("app", "other", EventKind.REFUSAL)
    assert "publishes no messages channel 'other'" in (other.body or "")
    assert other.task == task
    # A project posts only on its own channels: `notes` is core's.
    (foreign,) = channels.events("app", "notes", EventKind.REFUSAL)
    assert channels.events("core", "notes", EventKind.POST) == []
    assert foreign.task == task
    (linked,) = channels.events("app", "news", EventKind.REFUSAL)
    assert "symbolic link" in (linked.body or "")
    assert channels.events("app", "news", EventKind.POST) == []
    assert outcome.commit is None  # the notes were the agent's only files

    # What was posted reaches a subscriber's next task.
    channels.registry.project("watcher", AGENT + "channels:\n  subscribe: [app.status]\n")
    watched = channels.run("watcher", "watch\nWRITE w.txt w")
    assert "all green" in channels.seen(watched)["channels/app/status/messages.md"]["text"]


def test_the_outbox_of_a_task_that_fails_is_dropped(channels: Channels) -> None:
    outcome = channels.run("app", "broken ERROR\nWRITE .orch/outbox/status.md nope")
    assert outcome.task.status is TaskStatus.FAILED
    assert channels.events("app", "status", EventKind.POST) == []
    assert channels.events("app", "status", EventKind.REFUSAL) == []


def test_a_contract_that_cannot_be_read_is_refused_and_the_task_goes_on(
    channels: Channels,
) -> None:
    channels.run("app", "first\nWRITE one.txt 1")
    core = channels.registry.root / "repos" / "core"
    git(core, "branch", "-m", "main", "renamed")  # the publisher's branch is gone

    outcome = channels.run("app", "second\nWRITE two.txt 2")

    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    assert contract_files(channels.seen(outcome)) == {}
    assert "channels/core/notes/messages.md" in channels.seen(outcome)
    (refusal,) = channels.events("core", "api", EventKind.REFUSAL)
    assert refusal.project == "app" and refusal.task == outcome.task.id
    assert "main" in (refusal.body or "")
    assert set(outcome.task.extra["channels_read"]) == {"core.notes"}


def test_a_publisher_gone_from_the_registry_is_skipped(channels: Channels) -> None:
    (channels.registry.root / "projects" / "core.yaml").write_text("name: core\nrepo: [broken\n")
    outcome = channels.run("app", "alone now\nWRITE x.txt x")
    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    assert channels.seen(outcome) == {}
    assert channels.ledger.events() == []


def test_an_orch_folder_the_repository_holds_is_neither_shown_nor_posted(
    channels: Channels,
) -> None:
    app = channels.registry.root / "repos" / "app"
    commit(app, {".orch/outbox/status.md": "stale note\n", ".orch/channels/x/y/z": "fake"})

    outcome = channels.run("app", "clean up\nWRITE kept.txt k")

    assert outcome.task.status is TaskStatus.SUCCEEDED, outcome.task.reason
    assert set(channels.seen(outcome)) == {
        *(f"channels/core/api/{path}" for path in CONTRACT),
        "channels/core/notes/messages.md",
    }
    assert channels.events("app", "status", EventKind.POST) == []
    assert channels.committed("app", outcome.commit or "") == ["README.md", "kept.txt"]


def test_a_long_backlog_of_messages_is_handed_over_in_turns(
    channels: Channels, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestration.channels.delivery.MAX_MESSAGES_HANDED", 2)
    for text in ("m-one", "m-two", "m-three"):
        channels.ledger.post("core", "notes", text, project="core")

    first = channels.seen(channels.run("app", "batch one\nWRITE a.txt a"))
    second = channels.seen(channels.run("app", "batch two\nWRITE b.txt b"))

    text = first["channels/core/notes/messages.md"]["text"]
    assert "m-one" in text and "m-two" in text and "m-three" not in text
    assert "1 newer messages wait for a later task." in text
    text = second["channels/core/notes/messages.md"]["text"]
    assert "m-three" in text and "m-two" not in text and "wait for a later task" not in text
