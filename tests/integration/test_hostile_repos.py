"""Hostile repository contents against dependency detection (issue 10, items 5 and 8).

One registry holds two ordinary projects (`api` requires `core`'s package) and one project per
attack, each of which also declares one ordinary dependency on `core`: submodule URLs that are
git options or `ext::` commands, `file:` paths to `/` and far above the repository, manifests
that are symbolic links (to /etc/passwd, and out of the repository to a file that would add an
edge if it were followed), a 50 MB manifest, invalid UTF-8, documents nested 100,000 deep, and a
package.json with 100,000 dependencies.

Detection runs in a child process under a 1 GiB address-space limit and a timeout, with a `git`
on PATH that logs every command before running the real one. Each case must end in a problem
naming the file or in no edge at all; its ordinary dependency on `core`, and `api -> core`, must
still be found; no git command but listing and reading objects may run, none may carry a URL
from a manifest, and no marker file the attacks would create may appear.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestration.dependencies.detection import ScanOutcome, detect
from orchestration.workspace import git as git_seam
from tests.support.git import GIT_IDENTITY, git, make_git_repo
from tests.support.registry import RegistryDir

ADDRESS_SPACE_LIMIT = 1 << 30
CHILD_TIMEOUT_S = 120
#: The git subcommands detection of local repositories may run at all.
ALLOWED_GIT = {"version", "ls-tree", "cat-file", "rev-parse"}

CORE = '[project]\nname = "acme-core"\nversion = "1.0.0"\n'
NEEDS_CORE = "acme-core>=1\n"
HUGE_BYTES = 50 << 20


class Link(str):
    """A symbolic link's target, as a tree entry of `commit_tree`."""


def commit_tree(repo: Path, files: Mapping[str, bytes | Link]) -> str:
    """A repository at `repo` whose `main` holds exactly `files` (bytes, or a `Link`), written
    with `git fast-import`: no work tree copy, so a 50 MB file costs one compressed blob."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    who = f"{GIT_IDENTITY['GIT_AUTHOR_NAME']} <{GIT_IDENTITY['GIT_AUTHOR_EMAIL']}>"
    parts = [
        b"commit refs/heads/main\n",
        f"author {who} 1700000000 +0000\ncommitter {who} 1700000000 +0000\n".encode(),
        b"data 7\nhostile\n",
    ]
    for path, content in files.items():
        mode, data = (
            (b"120000", content.encode()) if isinstance(content, Link) else (b"100644", content)
        )
        assert isinstance(data, bytes)
        parts.append(b"M %s inline %s\ndata %d\n%s\n" % (mode, path.encode(), len(data), data))
    parts.append(b"done\n")
    git(repo, "fast-import", "--quiet", "--done", stdin=b"".join(parts))
    return git(repo, "rev-parse", "main")


def huge_package_json(size: int) -> bytes:
    """A valid package.json of about `size` bytes of external dependencies."""
    entry = b'"external-package-%08d": "^1.0.0",'
    count = size // len(entry % 0)
    body = b"".join(entry % index for index in range(count)).rstrip(b",")
    return b'{"name": "huge", "dependencies": {' + body + b"}}"


class Hostile:
    """The registry of attacks, the markers they would create, and the URLs they carry."""

    def __init__(self, registry: RegistryDir, marker_dir: Path) -> None:
        self.registry = registry
        self.markers = {
            name: marker_dir / f"orch-hostile-{uuid.uuid4().hex}-{name}"
            for name in ("ext", "upload-pack", "proxy", "file-ext")
        }
        self.urls: list[str] = []
        self.repos: dict[str, Path] = {}

    def add(self, name: str, files: Mapping[str, bytes | Link]) -> Path:
        repo = self.registry.root / "repos" / name
        commit_tree(repo, files)
        self.registry.project(name, repo=str(repo))
        self.repos[name] = repo
        return repo

    def build(self) -> None:
        registry, m = self.registry, self.markers
        core = make_git_repo(registry.root / "repos" / "core", {"pyproject.toml": CORE})
        registry.project("core", repo=str(core))
        self.add("api", {"requirements.txt": NEEDS_CORE.encode()})

        self.urls = [
            f"ext::sh -c touch% {m['ext']}",
            f"--upload-pack=touch {m['upload-pack']}",
            f"-oProxyCommand=touch {m['proxy']}",
            f"ext::sh -c 'touch {m['file-ext']}'",
        ]
        gitmodules = "".join(
            f'[submodule "s{index}"]\n\tpath = s{index}\n\turl = {url}\n'
            for index, url in enumerate(self.urls)
        )
        gitmodules += f'[submodule "core"]\n\tpath = core\n\turl = {core}\n'
        self.add(
            "submodules",
            {".gitmodules": gitmodules.encode(), "requirements.txt": NEEDS_CORE.encode()},
        )

        self.add(
            "paths",
            {
                "package.json": json.dumps(
                    {"name": "paths", "dependencies": {"root": "file:/", "up": "file:../../.."}}
                ).encode(),
                "requirements.txt": f"-e /\n-e ../../../..\n{NEEDS_CORE}".encode(),
                "pyproject.toml": b'[project]\nname = "p"\ndependencies = ["z @ file:///"]\n',
                "Cargo.toml": b'[package]\nname = "c"\n[dependencies]\nw = { path = "/" }\n',
                "go.mod": b"module example.com/p\nrequire a v1\nreplace a => /\n",
            },
        )

        outside = registry.root / "outside"
        outside.mkdir()
        (outside / "requirements.txt").write_text(NEEDS_CORE)  # an edge, were it followed
        self.add(
            "links",
            {
                "pyproject.toml": Link("/etc/passwd"),
                "tools/requirements.txt": Link("../../../outside/requirements.txt"),
                "docs/requirements.txt": Link(str(outside / "requirements.txt")),
                "README.md": b"links\n",
            },
        )

        self.add(
            "huge",
            {
                "package.json": huge_package_json(HUGE_BYTES),
                "requirements.txt": NEEDS_CORE.encode(),
            },
        )
        self.add(
            "binary",
            {"requirements.txt": b"# caf\xe9 \xff\xfe\x00\n" + NEEDS_CORE.encode()},
        )
        self.add(
            "nested",
            {
                "package.json": b"[" * 100_000 + b"]" * 100_000,
                "pyproject.toml": b"a = " + b"[" * 100_000 + b"]" * 100_000,
                "Cargo.toml": b"a = " + b"{b = " * 50_000 + b"1" + b"}" * 50_000,
                "requirements.txt": NEEDS_CORE.encode(),
            },
        )
        many = {f"d{index:x}": "1" for index in range(100_000)}
        several = {f"e{index}": "^1" for index in range(6_000)}
        self.add(
            "many",
            {
                "package.json": json.dumps({"name": "many", "dependencies": many}).encode(),
                "packages/x/package.json": json.dumps(
                    {"name": "x", "dependencies": several}
                ).encode(),
                "requirements.txt": NEEDS_CORE.encode(),
            },
        )


@pytest.fixture
def hostile(registry_dir: RegistryDir) -> Iterator[Hostile]:
    # The markers sit outside the test's own folder: an attack that ran would leave them there.
    found = Hostile(registry_dir, Path("/tmp"))
    found.build()
    yield found
    for marker in found.markers.values():
        marker.unlink(missing_ok=True)


EDGES = {
    ("api", "core"),
    ("submodules", "core"),
    ("paths", "core"),
    ("huge", "core"),
    ("binary", "core"),
    ("nested", "core"),
    ("many", "core"),
}

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from orchestration.dependencies.detection import ScanOutcome, detect
    from orchestration.registry import load_registry
    from orchestration.settings import Settings

    settings = Settings.from_env()
    registry = load_registry(settings)
    assert not registry.errors, registry.errors
    graph, outcomes = detect(registry.projects, settings)
    status = {{
        line.split(":")[0]: int(line.split()[1])
        for line in open("/proc/self/status") if line.startswith(("VmHWM", "VmPeak"))
    }}
    json.dump(
        {{
            "edges": sorted([e.consumer, e.provider] for e in graph.edges),
            "problems": {{
                name: list(o.scan.problems) if isinstance(o, ScanOutcome) else o
                for name, o in outcomes.items()
            }},
            "requirements": {{
                name: [[r.name, r.url, r.local_path] for r in o.scan.requirements]
                for name, o in outcomes.items() if isinstance(o, ScanOutcome)
            }},
            "memory_kb": status,
        }},
        sys.stdout,
    )
    """
)

GIT_LOGGER = """#!/bin/sh
# One write per command: detection runs several git processes at once.
sep=$(printf '\\037')
line=""
for arg in "$@"; do line="$line$arg$sep"; done
printf '%s\\n' "$line" >> "{log}"
exec "{git}" "$@"
"""


def subcommand(argv: list[str]) -> str:
    """The git subcommand of an argv after the program: what follows `-c k=v` and options."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-c", "-C"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def run_child(hostile: Hostile, tmp_path: Path) -> tuple[dict[str, Any], list[list[str]]]:
    """Detection of the whole registry in a child process, bounded; its result and git log."""
    settings = hostile.registry.settings
    bin_dir, log = tmp_path / "bin", tmp_path / "git.log"
    bin_dir.mkdir()
    real_git = shutil.which("git")
    assert real_git is not None
    (bin_dir / "git").write_text(GIT_LOGGER.format(log=log, git=real_git))
    (bin_dir / "git").chmod(0o755)
    home = tmp_path / "user-home"
    home.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "ORCH_PROJECTS_DIR": str(settings.projects_dir),
        "ORCH_CONFIG_DIR": str(settings.config_dir),
        "ORCH_HOME": str(settings.home),
        "TMPDIR": str(tmp_path),
        "MALLOC_ARENA_MAX": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(limit=ADDRESS_SPACE_LIMIT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line.split("\x1f")[:-1] for line in log.read_text().splitlines() if line]
    return json.loads(done.stdout), commands


def test_detection_of_hostile_repositories_is_bounded_safe_and_spares_the_others(
    hostile: Hostile, tmp_path: Path
) -> None:
    result, commands = run_child(hostile, tmp_path)
    problems: dict[str, list[str]] = result["problems"]

    # Every ordinary dependency is still found, and no attack adds an edge.
    assert {tuple(edge) for edge in result["edges"]} == EDGES
    assert all(isinstance(found, list) for found in problems.values()), problems
    assert problems["api"] == [] and problems["core"] == []

    # Submodule URLs are data: kept as written, never handed to git.
    urls = {url for _, url, _ in result["requirements"]["submodules"] if url}
    assert set(hostile.urls) <= urls
    assert not [marker for marker in hostile.markers.values() if marker.exists()]
    assert commands, "the logging git was not used"
    assert {subcommand(argv) for argv in commands} <= ALLOWED_GIT, commands
    logged = "\n".join("\x1f".join(argv) for argv in commands)
    for url in hostile.urls:
        assert url not in logged
    assert "upload-pack" not in logged and "ProxyCommand" not in logged

    # Paths to / and far above the repository are kept as written and point at no project;
    # pip's `-e <folder>` names no package there, which is said.
    local = {path for _, _, path in result["requirements"]["paths"] if path}
    assert {"/", "../../.."} <= local
    assert problems["paths"] == [
        f"requirements.txt:{line}: cannot tell which package '-e {path}' installs; add "
        "`#egg=<name>` or write it as `<name> @ <url>`"
        for line, path in ((1, "/"), (2, "../../../.."))
    ]

    # Links are never followed, nor their target text parsed as a manifest.
    assert sorted(problems["links"]) == [
        f"{path}: not read: it is a symbolic link, and links are never followed (the file it "
        "points to is read only if it is itself a manifest in the repository)"
        for path in ("docs/requirements.txt", "pyproject.toml", "tools/requirements.txt")
    ]
    assert result["requirements"]["links"] == []

    (huge,) = problems["huge"]
    assert huge.startswith("package.json: not read: 50.0 MiB is over the 1 MiB limit")
    (binary,) = problems["binary"]
    assert binary.startswith("requirements.txt: is not UTF-8 text (byte 5 is b'\\xe9')")
    assert sorted(p.split(":")[0] for p in problems["nested"]) == [
        "Cargo.toml",
        "package.json",
        "pyproject.toml",
    ]
    assert all("nested too deeply" in p for p in problems["nested"])
    assert sorted(problems["many"]) == [
        "package.json: not read: 1.4 MiB is over the 1 MiB limit for one manifest, so its "
        "dependencies are not counted (keep generated or vendored files out of manifests)",
        "packages/x/package.json: declares 6,000 requirements, over the limit of 5,000 for one "
        "manifest, so none of them are counted",
    ]

    # Bounded memory: far below what reading the 50 MB manifest would take (over 1 GB before).
    assert result["memory_kb"]["VmHWM"] < 200 * 1024


def test_an_oversized_blob_never_reaches_git_cat_file(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In process, with the seam recording every command and what it was fed: the 50 MB blob
    is named in the listing but never asked for, and nothing but ls-tree and cat-file runs."""
    monkeypatch.chdir(tmp_path)
    real_run_git = git_seam.run_git
    calls: list[tuple[tuple[str, ...], bytes]] = []

    def recording(args: tuple[str, ...], **kwargs: Any) -> Any:
        stdin = kwargs.get("stdin")
        fed = b""
        if stdin is not None:
            fed = stdin.read()
            stdin.seek(0)
        calls.append((tuple(args), fed))
        return real_run_git(args, **kwargs)

    monkeypatch.setattr(git_seam, "run_git", recording)
    registry = hostile.registry.load()
    huge = next(p for p in registry.projects if p.spec.name == "huge")
    graph, outcomes = detect([huge, *registry.projects], hostile.registry.settings, only=["huge"])

    assert isinstance(outcomes["huge"], ScanOutcome)
    huge_sha = git(hostile.repos["huge"], "rev-parse", "main:package.json")
    small_sha = git(hostile.repos["huge"], "rev-parse", "main:requirements.txt")
    assert [args[0] for args, _ in calls] == ["ls-tree", "cat-file"]
    (fed,) = [fed for args, fed in calls if args[0] == "cat-file"]
    assert fed.decode().split() == [small_sha]
    assert huge_sha.encode() not in fed
