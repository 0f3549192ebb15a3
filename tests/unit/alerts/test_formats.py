"""The two message shapes: the generic JSON object, and Slack's incoming-webhook message (within
Slack's limits, its markup characters escaped)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from orchestration.alerts.formats import (
    SLACK_FIELD_MAX,
    SLACK_HEADER_MAX,
    SLACK_MAX_FIELDS,
    SLACK_SECTION_MAX,
    generic_message,
    message_body,
    slack_message,
)
from orchestration.alerts.model import Alert

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def alert(**fields: object) -> Alert:
    values: dict[str, object] = {
        "kind": "task_failed",
        "title": "Task t1 of alpha failed",
        "text": "agent exited 1 <oops> & more",
        "at": AT,
        "project": "alpha",
        "task_id": "t1",
        "run_id": "0123456789abcdef",
        "details": {"attempts": 2, "cost_usd": None},
        "link": "http://127.0.0.1:3000/runs/0123456789abcdef",
        **fields,
    }
    return Alert(**values)  # type: ignore[arg-type]


def test_the_generic_message_is_the_alert_as_json() -> None:
    message = json.loads(message_body(alert(), "json"))
    assert message == generic_message(alert())
    assert message == {
        "source": "orchestration",
        "event": "task_failed",
        "title": "Task t1 of alpha failed",
        "text": "agent exited 1 <oops> & more",
        "project": "alpha",
        "task_id": "t1",
        "run_id": "0123456789abcdef",
        "at": "2026-03-01T12:30:00+00:00",
        "details": {"attempts": 2, "cost_usd": None},
        "link": "http://127.0.0.1:3000/runs/0123456789abcdef",
    }


def test_the_slack_message_has_text_and_blocks() -> None:
    message = json.loads(message_body(alert(), "slack"))
    assert message == slack_message(alert())
    assert message["text"] == "Task t1 of alpha failed: agent exited 1 &lt;oops&gt; &amp; more"
    types = [block["type"] for block in message["blocks"]]
    assert types == ["header", "section", "section", "section", "context"]
    header, text, fields, link, context = message["blocks"]
    assert header["text"] == {"type": "plain_text", "text": "Task t1 of alpha failed"}
    assert text["text"]["type"] == "mrkdwn" and "&lt;oops&gt;" in text["text"]["text"]
    assert fields["fields"] == [{"type": "mrkdwn", "text": "*attempts*\n2"}]  # None left out
    assert link["text"]["text"] == "<http://127.0.0.1:3000/runs/0123456789abcdef|Open in Dagster>"
    context_text = context["elements"][0]["text"]
    assert "*Task failed*" in context_text and "`alpha`" in context_text
    assert "run `01234567`" in context_text


def test_the_slack_message_stays_within_slack_limits() -> None:
    huge = alert(
        title="T" * 500,
        text="x" * 10_000,
        details={f"key{i}": "v" * 5000 for i in range(20)},
        link=None,
    )
    message = slack_message(huge)
    header, text, fields, _ = message["blocks"]
    assert len(header["text"]["text"]) == SLACK_HEADER_MAX
    assert len(text["text"]["text"]) <= SLACK_SECTION_MAX
    assert len(fields["fields"]) == SLACK_MAX_FIELDS
    assert all(len(f["text"]) <= SLACK_FIELD_MAX for f in fields["fields"])
    assert len(message["text"]) <= SLACK_SECTION_MAX


def test_an_alert_without_task_or_text_is_still_a_valid_message() -> None:
    bare = Alert(kind="provider", title="Provider anthropic paused", text="", at=AT)
    message = slack_message(bare)
    assert message["text"] == "Provider anthropic paused"
    assert [block["type"] for block in message["blocks"]] == ["header", "context"]
    assert generic_message(bare)["project"] is None
