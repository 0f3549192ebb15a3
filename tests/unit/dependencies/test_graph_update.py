"""Updating the dependency graph after some projects' scans changed: `update_graph` over the
projects `affected_consumers` names gives the graph `build_graph` gives over everything.

Pure: projects are `ProjectScan`s made with the real parsers from generated manifests (npm
and Python, packages required by name, by path, with ranges their providers may not satisfy,
`depends_on` and `ignore_dependencies`); many random changes, each checked against a full build.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence

import pytest

from orchestration.dependencies.graph import (
    DependencyGraph,
    PackageIndex,
    ProjectInput,
    affected_consumers,
    build_graph,
    package_key,
    update_graph,
)
from orchestration.dependencies.model import ProjectScan
from orchestration.dependencies.parsers import scan_files

ROOT = "/srv/repos"
NAMES = [f"p{index}" for index in range(12)]


def random_files(rng: random.Random, name: str) -> dict[str, str]:
    """npm or Python manifests for `name`: its packages (sometimes another project's name, or
    none) and requirements of other projects' packages, by name or path, and of externals."""
    provided = rng.choice([name, name, name, rng.choice(NAMES), None])
    others = rng.sample(NAMES, rng.randint(0, 4))
    if rng.random() < 0.5:
        dependencies = {f"@acme/{other}": rng.choice(["^1.0.0", "^2.0.0"]) for other in others}
        if rng.random() < 0.3:
            dependencies["sibling"] = f"file:../{rng.choice(NAMES)}"
        dependencies["lodash"] = "^4"
        data: dict[str, object] = {"version": rng.choice(["1.2.0", "2.0.1"])}
        if provided:
            data["name"] = f"@acme/{provided}"
        data["dependencies"] = dependencies
        return {"package.json": json.dumps(data, indent=2) + "\n"}
    requires = [f'"acme-{other}>={rng.choice(["1", "2"])}",' for other in others]
    lines = ["[project]", f'version = "{rng.choice(["1.0", "2.5"])}"']
    if provided:
        lines.append(f'name = "acme-{provided}"')
    lines += ["dependencies = [", *requires, '"requests",', "]"]
    files = {"pyproject.toml": "\n".join(lines) + "\n"}
    if rng.random() < 0.3:
        files["requirements-dev.txt"] = f"-e ../{rng.choice(NAMES)}\n"
    return files


def inputs(
    scans: Mapping[str, ProjectScan | None], registry: Mapping[str, tuple[tuple[str, ...], ...]]
) -> list[ProjectInput]:
    return [
        ProjectInput(
            name=name,
            root=f"{ROOT}/{name}",
            scan=scans.get(name),
            depends_on=registry[name][0],
            ignore_dependencies=registry[name][1],
            declared_in=f"projects/{name}.yaml",
        )
        for name in NAMES
    ]


def keys(scan: ProjectScan | None, *, of: str) -> set[str]:
    if scan is None:
        return set()
    found = scan.packages if of == "packages" else scan.requirements
    return {package_key(item.ecosystem, item.name) for item in found}


def updated(
    previous: DependencyGraph,
    old: Mapping[str, ProjectScan | None],
    new: Mapping[str, ProjectScan | None],
    registry: Mapping[str, tuple[tuple[str, ...], ...]],
    changed: Sequence[str],
) -> tuple[DependencyGraph, set[str]]:
    """What detection does after `changed` got new scans: the affected consumers, matched again
    with only their scans at hand."""
    provided = set().union(
        *(keys(old[n], of="packages") | keys(new[n], of="packages") for n in changed)
    )
    required = {name: keys(scan, of="requirements") for name, scan in new.items()}
    consumers = affected_consumers(changed, provided, required)
    packages = PackageIndex.of({name: scan.packages for name, scan in new.items() if scan})
    only_affected = {name: scan for name, scan in new.items() if name in consumers}
    return update_graph(previous, inputs(only_affected, registry), packages, consumers), consumers


@pytest.mark.parametrize("seed", range(40))
def test_updating_the_changed_projects_gives_the_graph_a_full_build_gives(seed: int) -> None:
    rng = random.Random(seed)
    registry = {
        name: (
            tuple(rng.sample(NAMES, rng.choice([0, 0, 0, 1]))),
            tuple(rng.sample(NAMES, rng.choice([0, 0, 0, 1]))),
        )
        for name in NAMES
    }
    scans: dict[str, ProjectScan | None] = {
        name: scan_files(name, random_files(rng, name), "0" * 40) for name in NAMES
    }
    graph = build_graph(inputs(scans, registry))
    for step in range(8):
        changed = rng.sample(NAMES, rng.choice([1, 1, 1, 2, 3]))
        new = dict(scans)
        for name in changed:
            new[name] = (
                None
                if rng.random() < 0.1
                else scan_files(name, random_files(rng, name), f"{step + 1:040d}")
            )
        result, consumers = updated(graph, scans, new, registry, changed)
        expected = build_graph(inputs(new, registry))
        assert result.to_json() == expected.to_json(), (seed, step, changed, consumers)
        graph, scans = result, new


def test_only_the_changed_project_and_the_consumers_of_its_packages_are_matched_again() -> None:
    files = {
        "core": {"package.json": '{"name": "@acme/core", "version": "1.0.0"}'},
        "api": {"package.json": '{"name": "@acme/api", "dependencies": {"@acme/core": "^1"}}'},
        "web": {"package.json": '{"name": "@acme/web", "dependencies": {"@acme/api": "^1"}}'},
        "cli": {"package.json": '{"name": "@acme/cli", "dependencies": {"lodash": "^4"}}'},
    }
    scans = {name: scan_files(name, found, "0" * 40) for name, found in files.items()}
    required = {name: keys(scan, of="requirements") for name, scan in scans.items()}

    provided = keys(scans["core"], of="packages")
    assert affected_consumers(["core"], provided, required) == {"core", "api"}
    # core now also provides lodash: who requires lodash is matched again too
    provided |= {package_key("npm", "lodash")}
    assert affected_consumers(["core"], provided, required) == {"core", "api", "cli"}
    assert affected_consumers(["web"], keys(scans["web"], of="packages"), required) == {"web"}
