"""What dependency detection finds, as plain frozen data: packages a project provides, the
requirements it declares, and where each was written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name


def normalize_name(ecosystem: str, name: str) -> str:
    """A package name as its ecosystem compares names.

    Python: PEP 503 (`Foo_Bar.baz` -> `foo-bar-baz`); npm: lower case, scope kept (`@vue/shared`);
    Go: the module path as written (paths are case-sensitive); Cargo: `_` and `-` are the same
    crate, lower case; git: a repository URL without scheme, credentials, `.git` or trailing `/`.
    """
    name = name.strip()
    if ecosystem == "python":
        return canonicalize_name(name)
    if ecosystem == "npm":
        return name.lower()
    if ecosystem == "cargo":
        return name.replace("_", "-").lower()
    if ecosystem == "git":
        return normalize_git_url(name)
    return name


def normalize_git_url(url: str) -> str:
    """`https://user@github.com/Org/Repo.git/` and `git@github.com:Org/Repo` compare equal."""
    text = url.strip()
    scp = re.match(r"^[\w.-]+@([\w.-]+):(.+)$", text)
    if scp:
        text = f"{scp.group(1)}/{scp.group(2)}"
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.sub(r"^[^@/]+@", "", text)
    text = text.rstrip("/")
    text = text.removesuffix(".git")
    return text.lower()


@dataclass(frozen=True)
class Package:
    """A package a project publishes, declared in one of its manifests."""

    ecosystem: str
    name: str  # normalised with normalize_name
    version: str | None
    manifest: str  # path of the manifest, relative to the repository root (posix)
    line: int | None = None


@dataclass(frozen=True)
class Requirement:
    """One dependency a manifest declares.

    `specifier` is the version range as written (`>=1.2,<2`, `^3.5.0`, `v1.4.0`, `workspace:*`,
    or empty). `local_path` is set for path dependencies (`-e ../lib`, `path = "../x"`,
    `replace x => ../x`, `file:../x`), relative to the manifest's directory; `url` for VCS
    requirements and submodules.
    """

    ecosystem: str
    name: str  # normalised with normalize_name
    specifier: str
    scope: str
    manifest: str
    line: int | None
    text: str  # the requirement as written, for evidence
    local_path: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class ManifestScan:
    """Everything one manifest file says."""

    path: str
    ecosystem: str
    packages: tuple[Package, ...] = ()
    requirements: tuple[Requirement, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectScan:
    """Every manifest of one project's repository at one commit."""

    project: str
    commit: str | None
    manifests: tuple[ManifestScan, ...] = field(default_factory=tuple)

    @property
    def packages(self) -> tuple[Package, ...]:
        return tuple(p for m in self.manifests for p in m.packages)

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return tuple(r for m in self.manifests for r in m.requirements)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(p for m in self.manifests for p in m.problems)
