"""Alerts: what went wrong (a failed task, a failed verification, a stuck run, a budget crossing,
a provider account paused by its usage limit), posted to the webhooks of `config/alerts.yaml`
in the background.

`selection.py` decides what to alert from plain data (pure), `formats.py` shapes the messages
(generic JSON, Slack), `delivery.py` posts them with retries; the `alerts` sensor
(`orchestration/defs/alerts.py`) is the thin shell that reads the task store and the instance.
"""

from orchestration.alerts.delivery import Alerts, Delivery, WebhookSender
from orchestration.alerts.model import Alert

__all__ = ["Alert", "Alerts", "Delivery", "WebhookSender"]
