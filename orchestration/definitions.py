"""The entry point's former module path, kept so that workspace files and commands that name
`orchestration.definitions` keep loading; the definitions live in `orchestration.defs`."""

from orchestration.defs.definitions import build_definitions, defs

__all__ = ["build_definitions", "defs"]
