"""Where a project's runs go: its `placement`, else a stable hash of its name over the queues
ORCH_CELERY_QUEUES lists, else nowhere in particular (no queue tag)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import pytest

from orchestration.placement import PlacementError, celery_queues, placement_tags, run_queue
from orchestration.registry.models import ProjectSpec
from orchestration.tags import CELERY_QUEUE_TAG
from orchestration.tasks.dispatch import task_run_tags
from orchestration.tasks.models import Task, TaskStatus
from tests.support.registry import RegistryDir

QUEUES = ("host-a", "host-b", "host-c")


def spec(name: str, **keys: object) -> ProjectSpec:
    return ProjectSpec.model_validate({"name": name, "repo": ".", **keys})


def test_a_pinned_project_goes_to_its_queue_whatever_the_list() -> None:
    pinned = spec("billing", placement="gpu-box")
    assert run_queue(pinned, QUEUES) == "gpu-box"
    assert run_queue(pinned, ()) == "gpu-box"


def test_an_unpinned_project_gets_one_queue_by_a_stable_hash() -> None:
    names = [f"project_{i}" for i in range(300)]
    chosen = {name: run_queue(spec(name), QUEUES) for name in names}
    assert chosen == {name: QUEUES[zlib.crc32(name.encode()) % 3] for name in names}
    # spread over every queue, and the same answer on every call (every host, every load)
    counts = {queue: list(chosen.values()).count(queue) for queue in QUEUES}
    assert min(counts.values()) > 60, counts
    assert all(run_queue(spec(name), QUEUES) == chosen[name] for name in names)


def test_without_queues_a_run_gets_no_queue_tag() -> None:
    assert run_queue(spec("alpha"), ()) is None
    assert placement_tags(spec("alpha"), {}) == {}
    assert placement_tags(spec("alpha"), {"ORCH_CELERY_QUEUES": " , "}) == {}


def test_the_queue_list_is_read_and_checked() -> None:
    assert celery_queues({"ORCH_CELERY_QUEUES": "host-a, host-b,,"}) == ("host-a", "host-b")
    with pytest.raises(PlacementError, match="ORCH_CELERY_QUEUES: '-x' is not a queue name"):
        celery_queues({"ORCH_CELERY_QUEUES": "host-a,-x"})


def test_every_task_run_carries_its_projects_queue() -> None:
    now = datetime.now(UTC)
    task = Task(
        id="t1",
        project="alpha",
        prompt="p",
        status=TaskStatus.QUEUED,
        priority=50,
        created_at=now,
        updated_at=now,
    )
    env = {"ORCH_CELERY_QUEUES": ",".join(QUEUES)}
    tags = task_run_tags(task, spec("alpha"), environ=env)
    assert tags[CELERY_QUEUE_TAG] == run_queue(spec("alpha"), QUEUES)
    assert (
        task_run_tags(task, spec("alpha", placement="host-b"), environ={})[CELERY_QUEUE_TAG]
        == "host-b"
    )
    assert CELERY_QUEUE_TAG not in task_run_tags(task, spec("alpha"), environ={})


def test_a_bad_placement_is_an_error_naming_the_file_and_key(registry_dir: RegistryDir) -> None:
    path = registry_dir.project("alpha", "placement: 'Host A'\n")
    (error,) = registry_dir.load().errors
    assert error.key == "placement" and error.line == 3
    assert error.file.endswith(path.name)
    assert "'Host A' is not a queue name" in error.message
