"""Posting alerts: `Alerts` routes an alert to the webhooks of `config/alerts.yaml` that want it,
and `WebhookSender` posts in one background thread, retrying with exponential backoff, so the
caller (a sensor tick) never waits for a webhook. Failures are logged, never raised.

A webhook's full URL is never logged (it often is the secret): logs name the webhook and show
its scheme and host only.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from orchestration.alerts.formats import message_body
from orchestration.alerts.model import Alert
from orchestration.redaction import Redactor
from orchestration.registry.models import AlertsFile, expand_placeholders, webhook_url_problem

#: Deliveries waiting at most (new ones are dropped, with an error, past this).
MAX_PENDING = 1000
#: A `Retry-After` longer than this is not waited for.
MAX_RETRY_AFTER_S = 600.0
USER_AGENT = "orchestration-alerts"


class PostError(Exception):
    """A POST that did not succeed: what happened (no URL in it), and whether trying again may
    help (a connection error, a timeout, 5xx, 408, 429) or not (another 4xx, a redirect)."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


#: How a delivery is posted: (url, body, timeout in seconds); PostError when it did not work.
Post = Callable[[str, bytes, float], None]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: the alert is not re-posted somewhere else."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def post_json(url: str, body: bytes, timeout_s: float) -> None:
    """POST `body` (JSON) to `url` with urllib; returns on a 2xx answer, else PostError."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
    )
    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise PostError(
            f"HTTP {exc.code} {exc.reason}",
            retryable=exc.code >= 500 or exc.code in (408, 429),
            retry_after=_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
        ) from None
    except urllib.error.URLError as exc:
        raise PostError(_describe(exc.reason), retryable=True) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
        raise PostError(_describe(exc), retryable=True) from None


def shown_url(url: str) -> str:
    """What logs say of a webhook URL: its scheme and host, never its path or query."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/…"
    except ValueError:
        return "(unreadable URL)"


@dataclass(frozen=True)
class Delivery:
    """One alert on its way to one webhook."""

    webhook: str
    url: str
    """The full URL, `${VAR}`s read: never logged."""
    body: bytes
    what: str
    """The alert's title, for the log."""
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 2.0
    attempt: int = 0

    def retry_delay(self, retry_after: float | None) -> float:
        """How long to wait before the next try: the backoff doubled per try so far, or longer
        when the webhook asked (`Retry-After`)."""
        delay = self.backoff_s * (2**self.attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay


class WebhookSender:
    """Posts deliveries from one background thread (started on the first one), trying each
    again after `backoff_s`, twice that, ... up to its `retries`. `submit` never blocks."""

    def __init__(
        self,
        *,
        log: logging.Logger | None = None,
        post: Post = post_json,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.log = log or logging.getLogger(__name__)
        self._post = post
        self._max_pending = max_pending
        self._due: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._busy = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, delivery: Delivery) -> bool:
        """Queue `delivery` to be posted now; False (logged) when too many are waiting."""
        with self._lock:
            if len(self._due) >= self._max_pending:
                self.log.error(
                    f"alert {delivery.what!r} to webhook {delivery.webhook} dropped: "
                    f"{len(self._due)} deliveries are waiting already"
                )
                return False
            self._push(delivery, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="alert-webhooks", daemon=True
                )
                self._thread.start()
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is waiting or being posted; False when `timeout_s` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._due and not self._busy, timeout_s)

    @property
    def pending(self) -> int:
        """Deliveries waiting or being posted."""
        with self._lock:
            return len(self._due) + self._busy

    def _push(self, delivery: Delivery, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._order), delivery))
        self._lock.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    if not self._due:
                        self._lock.wait()
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, delivery = heapq.heappop(self._due)
                        self._busy += 1
                        break
                    self._lock.wait(wait)
            try:
                self._attempt(delivery)
            except Exception as exc:  # a bug here must not end the thread
                self.log.error(f"alert {delivery.what!r}: delivery failed unexpectedly: {exc}")
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()

    def _attempt(self, delivery: Delivery) -> None:
        where = f"webhook {delivery.webhook} ({shown_url(delivery.url)})"
        tries = f"try {delivery.attempt + 1} of {delivery.retries + 1}"
        try:
            self._post(delivery.url, delivery.body, delivery.timeout_s)
        except PostError as exc:
            reason = _masked(str(exc), delivery.url)
            if exc.retryable and delivery.attempt < delivery.retries:
                delay = delivery.retry_delay(exc.retry_after)
                self.log.warning(
                    f"alert {delivery.what!r} to {where} failed ({tries}): {reason}; "
                    f"trying again in {delay:g} s"
                )
                with self._lock:
                    self._push(
                        replace(delivery, attempt=delivery.attempt + 1), time.monotonic() + delay
                    )
                return
            given_up = "gave up after" if exc.retryable else "refused at"
            self.log.error(
                f"alert {delivery.what!r} was not delivered to {where}: {reason} "
                f"({given_up} {tries})"
            )
            return
        self.log.info(f"alert {delivery.what!r} delivered to {where} ({tries})")


class Alerts:
    """The alerts `config/alerts.yaml` asks for: `notify(alert)` queues it for every webhook
    that wants its kind, and returns at once. The budget and provider features call it too."""

    def __init__(
        self,
        config: AlertsFile,
        sender: WebhookSender,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.sender = sender
        self._environ = environ

    def notify(self, alert: Alert) -> int:
        """Queue `alert` for the webhooks that want it; how many it was queued for. A webhook
        whose `${VAR}` is unset, or whose URL is not http(s) once read, is skipped (logged)."""
        environ = os.environ if self._environ is None else self._environ
        queued = 0
        for webhook in self.config.webhooks:
            if alert.kind not in webhook.events:
                continue
            try:
                url = expand_placeholders(webhook.url, environ)
            except KeyError as exc:
                self.sender.log.error(
                    f"alert {alert.title!r} not posted to webhook {webhook.name}: its URL reads "
                    f"${{{exc.args[0]}}}, which is not set in this process's environment"
                )
                continue
            problem = webhook_url_problem(url)
            if problem:
                self.sender.log.error(
                    f"alert {alert.title!r} not posted to webhook {webhook.name}: {problem}"
                )
                continue
            queued += self.sender.submit(
                Delivery(
                    webhook=webhook.name,
                    url=url,
                    body=message_body(alert, webhook.format),
                    what=alert.title,
                    timeout_s=webhook.timeout_s,
                    retries=self.config.retries,
                    backoff_s=self.config.backoff_s,
                )
            )
        return queued


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _describe(reason: object) -> str:
    return (
        f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    )


def _masked(text: str, url: str) -> str:
    """`text` without the URL or its path and query, should an error ever quote them."""
    parts = urllib.parse.urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return Redactor(tuple(v for v in (url, tail) if len(v) > 1)).text(text)
