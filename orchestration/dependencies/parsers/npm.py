"""npm manifests: package.json names and dependency sections."""

from __future__ import annotations

import json
import re

from orchestration.dependencies.model import ManifestScan, Package, Requirement, normalize_name
from orchestration.dependencies.parsers.source import JsonLocator, describe, problem

ECOSYSTEM = "npm"

#: package.json section -> scope of its dependencies
SECTIONS = (
    ("dependencies", "runtime"),
    ("devDependencies", "dev"),
    ("peerDependencies", "peer"),
    ("optionalDependencies", "optional"),
)

_LOCAL_PREFIXES = ("file:", "link:", "portal:")
_LOCAL_PATHS = ("./", "../", "/", "~/")
_GIT = re.compile(
    r"(?:git\+|git:|git@|github:|gitlab:|bitbucket:|gist:)"
    r"|[a-z]+://\S+\.git(?:#.*)?$"
    r"|[A-Za-z0-9][\w.-]*/[\w.-]+(?:#.*)?$"
)
_TARBALL = re.compile(r"https?://")


def parse_package_json(path: str, text: str) -> ManifestScan:
    """The package a package.json names and its dependencies by section."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return _broken(
            path, f"not valid JSON ({exc}); fix the syntax so its dependencies can be read"
        )
    except RecursionError:
        return _broken(path, "nested too deeply to be read as JSON")
    if not isinstance(data, dict):
        return _broken(path, f"should hold a JSON object, not {describe(data)}")
    where = JsonLocator(text)
    packages: list[Package] = []
    requirements: list[Requirement] = []
    problems: list[str] = []

    name = data.get("name")
    name_at = where.written(("name",))
    if isinstance(name, str) and name.strip():
        version = data.get("version")
        packages.append(
            Package(
                ecosystem=ECOSYSTEM,
                name=normalize_name(ECOSYSTEM, name),
                version=version if isinstance(version, str) else None,
                manifest=path,
                line=name_at.line if name_at else None,
            )
        )
    elif name is not None and not isinstance(name, str):
        problems.append(
            problem(path, name_at.line if name_at else None, "`name` should be a string")
        )

    for section, scope in SECTIONS:
        dependencies = data.get(section)
        if dependencies is None:
            continue
        section_at = where.written((section,))
        if not isinstance(dependencies, dict):
            problems.append(
                problem(
                    path,
                    (section_at.line if section_at else None),
                    f"`{section}` should be an object of names and versions, "
                    f"not {describe(dependencies)}",
                )
            )
            continue
        for dependency, value in dependencies.items():
            written = where.written((section, dependency))
            line = written.line if written else (section_at.line if section_at else None)
            if not isinstance(value, str):
                problems.append(
                    problem(
                        path,
                        line,
                        f"`{section}` gives {describe(value)} for {dependency!r}; "
                        "write a version range or URL string",
                    )
                )
                continue
            text_as_written = (
                written.text if written else f"{json.dumps(dependency)}: {json.dumps(value)}"
            )
            requirements.append(_requirement(path, dependency, value, scope, line, text_as_written))

    return ManifestScan(
        path=path,
        ecosystem=ECOSYSTEM,
        packages=tuple(packages),
        requirements=tuple(requirements),
        problems=tuple(problems),
    )


def _requirement(
    path: str, dependency: str, value: str, scope: str, line: int | None, text: str
) -> Requirement:
    """One dependency; `npm:` aliases depend on the aliased package."""
    name, specifier = dependency, value.strip()
    local_path = url = None
    if specifier.startswith("npm:"):
        alias = specifier[4:]
        at = alias.rfind("@")
        name, specifier = (alias[:at], alias[at + 1 :]) if at > 0 else (alias, "")
    elif specifier.startswith(_LOCAL_PREFIXES):
        local_path = specifier.split(":", 1)[1]
    elif specifier.startswith(_LOCAL_PATHS):
        local_path = specifier
    elif _GIT.match(specifier) or _TARBALL.match(specifier):
        url = specifier
    return Requirement(
        ecosystem=ECOSYSTEM,
        name=normalize_name(ECOSYSTEM, name),
        specifier=specifier,
        scope=scope,
        manifest=path,
        line=line,
        text=text,
        local_path=local_path,
        url=url,
    )


def _broken(path: str, message: str) -> ManifestScan:
    return ManifestScan(path=path, ecosystem=ECOSYSTEM, problems=(problem(path, None, message),))
