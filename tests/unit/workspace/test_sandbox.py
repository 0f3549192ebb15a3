"""The sandbox's building blocks against the real bubblewrap: the mounts it asks for, what it
hides, the environment inside, and the errors that say how to fix a machine without it."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from orchestration.process import run_process
from orchestration.workspace import sandbox as sandbox_module
from orchestration.workspace.sandbox import (
    HOME_CREDENTIALS,
    Sandbox,
    SandboxError,
    other_checkouts,
    private_paths,
    sandbox_program,
    visible_again,
)
from tests.support.paths import FAKES_DIR, REPO_ROOT


@pytest.fixture
def bwrap() -> str:
    return sandbox_program(os.environ)


def _mount_options(argv: list[str]) -> list[tuple[str, str]]:
    """(option, path) of each mount after the fixed ones, in order."""
    options = {"--tmpfs": 1, "--bind": 2, "--ro-bind": 2}
    found, index = [], argv.index("/proc") + 1
    while argv[index] in options:
        found.append((argv[index], argv[index + options[argv[index]]]))
        index += options[argv[index]] + 1
    return found


def test_outer_mounts_come_first_so_inner_ones_land_on_top(tmp_path: Path) -> None:
    home = tmp_path / "orch"
    clone = home / "workspaces" / "p" / "repo.git"
    (clone / "objects" / "info").mkdir(parents=True)
    secret = tmp_path / "secret.env"
    secret.write_text("X=1\n")
    sandbox = Sandbox(
        "bwrap",
        hidden=(secret, home),
        writable=(clone / "objects",),
        readable=(clone / "objects" / "info", clone),
    )
    assert _mount_options(sandbox.prefix(tmp_path)) == [
        ("--ro-bind", str(secret)),  # a hidden file: /dev/null bound over it
        ("--tmpfs", str(home)),
        ("--ro-bind", str(clone)),
        ("--bind", str(clone / "objects")),
        ("--ro-bind", str(clone / "objects" / "info")),
    ]
    argv = sandbox.prefix(tmp_path)
    assert argv[argv.index("--ro-bind") + 1] == "/"  # the whole system, read-only, first
    assert argv[-5:] == ["--", argv[-4], "-u", "PWD", "--"]


def test_network_is_shared_only_when_asked(tmp_path: Path) -> None:
    assert "--share-net" in Sandbox("bwrap").prefix(tmp_path)
    offline = Sandbox("bwrap", network=False).prefix(tmp_path)
    assert "--share-net" not in offline and "--unshare-all" in offline
    assert offline[offline.index("--cap-drop") + 1] == "ALL"
    assert "--die-with-parent" in offline


def test_private_paths_hide_state_credentials_and_env_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_home, start, orch_home, dagster = (tmp_path / n for n in ("user", "start", "orch", "dg"))
    for path in (user_home / ".ssh", start, orch_home, dagster):
        path.mkdir(parents=True)
    (user_home / ".netrc").write_text("machine x password y\n")
    (start / ".env").write_text("SECRET_B=value-b\n")
    monkeypatch.chdir(start)
    hidden = private_paths(orch_home, {"HOME": str(user_home), "DAGSTER_HOME": str(dagster)})
    assert {orch_home, dagster, user_home / ".ssh", user_home / ".netrc", start / ".env"} <= set(
        hidden
    )
    assert Path("/tmp") in hidden
    assert all(path.exists() for path in hidden)  # what is not there needs no hiding
    assert user_home / ".aws" not in hidden and ".aws" in HOME_CREDENTIALS


def test_the_resolver_stays_readable_when_the_network_is_on() -> None:
    resolv = Path("/etc/resolv.conf").resolve()
    if not resolv.is_file():
        pytest.skip("no /etc/resolv.conf here")
    hidden = (resolv.parent,)
    assert visible_again(hidden, network=True) == (resolv,)
    assert visible_again(hidden, network=False) == ()


def test_the_environment_inside_is_exactly_the_one_given(bwrap: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    wrapper = Sandbox(bwrap).prefix(Path("/"))
    result = run_process(["env"], cwd=Path("/"), env=env, timeout_s=30, wrapper=wrapper)
    assert result.ok, result.tail()
    assert dict(line.split("=", 1) for line in result.stdout.splitlines()) == env


def test_only_writable_paths_take_writes(bwrap: str, tmp_path: Path) -> None:
    writable, readonly = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    readonly.mkdir()
    script = f"echo ok > {writable}/a && ! echo no 2>/dev/null > {readonly}/b"
    result = run_process(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout_s=30,
        wrapper=Sandbox(bwrap, writable=(writable,)).prefix(tmp_path),
    )
    assert result.ok, result.tail()
    assert (writable / "a").read_text() == "ok\n"
    assert not (readonly / "b").exists()


def test_tmp_is_private(bwrap: str) -> None:
    host_file = Path("/tmp") / f"sandbox-test-{uuid.uuid4().hex}"
    script = f'test -z "$(ls -A /tmp)" && echo private > {host_file} && cat {host_file}'
    result = run_process(
        ["sh", "-c", script],
        cwd=Path("/"),
        env={"PATH": "/usr/bin:/bin"},
        timeout_s=30,
        wrapper=Sandbox(bwrap, hidden=(Path("/tmp"),)).prefix(Path("/")),
    )
    assert result.ok, result.tail()
    assert result.stdout == "private\n"
    assert not host_file.exists()


def test_a_missing_bwrap_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "FALLBACK_PATH", str(tmp_path))
    with pytest.raises(SandboxError) as caught:
        sandbox_program({"PATH": str(tmp_path)})
    message = str(caught.value)
    assert "bubblewrap" in message and "apt-get install bubblewrap" in message
    assert "ORCH_SANDBOX=off" in message


def test_refused_namespaces_are_reported_with_bwraps_words() -> None:
    with pytest.raises(SandboxError) as caught:
        sandbox_program({"PATH": str(FAKES_DIR / "no_namespaces")})
    message = str(caught.value)
    assert "does not allow non-privileged user namespaces" in message
    assert "ORCH_SANDBOX=off" in message


def test_other_projects_checkouts_are_hidden_but_not_what_the_sandbox_needs(
    tmp_path: Path,
) -> None:
    own, other, gone = tmp_path / "own", tmp_path / "other", tmp_path / "gone"
    own.mkdir()
    other.mkdir()
    repos = [
        str(other),
        str(own),  # a second project on the same repository
        str(gone),  # not there: nothing to hide
        "https://example.invalid/x.git",  # remote: nothing on this machine
        str(REPO_ROOT),  # holds this package (an orchestrator working on itself)
        "/",  # holds everything
    ]
    assert other_checkouts(repos, own=str(own)) == (other.resolve(),)
    assert other_checkouts([str(tmp_path)], own=str(own)) == ()  # holds the project's own


def test_a_checkout_many_projects_share_is_hidden_once(tmp_path: Path) -> None:
    own, shared, other = tmp_path / "own", tmp_path / "shared", tmp_path / "other"
    for path in (own, shared, other):
        path.mkdir()
    (tmp_path / "link").symlink_to(shared)
    repos = [str(shared)] * 500 + [str(other), str(tmp_path / "link"), f"{shared}/."]

    assert other_checkouts(repos, own=str(own)) == (shared.resolve(), other.resolve())


def test_the_interpreter_and_this_package_stay_readable_under_a_hidden_directory() -> None:
    """A checkout (and its virtualenv) under /tmp, which every sandbox hides: the agents and
    verify commands the orchestrator starts still find their interpreter and this package."""
    import orchestration

    package_root = Path(orchestration.__file__).resolve().parents[1]
    hidden = (Path(sys.prefix).resolve().parent, package_root.parent)
    again = visible_again(hidden, network=False)
    assert Path(sys.prefix).resolve() in again
    assert package_root in again
    assert visible_again((Path("/nonexistent-hidden"),), network=False) == ()
