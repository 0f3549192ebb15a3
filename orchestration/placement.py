"""Where a project's runs go when several hosts run them: the Celery queue a run is sent to
(the `dagster-celery/queue` run tag that `dagster_celery`'s CeleryRunLauncher reads).

A project pinned with `placement: <queue>` goes to that queue; any other goes to one of the
queues `ORCH_CELERY_QUEUES` lists (comma-separated), chosen by a stable hash of its name, so
its private clone and its agents' sessions stay on the one host that serves that queue. With no
queues listed (one host, the default launcher), a run gets no queue tag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from orchestration.registry.models import ProjectSpec, validate_queue_name
from orchestration.sharding import stable_bucket
from orchestration.tags import CELERY_QUEUE_TAG

QUEUES_VAR = "ORCH_CELERY_QUEUES"


class PlacementError(ValueError):
    """`ORCH_CELERY_QUEUES` names something that is not a queue name."""


def celery_queues(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The queues `ORCH_CELERY_QUEUES` lists, in its order; PlacementError for a name that is
    not a slug (it becomes a routing key)."""
    env = os.environ if environ is None else environ
    names = tuple(name.strip() for name in env.get(QUEUES_VAR, "").split(",") if name.strip())
    for name in names:
        try:
            validate_queue_name(name)
        except ValueError as exc:
            raise PlacementError(f"{QUEUES_VAR}: {exc}") from None
    return names


def run_queue(spec: ProjectSpec, queues: Sequence[str]) -> str | None:
    """The queue the project's runs go to: its `placement`, else one of `queues` by a stable
    hash of its name (the same on every host and every load), else None."""
    if spec.placement:
        return spec.placement
    if not queues:
        return None
    return queues[stable_bucket(spec.name, len(queues))]


def placement_tags(spec: ProjectSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The run tag that sends the project's runs to its queue; none without one."""
    queue = run_queue(spec, celery_queues(environ))
    return {CELERY_QUEUE_TAG: queue} if queue else {}
