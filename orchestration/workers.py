"""Celery run workers (deploy/, `bin/worker`): the checks a worker's config must pass before it
starts, and the command that starts one.

dagster-celery reads a worker's broker and backend from `execution.config` of its YAML only; a
file with any other shape is ignored without a word and the worker falls back to a broker on
localhost and the `rpc://` backend. Run monitoring then reads every run's state as unknown and
fails live runs. So a worker starts only once its config is nested right, names a backend the
launcher can read (Redis, or a database), and both broker and backend answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestration.registry.models import validate_queue_name

#: The worker config the deployment ships.
DEFAULT_WORKER_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "celery-worker.yaml"
#: How long a check waits for the broker or the backend to answer.
CONNECT_TIMEOUT_S = 5.0
#: Backends whose task states every host can read (the launcher reads them for run health).
SHARED_BACKENDS = ("redis://", "rediss://", "db+postgresql", "db+mysql", "db+sqlite")


class WorkerConfigError(Exception):
    """A worker config that would not work as meant; the message names the file and the fix."""


@dataclass(frozen=True)
class WorkerConfig:
    path: Path
    broker: str
    backend: str


def check_worker_config(
    path: Path, environ: Mapping[str, str] | None = None, *, connect: bool = True
) -> WorkerConfig:
    """The broker and backend `path` gives a worker, once checked: nested under
    `execution.config`, both set (environment variables resolved from `environ`), a shared
    backend, and (with `connect`) both answering. WorkerConfigError otherwise."""
    env = os.environ if environ is None else environ
    shown = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WorkerConfigError(f"{shown}: cannot read it: {exc}") from None
    section = _execution_config(data, shown)
    broker = _value(section, "broker", shown, env)
    backend = _value(section, "backend", shown, env) or "rpc://"
    if broker is None:
        raise WorkerConfigError(
            f"{shown}: execution.config.broker is not set: the worker would use a broker on "
            "localhost; set it (e.g. {env: ORCH_CELERY_BROKER})"
        )
    if not backend.startswith(SHARED_BACKENDS):
        raise WorkerConfigError(
            f"{shown}: execution.config.backend is {_hidden(backend)!r}: run monitoring on "
            "another host cannot read a run's state there and would fail live runs; use "
            "redis://HOST:6379/N or db+postgresql://..., the same as the instance's run launcher"
        )
    if connect:
        _broker_answers(broker, shown)
        _backend_answers(backend, shown)
    return WorkerConfig(path, broker, backend)


def worker_command(
    config: Path, queues: tuple[str, ...], concurrency: int, name: str | None = None
) -> list[str]:
    """The argv that starts a run worker on `queues` (at most four) with `concurrency`
    pool processes."""
    if not 1 <= len(queues) <= 4:
        raise WorkerConfigError("a worker takes one to four queues (a Celery limit)")
    for queue in queues:
        try:
            validate_queue_name(queue)
        except ValueError as exc:
            raise WorkerConfigError(f"--queue: {exc}") from None
    argv = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", str(config)]
    for queue in queues:
        argv += ["-q", queue]
    if name:
        argv += ["-n", name]
    return [*argv, "--", f"--concurrency={concurrency}"]


def _execution_config(data: Any, shown: str) -> Mapping[str, Any]:
    execution = data.get("execution") if isinstance(data, dict) else None
    section = None
    if isinstance(execution, dict):
        section = execution.get("config", execution.get("celery"))
    if not isinstance(section, dict):
        found = ", ".join(sorted(data)) if isinstance(data, dict) and data else "nothing"
        raise WorkerConfigError(
            f"{shown}: no execution.config mapping (found at the top: {found}). dagster-celery "
            "reads the broker and backend only from execution.config; anything else is ignored "
            "and the worker would use localhost and rpc://. Nest them:\n"
            "execution:\n  config:\n    broker: ...\n    backend: ..."
        )
    unknown = sorted(set(section) - {"broker", "backend", "include", "config_source"})
    if unknown:
        raise WorkerConfigError(
            f"{shown}: execution.config: unknown key(s) {', '.join(unknown)}; valid: broker, "
            "backend, include, config_source"
        )
    return section


def _value(section: Mapping[str, Any], key: str, shown: str, env: Mapping[str, str]) -> str | None:
    """A string, or `{env: NAME}` read from `env`."""
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"env"}:
        name = str(value["env"])
        if not env.get(name):
            raise WorkerConfigError(
                f"{shown}: execution.config.{key} reads the variable {name}, which is not set"
            )
        return env[name]
    if not isinstance(value, str) or not value:
        raise WorkerConfigError(
            f"{shown}: execution.config.{key} must be a URL or {{env: VARIABLE}}"
        )
    return value


def _broker_answers(url: str, shown: str) -> None:
    from kombu import Connection  # Celery's transport library: only when a worker starts

    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # kombu raises transport-specific errors
        raise WorkerConfigError(
            f"{shown}: the broker {_hidden(url)} does not answer ({type(exc).__name__}: {exc})"
        ) from None


def _backend_answers(url: str, shown: str) -> None:
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S).ping()
        else:
            import sqlalchemy as sa

            engine = sa.create_engine(url.removeprefix("db+"))
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
    except Exception as exc:  # each client raises its own errors
        raise WorkerConfigError(
            f"{shown}: the backend {_hidden(url)} does not answer ({type(exc).__name__}: {exc})"
        ) from None


def _hidden(url: str) -> str:
    """`url` without a password (`scheme://user:***@host`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
