"""The `orch` command: one module per command group, each thin over the package."""

from orchestration.cli.main import main

__all__ = ["main"]
