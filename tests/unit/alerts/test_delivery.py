"""Routing and retrying without a network (the POST is the seam): which webhooks get an alert,
what is retried and how long it waits, and that no log line shows a webhook's secret URL."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from orchestration.alerts.delivery import Alerts, Delivery, PostError, WebhookSender, shown_url
from orchestration.alerts.model import Alert
from orchestration.registry.models import AlertsFile

LOGGER = "tests.alerts.unit"
SECRET = "B000/s3cr3t"


def alert(kind: str = "task_failed") -> Alert:
    return Alert(kind=kind, title="Task t1 of alpha failed", text="boom", at=datetime.now(UTC))  # type: ignore[arg-type]


class Recorder:
    """The POST seam: records each call and answers with the next of `answers` (None: 2xx)."""

    def __init__(self, *answers: PostError | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, float]] = []

    def __call__(self, url: str, body: bytes, timeout_s: float) -> None:
        self.calls.append((url, body, timeout_s))
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


def config(**data: object) -> AlertsFile:
    return AlertsFile.model_validate({"backoff_s": 0, **data})


def test_the_log_shows_scheme_and_host_only() -> None:
    url = f"https://user:pw@hooks.slack.com:8443/services/T000/{SECRET}?token=x"
    assert shown_url(url) == "https://hooks.slack.com:8443/…"
    assert shown_url("http://[::1") == "(unreadable URL)"


def test_the_wait_doubles_and_honours_retry_after_up_to_a_cap() -> None:
    delivery = Delivery(webhook="ops", url="http://x", body=b"{}", what="t", backoff_s=2)
    waits = [replace(delivery, attempt=n).retry_delay(None) for n in range(3)]
    assert waits == [2, 4, 8]
    assert delivery.retry_delay(30) == 30
    assert delivery.retry_delay(1) == 2
    assert delivery.retry_delay(10_000) == 600


def test_an_alert_goes_to_the_webhooks_that_want_its_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    post = Recorder()
    sender = WebhookSender(log=logging.getLogger(LOGGER), post=post)
    alerts = Alerts(
        config(
            webhooks=[
                {"name": "all", "url": "https://a.example/${TOKEN}", "timeout_s": 3},
                {"name": "stuck_only", "url": "https://b.example", "events": ["run_stuck"]},
                {"name": "unset", "url": "https://c.example/${ORCH_TEST_UNSET}"},
                {"name": "not_http", "url": "${NOT_HTTP}"},
            ]
        ),
        sender,
        environ={"TOKEN": SECRET, "NOT_HTTP": f"ftp://d.example/{SECRET}"},
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert alerts.notify(alert()) == 1
        assert sender.wait_idle(5)
    assert [(url, timeout) for url, _, timeout in post.calls] == [
        (f"https://a.example/{SECRET}", 3)
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "webhook unset" in m and "${ORCH_TEST_UNSET}, which is not set" in m for m in messages
    )
    assert any("webhook not_http" in m and "http:// or https://" in m for m in messages)
    assert not any(SECRET in m for m in messages)


def test_a_refusal_is_not_retried_and_a_transient_failure_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    post = Recorder(
        PostError("HTTP 404 Not Found", retryable=False),
        PostError("ConnectionRefusedError", retryable=True),
        PostError("HTTP 503", retryable=True, retry_after=0),
    )
    sender = WebhookSender(log=logging.getLogger(LOGGER), post=post)
    alerts = Alerts(config(webhooks=[{"name": "ops", "url": "https://a.example"}]), sender)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        alerts.notify(alert())
        assert sender.wait_idle(5)
        assert len(post.calls) == 1  # 404: given up at once
        assert "refused at try 1 of 4" in caplog.records[-1].getMessage()
        alerts.notify(alert())
        assert sender.wait_idle(5)
    assert len(post.calls) == 4  # refused once, then two failures and a success
    assert "delivered" in caplog.records[-1].getMessage()
    assert "try 3 of 4" in caplog.records[-1].getMessage()


def test_too_many_waiting_deliveries_are_dropped_not_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = WebhookSender(log=logging.getLogger(LOGGER), post=Recorder(), max_pending=0)
    delivery = Delivery(webhook="ops", url="https://a.example", body=b"{}", what="t")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert sender.submit(delivery) is False
    assert "dropped" in caplog.records[-1].getMessage()
