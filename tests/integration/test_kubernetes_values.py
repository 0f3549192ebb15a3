"""The Helm values of deploy/kubernetes: the instance configuration they imply (what the
Dagster chart renders into its instance ConfigMap), validated against the installed Dagster,
and the same run queue, pools and run monitoring as deploy/dagster.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from tests.support.paths import REPO_ROOT

VALUES = REPO_ROOT / "deploy" / "kubernetes" / "values.yaml"
DEPLOY_CONFIG = REPO_ROOT / "deploy" / "dagster.yaml"


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The instance `dagster.yaml` the chart renders from `values` (its
    `helpers/instance/*.tpl` and `configmap-instance.yaml`, for the sections used here)."""
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = daemon["runMonitoring"]
    launcher = values["runLauncher"]
    postgres = values["postgresql"]
    pools = values["concurrency"]["pools"]
    runs = values["concurrency"]["runs"]
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": postgres["postgresqlHost"],
                    "port": postgres["service"]["port"],
                    "username": postgres["postgresqlUsername"],
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "db_name": postgres["postgresqlDatabase"],
                }
            }
        },
        "run_queue": {
            "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
            "dequeue_use_threads": queued["dequeueUseThreads"],
            "dequeue_num_workers": queued["dequeueNumWorkers"],
            "max_user_code_failure_retries": queued["maxUserCodeFailureRetries"],
            "user_code_failure_retry_delay": queued["userCodeFailureRetryDelay"],
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": launcher["type"],
            "config": {
                "env_secrets": [
                    s["name"] for s in launcher["config"]["k8sRunLauncher"]["envSecrets"]
                ],
                "volumes": launcher["config"]["k8sRunLauncher"]["volumes"],
                "volume_mounts": launcher["config"]["k8sRunLauncher"]["volumeMounts"],
            },
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "concurrency": {
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
            "pools": {"granularity": pools["granularity"], "default_limit": pools["defaultLimit"]},
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


@pytest.fixture
def rendered(tmp_path: Path) -> dict[str, Any]:
    return render_instance(yaml.safe_load(VALUES.read_text()))


def test_the_rendered_instance_config_is_valid_for_the_installed_dagster(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["concurrency"]["pools"]["granularity"] == "run"


def test_it_queues_pools_and_monitors_runs_as_the_deploy_config_does(
    rendered: dict[str, Any],
) -> None:
    deploy = yaml.safe_load(DEPLOY_CONFIG.read_text())
    assert rendered["run_queue"] == deploy["run_queue"]
    assert rendered["concurrency"] == deploy["concurrency"]
    monitoring = deploy["run_monitoring"]
    for key, value in monitoring.items():
        assert rendered["run_monitoring"][key] == value, key


def test_a_broken_value_is_refused_by_dagster(rendered: dict[str, Any], tmp_path: Path) -> None:
    rendered["concurrency"]["pools"]["granularity"] = "sometimes"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    with pytest.raises(Exception, match="granularity"):
        dagster_instance_config(str(tmp_path))
