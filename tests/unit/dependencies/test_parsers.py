"""Manifest parsers: one focused test per rule, malformed input, the real-world corpus, fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration.dependencies.model import ManifestScan, Requirement, normalize_name
from orchestration.dependencies.parsers import (
    is_manifest,
    manifest_ecosystem,
    parse_manifest,
    scan_directory,
    scan_files,
)


def lines(*rows: str) -> str:
    """A file whose line N is rows[N-1], so tests can name line numbers plainly."""
    return "\n".join(rows) + "\n"


def by_name(scan: ManifestScan) -> dict[str, Requirement]:
    found = {r.name: r for r in scan.requirements}
    assert len(found) == len(scan.requirements), "test manifests name each dependency once"
    return found


def clean(path: str, text: str) -> ManifestScan:
    scan = parse_manifest(path, text)
    assert scan.problems == ()
    return scan


# -- which files are manifests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ecosystem"),
    [
        ("pyproject.toml", "python"),
        ("libs/core/pyproject.toml", "python"),
        ("setup.cfg", "python"),
        ("requirements.txt", "python"),
        ("requirements-dev.txt", "python"),
        ("docs/requirements_docs.txt", "python"),
        ("requirements/test.txt", "python"),
        ("package.json", "npm"),
        ("packages/shared/package.json", "npm"),
        ("go.mod", "go"),
        ("sdk/go.mod", "go"),
        ("Cargo.toml", "cargo"),
        (".gitmodules", "git"),
    ],
)
def test_manifest_file_names_are_recognised(path: str, ecosystem: str) -> None:
    assert is_manifest(path)
    assert manifest_ecosystem(path) == ecosystem


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        "setup.py",
        "go.sum",
        "package-lock.json",
        "Cargo.lock",
        "notes.txt",
        "constraints.txt",
        "node_modules/vue/package.json",
        "web/node_modules/@vue/shared/package.json",
        "vendor/github.com/x/y/go.mod",
        ".git/modules/sub/config/package.json",
        "target/debug/build/Cargo.toml",
        "dist/pkg/pyproject.toml",
        "build/lib/setup.cfg",
        ".venv/lib/python3.11/site-packages/x/pyproject.toml",
        "venv/src/x/requirements.txt",
        "pkg/__pycache__/requirements.txt",
    ],
)
def test_other_files_and_installed_copies_are_not_manifests(path: str) -> None:
    assert not is_manifest(path)
    assert manifest_ecosystem(path) is None


def test_parse_manifest_refuses_a_file_that_is_no_manifest() -> None:
    with pytest.raises(ValueError, match="README.md"):
        parse_manifest("README.md", "# hello")


# -- pyproject.toml -----------------------------------------------------------------------------


def test_pep621_name_version_and_dependencies() -> None:
    text = lines(
        "[project]",  # 1
        'name = "Foo_Bar.baz"',  # 2
        'version = "1.2.0"',  # 3
        "dependencies = [",  # 4
        '    "opentelemetry-api == 1.40.0.dev",',  # 5
        "    \"requests>=2.0,<3; python_version >= '3.8'\",",  # 6
        '    "mylib @ git+https://github.com/org/mylib.git@v1",',  # 7
        '    "Typing_Extensions",',  # 8
        "]",  # 9
    )
    scan = clean("libs/foo/pyproject.toml", text)
    assert scan.ecosystem == "python"
    (package,) = scan.packages
    assert (package.name, package.version, package.line) == ("foo-bar-baz", "1.2.0", 2)
    assert package.manifest == "libs/foo/pyproject.toml"
    deps = by_name(scan)
    api = deps["opentelemetry-api"]
    assert (api.specifier, api.scope, api.line) == ("==1.40.0.dev", "runtime", 5)
    assert api.text == "opentelemetry-api == 1.40.0.dev"
    assert api.manifest == "libs/foo/pyproject.toml"
    requests = deps["requests"]
    assert (requests.specifier, requests.line) == (">=2.0,<3", 6)  # order as written, no marker
    mylib = deps["mylib"]
    assert mylib.url == "git+https://github.com/org/mylib.git@v1"
    assert (mylib.specifier, mylib.local_path, mylib.line) == ("", None, 7)
    assert deps["typing-extensions"].line == 8


def test_pep621_dynamic_version_is_none() -> None:
    text = lines("[project]", 'name = "pkg"', 'dynamic = ["version"]')
    (package,) = clean("pyproject.toml", text).packages
    assert (package.name, package.version) == ("pkg", None)


def test_pep621_optional_dependencies_are_optional() -> None:
    text = lines(
        "[project]",
        'name = "pkg"',
        "[project.optional-dependencies]",
        'grpc = ["grpcio >= 1.0"]',  # 4
        "http = [",
        '  "requests",',  # 6
        "]",
    )
    deps = by_name(clean("pyproject.toml", text))
    assert (deps["grpcio"].scope, deps["grpcio"].line, deps["grpcio"].specifier) == (
        "optional",
        4,
        ">=1.0",
    )
    assert (deps["requests"].scope, deps["requests"].line) == ("optional", 6)


def test_poetry_package_and_dependencies() -> None:
    text = lines(
        "[tool.poetry]",  # 1
        'name = "My_App"',  # 2
        'version = "0.3.0"',  # 3
        "",
        "[tool.poetry.dependencies]",  # 5
        'python = "^3.11"',  # 6
        'requests = "^2.31"',  # 7
        'core = { path = "../core", develop = true }',  # 8
        'tool = { git = "https://github.com/org/tool.git", branch = "main" }',  # 9
        'extra = { version = "^1.0", optional = true }',  # 10
        "",
        "[tool.poetry.group.test.dependencies]",  # 12
        'pytest = "^8.0"',  # 13
        "",
        "[tool.poetry.dev-dependencies]",  # 15
        'black = "*"',  # 16
    )
    scan = clean("pyproject.toml", text)
    (package,) = scan.packages
    assert (package.name, package.version, package.line) == ("my-app", "0.3.0", 2)
    deps = by_name(scan)
    assert "python" not in deps
    assert (deps["requests"].specifier, deps["requests"].scope, deps["requests"].line) == (
        "^2.31",
        "runtime",
        7,
    )
    assert deps["requests"].text == 'requests = "^2.31"'
    core = deps["core"]
    assert (core.local_path, core.line, core.specifier) == ("../core", 8, "")
    assert core.text == 'core = { path = "../core", develop = true }'
    assert (deps["tool"].url, deps["tool"].line) == ("https://github.com/org/tool.git", 9)
    assert (deps["extra"].scope, deps["extra"].specifier) == ("optional", "^1.0")
    assert (deps["pytest"].scope, deps["pytest"].line) == ("dev", 13)
    assert (deps["black"].scope, deps["black"].line, deps["black"].specifier) == ("dev", 16, "*")


def test_pep735_dependency_groups_are_dev_and_include_group_is_skipped() -> None:
    text = lines(
        "[dependency-groups]",  # 1
        'test = ["pytest>=8", "coverage"]',  # 2
        "dev = [",  # 3
        '  {include-group = "test"},',  # 4
        '  "ruff",',  # 5
        "]",
    )
    deps = by_name(clean("pyproject.toml", text))
    assert set(deps) == {"pytest", "coverage", "ruff"}
    assert all(r.scope == "dev" for r in deps.values())
    assert (deps["pytest"].line, deps["pytest"].specifier) == (2, ">=8")
    assert deps["coverage"].line == 2
    assert deps["ruff"].line == 5


def test_uv_sources() -> None:
    text = lines(
        "[project]",
        'name = "root"',
        "dependencies = [",
        '  "lib-a",',  # 4
        '  "lib-b>=1.0",',  # 5
        '  "lib-c",',  # 6
        '  "plain",',  # 7
        "]",
        "[dependency-groups]",
        'dev = ["lib-c"]',  # 10
        "[tool.uv.sources]",
        "lib-a = { workspace = true }",
        'Lib_B = { path = "packages/lib-b", editable = true }',
        'lib-c = { git = "https://github.com/org/lib-c", tag = "v1" }',
        "[tool.uv.workspace]",
        'members = ["packages/*", "tools/cli"]',
        'exclude = ["packages/legacy"]',
    )
    scan = clean("pyproject.toml", text)
    runtime = {r.name: r for r in scan.requirements if r.scope == "runtime"}
    assert runtime["lib-a"].specifier == "workspace:*"
    assert runtime["lib-a"].line == 4
    assert (runtime["lib-b"].local_path, runtime["lib-b"].specifier) == ("packages/lib-b", ">=1.0")
    assert runtime["lib-c"].url == "https://github.com/org/lib-c"
    assert (runtime["plain"].specifier, runtime["plain"].local_path, runtime["plain"].url) == (
        "",
        None,
        None,
    )
    (dev,) = [r for r in scan.requirements if r.scope == "dev"]
    assert (dev.name, dev.url, dev.line) == ("lib-c", "https://github.com/org/lib-c", 10)


def test_build_system_requires_are_build_requirements() -> None:
    text = lines(
        "[build-system]",
        'requires = ["setuptools>=68", "wheel"]',
        'build-backend = "setuptools.build_meta"',
    )
    deps = by_name(clean("pyproject.toml", text))
    assert set(deps) == {"setuptools", "wheel"}
    assert all(r.scope == "build" and r.line == 2 for r in deps.values())
    assert deps["setuptools"].specifier == ">=68"


def test_pyproject_line_numbers_survive_comments_strings_and_other_tables() -> None:
    text = lines(
        '# [project] in a comment, "dependencies" too',  # 1
        "[tool.other]",  # 2
        'description = """',  # 3
        "[project]",  # 4 (inside a string)
        'dependencies = ["fake"]',  # 5 (inside a string)
        '"""',  # 6
        "[project]",  # 7
        "name = 'x'  # the name",  # 8
        "dependencies = ['a',  # first",  # 9
        "  # 'b' is commented out",  # 10
        "  'b', 'a'",  # 11: a second `a` (duplicates keep their own lines)
        "]",
    )
    scan = clean("pyproject.toml", text)
    assert scan.packages[0].line == 8
    assert [(r.name, r.line) for r in scan.requirements] == [("a", 9), ("b", 11), ("a", 11)]


# -- requirements.txt ---------------------------------------------------------------------------


def test_requirements_txt_lines() -> None:
    text = lines(
        "# pinned for the docs",  # 1
        "",  # 2
        "--index-url https://pypi.example.org/simple",  # 3
        "-r base.txt",  # 4
        "-c constraints.txt",  # 5
        "Flask==2.3.3  # web",  # 6
        "requests>=2.0,<3 \\",  # 7
        "    --hash=sha256:abcdef",  # 8
        "-e ../libs/core",  # 9
        "-e git+https://github.com/org/tool.git@v1.0#egg=org_tool",  # 10
        "./vendored/thing",  # 11
        "mylib @ https://example.org/mylib-1.0.tar.gz",  # 12
        "git+https://github.com/org/other.git@main#egg=other-pkg",  # 13
        "pinned==1.0 --hash=sha256:0123",  # 14
        "--extra-index-url https://x.example.org",  # 15
        "../sibling[extra]",  # 16
    )
    scan = clean("docs/requirements.txt", text)
    deps = by_name(scan)
    assert set(deps) == {
        "flask",
        "requests",
        "core",
        "org-tool",
        "thing",
        "mylib",
        "other-pkg",
        "pinned",
        "sibling",
    }
    assert all(
        r.scope == "runtime" and r.manifest == "docs/requirements.txt" for r in deps.values()
    )
    flask = deps["flask"]
    assert (flask.specifier, flask.line, flask.text) == ("==2.3.3", 6, "Flask==2.3.3")
    requests = deps["requests"]
    assert (requests.specifier, requests.line, requests.text) == (">=2.0,<3", 7, "requests>=2.0,<3")
    core = deps["core"]
    assert (core.local_path, core.url, core.line, core.text) == (
        "../libs/core",
        None,
        9,
        "-e ../libs/core",
    )
    tool = deps["org-tool"]
    assert (tool.url, tool.local_path, tool.line) == (
        "git+https://github.com/org/tool.git@v1.0",
        None,
        10,
    )
    assert (deps["thing"].local_path, deps["thing"].line) == ("./vendored/thing", 11)
    assert (deps["mylib"].url, deps["mylib"].line) == ("https://example.org/mylib-1.0.tar.gz", 12)
    other = deps["other-pkg"]
    assert (other.url, other.line) == ("git+https://github.com/org/other.git@main", 13)
    assert (deps["pinned"].specifier, deps["pinned"].text) == ("==1.0", "pinned==1.0")
    assert (deps["sibling"].local_path, deps["sibling"].line) == ("../sibling", 16)


def test_requirements_in_a_requirements_folder_and_editable_root_is_skipped() -> None:
    # pip reads `-e .` from its working directory: the project itself, not a dependency.
    scan = clean("requirements/dev.txt", lines("-e .", "pytest"))
    assert [r.name for r in scan.requirements] == ["pytest"]
    (named,) = clean("requirements/dev.txt", "-e .#egg=Self_Pkg\n").requirements
    assert (named.name, named.local_path) == ("self-pkg", ".")


def test_requirements_editable_path_is_named_by_its_folder() -> None:
    (req,) = clean("tools/requirements-dev.txt", "--editable=../opentelemetry-sdk\n").requirements
    assert (req.name, req.local_path) == ("opentelemetry-sdk", "../opentelemetry-sdk")
    (wheel,) = clean("requirements.txt", "./dist/Foo_Bar-1.0-py3-none-any.whl\n").requirements
    assert (wheel.name, wheel.local_path) == ("foo-bar", "./dist/Foo_Bar-1.0-py3-none-any.whl")


# -- setup.cfg ----------------------------------------------------------------------------------


def test_setup_cfg_metadata_install_requires_and_extras() -> None:
    text = lines(
        "[metadata]",  # 1
        "name = My.Package",  # 2
        "version = 2.0.1",  # 3
        "",
        "[options]",  # 5
        "packages = find:",  # 6
        "install_requires =",  # 7
        "    requests>=2.0",  # 8
        "    # a comment",  # 9
        "    click",  # 10
        "",
        "[options.extras_require]",  # 12
        "yaml = pyyaml>=6",  # 13
        "test =",  # 14
        "    pytest",  # 15
    )
    scan = clean("setup.cfg", text)
    (package,) = scan.packages
    assert (package.name, package.version, package.line) == ("my-package", "2.0.1", 2)
    deps = by_name(scan)
    assert (deps["requests"].specifier, deps["requests"].line, deps["requests"].scope) == (
        ">=2.0",
        8,
        "runtime",
    )
    assert deps["click"].line == 10
    assert (deps["pyyaml"].scope, deps["pyyaml"].line) == ("optional", 13)
    assert (deps["pytest"].scope, deps["pytest"].line) == ("optional", 15)


def test_setup_cfg_version_from_attr_is_unknown() -> None:
    text = lines("[metadata]", "name = pkg", "version = attr: pkg.__version__")
    assert clean("setup.cfg", text).packages[0].version is None


# -- package.json -------------------------------------------------------------------------------


def test_package_json_name_version_and_sections() -> None:
    text = json.dumps(
        {
            "name": "@Vue/Shared",
            "version": "3.5.0",
            "dependencies": {"@vue/reactivity": "workspace:*", "lodash": "^4.17.0"},
            "devDependencies": {"vitest": "^1.0.0"},
            "peerDependencies": {"typescript": "*"},
            "optionalDependencies": {"fsevents": "~2.3.0"},
        },
        indent=2,
    )
    scan = clean("packages/shared/package.json", text)
    (package,) = scan.packages
    assert (package.ecosystem, package.name, package.version, package.line) == (
        "npm",
        "@vue/shared",
        "3.5.0",
        2,
    )
    deps = by_name(scan)
    reactivity = deps["@vue/reactivity"]
    assert (reactivity.specifier, reactivity.scope, reactivity.line) == (
        "workspace:*",
        "runtime",
        5,
    )
    assert reactivity.text == '"@vue/reactivity": "workspace:*"'
    assert (deps["lodash"].specifier, deps["lodash"].line) == ("^4.17.0", 6)
    assert (deps["vitest"].scope, deps["vitest"].line) == ("dev", 9)
    assert (deps["typescript"].scope, deps["typescript"].line) == ("peer", 12)
    assert (deps["fsevents"].scope, deps["fsevents"].line) == ("optional", 15)


def test_package_json_version_forms() -> None:
    text = lines(
        "{",
        '  "name": "app",',
        '  "dependencies": {',
        '    "a": "workspace:^",',  # 4
        '    "b": "file:../b",',  # 5
        '    "c": "link:./packages/c",',  # 6
        '    "d": "npm:@scope/Real-Name@^1.2.0",',  # 7
        '    "e": "git+https://github.com/org/e.git#v1",',  # 8
        '    "f": "github:org/f",',  # 9
        '    "g": "org/g#main",',  # 10
        '    "h": "npm:plain"',  # 11
        "  }",
        "}",
    )
    deps = by_name(clean("package.json", text))
    assert deps["a"].specifier == "workspace:^"
    assert (deps["b"].local_path, deps["b"].line) == ("../b", 5)
    assert deps["c"].local_path == "./packages/c"
    alias = deps["@scope/real-name"]
    assert (alias.specifier, alias.line, alias.text) == (
        "^1.2.0",
        7,
        '"d": "npm:@scope/Real-Name@^1.2.0"',
    )
    assert deps["e"].url == "git+https://github.com/org/e.git#v1"
    assert deps["f"].url == "github:org/f"
    assert deps["g"].url == "org/g#main"
    assert (deps["plain"].specifier, deps["plain"].line) == ("", 11)


@pytest.mark.parametrize(
    "workspaces", [["packages/*", "apps/web"], {"packages": ["packages/*", "apps/web"]}]
)
def test_package_json_workspace_root_provides_no_package(workspaces: object) -> None:
    text = json.dumps({"private": True, "workspaces": workspaces})
    scan = clean("package.json", text)
    assert scan.packages == ()
    assert scan.requirements == ()


def test_package_json_lines_ignore_nested_keys_with_the_same_name() -> None:
    text = lines(
        "{",
        '  "name": "x",',
        '  "pnpm": {"overrides": {"dependencies": "no"}},',
        '  "exports": {"dependencies": {"lodash": "1"}},',
        '  "dependencies": {',
        '    "lodash": "^4"',  # 6
        "  }",
        "}",
    )
    (req,) = clean("package.json", text).requirements
    assert (req.name, req.line, req.text) == ("lodash", 6, '"lodash": "^4"')


# -- go.mod -------------------------------------------------------------------------------------


def test_go_mod_module_require_and_replace() -> None:
    text = lines(
        "module go.opentelemetry.io/otel/sdk",  # 1
        "",
        "go 1.25.0",  # 3
        "toolchain go1.25.1",  # 4
        "",
        "replace go.opentelemetry.io/otel => ../",  # 6
        "",
        "require (",  # 8
        "\tgithub.com/google/uuid v1.6.0",  # 9
        "\tgo.opentelemetry.io/otel v1.37.0",  # 10
        "\tgo.opentelemetry.io/otel/trace v1.37.0 // indirect",  # 11
        "\tgithub.com/fork/me v1.0.0",  # 12
        ")",
        "",
        "require golang.org/x/sys v0.47.0",  # 15
        "",
        "replace (",  # 17
        "\tgo.opentelemetry.io/otel/trace => ../trace",  # 18
        "\tgithub.com/fork/me => github.com/mine/me v1.0.1",  # 19
        ")",
    )
    scan = clean("sdk/go.mod", text)
    (package,) = scan.packages
    assert (package.ecosystem, package.name, package.version, package.line) == (
        "go",
        "go.opentelemetry.io/otel/sdk",
        None,
        1,
    )
    deps = by_name(scan)
    assert set(deps) == {
        "github.com/google/uuid",
        "go.opentelemetry.io/otel",
        "go.opentelemetry.io/otel/trace",
        "github.com/fork/me",
        "golang.org/x/sys",
    }
    otel = deps["go.opentelemetry.io/otel"]
    assert (otel.specifier, otel.line, otel.local_path, otel.scope) == (
        "v1.37.0",
        10,
        "../",
        "runtime",
    )
    assert otel.text == "go.opentelemetry.io/otel v1.37.0"
    trace = deps["go.opentelemetry.io/otel/trace"]
    assert (trace.line, trace.local_path, trace.text) == (
        11,
        "../trace",
        "go.opentelemetry.io/otel/trace v1.37.0",
    )
    assert deps["github.com/fork/me"].local_path is None  # replaced by another module, not a path
    sys_ = deps["golang.org/x/sys"]
    assert (sys_.specifier, sys_.line, sys_.text) == ("v0.47.0", 15, "golang.org/x/sys v0.47.0")
    assert deps["github.com/google/uuid"].local_path is None


def test_go_mod_replace_of_one_version_only() -> None:
    text = lines(
        "module example.com/app",
        "require example.com/lib v1.2.0",
        "replace example.com/lib v1.0.0 => ./old-lib",
    )
    (req,) = clean("go.mod", text).requirements
    assert req.local_path is None
    text = text.replace("v1.0.0 =>", "v1.2.0 =>")
    (req,) = clean("go.mod", text).requirements
    assert req.local_path == "./old-lib"


# -- Cargo.toml ---------------------------------------------------------------------------------


def test_cargo_package_and_dependency_forms() -> None:
    text = lines(
        "[package]",  # 1
        'name = "tokio_util"',  # 2
        'version = "0.7.19"',  # 3
        "",
        "[dependencies]",  # 5
        'bytes = "1.5.0"',  # 6
        'tokio = { version = "1.38.0", path = "../tokio" }',  # 7
        "serde = { workspace = true }",  # 8
        'futures_core = { package = "futures-core-preview", version = "0.3" }',  # 9
        'mio = { git = "https://github.com/tokio-rs/mio", branch = "master" }',  # 10
        'slab = { version = "0.4", optional = true }  # backs DelayQueue',  # 11
        "",
        "[dev-dependencies]",  # 13
        'tokio-test = "0.4.0"',  # 14
        "",
        "[build-dependencies]",  # 16
        'cc = "1"',  # 17
        "",
        "[target.'cfg(unix)'.dependencies]",  # 19
        'libc = "0.2"',  # 20
        "",
        "[target.'cfg(windows)'.dev-dependencies.windows-sys]",  # 22
        'version = "0.61"',
    )
    scan = clean("tokio-util/Cargo.toml", text)
    (package,) = scan.packages
    assert (package.ecosystem, package.name, package.version, package.line) == (
        "cargo",
        "tokio-util",
        "0.7.19",
        2,
    )
    deps = by_name(scan)
    assert (deps["bytes"].specifier, deps["bytes"].scope, deps["bytes"].line) == (
        "1.5.0",
        "runtime",
        6,
    )
    tokio = deps["tokio"]
    assert (tokio.specifier, tokio.local_path, tokio.line) == ("1.38.0", "../tokio", 7)
    assert tokio.text == 'tokio = { version = "1.38.0", path = "../tokio" }'
    assert (deps["serde"].specifier, deps["serde"].line) == ("", 8)
    renamed = deps["futures-core-preview"]
    assert (renamed.specifier, renamed.line) == ("0.3", 9)
    assert deps["mio"].url == "https://github.com/tokio-rs/mio"
    assert (deps["slab"].scope, deps["slab"].text) == (
        "optional",
        'slab = { version = "0.4", optional = true }',
    )
    assert (deps["tokio-test"].scope, deps["tokio-test"].line) == ("dev", 14)
    assert (deps["cc"].scope, deps["cc"].line) == ("build", 17)
    assert (deps["libc"].scope, deps["libc"].line) == ("runtime", 20)
    windows = deps["windows-sys"]
    assert (windows.scope, windows.line, windows.specifier) == ("dev", 22, "0.61")
    assert windows.text == "[target.'cfg(windows)'.dev-dependencies.windows-sys]"


def test_cargo_inherited_version_and_dotted_dependency() -> None:
    text = lines(
        "[package]",
        'name = "member"',
        "version.workspace = true",
        "[dependencies]",
        "tokio.workspace = true",  # 5
        'local.path = "../local"',  # 6
    )
    scan = clean("member/Cargo.toml", text)
    assert scan.packages[0].version is None
    deps = by_name(scan)
    assert (deps["tokio"].line, deps["tokio"].text) == (5, "tokio.workspace = true")
    assert (deps["local"].local_path, deps["local"].line) == ("../local", 6)


def test_cargo_workspace_dependencies() -> None:
    text = lines(
        "[workspace]",  # 1
        'members = ["tokio", "crates/*"]',  # 2
        "",
        "[workspace.dependencies]",  # 4
        'tokio = { path = "tokio", version = "1" }',  # 5
        'serde = "1.0"',  # 6
    )
    scan = clean("Cargo.toml", text)
    assert scan.packages == ()
    deps = by_name(scan)
    assert (deps["tokio"].local_path, deps["tokio"].scope, deps["tokio"].line) == (
        "tokio",
        "runtime",
        5,
    )
    assert (deps["serde"].specifier, deps["serde"].line) == ("1.0", 6)


# -- .gitmodules --------------------------------------------------------------------------------


def test_gitmodules_submodules_are_git_requirements() -> None:
    text = lines(
        '[submodule "vendor/lib"]',  # 1
        "\tpath = third_party/lib",  # 2
        "\turl = https://github.com/Org/Lib.git",  # 3
        '[submodule "docs"]',  # 4
        "\tpath = docs",
        "\turl = git@github.com:org/docs.git",  # 6
        "\tbranch = main",
    )
    scan = clean(".gitmodules", text)
    assert scan.ecosystem == "git"
    lib, docs = scan.requirements
    assert (lib.ecosystem, lib.name, lib.url, lib.local_path, lib.scope, lib.line) == (
        "git",
        "github.com/org/lib",
        "https://github.com/Org/Lib.git",
        "third_party/lib",
        "runtime",
        3,
    )
    assert lib.text == "url = https://github.com/Org/Lib.git"
    assert (docs.name, docs.local_path, docs.line) == ("github.com/org/docs", "docs", 6)


# -- normalisation ------------------------------------------------------------------------------


def test_names_are_normalised_per_ecosystem() -> None:
    python = clean("requirements.txt", "Foo_Bar.Baz\nZOPE-interface\n")
    assert [r.name for r in python.requirements] == ["foo-bar-baz", "zope-interface"]
    npm = clean("package.json", '{"name": "@Scope/Pkg", "dependencies": {"@Babel/Core": "^7"}}')
    assert npm.packages[0].name == "@scope/pkg"
    assert npm.requirements[0].name == "@babel/core"
    cargo = clean(
        "Cargo.toml", '[package]\nname = "Tokio_Util"\n[dependencies]\nserde_json = "1"\n'
    )
    assert cargo.packages[0].name == "tokio-util"
    assert cargo.requirements[0].name == "serde-json"
    assert normalize_name("cargo", "serde_json") == normalize_name("cargo", "serde-json")
    go = clean("go.mod", "module github.com/Org/Mod\nrequire github.com/BurntSushi/toml v1.0.0\n")
    assert go.packages[0].name == "github.com/Org/Mod"  # Go module paths are case-sensitive
    assert go.requirements[0].name == "github.com/BurntSushi/toml"


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("pkg/pyproject.toml", "[project\nname = 'x'\n", "not valid TOML"),
        ("Cargo.toml", '[package]\nname = "x\n', "not valid TOML"),
        ("package.json", '{"name": "x",}', "not valid JSON"),
        ("package.json", "[1, 2]", "should hold a JSON object"),
        ("setup.cfg", "name = no section\n", "not a valid setup.cfg"),
        (".gitmodules", "url = no section\n", "not a valid .gitmodules"),
        ("go.mod", "module x\nrequire (\n\tgithub.com/a/b v1\n", "never closed"),
        ("go.mod", "module x\nfrobnicate y\n", "unknown directive 'frobnicate'"),
        ("go.mod", "module x\nrequire github.com/a/b\n", "should be `<module path> <version>`"),
        ("go.mod", "module x\nreplace a =>\n", "`replace a =>`"),
        ("go.mod", "go 1.22\n", "no `module` line"),
        ("requirements.txt", "requests>=\n", "not a valid requirement"),
        ("requirements.txt", "ok\n!!! what\n", "'!!! what' is not a valid requirement"),
        ("requirements.txt", "git+https://example.org/\n", "cannot tell which package"),
        ("pyproject.toml", "[project]\ndependencies = 'requests'\n", "should be a list"),
        ("pyproject.toml", "[project]\ndependencies = [3]\n", "holds a number"),
        ("pyproject.toml", "project = 1\n", "`project` should be a table"),
        ("pyproject.toml", "[tool.poetry.dependencies]\nx = 3\n", "should be a version string"),
        ("Cargo.toml", "[dependencies]\nx = 3\n", "should be a version string or a table"),
        ("Cargo.toml", "dependencies = []\n", "`dependencies` should be a table"),
        ("package.json", '{"dependencies": ["a"]}', "`dependencies` should be an object"),
        ("package.json", '{"dependencies": {"a": 1}}', "gives a number for 'a'"),
        (".gitmodules", '[submodule "x"]\npath = x\n', "has no `url`"),
    ],
)
def test_malformed_manifests_give_a_problem_naming_the_file(
    path: str, text: str, expected: str
) -> None:
    scan = parse_manifest(path, text)
    assert scan.path == path
    assert len(scan.problems) >= 1
    assert all(problem.startswith(f"{path}") for problem in scan.problems)
    assert any(expected in problem for problem in scan.problems), scan.problems


def test_problem_names_the_line_when_it_is_known() -> None:
    scan = parse_manifest("requirements.txt", "ok\n\nbad requirement here\n")
    assert [r.name for r in scan.requirements] == ["ok"]
    (message,) = scan.problems
    assert message.startswith("requirements.txt:3: ")


def test_one_bad_dependency_does_not_hide_the_others() -> None:
    text = '[project]\nname = "p"\ndependencies = ["good", "b a d", "fine"]\n'
    scan = parse_manifest("pyproject.toml", text)
    assert [r.name for r in scan.requirements] == ["good", "fine"]
    assert len(scan.problems) == 1 and "'b a d'" in scan.problems[0]


def test_byte_order_mark_is_ignored() -> None:
    scan = clean("package.json", '\ufeff{"name": "bom"}')
    assert scan.packages[0].name == "bom"


# -- whole repositories -------------------------------------------------------------------------


def test_scan_files_parses_only_manifests_outside_skipped_folders() -> None:
    files = {
        "README.md": "# not a manifest",
        "package.json": '{"name": "root", "dependencies": {"lib": "workspace:*"}}',
        "node_modules/lib/package.json": '{"name": "lib"}',
        "go.mod": "not a go.mod at all",
        "lib/package.json": '{"name": "lib"}',
    }
    scan = scan_files("demo", files, commit="abc123")
    assert (scan.project, scan.commit) == ("demo", "abc123")
    assert [m.path for m in scan.manifests] == ["go.mod", "lib/package.json", "package.json"]
    assert {p.name for p in scan.packages} == {"root", "lib"}
    assert [r.name for r in scan.requirements] == ["lib"]
    assert scan.problems and all(p.startswith("go.mod") for p in scan.problems)


def test_scan_directory_walks_the_tree_and_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pyproject.toml").write_text('[project]\nname = "app"\n')
    (tmp_path / "target" / "x").mkdir(parents=True)
    (tmp_path / "target" / "x" / "Cargo.toml").write_text("[package]\nname = 'built'\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "requirements.txt").write_text("nope\n")
    (tmp_path / "requirements.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "notes.txt").write_text("ignored")
    scan = scan_directory("demo", tmp_path)
    assert [m.path for m in scan.manifests] == ["app/pyproject.toml", "requirements.txt"]
    assert [p.name for p in scan.packages] == ["app"]
    message, *_ = scan.problems
    assert message.startswith("requirements.txt: is not UTF-8 text (byte 3 is b'\\xe9')")


# -- the real-world corpus ----------------------------------------------------------------------

CORPUS_EXPECTATIONS = [
    ("tokio/tokio", "cargo", "tokio"),
    ("tokio/tokio-util", "cargo", "tokio-util"),
    ("tokio/tokio-stream", "cargo", "tokio-stream"),
    ("vue-core/packages/shared", "npm", "@vue/shared"),
    ("vue-core/packages/vue", "npm", "vue"),
    ("vue-core/packages/compiler-sfc", "npm", "@vue/compiler-sfc"),
    ("opentelemetry-python/opentelemetry-api", "python", "opentelemetry-api"),
    ("opentelemetry-python/opentelemetry-sdk", "python", "opentelemetry-sdk"),
    ("opentelemetry-go/sdk", "go", "go.opentelemetry.io/otel/sdk"),
    ("opentelemetry-go/trace", "go", "go.opentelemetry.io/otel/trace"),
]


def test_every_corpus_package_folder_parses_without_problems(corpus: Path) -> None:
    folders = sorted({path.parent for path in corpus.rglob("*") if is_manifest(path.name)})
    assert len(folders) >= 20
    for folder in folders:
        scan = scan_directory(folder.name, folder)
        where = str(folder.relative_to(corpus))
        assert scan.manifests, where
        assert scan.problems == (), where
        for requirement in scan.requirements:
            assert requirement.line is not None and requirement.line >= 1, where
            assert requirement.text, where


@pytest.mark.parametrize(("folder", "ecosystem", "name"), CORPUS_EXPECTATIONS)
def test_corpus_packages_provide_their_known_names(
    corpus: Path, folder: str, ecosystem: str, name: str
) -> None:
    root = corpus / folder
    scan = scan_directory(folder, root)
    assert scan.problems == ()
    provided = {(p.ecosystem, p.name) for p in scan.packages if "/" not in p.manifest}
    assert (ecosystem, name) in provided


def test_corpus_edges_carry_lines_and_local_paths(corpus: Path) -> None:
    sdk = scan_directory("otel-go-sdk", corpus / "opentelemetry-go" / "sdk")
    otel = next(
        r
        for r in sdk.requirements
        if r.name == "go.opentelemetry.io/otel" and r.manifest == "go.mod"
    )
    assert (otel.local_path, otel.line) == ("../", 12)
    vue = scan_directory("vue", corpus / "vue-core" / "packages" / "vue")
    shared = next(
        r for r in vue.requirements if r.name == "@vue/shared" and r.manifest == "package.json"
    )
    assert (shared.specifier, shared.text) == ("workspace:*", '"@vue/shared": "workspace:*"')
    tokio = scan_directory("tests-integration", corpus / "tokio" / "tests-integration")
    dep = next(r for r in tokio.requirements if r.name == "tokio")
    assert (dep.local_path, dep.specifier) == ("../tokio", "1.0.0")
    sdk_py = scan_directory("otel-sdk", corpus / "opentelemetry-python" / "opentelemetry-sdk")
    api = next(r for r in sdk_py.requirements if r.name == "opentelemetry-api")
    assert (api.text, api.specifier, api.scope) == (
        "opentelemetry-api == 1.45.0.dev",
        "==1.45.0.dev",
        "runtime",
    )
    root = scan_directory("otel-python", corpus / "opentelemetry-python")
    top = next(m for m in root.manifests if m.path == "pyproject.toml")
    sdk = next(r for r in top.requirements if r.name == "opentelemetry-sdk")
    assert (sdk.specifier, sdk.scope) == ("workspace:*", "runtime")


# -- fuzzing ------------------------------------------------------------------------------------

MANIFEST_NAMES = [
    "pyproject.toml",
    "requirements.txt",
    "requirements/dev.txt",
    "setup.cfg",
    "package.json",
    "go.mod",
    "Cargo.toml",
    ".gitmodules",
]

# Pieces of real manifest syntax, so fuzzed files reach past the first syntax check.
FRAGMENTS = [
    "[project]",
    "[project.optional-dependencies]",
    "[tool.poetry]",
    "[tool.poetry.dependencies]",
    "[tool.poetry.group.dev.dependencies]",
    "[tool.uv.sources]",
    "[tool.uv.workspace]",
    "[dependency-groups]",
    "[build-system]",
    "[package]",
    "[dependencies]",
    "[dependencies.x]",
    "[target.'cfg(unix)'.dependencies]",
    "[workspace]",
    "[workspace.dependencies]",
    "[metadata]",
    "[options]",
    "[options.extras_require]",
    '[submodule "x"]',
    "name = 'x'",
    'version = "1"',
    "version.workspace = true",
    "dependencies = ['a>=1', 'b @ git+https://h/b']",
    "dependencies = [1, {include-group = 'x'}]",
    "dependencies = 3",
    "requires = ['x']",
    "members = ['a/*']",
    'x = { path = "../x", version = "1", optional = true }',
    "x = { workspace = true }",
    'x = { git = "https://h/x", package = "y" }',
    'x = [{ version = "1" }, "2"]',
    "x = 3",
    "install_requires =",
    "    requests",
    "url = https://github.com/a/b",
    "path = a",
    "module example.com/x",
    "require (",
    "require example.com/y v1.0.0",
    "replace example.com/y => ../y",
    "replace (",
    ")",
    "-e ../x",
    "-e git+https://h/x#egg=x",
    "-r other.txt",
    "name @ https://h/x",
    "./local",
    "a==1 \\",
    "--hash=sha256:00",
    '"""',
    "'''",
    "#",
    "",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "version", "x", "@a/b", "packages"]) | st.text(max_size=5),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)
package_json_texts = st.dictionaries(
    st.sampled_from(
        [
            "name",
            "version",
            "dependencies",
            "devDependencies",
            "peerDependencies",
            "optionalDependencies",
            "workspaces",
        ]
    ),
    json_values,
).map(json.dumps)
fragment_texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), max_size=25).map(
    "\n".join
)
any_texts = st.text() | fragment_texts | package_json_texts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(MANIFEST_NAMES), text=any_texts)
def test_parse_manifest_never_raises(name: str, text: str) -> None:
    scan = parse_manifest(name, text)
    assert scan.path == name
    assert all(problem.startswith(name) for problem in scan.problems)
    assert not any("bug in the manifest parser" in problem for problem in scan.problems)
    for item in (*scan.packages, *scan.requirements):
        assert item.manifest == name
        assert item.line is None or 1 <= item.line <= text.count("\n") + 1
