"""Dependency detection on real monorepos: every internal edge of the ground truth in
corpus_edges/ beside this file (written by reading the manifests) is recovered, and nothing
else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestration.dependencies.graph import ProjectInput, build_graph
from orchestration.dependencies.parsers import SKIPPED_DIRECTORIES, is_manifest, scan_files

TRUTH = Path(__file__).resolve().parent / "corpus_edges"
MONOREPOS = ["vue-core", "opentelemetry-python", "opentelemetry-go", "tokio"]


def project_files(root: Path, project: str, others: set[str]) -> dict[str, str]:
    """The manifests of one package folder, leaving out folders that are projects of their own."""
    files: dict[str, str] = {}
    base = root / project
    for directory, subdirs, names in os.walk(base):
        relative = Path(directory).relative_to(root).as_posix()
        subdirs[:] = [
            d for d in subdirs if d not in SKIPPED_DIRECTORIES and f"{relative}/{d}" not in others
        ]
        for name in names:
            path = Path(directory, name).relative_to(base).as_posix()
            if is_manifest(path):
                files[path] = Path(directory, name).read_text(encoding="utf-8")
    return files


def detect_monorepo(corpus: Path, name: str):
    truth = json.loads((TRUTH / f"{name}.json").read_text())
    projects = set(truth["projects"])
    inputs = [
        ProjectInput(
            name=project,
            root=str(corpus / project),
            scan=scan_files(project, project_files(corpus, project, projects - {project})),
        )
        for project in sorted(projects)
    ]
    return truth, build_graph(inputs)


@pytest.mark.parametrize("name", MONOREPOS)
def test_every_internal_edge_is_recovered(corpus: Path, name: str) -> None:
    truth, graph = detect_monorepo(corpus, name)
    expected = {(e["consumer"], e["provider"]) for e in truth["edges"]}
    found = {(e.consumer, e.provider) for e in graph.edges}
    assert sorted(expected - found) == [], "edges missed"
    assert sorted(found - expected) == [], "edges that are not in the monorepo"


@pytest.mark.parametrize("name", MONOREPOS)
def test_evidence_names_the_declaring_lines(corpus: Path, name: str) -> None:
    truth, graph = detect_monorepo(corpus, name)
    for edge in truth["edges"]:
        detected = graph.edge(edge["consumer"], edge["provider"])
        assert detected is not None
        found = {(f"{edge['consumer']}/{e.file}", e.line) for e in detected.evidence}
        for item in edge["evidence"]:
            assert (item["file"], item["line"]) in found, (edge["consumer"], edge["provider"], item)


@pytest.mark.parametrize("name", MONOREPOS)
def test_every_project_provides_its_package(corpus: Path, name: str) -> None:
    truth = json.loads((TRUTH / f"{name}.json").read_text())
    others = set(truth["projects"])
    for project, package in truth["projects"].items():
        scan = scan_files(project, project_files(corpus, project, others - {project}))
        assert package.lower().replace("_", "-") in {
            p.name.lower().replace("_", "-") for p in scan.packages
        }, project
        assert scan.problems == ()


def test_cycles_of_the_real_monorepos_are_reported(corpus: Path) -> None:
    _, python = detect_monorepo(corpus, "opentelemetry-python")
    assert any(
        set(cycle)
        == {
            "opentelemetry-python/opentelemetry-sdk",
            "opentelemetry-python/opentelemetry-configuration",
        }
        for cycle in python.cycles
    )
    _, go = detect_monorepo(corpus, "opentelemetry-go")
    members = {node for cycle in go.cycles for node in cycle}
    assert {"opentelemetry-go", "opentelemetry-go/trace", "opentelemetry-go/metric"} <= members
