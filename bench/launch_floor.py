"""The floor of `bench.dispatch --commands`: a code location of its own holding one empty asset
job, which `dagster job launch` submits to the same instance, daemon and run queue as the
tasks. Kept apart from `bench.dispatch` so that the command loads nothing else."""

from __future__ import annotations

import dagster as dg

JOB = "launch_floor"


@dg.asset(pool="agents", group_name="launch_floor")
def launch_floor_noop() -> None:
    """Does nothing: every second its runs take is Dagster's."""


defs = dg.Definitions(
    assets=[launch_floor_noop],
    jobs=[dg.define_asset_job(JOB, selection=[launch_floor_noop])],
)
