"""The sandbox every agent and every verify command runs in: bubblewrap (`bwrap`) namespaces.

Inside, the system is read-only, the command sees only its own processes (its own PID
namespace: no `/proc/<pid>/environ` of the run worker, which holds every project's secrets),
has a private `/tmp`, and of ORCH_HOME sees only its task's worktree, its project's agent home
and the parts of its project's clone git needs to commit (objects, refs, logs and the worktree's
own administrative directory writable; the clone's `config`, `hooks/` and `info/` read-only, so
it cannot make the orchestrator's own git commands run anything). Other projects' clones and
homes, the task database and the Dagster instance are not there at all. Capabilities are
dropped (even for root), the sandbox dies with the process that started it, and a profile with
`network: false` gets its own network namespace with only a loopback interface.

Where namespaces are unavailable, `ORCH_SANDBOX=off` turns the sandbox off (`orch validate`
warns); while it is on, a missing `bwrap` or a kernel that refuses the namespaces fails the task
with `SandboxError`, never a silent run without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.registry.models import is_remote_url
from orchestration.settings import SANDBOX_VAR

#: The program that builds the sandbox (Debian/Ubuntu package `bubblewrap`).
BWRAP = "bwrap"
#: Where `bwrap` is looked for after the PATH of the orchestrator's environment.
FALLBACK_PATH = "/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin"
#: System directories a sandboxed command gets empty and private (temporary files; sockets of
#: the host's services, such as PostgreSQL, D-Bus or Docker, under /run).
PRIVATE_SYSTEM_DIRS = ("/tmp", "/var/tmp", "/run")
#: Credential stores in the home directory of the user running the orchestrator: hidden, since
#: an agent gets its credentials only through its profile's and project's variables.
HOME_CREDENTIALS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".config/gh",
    ".config/gcloud",
    ".claude",
    ".claude.json",
    ".codex",
)
#: Files holding variables for the orchestrator's own environment (every project's secrets).
ENV_FILES = (".env",)
PROBE_TIMEOUT_S = 30.0
HOW_TO_FIX = (
    "install bubblewrap (`apt-get install bubblewrap`; `bin/setup` does it as root) where Linux "
    "namespaces are allowed, or set ORCH_SANDBOX=off to run agents and verify commands without "
    "the sandbox (then an agent can read every project's secrets)"
)


class SandboxError(Exception):
    """The sandbox cannot be set up here; the message says why and how to fix it."""


@dataclass(frozen=True)
class Sandbox:
    """What one sandboxed command sees: the system read-only, `hidden` paths replaced by empty
    ones, `writable` paths bound read-write and `readable` ones read-only again (inside a hidden
    or a writable directory). Paths are absolute and appear at the same place inside."""

    program: str
    hidden: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    network: bool = True

    def prefix(self, cwd: Path) -> list[str]:
        """The `bwrap ... --` argv a command run in `cwd` is appended to."""
        argv = [self.program, "--unshare-all"]
        if self.network:
            argv.append("--share-net")
        # No `--new-session`: the caller starts bwrap in a session of its own with no
        # controlling terminal (so no terminal to inject into), and the command stays in
        # bwrap's process group, which the caller kills whole on timeout.
        argv += ["--die-with-parent", "--cap-drop", "ALL", "--hostname", "sandbox"]
        argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path, kind in self._mounts():
            if kind == "hide" and path.is_dir():
                argv += ["--tmpfs", str(path)]
            elif kind == "hide":
                argv += ["--ro-bind", os.devnull, str(path)]
            else:
                argv += ["--bind" if kind == "rw" else "--ro-bind", str(path), str(path)]
        # bwrap sets PWD; `env -u PWD` takes it out again, so the command's environment is
        # exactly the one it was given.
        argv += ["--chdir", str(cwd), "--", shutil.which("env", path=FALLBACK_PATH) or "env"]
        argv += ["-u", "PWD", "--"]
        return argv

    def _mounts(self) -> list[tuple[Path, str]]:
        """Every mount, outer ones first so an inner one lands on top of the outer one; at one
        depth hiding comes first, then read-write, then read-only."""
        order = {"hide": 0, "rw": 1, "ro": 2}
        mounts = [(p, "hide") for p in self.hidden]
        mounts += [(p, "rw") for p in self.writable]
        mounts += [(p, "ro") for p in self.readable]
        return sorted(mounts, key=lambda mount: (len(mount[0].parts), order[mount[1]]))


def sandbox_program(environ: Mapping[str, str]) -> str:
    """The `bwrap` to run, after checking it can build a sandbox here; SandboxError saying what
    went wrong and how to fix it otherwise."""
    search = os.pathsep.join(p for p in (environ.get("PATH", ""), FALLBACK_PATH) if p)
    program = shutil.which(BWRAP, path=search)
    if program is None:
        raise SandboxError(
            f"the agent sandbox is on ({SANDBOX_VAR} is not 'off') but bubblewrap ({BWRAP}) "
            f"is not installed (looked on {search}): {HOW_TO_FIX}"
        )
    probe = Sandbox(program, hidden=tuple(Path(p) for p in PRIVATE_SYSTEM_DIRS))
    argv = [*probe.prefix(Path("/")), program, "--version"]
    try:
        done = subprocess.run(
            argv, capture_output=True, env={}, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(
            f"the agent sandbox could not start {program}: {exc}; {HOW_TO_FIX}"
        ) from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", errors="replace").strip() or f"exit {done.returncode}"
        raise SandboxError(
            f"the agent sandbox could not be built here ({program} said: {said}); Linux "
            f"namespaces may be unavailable (a container without them, or user namespaces "
            f"turned off): {HOW_TO_FIX}"
        )
    return program


def private_paths(orch_home: Path, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """What no sandboxed command may see: ORCH_HOME and the Dagster instance, the system's
    temporary and runtime directories, the orchestrator user's credential stores and the `.env`
    file the orchestrator may have been started with. Only paths that exist, resolved."""
    home = environ.get("HOME") or os.environ.get("HOME") or str(Path.home())
    candidates: list[Path] = [orch_home, *(Path(p) for p in PRIVATE_SYSTEM_DIRS)]
    if environ.get("DAGSTER_HOME"):
        candidates.append(Path(environ["DAGSTER_HOME"]))
    candidates += [Path(home) / name for name in HOME_CREDENTIALS]
    candidates += [Path.cwd() / name for name in ENV_FILES]
    return _existing(candidates)


def other_checkouts(repos: Iterable[str], *, own: str) -> tuple[Path, ...]:
    """The local repositories of the other projects (`repos`), to hide from a sandbox of the
    project whose repository is `own`. A path the sandbox needs is kept visible: one that holds
    this interpreter, its installation or this package (an orchestrator working on itself)."""
    own_path = None if is_remote_url(own) else Path(own).expanduser().resolve()
    needed = [
        *(path.resolve() for path in (Path(sys.prefix), Path(sys.base_prefix))),
        Path(sys.executable).parent.resolve(),
        Path(__file__).resolve().parents[2],  # the source of this package
    ]
    # Each path once, whatever the number of projects naming it: with thousands of projects,
    # resolving is most of a task's start.
    found: dict[Path, None] = {}
    for repo in dict.fromkeys(repos):
        if is_remote_url(repo):
            continue
        path = Path(repo).expanduser().resolve()
        if path in found or path == own_path or not path.is_dir():
            continue
        if any(need.is_relative_to(path) for need in needed):
            continue
        if own_path is not None and own_path.is_relative_to(path):
            continue
        found[path] = None
    return tuple(found)


def runtime_paths() -> tuple[Path, ...]:
    """What the commands the orchestrator starts need to read: this interpreter, its
    installation (the virtualenv) and this package's source."""
    return _existing(
        [
            Path(sys.prefix),
            Path(sys.base_prefix),
            Path(sys.executable).resolve().parent,
            Path(__file__).resolve().parents[2],
        ]
    )


def visible_again(hidden: Iterable[Path], *, network: bool) -> tuple[Path, ...]:
    """What lies under a hidden directory and is needed read-only: the interpreter, the
    virtualenv and this package (a checkout under /tmp, say), and the resolver configuration
    when the network is shared (`/etc/resolv.conf` often links into /run). Anything hidden
    deeper inside them (ORCH_HOME inside the checkout) stays hidden: deeper mounts come later."""
    hidden_dirs = [path for path in hidden if path.is_dir()]

    def under_hidden(path: Path) -> bool:
        return any(path.is_relative_to(directory) for directory in hidden_dirs)

    found = [path for path in runtime_paths() if under_hidden(path)]
    resolv = Path("/etc/resolv.conf").resolve()
    if network and resolv.is_file() and under_hidden(resolv):
        found.append(resolv)
    return tuple(found)


def _existing(paths: Sequence[Path]) -> tuple[Path, ...]:
    found: dict[Path, None] = {}
    for path in paths:
        if path.exists():
            found[path.resolve()] = None
    return tuple(found)
