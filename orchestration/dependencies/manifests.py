"""The first, minimal manifest reader's names, kept as thin wrappers over `parsers`.

New code should use `orchestration.dependencies.parsers` (`is_manifest`, `parse_manifest`,
`scan_files`, `scan_directory`), which also reads requirements, line numbers and workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestration.dependencies.parsers import (
    SKIPPED_DIRECTORIES,
    manifest_ecosystem,
    parse_manifest,
)

__all__ = ["SKIPPED_DIRECTORIES", "Manifest", "manifest_kind", "read_manifest"]


@dataclass(frozen=True)
class Manifest:
    """A manifest file found in a repository and the package it declares, if any."""

    path: str
    ecosystem: str
    provides: str | None


def manifest_kind(path: str) -> str | None:
    """The ecosystem of a manifest file, or None when `path` is not a manifest."""
    return manifest_ecosystem(path)


def read_manifest(path: str, text: str) -> Manifest:
    """The package one manifest provides. Text nothing can be read from raises ValueError."""
    scan = parse_manifest(path, text)
    if scan.problems and not (scan.packages or scan.requirements or scan.workspace_members):
        raise ValueError("; ".join(scan.problems))
    provides = scan.packages[0].name if scan.packages else None
    return Manifest(path=path, ecosystem=scan.ecosystem, provides=provides)
