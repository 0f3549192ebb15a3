"""Python manifests: pyproject.toml (PEP 621, PEP 735, Poetry, uv), requirements*.txt and setup.cfg.

Requirement strings are read by `packaging.requirements.Requirement`; environment markers are
ignored, so a dependency counts whatever platform it is limited to.
"""

from __future__ import annotations

import configparser
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as Pep508
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from orchestration.dependencies.model import ManifestScan, Package, Requirement
from orchestration.dependencies.parsers.source import (
    IniLocator,
    TomlLocator,
    describe,
    load_toml,
    problem,
)

ECOSYSTEM = "python"

_NAME_AND_EXTRAS = re.compile(r"\s*[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*(?:\[[^\]]*\])?\s*")
_WHITESPACE = re.compile(r"\s+")


class _Reading:
    """What has been read from one Python manifest so far."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.packages: list[Package] = []
        self.requirements: list[Requirement] = []
        self.problems: list[str] = []

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(problem(self.path, line, message))

    def pep508(self, written: str, scope: str, line: int | None) -> None:
        """Add the requirement string `written`, or a problem when it is not PEP 508."""
        try:
            parsed = Pep508(written)
        except InvalidRequirement as exc:
            self.problem(line, f"{written!r} is not a valid requirement ({exc})")
            return
        local_path, url = _split_url(parsed.url)
        self.requirements.append(
            Requirement(
                ecosystem=ECOSYSTEM,
                name=canonicalize_name(parsed.name),
                specifier=_written_specifier(written, parsed),
                scope=scope,
                manifest=self.path,
                line=line,
                text=written.strip(),
                local_path=local_path,
                url=url,
            )
        )

    def scan(self) -> ManifestScan:
        return ManifestScan(
            path=self.path,
            ecosystem=ECOSYSTEM,
            packages=tuple(self.packages),
            requirements=tuple(self.requirements),
            problems=tuple(self.problems),
        )


def _written_specifier(written: str, parsed: Pep508) -> str:
    """The version range in the order it is written (packaging's `str()` sorts it)."""
    if parsed.url or not parsed.specifier:
        return ""
    match = _NAME_AND_EXTRAS.match(written)
    if match:
        spec = _WHITESPACE.sub("", written[match.end() :].split(";", 1)[0]).strip("()")
        try:
            if SpecifierSet(spec) == parsed.specifier:
                return spec
        except InvalidSpecifier:
            pass
    return str(parsed.specifier)


def _split_url(url: str | None) -> tuple[str | None, str | None]:
    """(local path, url) of a direct reference: `file:` URLs are local paths."""
    if not url:
        return None, None
    if url.startswith("file:"):
        parts = urlsplit(url)
        return unquote(parts.path) or None, None
    return None, url


# -- pyproject.toml -----------------------------------------------------------------------------


def parse_pyproject(path: str, text: str) -> ManifestScan:
    """Packages and requirements of a pyproject.toml: PEP 621, PEP 735, Poetry, uv, build."""
    data, error = load_toml(path, text)
    if data is None:
        return ManifestScan(path=path, ecosystem=ECOSYSTEM, problems=(str(error),))
    reading = _Reading(path)
    where = TomlLocator(text)
    tables = _Tables(reading, where)

    project = tables.table(data, ("project",))
    _project_package(reading, where, project)
    tables.pep508_list(project, ("project", "dependencies"), "runtime")
    optional = tables.table(project, ("project", "optional-dependencies"))
    for extra in optional:
        tables.pep508_list(optional, ("project", "optional-dependencies", extra), "optional")

    groups = tables.table(data, ("dependency-groups",))
    for group in groups:
        tables.pep508_list(groups, ("dependency-groups", group), "dev", include_groups=True)

    tool = tables.table(data, ("tool",))
    poetry = tables.table(tool, ("tool", "poetry"))
    if not reading.packages:
        _poetry_package(reading, where, poetry)
    _poetry_dependencies(tables, poetry)

    uv = tables.table(tool, ("tool", "uv"))
    tables.pep508_list(uv, ("tool", "uv", "dev-dependencies"), "dev")
    sources = tables.table(uv, ("tool", "uv", "sources"))
    if sources:
        _apply_uv_sources(reading, sources)

    build = tables.table(data, ("build-system",))
    tables.pep508_list(build, ("build-system", "requires"), "build")
    return reading.scan()


class _Tables:
    """Typed access to parts of a TOML document, recording a problem for each wrong type."""

    def __init__(self, reading: _Reading, where: TomlLocator) -> None:
        self.reading = reading
        self.where = where

    def table(self, parent: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
        value = parent.get(path[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.reading.problem(
                self.where.line(path),
                f"`{'.'.join(path)}` should be a table, not {describe(value)}",
            )
            return {}
        return value

    def pep508_list(
        self,
        parent: Mapping[str, Any],
        path: tuple[str, ...],
        scope: str,
        *,
        include_groups: bool = False,
    ) -> None:
        """Add each requirement string of the array at `path`."""
        value = parent.get(path[-1])
        if value is None:
            return
        if not isinstance(value, list):
            self.reading.problem(
                self.where.line(path),
                f"`{'.'.join(path)}` should be a list of requirements, not {describe(value)}",
            )
            return
        lines = self.where.string_lines(path, value)
        for item, line in zip(value, lines, strict=True):
            if isinstance(item, str):
                self.reading.pep508(item, scope, line)
            elif include_groups and isinstance(item, dict) and "include-group" in item:
                continue  # PEP 735: another group's requirements, read where that group is
            else:
                self.reading.problem(
                    line,
                    f"`{'.'.join(path)}` holds {describe(item)} where a requirement string "
                    "was expected",
                )


def _project_package(reading: _Reading, where: TomlLocator, project: Mapping[str, Any]) -> None:
    name = project.get("name")
    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        reading.problem(where.line(("project", "name")), "`project.name` should be a package name")
        return
    version = project.get("version")
    reading.packages.append(
        Package(
            ecosystem=ECOSYSTEM,
            name=canonicalize_name(name),
            version=version if isinstance(version, str) else None,
            manifest=reading.path,
            line=where.line(("project", "name")),
        )
    )


def _poetry_package(reading: _Reading, where: TomlLocator, poetry: Mapping[str, Any]) -> None:
    name = poetry.get("name")
    if isinstance(name, str) and name.strip():
        version = poetry.get("version")
        reading.packages.append(
            Package(
                ecosystem=ECOSYSTEM,
                name=canonicalize_name(name),
                version=version if isinstance(version, str) else None,
                manifest=reading.path,
                line=where.line(("tool", "poetry", "name")),
            )
        )
    elif name is not None:
        reading.problem(
            where.line(("tool", "poetry", "name")), "`tool.poetry.name` should be a package name"
        )


def _poetry_dependencies(tables: _Tables, poetry: Mapping[str, Any]) -> None:
    base = ("tool", "poetry")
    sections: list[tuple[Mapping[str, Any], tuple[str, ...], str]] = [
        (poetry, (*base, "dependencies"), "runtime"),
        (poetry, (*base, "dev-dependencies"), "dev"),
    ]
    groups = tables.table(poetry, (*base, "group"))
    for group, body in groups.items():
        if isinstance(body, dict):
            sections.append((body, (*base, "group", group, "dependencies"), "dev"))
    for parent, path, scope in sections:
        for name, value in tables.table(parent, path).items():
            if name.lower() != "python":
                _poetry_dependency(tables, path, name, value, scope)


def _poetry_dependency(
    tables: _Tables, path: tuple[str, ...], name: str, value: Any, scope: str
) -> None:
    reading, where = tables.reading, tables.where
    written = where.written((*path, name))
    line = written.line if written else where.line(path)
    text = written.text if written else f"{name} = {value!r}"
    constraints = value if isinstance(value, list) else [value]
    versions: list[str] = []
    local_path = url = None
    for constraint in constraints:
        if isinstance(constraint, str):
            versions.append(constraint.strip())
        elif isinstance(constraint, dict):
            version = constraint.get("version")
            if isinstance(version, str):
                versions.append(version.strip())
            local_path = local_path or _string(constraint.get("path"))
            url = url or _string(constraint.get("git")) or _string(constraint.get("url"))
            if constraint.get("optional") is True and scope == "runtime":
                scope = "optional"
        else:
            reading.problem(
                line,
                f"dependency {name!r} should be a version string or a table, "
                f"not {describe(constraint)}",
            )
            return
    reading.requirements.append(
        Requirement(
            ecosystem=ECOSYSTEM,
            name=canonicalize_name(name),
            specifier=" || ".join(versions),
            scope=scope,
            manifest=reading.path,
            line=line,
            text=text,
            local_path=local_path,
            url=url,
        )
    )


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _apply_uv_sources(reading: _Reading, sources: Mapping[str, Any]) -> None:
    """`[tool.uv.sources]`: path, git and url sources, and workspace members.

    A workspace source's specifier becomes `workspace:<range>` (`workspace:*` when no range is
    written), the notation npm workspaces use, since the model has no field for it.
    """
    by_name: dict[str, Mapping[str, Any]] = {}
    for name, source in sources.items():
        if isinstance(source, list):  # several sources chosen by markers: the first speaks
            source = next((item for item in source if isinstance(item, dict)), None)
        if isinstance(source, dict):
            by_name[canonicalize_name(name)] = source
    if not by_name:
        return
    for index, requirement in enumerate(reading.requirements):
        source = by_name.get(requirement.name)
        if source is None or requirement.scope == "build":
            continue
        if source.get("workspace") is True:
            requirement = replace(
                requirement, specifier=f"workspace:{requirement.specifier or '*'}"
            )
        local_path = _string(source.get("path"))
        if local_path:
            requirement = replace(requirement, local_path=local_path, url=None)
        url = _string(source.get("git")) or _string(source.get("url"))
        if url:
            requirement = replace(requirement, url=url)
        reading.requirements[index] = requirement


# -- requirements.txt ---------------------------------------------------------------------------

_COMMENT = re.compile(r"(^|\s+)#.*$")
_OPTION = re.compile(r"\s--?[A-Za-z]")
_EDITABLE = re.compile(r"(?:-e|--editable)(?:[ \t]*=[ \t]*|[ \t]*)(\S.*)")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|[A-Za-z][A-Za-z0-9.-]*\+[A-Za-z]|file:")
_EGG = re.compile(r"[#&]egg=([^&\s]+)")
_EXTRAS = re.compile(r"\[[^\]]*\]$")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")


def parse_requirements_txt(path: str, text: str) -> ManifestScan:
    """One requirement per line, as pip reads them: continuations, options, paths and URLs."""
    reading = _Reading(path)
    for line, logical in _logical_lines(text):
        content = _COMMENT.sub("", logical).strip()
        if not content:
            continue
        if content.startswith("-"):
            editable = _EDITABLE.fullmatch(content)
            if editable:
                target = _OPTION.split(editable.group(1), maxsplit=1)[0].strip()
                _direct_reference(reading, target, f"-e {target}", line)
            # Every other option line (-r, -c, --index-url, --hash, ...) names no requirement.
            continue
        written = _OPTION.split(content, maxsplit=1)[0].strip()
        if _URL.match(written):
            _direct_reference(reading, written, written, line)
        elif _looks_like_path(written):
            _direct_reference(reading, written, written, line)
        else:
            reading.pep508(written, "runtime", line)
    return reading.scan()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each line, joining lines that end with a backslash."""
    joined: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        is_comment = _COMMENT.match(line) is not None
        if line.endswith("\\") and not is_comment:
            if not pending:
                start = number
            pending.append(line[:-1])
            continue
        if pending:
            pending.append(line if not is_comment else " " + line)
            joined.append((start, "".join(pending)))
            pending = []
        else:
            joined.append((number, line))
    if pending:
        joined.append((start, "".join(pending)))
    return joined


def _looks_like_path(written: str) -> bool:
    """pip's test: a path starts with `.`, `/` or `~`, or has a `/` and is no `name @ url`."""
    if written.startswith((".", "/", "~")):
        return True
    head = written.split(";", 1)[0]
    return "/" in head and "@" not in head


def _direct_reference(reading: _Reading, target: str, written: str, line: int) -> None:
    """A requirement given as a local path or URL (`-e ../lib`, `git+https://...#egg=x`)."""
    target = target.split(" ;", 1)[0].split("; ", 1)[0].strip()
    egg = _EGG.search(target)
    if _URL.match(target) and not target.startswith("file:"):
        url = target.split("#", 1)[0]
        local_path = None
        tail = urlsplit(url).path.rstrip("/")
        guess = posixpath.basename(tail).split("@", 1)[0].removesuffix(".git")
    else:
        url = None
        local_path = _split_url(target.split("#", 1)[0])[0] if target.startswith("file:") else None
        local_path = _EXTRAS.sub("", local_path or target.split("#", 1)[0])
        # pip reads these paths from its working directory, usually the repository root, so
        # the path is kept as written and only its last folder names the package.
        guess = posixpath.basename(posixpath.normpath(local_path))
        if guess == "." and not egg:
            return  # the project itself (`-e .`): nothing to depend on
    name = _EXTRAS.sub("", egg.group(1)) if egg else _archive_name(guess) or guess
    if not name or name in (".", ".."):
        reading.problem(
            line,
            f"cannot tell which package {written!r} installs; add `#egg=<name>` "
            "or write it as `<name> @ <url>`",
        )
        return
    reading.requirements.append(
        Requirement(
            ecosystem=ECOSYSTEM,
            name=canonicalize_name(name),
            specifier="",
            scope="runtime",
            manifest=reading.path,
            line=line,
            text=written,
            local_path=local_path,
            url=url,
        )
    )


def _archive_name(filename: str) -> str | None:
    """The project name of a wheel or sdist file name, if it is one."""
    if not filename.endswith(_ARCHIVES):
        return None
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


# -- setup.cfg ----------------------------------------------------------------------------------

_SETUP_CFG_LISTS = (
    ("options", "install_requires", "runtime"),
    ("options", "setup_requires", "build"),
)


def parse_setup_cfg(path: str, text: str) -> ManifestScan:
    """`[metadata]` name and version, `[options] install_requires`, `[options.extras_require]`."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        message = f"not a valid setup.cfg ({exc}); fix the syntax so its dependencies can be read"
        return ManifestScan(
            path=path,
            ecosystem=ECOSYSTEM,
            problems=(problem(path, None, " ".join(message.split())),),
        )
    reading = _Reading(path)
    where = IniLocator(text)
    name = parser.get("metadata", "name", fallback=None)
    if name and name.strip():
        version = parser.get("metadata", "version", fallback=None)
        if version and version.strip().startswith(("attr:", "file:")):
            version = None
        option = where.option("metadata", "name")
        reading.packages.append(
            Package(
                ecosystem=ECOSYSTEM,
                name=canonicalize_name(name),
                version=version.strip() if version else None,
                manifest=path,
                line=option.line if option else None,
            )
        )
    for section, key, scope in _SETUP_CFG_LISTS:
        _setup_cfg_list(
            reading, where, section, key, parser.get(section, key, fallback=None), scope
        )
    if parser.has_section("options.extras_require"):
        for extra, value in parser.items("options.extras_require"):
            _setup_cfg_list(reading, where, "options.extras_require", extra, value, "optional")
    return reading.scan()


def _setup_cfg_list(
    reading: _Reading, where: IniLocator, section: str, key: str, value: str | None, scope: str
) -> None:
    if not value or value.strip().startswith("file:"):
        return  # `file:` lists live in another file, which is read if it is a requirements file
    items = _setuptools_list(value)
    for item, line in zip(items, where.value_lines(section, key, items), strict=True):
        reading.pep508(item, scope, line)


def _setuptools_list(value: str) -> Sequence[str]:
    """setuptools' list reading: one item per line, or `;`-separated on a single line."""
    parts = value.splitlines() if "\n" in value else value.split(";")
    return [part.strip() for part in parts if part.strip() and not part.strip().startswith("#")]
