"""The root `orch` group; the command groups register themselves here."""

from __future__ import annotations

import click

from orchestration.cli import allocation, config, deps, projects, tasks, up, validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run coding agents across many projects, on Dagster.

    Paths come from ORCH_PROJECTS_DIR (default ./projects), ORCH_CONFIG_DIR (default
    ./config) and ORCH_HOME (default ./.orch); `orch validate` shows the ones in use.
    """


main.add_command(validate.validate)
main.add_command(projects.projects)
main.add_command(config.config)
main.add_command(up.up)
main.add_command(up.samples)
main.add_command(tasks.task)
main.add_command(tasks.session)
main.add_command(deps.deps)
main.add_command(deps.affected)
main.add_command(allocation.allocation)
