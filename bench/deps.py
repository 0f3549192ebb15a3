"""Dependency-detection benchmark: a full scan of N real git repositories, the rescan after one
commit, and Nx's project graph on the npm part of the same input.

N repositories (Python, npm, Go and Cargo, about five manifests each, cross-repository
dependencies by package name and a few by path) are generated with git in a temporary directory,
with a registry pointing at them. Each measurement runs `detect()` in a fresh subprocess. Run it
from the repository root:

    .venv/bin/python -m bench.deps --quick

`--large-manifests` instead measures what one oversized repository costs everyone: the same
repositories plus one holding a large manifest under the caps and one holding a 50 MB manifest,
detected by the package as it is and as committed at a git ref, in the same run.

`--npm-single [N]` instead measures the command a user runs: `orch deps detect` as a whole
process over N (400) git repositories of one npm package each, against Nx's `nx graph` over the
same packages as one workspace, in the same run, then after one commit at a time.

See bench/README.md for the options and what the numbers mean.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bench.machine import loadavg, machine, progress
from tests.support.git import GIT_IDENTITY, commit, git

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "deps.json"
NX_CACHE_DIR = REPO_ROOT / "bench" / "results" / "nx-cache"
FULL_REPOS = 1000
QUICK_REPOS = 200
SEED = 20241124
INCREMENTAL_GOAL = 0.05  # incremental / full, detect() time
INCREMENTAL_RUNS = 3
COLD_RUNS = 3  # ours and Nx on the npm subset
ECOSYSTEMS = ("python", "npm", "go", "cargo")
#: The ecosystems the successive incremental changes are made in.
CHANGE_ECOSYSTEMS = ("npm", "python", "cargo", "go")
PATH_DEPENDENCY_SHARE = 0.06
#: What every Nx run gets: no daemon, no cloud, no task cache, no prompts.
NX_ENV = {
    "NX_DAEMON": "false",
    "NX_NO_CLOUD": "true",
    "NX_SKIP_NX_CACHE": "true",
    "NX_INTERACTIVE": "false",
    "NX_TUI": "false",
    "CI": "true",
}
PREFIX = {"python": "py", "npm": "npm", "go": "go", "cargo": "rs"}
WORDS = ("core", "cli", "utils", "api", "types", "config", "client", "server", "io", "model")

# Dependencies on packages no repository provides (they never make an edge).
EXTERNALS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "python": (
        ("requests", ">=2.31"),
        ("pydantic", ">=2.7,<3"),
        ("click", ">=8.1"),
        ("numpy", ">=1.26"),
        ("httpx", ">=0.27"),
        ("rich", ">=13.7"),
        ("SQLAlchemy", ">=2.0"),
        ("attrs", ">=23.2"),
    ),
    "python-dev": (("pytest", ">=8.2"), ("ruff", ">=0.5"), ("mypy", ">=1.10")),
    "npm": (
        ("lodash", "^4.17.21"),
        ("express", "^4.19.2"),
        ("react", "^18.3.1"),
        ("zod", "^3.23.8"),
        ("axios", "^1.7.2"),
        ("commander", "^12.1.0"),
    ),
    "npm-dev": (("typescript", "^5.5.3"), ("vitest", "^2.0.3"), ("eslint", "^9.7.0")),
    "go": (
        ("github.com/stretchr/testify", "v1.9.0"),
        ("golang.org/x/sync", "v0.7.0"),
        ("github.com/spf13/cobra", "v1.8.1"),
        ("go.uber.org/zap", "v1.27.0"),
        ("github.com/google/uuid", "v1.6.0"),
    ),
    "cargo": (
        ("serde", '{ version = "1", features = ["derive"] }'),
        ("tokio", '{ version = "1.38", features = ["full"] }'),
        ("anyhow", '"1.0"'),
        ("thiserror", '"1.0"'),
        ("regex", '"1.10"'),
        ("log", '"0.4"'),
    ),
    "cargo-dev": (("proptest", '"1.4"'), ("criterion", '"0.5"')),
}


# --------------------------------------------------------------------------------------------
# The synthetic repositories, as plain data


@dataclass
class Dependency:
    """One dependency a manifest declares on a package of `provider` (maybe the repo itself)."""

    package: str  # the provider's package name as written
    provider: str  # the repository (project) that provides it
    path: str | None = None  # set for a path dependency: from the manifest's folder
    dev: bool = False


@dataclass
class ManifestPlan:
    """A manifest file of one repository, rendered by `render_manifest`."""

    path: str
    kind: str  # package.json | pyproject | requirements | requirements-dev | go.mod | Cargo.toml
    package: str | None
    version: str
    dependencies: list[Dependency] = field(default_factory=list)
    externals: list[tuple[str, str]] = field(default_factory=list)
    dev_externals: list[tuple[str, str]] = field(default_factory=list)
    members: tuple[str, ...] = ()


@dataclass
class RepoPlan:
    """One repository: its manifests, other files, and the packages it provides."""

    name: str
    ecosystem: str
    version: str
    manifests: dict[str, ManifestPlan]
    sources: dict[str, str]

    @property
    def root_manifest(self) -> ManifestPlan:
        return self.manifests[ROOT_MANIFEST[self.ecosystem]]

    @property
    def packages(self) -> list[str]:
        return [m.package for m in self.manifests.values() if m.package]

    def files(self) -> dict[str, str]:
        return {
            **self.sources,
            **{path: render_manifest(m) for path, m in self.manifests.items()},
        }

    def providers(self) -> set[str]:
        return {
            d.provider
            for m in self.manifests.values()
            for d in m.dependencies
            if d.provider != self.name
        }


ROOT_MANIFEST = {
    "python": "pyproject.toml",
    "npm": "package.json",
    "go": "go.mod",
    "cargo": "Cargo.toml",
}


def plan_repositories(count: int, seed: int = SEED) -> list[RepoPlan]:
    """`count` repositories, each depending on 0-4 earlier ones of its ecosystem.

    Each dependency names one package (the root or a sub-package) of the provider in one of the
    consumer's manifests, with a version range the provider satisfies; about one in sixteen is
    a path dependency on the provider's root instead. Sub-packages also depend on their own
    repository's root package, which never makes an edge.
    """
    rng = random.Random(seed + count)
    plans: list[RepoPlan] = []
    by_ecosystem: dict[str, list[RepoPlan]] = {e: [] for e in ECOSYSTEMS}
    for index in range(count):
        ecosystem = rng.choice(ECOSYSTEMS)
        plan = _new_repo(rng, index, ecosystem)
        earlier = by_ecosystem[ecosystem]
        wanted = min(len(earlier), rng.choice((0, 1, 1, 2, 2, 3, 3, 4)))
        for provider in rng.sample(earlier, wanted):
            if rng.random() < PATH_DEPENDENCY_SHARE:
                _add_path_dependency(plan, provider)
            else:
                manifest = rng.choice(_dependency_manifests(plan))
                package = rng.choice(provider.packages)
                dependency = Dependency(package, provider.name, dev=rng.random() < 0.2)
                manifest.dependencies.append(dependency)
        plans.append(plan)
        earlier.append(plan)
    return plans


def expected_edges(plans: Iterable[RepoPlan]) -> set[tuple[str, str]]:
    """(consumer, provider) for every dependency between two repositories."""
    return {(plan.name, provider) for plan in plans for provider in plan.providers()}


def plan_single_npm(count: int, seed: int = SEED) -> list[RepoPlan]:
    """`count` npm repositories of one package each (a root package.json, no workspaces), each
    depending on 0-4 earlier ones by name with a range their version satisfies, a dependency
    in five a dev one, and on a few npm packages no repository provides."""
    rng = random.Random(seed + count + 1)
    plans: list[RepoPlan] = []
    for index in range(count):
        name = f"npm_{index:04d}"
        package = f"@bench/npm-{index:04d}"
        version = f"1.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
        manifest = ManifestPlan(
            "package.json",
            "package.json",
            package,
            version,
            externals=rng.sample(EXTERNALS["npm"], rng.randint(1, 3)),
            dev_externals=rng.sample(EXTERNALS["npm-dev"], rng.randint(1, 3)),
        )
        wanted = min(len(plans), rng.choice((0, 1, 1, 2, 2, 3, 3, 4)))
        for provider in rng.sample(plans, wanted):
            provided = provider.root_manifest.package or provider.name
            manifest.dependencies.append(
                Dependency(provided, provider.name, dev=rng.random() < 0.2)
            )
        sources = {
            "README.md": f"# {name}\n\nSynthetic npm package for bench/deps.py.\n",
            ".gitignore": "node_modules/\n",
            "index.js": f"module.exports = {{ name: {json.dumps(package)} }};\n",
            "index.test.js": "const test = require('node:test');\n",
        }
        plans.append(RepoPlan(name, "npm", version, {"package.json": manifest}, sources))
    return plans


def _new_repo(rng: random.Random, index: int, ecosystem: str) -> RepoPlan:
    name = f"{PREFIX[ecosystem]}_{index:04d}"
    slug = name.replace("_", "-")
    version = f"1.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
    words = rng.sample(WORDS, 4 if ecosystem != "python" else 2)
    manifests: dict[str, ManifestPlan] = {}
    sources = {
        "README.md": f"# {name}\n\nSynthetic {ecosystem} repository for bench/deps.py.\n",
        ".gitignore": "node_modules/\ntarget/\n.venv/\n__pycache__/\n",
        "docs/index.md": f"# {name}\n",
    }

    def externals(kind: str, low: int, high: int) -> list[tuple[str, str]]:
        pool = EXTERNALS[kind]
        return rng.sample(pool, rng.randint(low, min(high, len(pool))))

    if ecosystem == "npm":
        root_name = f"@bench/{slug}"
        manifests["package.json"] = ManifestPlan(
            "package.json",
            "package.json",
            root_name,
            version,
            externals=externals("npm", 1, 3),
            dev_externals=externals("npm-dev", 1, 3),
            members=("packages/*",),
        )
        sources["src/index.js"] = f"module.exports = {{ name: {json.dumps(root_name)} }};\n"
        for word in words:
            folder = f"packages/{word}"
            manifests[f"{folder}/package.json"] = ManifestPlan(
                f"{folder}/package.json",
                "package.json",
                f"{root_name}-{word}",
                version,
                dependencies=[Dependency(root_name, name)],
                externals=externals("npm", 0, 2),
            )
            sources[f"{folder}/index.js"] = f"module.exports = {{ part: {json.dumps(word)} }};\n"
            sources[f"{folder}/index.test.js"] = "const test = require('node:test');\n"
    elif ecosystem == "python":
        # Written with `_` in half the repositories: PEP 503 names compare equal either way.
        root_name = f"bench-{slug}" if index % 2 else f"bench_{name}"
        module = f"bench_{name}"
        manifests["pyproject.toml"] = ManifestPlan(
            "pyproject.toml",
            "pyproject",
            root_name,
            version,
            externals=externals("python", 1, 3),
            dev_externals=externals("python-dev", 1, 2),
        )
        manifests["requirements.txt"] = ManifestPlan(
            "requirements.txt", "requirements", None, version, externals=externals("python", 2, 4)
        )
        manifests["requirements-dev.txt"] = ManifestPlan(
            "requirements-dev.txt",
            "requirements-dev",
            None,
            version,
            externals=externals("python-dev", 1, 3),
        )
        sources[f"src/{module}/__init__.py"] = f'"""{name}."""\n__version__ = "{version}"\n'
        sources["tests/test_smoke.py"] = "def test_smoke():\n    assert True\n"
        for word in words:
            folder = f"packages/{word}"
            manifests[f"{folder}/pyproject.toml"] = ManifestPlan(
                f"{folder}/pyproject.toml",
                "pyproject",
                f"bench-{slug}-{word}",
                version,
                dependencies=[Dependency(root_name, name)],
                externals=externals("python", 0, 2),
            )
            sources[f"{folder}/src/{module}_{word}/__init__.py"] = f'"""{word}."""\n'
    elif ecosystem == "go":
        root_name = f"example.com/bench/{slug}"
        manifests["go.mod"] = ManifestPlan(
            "go.mod", "go.mod", root_name, f"v{version}", externals=externals("go", 1, 3)
        )
        sources["main.go"] = "package main\n\nfunc main() {}\n"
        for word in words[:3]:
            manifests[f"{word}/go.mod"] = ManifestPlan(
                f"{word}/go.mod",
                "go.mod",
                f"{root_name}/{word}",
                f"v{version}",
                dependencies=[Dependency(root_name, name, path="..")],
                externals=externals("go", 0, 2),
            )
            sources[f"{word}/{word}.go"] = f"package {word}\n"
            sources[f"{word}/{word}_test.go"] = f"package {word}\n"
    else:
        root_name = f"bench-{slug}" if index % 2 else f"bench_{name}"
        manifests["Cargo.toml"] = ManifestPlan(
            "Cargo.toml",
            "Cargo.toml",
            root_name,
            version,
            externals=externals("cargo", 1, 3),
            dev_externals=externals("cargo-dev", 0, 2),
            members=("crates/*",),
        )
        sources["src/lib.rs"] = 'pub fn version() -> &\'static str { env!("CARGO_PKG_VERSION") }\n'
        for word in words:
            folder = f"crates/{word}"
            manifests[f"{folder}/Cargo.toml"] = ManifestPlan(
                f"{folder}/Cargo.toml",
                "Cargo.toml",
                f"bench-{slug}-{word}",
                version,
                dependencies=[Dependency(root_name, name, path="../..")],
                externals=externals("cargo", 0, 2),
            )
            sources[f"{folder}/src/lib.rs"] = f"//! {word}\n"
    return RepoPlan(name, ecosystem, version, manifests, sources)


def _dependency_manifests(plan: RepoPlan) -> list[ManifestPlan]:
    """The manifests a dependency on another repository may be written in."""
    return [m for m in plan.manifests.values() if m.kind != "requirements-dev"]


def _add_path_dependency(plan: RepoPlan, provider: RepoPlan) -> None:
    """A dependency on the provider's root by relative path (repositories are siblings)."""
    path = f"../{provider.name}"
    package = provider.root_manifest.package or provider.name
    if plan.ecosystem == "python":
        # pip reads `-e ../x` from the repository root, where requirements-dev.txt lives.
        manifest = plan.manifests["requirements-dev.txt"]
    else:
        manifest = plan.root_manifest
    manifest.dependencies.append(Dependency(package, provider.name, path=path))


def add_dependency(plan: RepoPlan, provider: RepoPlan) -> ManifestPlan:
    """The change the incremental runs make: the root manifest now requires the provider."""
    manifest = plan.root_manifest
    package = provider.root_manifest.package or provider.name
    manifest.dependencies.append(Dependency(package, provider.name))
    return manifest


# --------------------------------------------------------------------------------------------
# Rendering manifests


def render_manifest(manifest: ManifestPlan) -> str:
    return _RENDERERS[manifest.kind](manifest)


def _npm_range(dependency: Dependency) -> str:
    return f"file:{dependency.path}" if dependency.path else "^1.0.0"


def _render_package_json(m: ManifestPlan) -> str:
    runtime = {name: spec for name, spec in m.externals}
    dev = {name: spec for name, spec in m.dev_externals}
    for dependency in m.dependencies:
        (dev if dependency.dev else runtime)[dependency.package] = _npm_range(dependency)
    data: dict[str, Any] = {"name": m.package, "version": m.version}
    if m.members:
        data["private"] = True
        data["workspaces"] = list(m.members)
    data["main"] = "index.js"
    data["scripts"] = {"test": "node --test"}
    data["license"] = "MIT"
    if runtime:
        data["dependencies"] = dict(sorted(runtime.items()))
    if dev:
        data["devDependencies"] = dict(sorted(dev.items()))
    return json.dumps(data, indent=2) + "\n"


def _pep508(dependency: Dependency) -> str:
    return f"{dependency.package}>=1.0"


def _toml_list(items: Sequence[str]) -> str:
    if not items:
        return "[]"
    return "[\n" + "".join(f"    {json.dumps(item)},\n" for item in items) + "]"


def _render_pyproject(m: ManifestPlan) -> str:
    runtime = [f"{name}{spec}" for name, spec in m.externals]
    dev = [f"{name}{spec}" for name, spec in m.dev_externals]
    for dependency in m.dependencies:
        (dev if dependency.dev else runtime).append(_pep508(dependency))
    lines = [
        "[build-system]",
        'requires = ["hatchling>=1.24"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{m.package}"',
        f'version = "{m.version}"',
        'description = "Synthetic package for bench/deps.py"',
        'requires-python = ">=3.11"',
        f"dependencies = {_toml_list(runtime)}",
        "",
    ]
    if dev:
        lines += ["[project.optional-dependencies]", f"dev = {_toml_list(dev)}", ""]
    lines += ["[tool.ruff]", "line-length = 100", ""]
    return "\n".join(lines)


def _render_requirements(m: ManifestPlan) -> str:
    lines = ["# Pinned for deployment", *(f"{name}{spec}" for name, spec in m.externals)]
    lines += [_pep508(d) for d in m.dependencies]
    return "\n".join(lines) + "\n"


def _render_requirements_dev(m: ManifestPlan) -> str:
    lines = ["-r requirements.txt", *(f"{name}{spec}" for name, spec in m.dev_externals)]
    lines += [f"-e {d.path}" if d.path else _pep508(d) for d in m.dependencies]
    return "\n".join(lines) + "\n"


def _render_go_mod(m: ManifestPlan) -> str:
    requires = [f"\t{name} {version}" for name, version in m.externals]
    replaces = []
    for dependency in m.dependencies:
        requires.append(f"\t{dependency.package} v1.0.0")
        if dependency.path:
            replaces.append(f"replace {dependency.package} => {dependency.path}")
    lines = [f"module {m.package}", "", "go 1.22", ""]
    if requires:
        lines += ["require (", *requires, ")", ""]
    lines += replaces
    return "\n".join(lines).rstrip("\n") + "\n"


def _cargo_spec(dependency: Dependency) -> str:
    if dependency.path:
        return f'{{ path = "{dependency.path}", version = "1" }}'
    return '"1"'


def _render_cargo_toml(m: ManifestPlan) -> str:
    lines = [
        "[package]",
        f'name = "{m.package}"',
        f'version = "{m.version}"',
        'edition = "2021"',
        "",
    ]
    if m.members:
        lines += ["[workspace]", f"members = {json.dumps(list(m.members))}", ""]
    runtime = [f"{name} = {spec}" for name, spec in m.externals]
    dev = [f"{name} = {spec}" for name, spec in m.dev_externals]
    for dependency in m.dependencies:
        (dev if dependency.dev else runtime).append(
            f"{dependency.package} = {_cargo_spec(dependency)}"
        )
    lines += ["[dependencies]", *runtime, ""]
    if dev:
        lines += ["[dev-dependencies]", *dev, ""]
    return "\n".join(lines)


_RENDERERS = {
    "package.json": _render_package_json,
    "pyproject": _render_pyproject,
    "requirements": _render_requirements,
    "requirements-dev": _render_requirements_dev,
    "go.mod": _render_go_mod,
    "Cargo.toml": _render_cargo_toml,
}


# --------------------------------------------------------------------------------------------
# Writing the repositories and the registry


def _fast_import_stream(files: Mapping[str, str], message: str) -> bytes:
    """One commit on refs/heads/main holding `files`, in git fast-import's format."""
    stamp = "1732430000 +0000"
    who = f"{GIT_IDENTITY['GIT_AUTHOR_NAME']} <{GIT_IDENTITY['GIT_AUTHOR_EMAIL']}>"
    body = message.encode()
    parts = [
        b"commit refs/heads/main\n",
        f"author {who} {stamp}\ncommitter {who} {stamp}\n".encode(),
        b"data %d\n%s\n" % (len(body), body),
    ]
    for path in sorted(files):
        data = files[path].encode()
        parts.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    parts.append(b"done\n")
    return b"".join(parts)


def write_repository(repo: Path, plan: RepoPlan) -> None:
    """The files in a work tree, committed on `main` (git init, fast-import, index reset): much
    faster than `make_git_repo` for a thousand repositories."""
    files = plan.files()
    for path, text in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "--template=", "-b", "main")
    stream = _fast_import_stream(files, f"Initial commit of {plan.name}")
    git(repo, "fast-import", "--quiet", "--done", stdin=stream)
    git(repo, "reset", "-q")  # the index matches HEAD, so `git status` is clean


def commit_manifest(repo: Path, manifest: ManifestPlan, message: str) -> str:
    """Write one manifest and commit it the ordinary way; the new commit's sha."""
    return commit(repo, {manifest.path: render_manifest(manifest)}, message=message)


def write_registry(root: Path, projects_dir: str, plans: Iterable[RepoPlan]) -> Path:
    """projects/*.yaml (one per repository, `repo:` relative) and the shipped defaults."""
    projects = root / projects_dir
    projects.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "projects" / "_defaults.yaml", projects / "_defaults.yaml")
    for plan in plans:
        (projects / f"{plan.name}.yaml").write_text(
            f"name: {plan.name}\n"
            f"description: Synthetic {plan.ecosystem} repository for the dependency benchmark.\n"
            f"repo: ../repos/{plan.name}\n"
            f"tags: {{language: {plan.ecosystem}}}\n",
            encoding="utf-8",
        )
    return projects


def generate(root: Path, plans: Sequence[RepoPlan], *, npm_registry: bool = True) -> dict[str, Any]:
    """Every repository and the registries (all projects and, with `npm_registry`, the npm
    ones only); timings per step."""
    started = time.perf_counter()
    shutil.copytree(REPO_ROOT / "config", root / "config")
    (root / "repos").mkdir(parents=True)
    workers = max(4, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: write_repository(root / "repos" / p.name, p), plans))
    repos_s = time.perf_counter() - started
    write_registry(root, "projects", plans)
    if npm_registry:
        write_registry(root, "projects-npm", [p for p in plans if p.ecosystem == "npm"])
    return {
        "repos_s": round(repos_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "git_workers": workers,
        "files": sum(len(p.sources) + len(p.manifests) for p in plans),
        "manifests": sum(len(p.manifests) for p in plans),
    }


# --------------------------------------------------------------------------------------------
# One detection, in a fresh process


def measure(
    profile_to: Path | None, only: str | None = None, code: Path | None = None
) -> dict[str, Any]:
    """Load the registry from ORCH_* variables and time `detect()` over all its projects (or
    `only` that one, the others from the cache, as a project's `manifest` run does), with the
    package imported from `code` when given (another version of it, for a comparison)."""
    import resource

    if code is not None:
        sys.path.insert(0, str(code))
    started = time.perf_counter()
    from orchestration.dependencies.detection import ScanOutcome, detect
    from orchestration.registry import load_registry
    from orchestration.settings import Settings

    import_s = time.perf_counter() - started
    settings = Settings.from_env()
    started = time.perf_counter()
    registry = load_registry(settings)
    registry_s = time.perf_counter() - started
    if registry.errors:
        raise SystemExit(f"the registry did not load: {[str(e) for e in registry.errors[:5]]}")

    profiler = None
    if profile_to is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu_started = time.perf_counter(), time.process_time()
    graph, outcomes = detect(registry.projects, settings, only=None if only is None else [only])
    detect_s, detect_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    detect_rss_mb = _peak_rss_mb()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    git_cpu_s = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    if profiler is not None and profile_to is not None:
        profiler.disable()
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(profile_to))

    scans = [o for o in outcomes.values() if isinstance(o, ScanOutcome)]
    failures = {name: o for name, o in outcomes.items() if isinstance(o, str)}
    import orchestration

    return {
        "code": str(Path(orchestration.__file__).parent.parent),
        "projects": len(registry.projects),
        "detect_peak_rss_mb": detect_rss_mb,  # before any cached scan is read for this summary
        "import_s": import_s,
        "registry_s": registry_s,
        "detect_s": detect_s,
        "detect_cpu_s": detect_cpu_s,
        "git_cpu_s": git_cpu_s,  # the git processes detect() started and waited for
        "scanned": sum(1 for o in scans if not o.cached),
        "cached": sum(1 for o in scans if o.cached),
        "failures": len(failures),
        "failure_sample": dict(list(failures.items())[:5]),
        "manifests": sum(len(o.scan.manifests) for o in scans),
        "problems": sum(len(o.scan.problems) for o in scans),
        "problem_sample": [p for o in scans for p in o.scan.problems][:5],
        "version_mismatch_edges": sum(1 for e in graph.edges if e.version_mismatches),
        "edges": sorted([e.consumer, e.provider] for e in graph.edges),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident set since it started its program (`VmHWM`; `ru_maxrss`
    would include the benchmark's own memory at the fork that started this worker)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_worker(
    root: Path,
    projects_dir: str,
    home: Path,
    profile_to: Path | None = None,
    *,
    only: str | None = None,
    code: Path | None = None,
    clean: bool = True,
) -> dict[str, Any]:
    """`measure` in a fresh interpreter; adds the process's wall time as seen from outside.
    With `clean`, any failure, manifest problem or version mismatch stops the benchmark."""
    env = {
        **os.environ,
        "ORCH_PROJECTS_DIR": str(root / projects_dir),
        "ORCH_CONFIG_DIR": str((code or root) / "config"),
        "ORCH_HOME": str(home),
        "PYTHONHASHSEED": "0",
        # It runs in the generated directory and finds this package (`python -m bench.deps`)
        # from the repository root.
        "PYTHONPATH": str(REPO_ROOT),
    }
    argv = [sys.executable, "-m", "bench.deps", "--worker"]
    if profile_to is not None:
        argv += ["--worker-profile", str(profile_to)]
    if only is not None:
        argv += ["--worker-only", only]
    if code is not None:
        argv += ["--worker-code", str(code)]
    done, wall, cpu = timed_run(argv, cwd=root, env=env, timeout=3600)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise click.ClickException(f"the detection worker failed in {root} (see stderr)")
    result = json.loads(done.stdout)
    result["process_s"] = wall
    result["process_cpu_s"] = cpu
    result["loadavg"] = loadavg()
    result["edges"] = {tuple(edge) for edge in result["edges"]}
    if clean and (result["failures"] or result["problems"] or result["version_mismatch_edges"]):
        raise click.ClickException(
            f"detection was not clean: {result['failures']} failures "
            f"{result['failure_sample']}, {result['problems']} problems "
            f"{result['problem_sample']}, {result['version_mismatch_edges']} version mismatches"
        )
    return result


def timed_run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run a process to its end; (result, wall seconds, CPU seconds of it and its children).

    CPU time is what the process and everything it waited for used (user + system), read from
    this process's RUSAGE_CHILDREN before and after; it moves much less than wall time when
    other work shares the machine.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, wall, cpu


def _fresh_home(root: Path, name: str) -> Path:
    home = root / "homes" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


# --------------------------------------------------------------------------------------------
# One oversized repository among ordinary ones, before and after


LARGE_UNDER_REQUIREMENTS = 4_500  # a pip-compile --generate-hashes file of about 0.9 MiB
LARGE_OVER_BYTES = 50 << 20  # the incident: one 50 MB package.json


def large_manifest_files(provider: RepoPlan) -> dict[str, dict[str, bytes]]:
    """Two more repositories: `big_under` with a hashed requirements.txt just under the caps
    (about 0.9 MiB, 4,500 requirements, one of them `provider`'s root package) and `big_over`
    with a 50 MB package.json of external dependencies beside a small pyproject.toml that also
    requires `provider`'s package (so its edge must survive the oversized file)."""
    package = provider.root_manifest.package or provider.name
    lines = []
    for index in range(LARGE_UNDER_REQUIREMENTS):
        name = package if index == 0 else f"external-dependency-{index:05d}"
        lines.append(
            f"{name}==1.{index % 10}.0 \\\n"
            f"    --hash=sha256:{index:064x} \\\n"
            f"    --hash=sha256:{index + 1:064x}\n"
        )
    hashed = "".join(lines).encode()
    entry = b'    "external-package-%07d": "^1.0.0",\n'
    count = LARGE_OVER_BYTES // len(entry % 0)
    body = b"".join(entry % index for index in range(count)).rstrip(b",\n")
    huge = b'{\n  "name": "big-over",\n  "version": "1.0.0",\n  "dependencies": {\n' + body
    huge += b"\n  }\n}\n"
    pyproject = (
        f'[project]\nname = "big-over-tools"\nversion = "1.0.0"\n'
        f'dependencies = ["{package}>=1.0"]\n'
    ).encode()
    readme = b"# big\n"
    return {
        "big_under": {"requirements.txt": hashed, "README.md": readme},
        "big_over": {"package.json": huge, "pyproject.toml": pyproject, "README.md": readme},
    }


def write_raw_repository(repo: Path, files: Mapping[str, bytes]) -> None:
    """A repository with `files` committed on `main` (fast-import only: no work tree copy)."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "--template=", "-b", "main")
    stamp = "1732430000 +0000"
    who = f"{GIT_IDENTITY['GIT_AUTHOR_NAME']} <{GIT_IDENTITY['GIT_AUTHOR_EMAIL']}>"
    parts = [
        b"commit refs/heads/main\n",
        f"author {who} {stamp}\ncommitter {who} {stamp}\n".encode(),
        b"data 7\ninitial\n",
    ]
    for path in sorted(files):
        data = files[path]
        parts.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    parts.append(b"done\n")
    git(repo, "fast-import", "--quiet", "--done", stdin=b"".join(parts))


def export_code(ref: str | None, into: Path) -> Path:
    """The package and its `config/` as committed at `ref` (exported with `git archive`, the
    checkout untouched), or as they are in the working tree when `ref` is None: a snapshot, so
    that edits made while the benchmark runs do not reach it."""
    into.mkdir(parents=True)
    if ref is None:
        for folder in ("orchestration", "config"):
            shutil.copytree(
                REPO_ROOT / folder, into / folder, ignore=shutil.ignore_patterns("__pycache__")
            )
        return into
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "orchestration", "config"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_large_manifests(
    count: int, *, workdir: Path | None, seed: int, before: str
) -> dict[str, Any]:
    """Full, unchanged and one-project detections, by the code at `before` and by the package
    as it is, over the same repositories plus the two of `large_manifest_files`."""
    results: dict[str, Any] = {
        "machine": machine(git=_version("git")),
        "repositories": count + 2,
        "seed": seed,
        "before": before,
    }
    with tempfile.TemporaryDirectory(prefix="orch-bench-large-") as tmp:
        root = workdir or Path(tmp)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
        plans = plan_repositories(count, seed)
        provider = next(p for p in plans if p.ecosystem == "python")
        expected = expected_edges(plans) | {
            ("big_under", provider.name),
            ("big_over", provider.name),
        }
        progress(f"generating {count} repositories and the two large ones under {root}")
        results["generation"] = generate(root, plans)
        for name, files in large_manifest_files(provider).items():
            write_raw_repository(root / "repos" / name, files)
            sizes = {path: len(data) for path, data in files.items()}
            results["generation"][name] = sizes
        for name in ("big_under", "big_over"):
            (root / "projects" / f"{name}.yaml").write_text(
                f"name: {name}\ndescription: Large manifests.\nrepo: ../repos/{name}\n",
                encoding="utf-8",
            )
        codes = {
            "before": export_code(before, root / "code-before"),
            "after": export_code(None, root / "code-after"),
        }
        runs: dict[str, dict[str, Any]] = {}
        for label, code in codes.items():
            home = _fresh_home(root, label)
            for case in ("full", "unchanged"):
                progress(f"{label}: {case} detection of {count + 2} repositories")
                run = run_worker(root, "projects", home, code=code, clean=False)
                _check_edges(f"{label} {case}", run["edges"], expected)
                run["cache_bytes"] = _tree_size(home / "cache" / "dependencies")
                runs[f"{label}_{case}"] = run
                progress(
                    f"  ... {run['detect_s']:.2f}s, {run['detect_peak_rss_mb']:.0f} MB, cache "
                    f"{run['cache_bytes'] / 1e6:.1f} MB"
                )
        # One small repository changes; each version detects only it, as its `manifest` run does.
        consumer, new_provider = _pick_change(random.Random(seed), plans, "npm")
        manifest = add_dependency(consumer, new_provider)
        commit_manifest(root / "repos" / consumer.name, manifest, "one change")
        expected.add((consumer.name, new_provider.name))
        for label, code in codes.items():
            progress(f"{label}: detection of {consumer.name} only, after one commit")
            run = run_worker(
                root, "projects", root / "homes" / label, only=consumer.name, code=code, clean=False
            )
            _check_edges(f"{label} one project", run["edges"], expected)
            run["cache_bytes"] = _tree_size(root / "homes" / label / "cache" / "dependencies")
            runs[f"{label}_one_project"] = run
            progress(f"  ... {run['detect_s']:.2f}s, {run['detect_peak_rss_mb']:.0f} MB")
        results["runs"] = {name: _public(run) for name, run in runs.items()}
        results["problems"] = {
            name: run["problem_sample"] for name, run in runs.items() if name.endswith("_full")
        }
    results["machine"]["loadavg_at_end"] = loadavg()
    return results


def render_large_table(results: Mapping[str, Any]) -> str:
    runs = results["runs"]
    lines = [
        f"| detection ({results['repositories']} repositories) | code | detect s | "
        "process s | peak RSS MB | scan cache MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, label in (
        ("full", "everything, empty cache"),
        ("unchanged", "everything, nothing changed"),
        ("one_project", "one small project after a commit"),
    ):
        for code in ("before", "after"):
            run = runs[f"{code}_{case}"]
            name = f"{code} ({results['before']})" if code == "before" else "after (working tree)"
            lines.append(
                f"| {label} | {name} | {run['detect_s']:.2f} | {run['process_s']:.2f} | "
                f"{run['detect_peak_rss_mb']:.0f} | {run['cache_bytes'] / 1e6:.2f} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Nx


def install_nx(cache_dir: Path) -> tuple[Path | None, str]:
    """`npm install nx@latest` once into `cache_dir`; (nx's bin script, version) or (None, why)."""
    manifest = cache_dir / "node_modules" / "nx" / "package.json"
    if not manifest.is_file():
        if shutil.which("npm") is None or shutil.which("node") is None:
            return None, "node or npm is not installed"
        cache_dir.mkdir(parents=True, exist_ok=True)
        package = cache_dir / "package.json"
        if not package.exists():
            package.write_text('{"name": "nx-bench-install", "private": true}\n')
        progress(f"installing nx@latest into {cache_dir}")
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "nx@latest"],
            cwd=cache_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if done.returncode != 0 or not manifest.is_file():
            return None, "npm install nx@latest failed: " + " ".join(done.stderr.split())[-300:]
    data = json.loads(manifest.read_text())
    bin_path = data["bin"]["nx"] if isinstance(data.get("bin"), dict) else data.get("bin")
    script = manifest.parent / str(bin_path)
    if not script.is_file():
        return None, f"nx {data['version']} has no bin script at {script}"
    return script, str(data["version"])


def write_nx_workspace(workspace: Path, plans: Sequence[RepoPlan], nx_cache: Path) -> int:
    """The npm repositories' files as one npm workspace; returns the number of package.json.

    Each repository's files are written, unchanged, to `repos/<name>/` (so `file:../x` still
    points at its sibling), and the root package.json lists `repos/*` and `repos/*/packages/*`
    as workspaces. `node_modules` links to the cached nx install.
    """
    shutil.rmtree(workspace, ignore_errors=True)
    (workspace / "repos").mkdir(parents=True)
    count = 0
    for plan in plans:
        for path, text in plan.files().items():
            target = workspace / "repos" / plan.name / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            count += path.endswith("package.json")
    (workspace / "package.json").write_text(
        json.dumps(
            {
                "name": "nx-bench-workspace",
                "private": True,
                "workspaces": ["repos/*", "repos/*/packages/*"],
            },
            indent=2,
        )
        + "\n"
    )
    (workspace / ".gitignore").write_text("node_modules/\n.nx/\nout.json\n")
    (workspace / "node_modules").symlink_to(nx_cache / "node_modules", target_is_directory=True)
    return count


def run_nx(workspace: Path, nx_js: Path, *, cold: bool) -> tuple[float, float, dict[str, Any]]:
    """`nx graph --file=out.json` in `workspace`; (wall s, CPU s, the graph JSON).

    Runs nx's bin script with node, which is what `npx nx` ends up running, without npm's
    own start-up; `cold` deletes `.nx` (the workspace data and project graph cache) first.
    """
    if cold:
        shutil.rmtree(workspace / ".nx", ignore_errors=True)
    out = workspace / "out.json"
    out.unlink(missing_ok=True)
    done, wall, cpu = timed_run(
        ["node", str(nx_js), "graph", f"--file={out.name}"],
        cwd=workspace,
        env={**os.environ, **NX_ENV},
        timeout=1800,
    )
    if done.returncode != 0 or not out.is_file():
        raise click.ClickException(f"nx graph failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    return wall, cpu, json.loads(out.read_text())


def nx_edges(graph_json: Mapping[str, Any]) -> tuple[set[tuple[str, str]], int]:
    """Nx's edges between workspace projects, as (consumer repo, provider repo) pairs.

    A project's repository is the folder below `repos/` its root is in; edges inside one
    repository and edges to npm packages (external nodes) are dropped. Also returns the
    number of Nx projects.
    """
    graph = graph_json["graph"]
    repo_of = {
        name: node["data"]["root"].split("/")[1]
        for name, node in graph["nodes"].items()
        if node["data"].get("root", "").startswith("repos/")
    }
    edges = set()
    for dependencies in graph["dependencies"].values():
        for dependency in dependencies:
            source, target = repo_of.get(dependency["source"]), repo_of.get(dependency["target"])
            if source and target and source != target:
                edges.add((source, target))
    return edges, len(repo_of)


# --------------------------------------------------------------------------------------------
# The whole benchmark


def _record(count: int, seed: int) -> dict[str, Any]:
    """The head of a results record: the machine and tool versions, the size and the seed."""
    return {
        "machine": machine(
            git=_version("git"),
            node=_version("node") if shutil.which("node") else None,
            pygit2=_pygit2_version(),
        ),
        "repositories": count,
        "seed": seed,
    }


@contextmanager
def _root(prefix: str, workdir: Path | None) -> Iterator[Path]:
    """Where the generated input goes: `workdir` (emptied first, kept after), else a temporary
    directory removed at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
        yield workdir or Path(tmp)


def run_benchmark(
    count: int, *, nx: bool, profile: bool, workdir: Path | None, seed: int
) -> dict[str, Any]:
    results: dict[str, Any] = _record(count, seed)
    with _root("orch-bench-deps-", workdir) as root:
        plans = plan_repositories(count, seed)
        expected = expected_edges(plans)
        progress(f"generating {count} git repositories under {root}")
        results["generation"] = generate(root, plans)
        results["generation"]["by_ecosystem"] = {
            e: sum(1 for p in plans if p.ecosystem == e) for e in ECOSYSTEMS
        }
        results["generation"]["expected_edges"] = len(expected)
        results["generation"]["path_dependencies"] = sum(
            1
            for p in plans
            for m in p.manifests.values()
            for d in m.dependencies
            if d.path and d.provider != p.name
        )
        progress(f"  ... {results['generation']['total_s']:.1f}s ({results['generation']})")

        # (1) Full detection, empty cache.
        home = _fresh_home(root, "all")
        progress(f"full detection of {count} repositories (empty cache)")
        full = run_worker(root, "projects", home)
        _check_edges("full", full["edges"], expected)
        progress(f"  ... detect {full['detect_s']:.2f}s, {len(full['edges'])} edges (expected)")
        results["full"] = _public(full)

        # (2) Incremental: one new commit in one repository, warm cache.
        rng = random.Random(seed)
        incremental = []
        for attempt in range(INCREMENTAL_RUNS):
            ecosystem = CHANGE_ECOSYSTEMS[attempt % len(CHANGE_ECOSYSTEMS)]
            consumer, provider = _pick_change(rng, plans, ecosystem)
            manifest = add_dependency(consumer, provider)
            sha = commit_manifest(
                root / "repos" / consumer.name, manifest, f"Depend on {provider.name}"
            )
            expected.add((consumer.name, provider.name))
            progress(
                f"incremental {attempt + 1}/{INCREMENTAL_RUNS}: {consumer.name} now requires "
                f"{provider.name} ({manifest.path}, commit {sha[:10]})"
            )
            run = run_worker(root, "projects", home)
            _check_edges("incremental", run["edges"], expected)
            if run["scanned"] != 1:
                raise click.ClickException(f"{run['scanned']} projects were rescanned, not 1")
            progress(f"  ... detect {run['detect_s']:.3f}s, new edge present")
            incremental.append(
                {
                    **_public(run),
                    "consumer": consumer.name,
                    "provider": provider.name,
                    "manifest": manifest.path,
                    "commit": sha,
                    "new_edge_found": (consumer.name, provider.name) in run["edges"],
                }
            )
        progress("unchanged: no new commit, warm cache")
        unchanged = run_worker(root, "projects", home)
        _check_edges("unchanged", unchanged["edges"], expected)
        results["incremental"] = incremental
        results["unchanged"] = _public(unchanged)
        incremental_s = statistics.median(r["detect_s"] for r in incremental)
        results["summary"] = {
            "full_s": round(full["detect_s"], 3),
            "incremental_s": round(incremental_s, 3),
            "unchanged_s": round(unchanged["detect_s"], 3),
            "ratio": round(incremental_s / full["detect_s"], 4),
            "full_process_s": round(full["process_s"], 3),
            "incremental_process_s": round(
                statistics.median(r["process_s"] for r in incremental), 3
            ),
        }

        # (3) The npm subset: ours (cold, fresh processes) against Nx (cold, fresh processes).
        npm_plans = [p for p in plans if p.ecosystem == "npm"]
        npm_names = {p.name for p in npm_plans}
        npm_expected = {edge for edge in expected if edge[0] in npm_names}
        ours_runs = []
        for attempt in range(COLD_RUNS):
            progress(f"ours on the {len(npm_plans)} npm repositories, cold, {attempt + 1}")
            run = run_worker(root, "projects-npm", _fresh_home(root, "npm"))
            _check_edges("npm subset", run["edges"], npm_expected)
            ours_runs.append(run)
        results["npm"] = {
            "repositories": len(npm_plans),
            "expected_edges": len(npm_expected),
            "ours": [_public(r) for r in ours_runs],
            "ours_detect_s": round(statistics.median(r["detect_s"] for r in ours_runs), 3),
            "ours_process_s": round(statistics.median(r["process_s"] for r in ours_runs), 3),
            "ours_process_cpu_s": round(
                statistics.median(r["process_cpu_s"] for r in ours_runs), 3
            ),
        }
        if nx:
            results["npm"].update(_compare_with_nx(root, npm_plans, ours_runs[0]["edges"]))
        else:
            results["npm"]["nx"] = {"skipped": "--no-nx"}

        if profile:
            results["profiles"] = _profiles(root, plans, rng)
    results["machine"]["loadavg_at_end"] = loadavg()
    results["goals"] = _goals(results)
    return results


def _compare_with_nx(
    root: Path, npm_plans: Sequence[RepoPlan], ours: set[tuple[str, str]]
) -> dict[str, Any]:
    nx_js, version = install_nx(NX_CACHE_DIR)
    if nx_js is None:
        progress(f"Nx is not available: {version}")
        return {"nx": {"unavailable": version}}
    workspace = root / "nx-workspace"
    package_jsons = write_nx_workspace(workspace, npm_plans, NX_CACHE_DIR)
    runs, cpus = [], []
    graph: dict[str, Any] = {}
    for attempt in range(COLD_RUNS):
        progress(f"nx {version} graph on {package_jsons} package.json files, cold, {attempt + 1}")
        wall, cpu, graph = run_nx(workspace, nx_js, cold=True)
        progress(f"  ... {wall:.2f}s ({cpu:.2f}s CPU)")
        runs.append(wall)
        cpus.append(cpu)
    warm, _, _ = run_nx(workspace, nx_js, cold=False)
    theirs, projects = nx_edges(graph)
    return {
        "nx": {
            "version": version,
            "package_json_files": package_jsons,
            "projects": projects,
            "runs_s": [round(r, 3) for r in runs],
            "median_s": round(statistics.median(runs), 3),
            "cpu_runs_s": [round(c, 3) for c in cpus],
            "median_cpu_s": round(statistics.median(cpus), 3),
            "warm_s": round(warm, 3),
            "edges": len(theirs),
            "only_nx": sorted(theirs - ours),
            "only_ours": sorted(ours - theirs),
            "edges_equal": theirs == ours,
        }
    }


def _pick_change(
    rng: random.Random, plans: Sequence[RepoPlan], ecosystem: str
) -> tuple[RepoPlan, RepoPlan]:
    """A repository of `ecosystem` and a provider it does not depend on yet (nor the reverse,
    so no cycle appears)."""
    candidates = [p for p in plans if p.ecosystem == ecosystem]
    while True:
        consumer, provider = rng.sample(candidates, 2)
        if provider.name not in consumer.providers() and consumer.name not in provider.providers():
            return consumer, provider


def _check_edges(what: str, found: set[tuple[str, str]], expected: set[tuple[str, str]]) -> None:
    if found != expected:
        raise click.ClickException(
            f"{what}: the detected edges differ from the generated ones: "
            f"missing {sorted(expected - found)[:10]}, unexpected {sorted(found - expected)[:10]}"
        )


def _public(run: Mapping[str, Any]) -> dict[str, Any]:
    """A worker's result without the edge list, rounded."""
    return {
        key: round(value, 4) if isinstance(value, float) else value
        for key, value in run.items()
        if key not in ("edges", "failure_sample", "problem_sample")
    } | {"edges": len(run["edges"])}


def _profiles(root: Path, plans: Sequence[RepoPlan], rng: random.Random) -> dict[str, str]:
    """cProfile a full detection and an incremental one; the .prof files and top calls."""
    profiles = {}
    home = _fresh_home(root, "profile")
    target = RESULTS_FILE.parent / "deps_full.prof"
    progress(f"profiling a full detection into {target}")
    run_worker(root, "projects", home, target)
    profiles["full"] = str(target)
    _print_profile(target)
    consumer, provider = _pick_change(rng, plans, "npm")
    manifest = add_dependency(consumer, provider)
    commit_manifest(root / "repos" / consumer.name, manifest, "profile")
    target = RESULTS_FILE.parent / "deps_incremental.prof"
    progress(f"profiling an incremental detection into {target}")
    run_worker(root, "projects", home, target)
    profiles["incremental"] = str(target)
    _print_profile(target)
    return profiles


def _print_profile(path: Path, limit: int = 30) -> None:
    import io
    import pstats

    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(order).print_stats(limit)
        progress(out.getvalue())


def _goals(results: Mapping[str, Any]) -> dict[str, Any]:
    summary, npm = results["summary"], results["npm"]
    goals: dict[str, Any] = {
        "incremental_ratio": {
            "value": summary["ratio"],
            "goal": f"<= {INCREMENTAL_GOAL}",
            "met": summary["ratio"] <= INCREMENTAL_GOAL,
        },
        "new_edge_found": {
            "value": all(r["new_edge_found"] for r in results["incremental"]),
            "goal": "each incremental change's edge appears",
            "met": all(r["new_edge_found"] for r in results["incremental"]),
        },
    }
    nx = npm.get("nx", {})
    if "median_s" in nx:
        speedup = nx["median_s"] / npm["ours_process_s"]
        goals["faster_than_nx"] = {
            "value": round(speedup, 2),
            "goal": "> 1 (Nx process / our process, cold)",
            "met": speedup > 1,
        }
        goals["same_edges_as_nx"] = {
            "value": nx["edges_equal"],
            "goal": "equal edge sets",
            "met": nx["edges_equal"],
        }
    return goals


def render_table(results: Mapping[str, Any]) -> str:
    s, npm = results["summary"], results["npm"]
    lines = [
        f"| repositories | full s | incremental s (median of {INCREMENTAL_RUNS}) | "
        "incremental / full | unchanged s | edges (all as generated) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {results['repositories']} | {s['full_s']:.2f} | {s['incremental_s']:.3f} | "
        f"{s['ratio']:.1%} | {s['unchanged_s']:.3f} | {results['full']['edges']} |",
        "",
        "| npm subset | ours detect s | ours process s | ours CPU s | Nx s | Nx CPU s | "
        "speedup (wall) | speedup (CPU) | edges ours / Nx | agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    nx = npm.get("nx", {})
    label = f"{npm['repositories']} repos"
    ours = (
        f"{npm['ours_detect_s']:.2f} | {npm['ours_process_s']:.2f} | "
        f"{npm['ours_process_cpu_s']:.2f}"
    )
    if "median_s" in nx:
        label += f", {nx['package_json_files']} package.json"
        agreement = (
            "equal"
            if nx["edges_equal"]
            else f"{len(nx['only_nx'])} only Nx, {len(nx['only_ours'])} only ours"
        )
        lines.append(
            f"| {label} | {ours} | {nx['median_s']:.2f} | {nx['median_cpu_s']:.2f} | "
            f"{nx['median_s'] / npm['ours_process_s']:.1f}x | "
            f"{nx['median_cpu_s'] / npm['ours_process_cpu_s']:.1f}x | "
            f"{npm['expected_edges']} / {nx['edges']} | {agreement} |"
        )
    else:
        why = nx.get("unavailable") or nx.get("skipped") or "not run"
        lines.append(
            f"| {label} | {ours} | - | - | - | - | {npm['expected_edges']} / - | "
            f"Nx not run: {why} |"
        )
    for name, goal in results["goals"].items():
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(f"\n- {name}: {goal['value']} (goal {goal['goal']}): {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# One npm package per repository: `orch deps detect` against Nx, whole processes

NPM_SINGLE_REPOS = 400
NX_GOAL = 1.0  # our process / Nx's process, wall time, at most


def orch_command() -> list[str]:
    """How `orch` is started: the console script beside this interpreter (what a user runs),
    or the same entry point through this interpreter when there is no script."""
    script = Path(sys.executable).parent / "orch"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from orchestration.cli import main; main()"]


def run_orch_detect(root: Path, home: Path) -> dict[str, Any]:
    """`orch deps detect --json` as a fresh process over the registry under `root`, with
    ORCH_HOME `home`: its wall and CPU time and edges. Any warning (an unreadable repository,
    a manifest problem) or version mismatch stops the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DAGSTER_"))}
    env |= {
        "ORCH_PROJECTS_DIR": str(root / "projects"),
        "ORCH_CONFIG_DIR": str(root / "config"),
        "ORCH_HOME": str(home),
    }
    argv = [*orch_command(), "deps", "detect", "--json"]
    done, wall, cpu = timed_run(argv, cwd=root, env=env, timeout=1800)
    if done.returncode != 0:
        raise click.ClickException(f"orch deps detect failed: {done.stderr[-2000:]}")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    graph = json.loads(done.stdout)
    mismatches = [
        item for edge in graph["edges"] for item in edge["evidence"] if item.get("version_mismatch")
    ]
    if warnings or mismatches:
        raise click.ClickException(
            f"orch deps detect was not clean: {warnings[:5]}, {mismatches[:5]}"
        )
    return {
        "process_s": wall,
        "process_cpu_s": cpu,
        "loadavg": loadavg(),
        "edges": {(edge["consumer"], edge["provider"]) for edge in graph["edges"]},
    }


def run_npm_single(
    count: int, *, nx: bool, profile: bool, workdir: Path | None, seed: int
) -> dict[str, Any]:
    """`orch deps detect` over `count` one-package npm repositories against Nx over the same
    packages as one workspace (cold, whole processes, medians), then one commit at a time."""
    results: dict[str, Any] = {"mode": "npm-single", **_record(count, seed)}
    with _root("orch-bench-npm-", workdir) as root:
        plans = plan_single_npm(count, seed)
        expected = expected_edges(plans)
        progress(f"generating {count} one-package npm repositories under {root}")
        results["generation"] = generate(root, plans, npm_registry=False)
        results["generation"]["expected_edges"] = len(expected)
        progress(f"  ... {results['generation']['total_s']:.1f}s, {len(expected)} edges")

        # Cold: `orch deps detect` (the command, whole process) and detect() alone (worker).
        commands, workers = [], []
        for attempt in range(COLD_RUNS):
            progress(f"orch deps detect over {count} repositories, cold, {attempt + 1}")
            run = run_orch_detect(root, _fresh_home(root, "cli"))
            _check_edges("orch deps detect", run["edges"], expected)
            progress(f"  ... {run['process_s']:.2f}s ({run['process_cpu_s']:.2f}s CPU)")
            commands.append(run)
        for attempt in range(COLD_RUNS):
            progress(f"detect() over {count} repositories, cold, {attempt + 1}")
            run = run_worker(root, "projects", _fresh_home(root, "worker"))
            _check_edges("detect()", run["edges"], expected)
            progress(f"  ... detect {run['detect_s']:.3f}s, process {run['process_s']:.2f}s")
            workers.append(run)
        results["cold"] = {
            "commands": [_public(r) for r in commands],
            "workers": [_public(r) for r in workers],
        }
        if nx:
            results["nx"] = _compare_with_nx(root, plans, commands[0]["edges"])["nx"]
        else:
            results["nx"] = {"skipped": "--no-nx"}

        # Incremental: one commit in one repository, then the command and detect() again,
        # each with its own warm ORCH_HOME.
        rng = random.Random(seed)
        incremental = []
        for attempt in range(INCREMENTAL_RUNS):
            consumer, provider = _pick_change(rng, plans, "npm")
            manifest = add_dependency(consumer, provider)
            sha = commit_manifest(
                root / "repos" / consumer.name, manifest, f"Depend on {provider.name}"
            )
            expected.add((consumer.name, provider.name))
            progress(
                f"incremental {attempt + 1}/{INCREMENTAL_RUNS}: {consumer.name} now requires "
                f"{provider.name} (commit {sha[:10]})"
            )
            command = run_orch_detect(root, root / "homes" / "cli")
            _check_edges("incremental orch deps detect", command["edges"], expected)
            worker = run_worker(root, "projects", root / "homes" / "worker")
            _check_edges("incremental detect()", worker["edges"], expected)
            if worker["scanned"] != 1:
                raise click.ClickException(f"{worker['scanned']} projects were rescanned, not 1")
            progress(f"  ... process {command['process_s']:.3f}s, detect {worker['detect_s']:.4f}s")
            incremental.append(
                {
                    "consumer": consumer.name,
                    "provider": provider.name,
                    "commit": sha,
                    "command": _public(command),
                    "worker": _public(worker),
                }
            )
        results["incremental"] = incremental
        progress("unchanged: orch deps detect with no new commit")
        unchanged = run_orch_detect(root, root / "homes" / "cli")
        _check_edges("unchanged", unchanged["edges"], expected)
        results["unchanged"] = _public(unchanged)

        def median(runs: Iterable[Mapping[str, Any]], key: str) -> float:
            return round(statistics.median(run[key] for run in runs), 4)

        for run in [*workers, *(r["worker"] for r in incremental)]:
            # detect()'s own CPU time and that of the git processes it waited for
            run["detect_all_cpu_s"] = round(run["detect_cpu_s"] + run["git_cpu_s"], 4)

        summary: dict[str, Any] = {
            "edges": len(commands[0]["edges"]),
            "full_process_s": median(commands, "process_s"),
            "full_process_cpu_s": median(commands, "process_cpu_s"),
            "full_detect_s": median(workers, "detect_s"),
            "full_detect_cpu_s": median(workers, "detect_all_cpu_s"),
            "incremental_process_s": median([r["command"] for r in incremental], "process_s"),
            "incremental_detect_s": median([r["worker"] for r in incremental], "detect_s"),
            "incremental_detect_cpu_s": median(
                [r["worker"] for r in incremental], "detect_all_cpu_s"
            ),
            "unchanged_process_s": round(unchanged["process_s"], 4),
        }
        summary["incremental_process_share"] = round(
            summary["incremental_process_s"] / summary["full_process_s"], 4
        )
        summary["incremental_detect_share"] = round(
            summary["incremental_detect_s"] / summary["full_detect_s"], 4
        )
        summary["incremental_detect_cpu_share"] = round(
            summary["incremental_detect_cpu_s"] / summary["full_detect_cpu_s"], 4
        )
        if "median_s" in results["nx"]:
            summary["nx_s"] = results["nx"]["median_s"]
            summary["nx_cpu_s"] = results["nx"]["median_cpu_s"]
            summary["ours_over_nx"] = round(summary["full_process_s"] / summary["nx_s"], 3)
        results["summary"] = summary
        if profile:
            results["profiles"] = _profiles(root, plans, rng)
    results["machine"]["loadavg_at_end"] = loadavg()
    summary = results["summary"]
    results["goals"] = {
        "incremental_share": {
            "value": summary["incremental_detect_share"],
            "goal": f"<= {INCREMENTAL_GOAL} (incremental / full detect())",
            "met": summary["incremental_detect_share"] <= INCREMENTAL_GOAL,
        }
    }
    if "ours_over_nx" in summary:
        results["goals"]["not_slower_than_nx"] = {
            "value": summary["ours_over_nx"],
            "goal": f"<= {NX_GOAL} (our process / Nx's process, wall, cold)",
            "met": summary["ours_over_nx"] <= NX_GOAL,
        }
        results["goals"]["same_edges_as_nx"] = {
            "value": results["nx"]["edges_equal"],
            "goal": "equal edge sets",
            "met": results["nx"]["edges_equal"],
        }
    return results


def render_npm_single_table(results: Mapping[str, Any]) -> str:
    s, nx = results["summary"], results["nx"]
    lines = [
        "| one-package npm repositories | edges | ours: `orch deps detect` s | ours CPU s | "
        "Nx: `nx graph --file` s | Nx CPU s | ours / Nx (wall) | edges ours / Nx |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    if "median_s" in nx:
        agreement = (
            f"{s['edges']} / {nx['edges']}, equal"
            if nx["edges_equal"]
            else f"{len(nx['only_nx'])} only Nx, {len(nx['only_ours'])} only ours"
        )
        lines.append(
            f"| {results['repositories']} | {s['edges']} | {s['full_process_s']:.2f} | "
            f"{s['full_process_cpu_s']:.2f} | {nx['median_s']:.2f} | {nx['median_cpu_s']:.2f} | "
            f"{s['ours_over_nx']:.2f}x | {agreement} |"
        )
    else:
        why = nx.get("unavailable") or nx.get("skipped") or "not run"
        lines.append(
            f"| {results['repositories']} | {s['edges']} | {s['full_process_s']:.2f} | "
            f"{s['full_process_cpu_s']:.2f} | - | - | - | Nx not run: {why} |"
        )
    lines += [
        "",
        f"| case (medians of {COLD_RUNS}) | `orch deps detect` process s | detect() s | "
        "detect() CPU s (with git's) |",
        "|---|---:|---:|---:|",
        f"| full, empty cache | {s['full_process_s']:.3f} | {s['full_detect_s']:.4f} | "
        f"{s['full_detect_cpu_s']:.4f} |",
        f"| incremental, one commit | {s['incremental_process_s']:.3f} | "
        f"{s['incremental_detect_s']:.4f} | {s['incremental_detect_cpu_s']:.4f} |",
        f"| incremental / full | {s['incremental_process_share']:.1%} | "
        f"{s['incremental_detect_share']:.1%} | {s['incremental_detect_cpu_share']:.1%} |",
        f"| unchanged | {s['unchanged_process_s']:.3f} | - | - |",
    ]
    for name, goal in results["goals"].items():
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(f"\n- {name}: {goal['value']} (goal {goal['goal']}): {verdict}")
    return "\n".join(lines)


def _pygit2_version() -> str | None:
    """pygit2's and libgit2's versions (detection reads manifests with them), if installed."""
    try:
        import pygit2
    except ImportError:
        return None
    return f"pygit2 {pygit2.__version__} (libgit2 {pygit2.LIBGIT2_VERSION})"


def _version(tool: str) -> str:
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


@click.command()
@click.option("--repos", type=int, default=None, help=f"Repositories (default {FULL_REPOS}).")
@click.option("--quick", is_flag=True, help=f"{QUICK_REPOS} repositories (under two minutes).")
@click.option("--no-nx", is_flag=True, help="Skip the Nx comparison.")
@click.option("--profile", is_flag=True, help="Also cProfile a full and an incremental run.")
@click.option("--seed", type=int, default=SEED, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Generate here and keep it (emptied first) instead of a temporary directory.",
)
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS_FILE, show_default=True)
@click.option(
    "--large-manifests",
    is_flag=True,
    help="Measure one oversized repository among the others, before and after (see --before).",
)
@click.option(
    "--before",
    default="HEAD",
    show_default=True,
    help="The git ref whose package --large-manifests compares with the working tree.",
)
@click.option(
    "--npm-single",
    type=int,
    is_flag=False,
    flag_value=NPM_SINGLE_REPOS,
    default=None,
    help=f"N one-package npm repositories (default {NPM_SINGLE_REPOS}): `orch deps detect` "
    "against Nx, whole processes, and after one commit.",
)
@click.option("--worker", is_flag=True, hidden=True)
@click.option("--worker-profile", type=click.Path(path_type=Path), hidden=True)
@click.option("--worker-only", hidden=True)
@click.option("--worker-code", type=click.Path(path_type=Path), hidden=True)
def main(
    repos: int | None,
    quick: bool,
    no_nx: bool,
    profile: bool,
    seed: int,
    workdir: Path | None,
    output: Path,
    large_manifests: bool,
    before: str,
    npm_single: int | None,
    worker: bool,
    worker_profile: Path | None,
    worker_only: str | None,
    worker_code: Path | None,
) -> None:
    """Time dependency detection over N generated git repositories, full and incremental."""
    if worker:
        result = measure(worker_profile, worker_only, worker_code)
        click.echo(json.dumps(result))
        return
    if npm_single is not None:
        results = run_npm_single(
            npm_single,
            nx=not no_nx,
            profile=profile,
            workdir=workdir and workdir.resolve(),
            seed=seed,
        )
        target = output if output != RESULTS_FILE else RESULTS_FILE.with_name("deps_npm.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=2, default=sorted) + "\n")
        progress(f"results written to {target}")
        click.echo(render_npm_single_table(results))
        return
    if large_manifests:
        results = run_large_manifests(
            repos or QUICK_REPOS, workdir=workdir and workdir.resolve(), seed=seed, before=before
        )
        target = output if output != RESULTS_FILE else RESULTS_FILE.with_name("deps_large.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=2, default=sorted) + "\n")
        progress(f"results written to {target}")
        click.echo(render_large_table(results))
        return
    count = repos or (QUICK_REPOS if quick else FULL_REPOS)
    results = run_benchmark(
        count, nx=not no_nx, profile=profile, workdir=workdir and workdir.resolve(), seed=seed
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=sorted) + "\n")
    progress(f"results written to {output}")
    click.echo(render_table(results))


if __name__ == "__main__":
    main()
