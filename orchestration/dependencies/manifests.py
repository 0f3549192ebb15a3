"""Finding a repository's dependency manifests and the package names it provides.

One small reader per format, each a pure function of the file's text, so the same code serves
the `manifest` asset, the CLI and tests. Names are normalised per ecosystem (PEP 503 for Python,
lower-case for npm, as written for Go modules, `-` and `_` folded for Cargo crates).
"""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from packaging.utils import canonicalize_name

SKIPPED_DIRECTORIES = frozenset({"node_modules", "vendor", ".git", "target", "dist", "build"})


@dataclass(frozen=True)
class Manifest:
    """A manifest file found in a repository and the package it declares, if any."""

    path: str
    ecosystem: str
    provides: str | None


def _pyproject(text: str) -> str | None:
    data = tomllib.loads(text)
    name = data.get("project", {}).get("name") or data.get("tool", {}).get("poetry", {}).get("name")
    return canonicalize_name(name) if isinstance(name, str) and name else None


def _setup_cfg(text: str) -> str | None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    name = parser.get("metadata", "name", fallback=None)
    return canonicalize_name(name) if name else None


def _package_json(text: str) -> str | None:
    name = json.loads(text).get("name")
    return name.lower() if isinstance(name, str) and name else None


def _go_mod(text: str) -> str | None:
    match = re.search(r"^\s*module\s+(\S+)", text, re.MULTILINE)
    return match.group(1).strip('"') if match else None


def _cargo_toml(text: str) -> str | None:
    name = tomllib.loads(text).get("package", {}).get("name")
    return name.replace("_", "-").lower() if isinstance(name, str) and name else None


def _provides_nothing(text: str) -> str | None:
    return None


#: file name -> (ecosystem, reader of the name it provides)
READERS: Mapping[str, tuple[str, Callable[[str], str | None]]] = {
    "pyproject.toml": ("python", _pyproject),
    "setup.cfg": ("python", _setup_cfg),
    "package.json": ("npm", _package_json),
    "go.mod": ("go", _go_mod),
    "Cargo.toml": ("cargo", _cargo_toml),
    ".gitmodules": ("git", _provides_nothing),
}
REQUIREMENTS_PATTERN = re.compile(r"^requirements[\w.-]*\.txt$")


def manifest_kind(path: str) -> str | None:
    """The ecosystem of a manifest file, or None when `path` is not a manifest."""
    parts = PurePosixPath(path).parts
    if any(part in SKIPPED_DIRECTORIES for part in parts[:-1]):
        return None
    name = parts[-1] if parts else ""
    if name in READERS:
        return READERS[name][0]
    if REQUIREMENTS_PATTERN.match(name):
        return "python"
    return None


def read_manifest(path: str, text: str) -> Manifest:
    """Parse one manifest. A file that cannot be parsed raises ValueError naming it."""
    name = PurePosixPath(path).name
    ecosystem, reader = READERS.get(name, ("python", _provides_nothing))
    try:
        provides = reader(text)
    except (ValueError, configparser.Error, AttributeError) as exc:
        raise ValueError(f"{path}: cannot parse this {name}: {exc}") from None
    return Manifest(path=path, ecosystem=ecosystem, provides=provides)
