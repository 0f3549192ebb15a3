"""The messages an alert becomes: the generic JSON object, and Slack's incoming-webhook message
(`text` for notifications, `blocks` for the layout). Pure functions."""

from __future__ import annotations

import json
from typing import Any, Literal

from orchestration.alerts.model import Alert

Format = Literal["json", "slack"]

#: Slack's limits on one block's text (longer messages are refused, not cut).
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_MAX_FIELDS = 10
#: How each kind of alert is named in a Slack message.
KIND_LABELS = {
    "task_failed": "Task failed",
    "verification_failed": "Verification failed",
    "budget": "Budget",
    "provider": "Provider",
    "run_stuck": "Run stuck",
}


def generic_message(alert: Alert) -> dict[str, Any]:
    """The alert itself as a JSON object (`event`, `title`, `text`, `project`, `task_id`,
    `run_id`, `at`, `details`, `link`, `source`)."""
    return alert.to_dict()


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: a header, the text, the details as fields, a link to
    the run, and a context line with where it happened."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(alert.title, SLACK_HEADER_MAX)},
        }
    ]
    if alert.text:
        blocks.append(_section(f"```{_cut(_escape(alert.text), SLACK_SECTION_MAX - 6)}```"))
    fields = [
        {
            "type": "mrkdwn",
            "text": _cut(f"*{_escape(key)}*\n{_escape(str(value))}", SLACK_FIELD_MAX),
        }
        for key, value in alert.details.items()
        if value not in (None, "")
    ][:SLACK_MAX_FIELDS]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if alert.link:
        blocks.append(_section(f"<{alert.link}|Open in Dagster>"))
    where = [
        f"*{KIND_LABELS.get(alert.kind, alert.kind)}*",
        *([f"project `{alert.project}`"] if alert.project else []),
        *([f"task `{alert.task_id}`"] if alert.task_id else []),
        *([f"run `{alert.run_id[:8]}`"] if alert.run_id else []),
        str(alert.to_dict()["at"]),
    ]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(where)}]})
    summary = f"{alert.title}: {alert.text}" if alert.text else alert.title
    return {"text": _cut(_escape(summary), SLACK_SECTION_MAX), "blocks": blocks}


def message_body(alert: Alert, shape: Format) -> bytes:
    """What is posted for `alert` to a webhook whose format is `shape`: UTF-8 JSON."""
    message = slack_message(alert) if shape == "slack" else generic_message(alert)
    return json.dumps(message, default=str, ensure_ascii=False).encode("utf-8")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _escape(text: str) -> str:
    """Text shown as Slack mrkdwn: the three characters Slack reads as markup, escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
