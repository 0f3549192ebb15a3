"""Reading dependency manifests: which files are manifests, and what each one declares.

One parser per format, each a pure function of a file's path and text that never raises for bad
content (it records a problem naming the file instead), so the same code serves the assets, the
CLI and tests. `scan_files` and `scan_directory` read a whole repository into a `ProjectScan`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestration.dependencies.model import ManifestScan, ProjectScan
from orchestration.dependencies.parsers.cargo import parse_cargo_toml
from orchestration.dependencies.parsers.gitmodules import parse_gitmodules
from orchestration.dependencies.parsers.go import parse_go_mod
from orchestration.dependencies.parsers.npm import parse_package_json
from orchestration.dependencies.parsers.python import (
    parse_pyproject,
    parse_requirements_txt,
    parse_setup_cfg,
)
from orchestration.dependencies.parsers.source import problem

__all__ = [
    "SKIPPED_DIRECTORIES",
    "is_manifest",
    "manifest_ecosystem",
    "parse_manifest",
    "scan_directory",
    "scan_files",
]

#: Folders whose files are never a project's own manifests (installed, vendored or built copies).
SKIPPED_DIRECTORIES = frozenset(
    {"node_modules", "vendor", ".git", "target", "dist", "build", ".venv", "venv", "__pycache__"}
)

Parser = Callable[[str, str], ManifestScan]

#: file name -> (ecosystem, parser)
PARSERS: Mapping[str, tuple[str, Parser]] = {
    "pyproject.toml": ("python", parse_pyproject),
    "setup.cfg": ("python", parse_setup_cfg),
    "package.json": ("npm", parse_package_json),
    "go.mod": ("go", parse_go_mod),
    "Cargo.toml": ("cargo", parse_cargo_toml),
    ".gitmodules": ("git", parse_gitmodules),
}
_REQUIREMENTS = ("python", parse_requirements_txt)


def _parser_for(parts: list[str]) -> tuple[str, Parser] | None:
    """The parser of a file by its name (and, for requirements/*.txt, its folder)."""
    name = parts[-1]
    found = PARSERS.get(name)
    if found is not None:
        return found
    if name.endswith(".txt") and (
        name.startswith("requirements") or (len(parts) > 1 and parts[-2] == "requirements")
    ):
        return _REQUIREMENTS
    return None


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def manifest_ecosystem(path: str) -> str | None:
    """The ecosystem of the manifest at `path`, or None when it is not one we read."""
    parts = _parts(path)
    if not parts or any(part in SKIPPED_DIRECTORIES for part in parts[:-1]):
        return None
    found = _parser_for(parts)
    return found[0] if found else None


def is_manifest(path: str) -> bool:
    """Whether `path` (posix, relative to the repository root) is a manifest we read.

    Files under installed, vendored or built folders (node_modules/, vendor/, target/, ...)
    are not the project's own and are skipped.
    """
    return manifest_ecosystem(path) is not None


def parse_manifest(path: str, text: str) -> ManifestScan:
    """Everything the manifest at `path` declares.

    Never raises for bad content: what cannot be read becomes a problem naming the file (and
    the line, when known). Raises ValueError only when `path` is not a manifest file name.
    """
    parts = _parts(path)
    found = _parser_for(parts) if parts else None
    if found is None:
        raise ValueError(f"{path}: not a dependency manifest this scanner reads")
    ecosystem, parser = found
    text = text.removeprefix("\ufeff")
    try:
        return parser(path, text)
    except Exception as exc:  # a parser bug must not stop the scan of a whole repository
        message = (
            f"could not be read ({type(exc).__name__}: {exc}); "
            "this is a bug in the manifest parser, please report it with the file"
        )
        return ManifestScan(
            path=path, ecosystem=ecosystem, problems=(problem(path, None, message),)
        )


def scan_files(project: str, files: Mapping[str, str], commit: str | None = None) -> ProjectScan:
    """Parse the manifests among `files` (posix path -> text); other files are ignored."""
    manifests = tuple(
        parse_manifest(path, files[path]) for path in sorted(files) if is_manifest(path)
    )
    return ProjectScan(project=project, commit=commit, manifests=manifests)


def scan_directory(project: str, root: Path, commit: str | None = None) -> ProjectScan:
    """Parse the manifests of a checkout at `root`, skipping installed and built folders.

    Only manifest files are read. A file that cannot be read as UTF-8 text gives a problem.
    """
    manifests: list[ManifestScan] = []
    for directory, folders, names in os.walk(root):
        folders[:] = sorted(folder for folder in folders if folder not in SKIPPED_DIRECTORIES)
        relative = Path(directory).relative_to(root).as_posix()
        for name in sorted(names):
            path = name if relative == "." else f"{relative}/{name}"
            ecosystem = manifest_ecosystem(path)
            if ecosystem is None:
                continue
            try:
                text = (Path(directory) / name).read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                message = f"cannot be read as UTF-8 text ({exc})"
                manifests.append(
                    ManifestScan(
                        path=path, ecosystem=ecosystem, problems=(problem(path, None, message),)
                    )
                )
                continue
            manifests.append(parse_manifest(path, text))
    manifests.sort(key=lambda scan: scan.path)
    return ProjectScan(project=project, commit=commit, manifests=tuple(manifests))
