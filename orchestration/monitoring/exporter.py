"""The Prometheus exporter: the portfolio as metric families, read anew on every scrape.

`families(portfolio)` is pure; `PortfolioCollector` calls a reader on each scrape (no timer,
no cache); `make_server` serves the collector's text on a plain WSGI server of the standard
library, one scrape at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestration.control.states import ProjectState
from orchestration.monitoring.portfolio import Portfolio
from orchestration.tasks.models import TaskStatus

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
#: Upper bounds (seconds) of the queue-wait histogram's buckets: a second to a day.
QUEUE_WAIT_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


def families(portfolio: Portfolio | None) -> list[Metric]:
    """Every metric family the exporter serves; without a portfolio, the families with no
    samples (what the collector describes)."""
    tasks = GaugeMetricFamily(
        "orch_tasks", "Tasks of a project in each status now.", labels=["project", "status"]
    )
    running = GaugeMetricFamily(
        "orch_running_agents", "Tasks of a project running now.", labels=["project"]
    )
    waits = HistogramMetricFamily(
        "orch_queue_wait_seconds",
        "Time from adding a task to its start, over the tasks started in the last 24 hours "
        "(a moving window: counts go down as tasks leave it).",
        labels=["project"],
    )
    cost = CounterMetricFamily(
        "orch_cost_usd", "All the cost the task records of a project hold.", labels=["project"]
    )
    tokens = CounterMetricFamily(
        "orch_tokens",
        "All the tokens the task records of a project hold, by direction (in, out).",
        labels=["project", "direction"],
    )
    states = GaugeMetricFamily(
        "orch_project_state",
        "1 for the lifecycle state a project is in, 0 for the others.",
        labels=["project", "state"],
    )
    pool_slots = GaugeMetricFamily(
        "orch_pool_slots", "The slot limit of an agent pool.", labels=["pool"]
    )
    pool_in_use = GaugeMetricFamily(
        "orch_pool_in_use", "Slots of an agent pool held by runs in progress.", labels=["pool"]
    )
    paused = GaugeMetricFamily(
        "orch_provider_paused",
        "1 while an agent provider's account is paused (its usage limit was hit), else 0.",
        labels=["provider"],
    )
    all_families: list[Metric] = [
        tasks,
        running,
        waits,
        cost,
        tokens,
        states,
        pool_slots,
        pool_in_use,
        paused,
    ]
    if portfolio is None:
        return all_families
    for row in portfolio.projects:
        for status in TaskStatus:
            tasks.add_metric([row.name, str(status)], row.tasks[status])
        running.add_metric([row.name], row.running)
        waits.add_metric([row.name], _buckets(row.queue_waits_s), sum(row.queue_waits_s))
        cost.add_metric([row.name], row.lifetime.cost_usd)
        tokens.add_metric([row.name, "in"], row.lifetime.tokens_in)
        tokens.add_metric([row.name, "out"], row.lifetime.tokens_out)
        for state in ProjectState:
            states.add_metric([row.name, str(state)], 1 if row.state is state else 0)
    for pool, slots in portfolio.slots.items():
        pool_slots.add_metric([pool], slots.limit)
        pool_in_use.add_metric([pool], slots.in_use)
    for provider in portfolio.providers:
        paused.add_metric([provider.name], 1 if provider.paused else 0)
    return all_families


def _buckets(values: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative bucket counts as Prometheus wants them, `+Inf` last."""
    bounds = [*(str(float(bound)) for bound in QUEUE_WAIT_BUCKETS_S), "+Inf"]
    limits = [*(float(bound) for bound in QUEUE_WAIT_BUCKETS_S), float("inf")]
    return [
        (name, float(sum(1 for value in values if value <= limit)))
        for name, limit in zip(bounds, limits, strict=True)
    ]


class PortfolioCollector(Collector):
    """Reads the portfolio with `read` on every scrape and turns it into metric families."""

    def __init__(self, read: Callable[[], Portfolio]) -> None:
        self.read = read

    def describe(self) -> Iterable[Metric]:
        # Registering a collector describes it; reading the portfolio then is not needed.
        return families(None)

    def collect(self) -> Iterable[Metric]:
        return families(self.read())


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 (the base's)
        return


def make_metrics_server(
    read: Callable[[], Portfolio], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> WSGIServer:
    """A server (bound, not yet serving) whose every request answers the metrics, read with
    `read` then; port 0 takes any free port (the server's `server_port` says which)."""
    registry = CollectorRegistry()
    registry.register(PortfolioCollector(read))
    return make_server(host, port, make_wsgi_app(registry), handler_class=_QuietHandler)
