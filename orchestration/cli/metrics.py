"""`orch metrics serve`: a Prometheus exporter of the portfolio (tasks by status, running
agents, queue waits, cost, tokens, project states, pool slots, provider pauses), read anew on
every scrape."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from orchestration.cli.state import current_registry, current_settings, dagster_instance, task_store

if TYPE_CHECKING:
    from socketserver import BaseServer
    from types import FrameType

    from orchestration.monitoring.portfolio import Portfolio

#: The exporter's defaults (orchestration.monitoring.exporter holds the same; importing it here
#: would load prometheus_client for every `orch --help`).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464


@click.group()
def metrics() -> None:
    """Metrics for a team's monitoring (Prometheus)."""


@metrics.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The port to listen on (0: any free port; the URL printed says which).",
)
def serve(host: str, port: int) -> None:
    """Serve Prometheus metrics until Ctrl-C or SIGTERM; every scrape reads the task database
    and the Dagster instance then (no background polling)."""
    from orchestration.monitoring.exporter import make_metrics_server
    from orchestration.monitoring.portfolio import read_portfolio

    settings = current_settings()
    store = task_store(settings)
    instance = dagster_instance(settings)
    if instance is None:
        click.echo(
            "no Dagster instance yet (`orch up` makes one): pools show their configured limits "
            "and nothing in use until this exporter is started again",
            err=True,
        )

    def read() -> Portfolio:
        return read_portfolio(current_registry(settings), store, instance, datetime.now(UTC))

    try:
        server = make_metrics_server(read, host, port)
    except OSError as exc:
        from orchestration.cli.output import fail

        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    click.echo(f"serving metrics on http://{host}:{server.server_port}/metrics", err=True)
    with _stopped_by_signals(server):
        server.serve_forever()
    server.server_close()
    store.dispose()
    if instance is not None:
        instance.dispose()
    click.echo("stopped", err=True)


@contextmanager
def _stopped_by_signals(server: BaseServer) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM stops `server.serve_forever()` after the request in hand.

    A KeyboardInterrupt would not do: raised while wsgiref writes a response, its handler's
    bare `except` swallows it and the server serves on. `shutdown()` waits for the loop to end,
    so it is called from a thread of its own.
    """

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
