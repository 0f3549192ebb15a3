"""The Prometheus families of a portfolio (`orchestration/monitoring/exporter.py`), rendered by
prometheus_client itself and parsed back with its own parser: every family, label and value,
the histogram's buckets, and that the collector reads the portfolio on each scrape only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.control.states import ProjectState
from orchestration.control.store import StateRecord
from orchestration.monitoring.exporter import PortfolioCollector
from orchestration.monitoring.portfolio import (
    PoolSlots,
    Portfolio,
    ProviderStatus,
    assemble_portfolio,
)
from orchestration.tasks.models import TaskStatus
from tests.unit.monitoring.records import NOW, task

FAMILIES = {
    "orch_tasks": "gauge",
    "orch_running_agents": "gauge",
    "orch_queue_wait_seconds": "histogram",
    "orch_cost_usd": "counter",
    "orch_tokens": "counter",
    "orch_project_state": "gauge",
    "orch_pool_slots": "gauge",
    "orch_pool_in_use": "gauge",
    "orch_provider_paused": "gauge",
}


def portfolio(providers: tuple[ProviderStatus, ...] = ()) -> Portfolio:
    minutes = timedelta(minutes=1)
    tasks = [
        task(finished=NOW - 30 * minutes, cost=1.25, tokens_in=100, tokens_out=10),
        task(TaskStatus.FAILED, finished=NOW - timedelta(days=40), cost=0.5, tokens_in=50),
        task(TaskStatus.RUNNING, created=NOW - 10 * minutes, started=NOW - 8 * minutes),
        task(TaskStatus.QUEUED),
        task(TaskStatus.QUEUED, project="beta"),
    ]
    return assemble_portfolio(
        now=NOW,
        tasks=tasks,
        priorities={"alpha": 50, "beta": 50},
        states={"beta": StateRecord("beta", ProjectState.STOPPED)},
        slots={"agents": PoolSlots(4, 1), "heavy": PoolSlots(1, 0)},
        providers=providers,
    )


def scrape(collector: PortfolioCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, as a scraper would read the text."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def test_every_family_with_its_type() -> None:
    registry = CollectorRegistry()
    registry.register(PortfolioCollector(portfolio))
    text = generate_latest(registry).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types == FAMILIES


def test_task_counts_running_agents_and_states() -> None:
    samples = scrape(PortfolioCollector(portfolio))
    tasks = samples["orch_tasks"]
    assert tasks[(("project", "alpha"), ("status", "succeeded"))] == 1
    assert tasks[(("project", "alpha"), ("status", "queued"))] == 1
    assert tasks[(("project", "alpha"), ("status", "blocked"))] == 0  # every status, zeros too
    assert tasks[(("project", "beta"), ("status", "queued"))] == 1
    assert len(tasks) == 2 * len(TaskStatus)
    assert samples["orch_running_agents"] == {
        (("project", "alpha"),): 1.0,
        (("project", "beta"),): 0.0,
    }
    states = samples["orch_project_state"]
    assert states[(("project", "beta"), ("state", "stopped"))] == 1
    assert states[(("project", "alpha"), ("state", "active"))] == 1
    assert sum(states.values()) == 2 and len(states) == 2 * len(ProjectState)


def test_cost_and_tokens_are_all_time_counters() -> None:
    samples = scrape(PortfolioCollector(portfolio))
    # the failed task of 40 days ago counts: a counter holds everything ever recorded
    assert samples["orch_cost_usd_total"][(("project", "alpha"),)] == 1.75
    assert samples["orch_cost_usd_total"][(("project", "beta"),)] == 0
    tokens = samples["orch_tokens_total"]
    assert tokens[(("direction", "in"), ("project", "alpha"))] == 150
    assert tokens[(("direction", "out"), ("project", "alpha"))] == 10


def test_queue_wait_histogram_of_the_last_day() -> None:
    samples = scrape(PortfolioCollector(portfolio))
    buckets = samples["orch_queue_wait_seconds_bucket"]
    alpha = {
        labels[0][1]: value for labels, value in buckets.items() if ("project", "alpha") in labels
    }
    # one task, started 8 minutes ago after waiting 120 s
    assert alpha["60.0"] == 0 and alpha["120.0"] == 1 and alpha["+Inf"] == 1
    assert samples["orch_queue_wait_seconds_count"][(("project", "alpha"),)] == 1
    assert samples["orch_queue_wait_seconds_sum"][(("project", "alpha"),)] == 120.0
    assert samples["orch_queue_wait_seconds_count"][(("project", "beta"),)] == 0


def test_pools_and_providers() -> None:
    samples = scrape(PortfolioCollector(lambda: portfolio((ProviderStatus("claude", True),))))
    assert samples["orch_pool_slots"] == {(("pool", "agents"),): 4, (("pool", "heavy"),): 1}
    assert samples["orch_pool_in_use"] == {(("pool", "agents"),): 1, (("pool", "heavy"),): 0}
    assert samples["orch_provider_paused"] == {(("provider", "claude"),): 1}


def test_no_provider_is_a_family_without_samples() -> None:
    assert "orch_provider_paused" not in scrape(PortfolioCollector(portfolio))


def test_the_collector_reads_on_each_scrape_and_not_when_registered() -> None:
    reads: list[int] = []

    def read() -> Portfolio:
        reads.append(1)
        return portfolio()

    registry = CollectorRegistry()
    registry.register(PortfolioCollector(read))
    assert reads == []
    generate_latest(registry)
    generate_latest(registry)
    assert len(reads) == 2


def test_a_failing_read_fails_the_scrape() -> None:
    def read() -> Portfolio:
        raise RuntimeError("database is locked")

    registry = CollectorRegistry()
    registry.register(PortfolioCollector(read))
    with pytest.raises(RuntimeError, match="database is locked"):
        generate_latest(registry)
