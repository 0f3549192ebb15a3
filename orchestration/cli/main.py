"""The root `orch` group. Each command group's module is imported when that command runs (or
when `--help` lists them all), so `orch task list` loads the task store and not the registry,
git or Dagster."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

#: Command name -> "module:attribute" of the click command.
COMMANDS = {
    "validate": "orchestration.cli.validate:validate",
    "projects": "orchestration.cli.projects:projects",
    "config": "orchestration.cli.config:config",
    "up": "orchestration.cli.up:up",
    "samples": "orchestration.cli.up:samples",
    "task": "orchestration.cli.tasks:task",
    "session": "orchestration.cli.tasks:session",
    "deps": "orchestration.cli.deps:deps",
    "affected": "orchestration.cli.deps:affected",
    "allocation": "orchestration.cli.allocation:allocation",
    "providers": "orchestration.cli.providers:providers",
    "channel": "orchestration.cli.channels:channel",
    "change": "orchestration.cli.changes:change",
    "worker": "orchestration.cli.worker:worker",
    "backup": "orchestration.cli.backup:backup",
    "status": "orchestration.cli.status:status",
    "metrics": "orchestration.cli.metrics:metrics",
}


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is first asked for (click's
    "lazily loading subcommands" pattern)."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy_commands[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def main() -> None:
    """Run coding agents across many projects, on Dagster.

    Paths come from ORCH_PROJECTS_DIR (default ./projects), ORCH_CONFIG_DIR (default
    ./config) and ORCH_HOME (default ./.orch); `orch validate` shows the ones in use.
    """
