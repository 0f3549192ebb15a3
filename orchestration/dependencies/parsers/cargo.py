"""Cargo manifests: Cargo.toml `[package]` and dependency tables (per target and workspace too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestration.dependencies.model import ManifestScan, Package, Requirement, normalize_name
from orchestration.dependencies.parsers.source import TomlLocator, describe, load_toml, problem

ECOSYSTEM = "cargo"

#: dependency table -> scope (the `_` spellings are Cargo's older aliases)
TABLES = (
    ("dependencies", "runtime"),
    ("dev-dependencies", "dev"),
    ("dev_dependencies", "dev"),
    ("build-dependencies", "build"),
    ("build_dependencies", "build"),
)


def parse_cargo_toml(path: str, text: str) -> ManifestScan:
    """The crate a Cargo.toml declares and its dependencies.

    An `optional = true` dependency of `[dependencies]` has scope `optional` (it is behind a
    feature, like a Python extra). `[workspace.dependencies]` are requirements of the workspace
    root with scope `runtime`.
    """
    data, error = load_toml(path, text)
    if data is None:
        return ManifestScan(path=path, ecosystem=ECOSYSTEM, problems=(str(error),))
    reader = _CargoReader(path, TomlLocator(text))

    package = reader.table(data, ("package",))
    name = package.get("name")
    if isinstance(name, str) and name.strip():
        version = package.get("version")
        reader.packages.append(
            Package(
                ecosystem=ECOSYSTEM,
                name=normalize_name(ECOSYSTEM, name),
                version=version if isinstance(version, str) else None,  # or {workspace = true}
                manifest=path,
                line=reader.where.line(("package", "name")),
            )
        )
    elif name is not None:
        reader.problem(("package", "name"), "`package.name` should be a crate name")

    for table, scope in TABLES:
        reader.dependencies(data, (table,), scope)
    for platform, body in reader.table(data, ("target",)).items():
        if isinstance(body, dict):
            for table, scope in TABLES:
                reader.dependencies(body, ("target", platform, table), scope)

    workspace = reader.table(data, ("workspace",))
    reader.dependencies(workspace, ("workspace", "dependencies"), "runtime")

    return ManifestScan(
        path=path,
        ecosystem=ECOSYSTEM,
        packages=tuple(reader.packages),
        requirements=tuple(reader.requirements),
        problems=tuple(reader.problems),
    )


class _CargoReader:
    """What has been read from one Cargo.toml so far."""

    def __init__(self, path: str, where: TomlLocator) -> None:
        self.path = path
        self.where = where
        self.packages: list[Package] = []
        self.requirements: list[Requirement] = []
        self.problems: list[str] = []

    def problem(self, key: tuple[str, ...], message: str) -> None:
        self.problems.append(problem(self.path, self.where.line(key), message))

    def table(self, parent: Mapping[str, Any], key: tuple[str, ...]) -> Mapping[str, Any]:
        value = parent.get(key[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"`{'.'.join(key)}` should be a table, not {describe(value)}")
            return {}
        return value

    def dependencies(self, parent: Mapping[str, Any], key: tuple[str, ...], scope: str) -> None:
        for name, value in self.table(parent, key).items():
            self.dependency((*key, name), name, value, scope)

    def dependency(self, key: tuple[str, ...], name: str, value: Any, scope: str) -> None:
        """`x = "1"`, `x = { version, path, git, package, optional, workspace }`."""
        written = self.where.written(key)
        specifier, local_path, url = "", None, None
        if isinstance(value, str):
            specifier = value.strip()
        elif isinstance(value, dict):
            specifier = _text(value.get("version")) or ""
            name = _text(value.get("package")) or name
            local_path = _text(value.get("path"))
            url = _text(value.get("git"))
            if value.get("optional") is True and scope == "runtime":
                scope = "optional"
        else:
            self.problem(
                key,
                f"dependency {name!r} should be a version string or a table, not {describe(value)}",
            )
            return
        self.requirements.append(
            Requirement(
                ecosystem=ECOSYSTEM,
                name=normalize_name(ECOSYSTEM, name),
                specifier=specifier,
                scope=scope,
                manifest=self.path,
                line=written.line if written else self.where.line(key),
                text=written.text if written else f"{name} = {value!r}",
                local_path=local_path,
                url=url,
            )
        )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
