"""The caps on what one repository may cost detection (`orchestration.dependencies.limits`):
oversized, linked, undecodable and deeply nested manifests, too many requirements, problems or
files. Each case gives a problem naming the file, and the rest of the repository still counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestration.dependencies import limits
from orchestration.dependencies.parsers import (
    ManifestSelection,
    parse_manifest,
    read_manifest,
    scan_directory,
    scan_files,
)

CORE = '[project]\nname = "acme-core"\nversion = "1.0"\ndependencies = ["click>=8"]\n'


def package_json(dependencies: int, *, name: str = "big") -> str:
    deps = {f"d{index:x}": "1" for index in range(dependencies)}
    return json.dumps({"name": name, "dependencies": deps}, separators=(",", ":"))


# -- size ---------------------------------------------------------------------------------------


def test_a_manifest_over_the_size_cap_is_left_out_naming_its_path_and_size() -> None:
    data = b" " * (limits.MAX_MANIFEST_BYTES + 300_000)
    scan = read_manifest("packages/web/package.json", data)
    assert (scan.path, scan.ecosystem, scan.requirements) == (
        "packages/web/package.json",
        "npm",
        (),
    )
    assert scan.problems == (
        "packages/web/package.json: not read: 1.3 MiB is over the 1 MiB limit for one manifest, "
        "so its dependencies are not counted (keep generated or vendored files out of manifests)",
    )


def test_scan_files_leaves_out_oversized_text_and_keeps_the_other_manifests() -> None:
    files = {"package.json": package_json(100_000), "pyproject.toml": CORE}
    scan = scan_files("demo", files)
    assert [m.path for m in scan.manifests] == ["package.json", "pyproject.toml"]
    assert [r.name for r in scan.requirements] == ["click"]
    (problem,) = scan.problems
    assert problem.startswith("package.json: not read: 1.2 MiB is over the 1 MiB limit")


def test_size_text_reads_as_people_write_sizes() -> None:
    assert limits.size_text(980) == "980 bytes"
    assert limits.size_text(12_800) == "12.5 KiB"
    assert limits.size_text(50_000_000) == "47.7 MiB"
    assert limits.size_text(8 << 20) == "8 MiB"


# -- requirements, problems and texts -------------------------------------------------------------


def test_a_manifest_with_too_many_requirements_keeps_its_package_and_counts_none() -> None:
    scan = parse_manifest("package.json", package_json(limits.MAX_REQUIREMENTS_PER_MANIFEST + 1))
    assert [p.name for p in scan.packages] == ["big"]
    assert scan.requirements == ()
    (problem,) = scan.problems
    assert problem == (
        "package.json: declares 5,001 requirements, over the limit of 5,000 for one manifest, "
        "so none of them are counted"
    )


def test_a_manifest_at_the_requirement_cap_counts_them_all() -> None:
    scan = parse_manifest("package.json", package_json(limits.MAX_REQUIREMENTS_PER_MANIFEST))
    assert len(scan.requirements) == limits.MAX_REQUIREMENTS_PER_MANIFEST
    assert scan.problems == ()


def test_a_package_json_with_100k_dependencies_is_bounded_either_way() -> None:
    text = package_json(100_000)
    assert len(text) > limits.MAX_MANIFEST_BYTES  # from git, never read: see the size cap
    scan = parse_manifest("package.json", text)  # handed over as text, it is still capped
    assert scan.requirements == ()
    assert "declares 100,000 requirements" in scan.problems[0]


def test_the_repository_requirement_cap_keeps_manifests_in_path_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_REQUIREMENTS_PER_REPOSITORY", 5)
    files = {
        "a/requirements.txt": "one\ntwo\nthree\n",
        "b/requirements.txt": "four\nfive\nsix\n",
        "c/pyproject.toml": '[project]\nname = "c"\ndependencies = ["seven"]\n',
        "d/requirements.txt": "",
    }
    scan = scan_files("demo", files)
    assert [r.name for r in scan.requirements] == ["one", "two", "three"]
    assert [p.name for p in scan.packages] == ["c"]  # packages still count
    (problem,) = scan.problems
    assert problem.startswith(
        "b/requirements.txt: its 3 requirements are not counted, nor are those of the 1 "
        "manifests after it: the repository declares more than 5 requirements"
    )


def test_problems_of_one_manifest_are_capped_with_a_count_of_the_rest() -> None:
    scan = parse_manifest("requirements.txt", "".join(f"bad{i} >=> 1\n" for i in range(1000)))
    assert len(scan.problems) == limits.MAX_PROBLEMS_PER_MANIFEST
    assert scan.problems[0].startswith("requirements.txt:1: 'bad0 >=> 1' is not a valid")
    assert scan.problems[-1] == "requirements.txt: and 981 more problems in this file"


def test_long_problems_and_requirement_texts_are_trimmed() -> None:
    long_marker = "x" * 5000
    text = f'acme-core ; python_version > "{long_marker}"\n{long_marker} >=> 1\n'
    scan = parse_manifest("requirements.txt", text)
    (requirement,) = scan.requirements
    assert requirement.name == "acme-core"
    assert len(requirement.text) == limits.MAX_TEXT and requirement.text.endswith("…")
    (problem,) = scan.problems
    assert len(problem) == limits.MAX_TEXT and problem.startswith("requirements.txt:2: ")


# -- encodings and nesting ----------------------------------------------------------------------


def test_invalid_utf8_is_a_problem_and_the_rest_of_the_file_still_counts() -> None:
    scan = read_manifest("requirements.txt", b"# caf\xe9 \xff\xfe\nacme-core>=1\n")
    assert [r.name for r in scan.requirements] == ["acme-core"]
    (problem,) = scan.problems
    assert problem == (
        "requirements.txt: is not UTF-8 text (byte 5 is b'\\xe9'); it was read with the bad "
        "bytes replaced, save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("package.json", "[" * 100_000 + "]" * 100_000),
        ("package.json", '{"a":' * 100_000 + "1" + "}" * 100_000),
        ("pyproject.toml", "a = " + "[" * 100_000 + "]" * 100_000),
        ("Cargo.toml", "a = " + "{b = " * 100_000 + "1" + "}" * 100_000),
    ],
    ids=["json-array", "json-object", "toml-array", "toml-inline-table"],
)
def test_deeply_nested_documents_are_a_problem_not_a_crash(path: str, text: str) -> None:
    scan = parse_manifest(path, text)
    (problem,) = scan.problems
    assert problem.startswith(f"{path}: nested too deeply")


def test_a_recursion_error_anywhere_in_a_parser_is_that_file_s_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestration.dependencies import parsers

    def recurse(path: str, text: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(parsers.PARSERS, "go.mod", ("go", recurse))
    scan = parse_manifest("go.mod", "module x\n")
    assert scan.problems == ("go.mod: nested too deeply to be read",)


# -- choosing blobs from a tree listing -----------------------------------------------------------


def test_the_selection_reads_regular_manifests_and_reports_links_and_large_files() -> None:
    select = ManifestSelection()
    assert select("pyproject.toml", "100644", 200)
    assert select("tools/run/requirements.txt", "100755", 200)
    assert not select("README.md", "100644", 10)  # not a manifest: not even reported
    assert not select("package.json", "120000", 11)
    assert not select("big/Cargo.toml", "100644", 50 << 20)
    assert not select("odd/go.mod", "040000", 0)
    skipped = select.skipped()
    assert sorted(skipped) == ["big/Cargo.toml", "odd/go.mod", "package.json"]
    assert skipped["package.json"].problems == (
        "package.json: not read: it is a symbolic link, and links are never followed (the "
        "file it points to is read only if it is itself a manifest in the repository)",
    )
    assert (
        skipped["big/Cargo.toml"]
        .problems[0]
        .startswith("big/Cargo.toml: not read: 50 MiB is over the 1 MiB limit for one manifest")
    )
    assert skipped["odd/go.mod"].problems == (
        "odd/go.mod: not read: it is not a regular file (mode 040000)",
    )


def test_the_selection_stops_at_the_repository_budget_with_one_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_REPOSITORY_MANIFEST_BYTES", 1000)
    select = ManifestSelection()
    assert [select(f"p{i}/package.json", "100644", 400) for i in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    (problem,) = [p for scan in select.skipped().values() for p in scan.problems]
    assert problem.startswith(
        "p2/package.json: not read, nor are the 2 after it: the repository holds more than "
        "1000 bytes of manifests"
    )


def test_the_selection_stops_at_the_file_count_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_MANIFESTS", 3)
    select = ManifestSelection()
    results = [select(f"p{i}/go.mod", "120000" if i == 0 else "100644", 10) for i in range(6)]
    assert results == [False, True, True, False, False, False]  # a link counts as a file
    skipped = select.skipped()
    assert sorted(skipped) == ["p0/go.mod", "p3/go.mod"]
    assert (
        "nor are the 2 after it: the repository holds more than 3 manifest files"
        in (skipped["p3/go.mod"].problems[0])
    )


# -- a checkout on disk -------------------------------------------------------------------------


def test_scan_directory_never_follows_a_link_nor_opens_a_fifo(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pyproject.toml").write_text(CORE)
    root = tmp_path / "repo"
    (root / "a").mkdir(parents=True)
    (root / "pyproject.toml").symlink_to("/etc/passwd")
    (root / "a" / "pyproject.toml").symlink_to(outside / "pyproject.toml")
    os.mkfifo(root / "requirements.txt")
    (root / "package.json").write_text('{"name": "web"}')

    scan = scan_directory("demo", root)

    assert [p.name for p in scan.packages] == ["web"]
    assert scan.requirements == ()
    by_path = {m.path: m.problems for m in scan.manifests}
    assert "symbolic link" in by_path["pyproject.toml"][0]
    assert "symbolic link" in by_path["a/pyproject.toml"][0]
    assert "not a regular file" in by_path["requirements.txt"][0]
