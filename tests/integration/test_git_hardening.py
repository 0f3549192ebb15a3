"""The agent cannot make the orchestrator run code through git.

An agent can run git in its worktree: set `core.fsmonitor`, `core.hooksPath`, a `filter` driver
(with a `.gitattributes` naming it), `core.sshCommand` (with an ssh remote), drop hooks into the
clone, replace its worktree's `.git` file or point the worktree's `commondir` at a repository of
its own. Each marker command (`touch markers/<name>`) must never run during the orchestrator's
own git commands (add, commit, diff, fetch, worktree add and remove), in this task or the next.

With the sandbox on, the writes to the clone fail in the first place; with it off (the switch
exists), the git seam alone has to hold: pinned configuration, a scrubbed environment, the
repository located from paths recorded before the agent ran, and the clone's configuration
rewritten before use. Each attack is also shown to work against plain git, so the tests would
see a regression.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestration.registry import load_registry
from orchestration.settings import SANDBOX_VAR
from orchestration.tasks.execution import AGENT_IDENTITY, TaskOutcome, run_task
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.git import GitError, GitRepo
from orchestration.workspace.workspace import ProjectWorkspace
from tests.support.git import git_env
from tests.support.paths import FAKES_DIR, path_with_fakes
from tests.support.registry import RegistryDir

LOG = logging.getLogger("test_git_hardening")
HOSTILE = FAKES_DIR / "hostile_agent"
#: Hooks git may run during add, commit, ref updates and checkouts.
HOOKS = (
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "reference-transaction",
    "post-checkout",
    "post-index-change",
    "pre-auto-gc",
)
#: An ssh remote nobody answers on: an ssh command is only run when fetching from one.
SSH_REMOTE = "ssh://git@127.0.0.1:1/nowhere.git"


def attack_plans(markers: Path, clone: Path) -> dict[str, dict]:
    """What the hostile agent does for each attack (see tests/support/fakes/hostile_agent)."""

    def touch(name: str) -> str:
        return f"touch {markers / name}"

    def touch_ignoring_arguments(name: str) -> str:
        return f"{touch(name)} #"  # git appends its arguments to the command

    def hooks(prefix: str) -> dict[str, str]:
        return {f"{prefix}/{hook}": f"#!/bin/sh\n{touch(hook)}\n" for hook in HOOKS}

    work = {"work.txt": "the agent's work\n"}
    filter_config = [
        ["git", "config", "filter.evil.clean", f"{touch('filter-clean')}; cat"],
        ["git", "config", "filter.evil.smudge", f"{touch('filter-smudge')}; cat"],
        ["git", "config", "filter.evil.process", touch("filter-process")],
    ]
    return {
        "fsmonitor": {
            "files": work,
            "run": [["git", "config", "core.fsmonitor", touch_ignoring_arguments("fsmonitor")]],
        },
        "hooksPath": {
            "files": {**work, **hooks(".githooks")},
            "run": [["git", "config", "core.hooksPath", ".githooks"]],
        },
        "hooks_in_clone": {"files": {**work, **hooks(str(clone / "hooks"))}},
        "filter": {
            "files": {**work, ".gitattributes": "* filter=evil\n"},
            "run": filter_config,
        },
        "sshCommand": {
            "files": work,
            "run": [
                ["git", "config", "core.sshCommand", touch_ignoring_arguments("sshCommand")],
                ["git", "config", "remote.origin.url", SSH_REMOTE],
            ],
        },
        "dotgit": {  # a `.git` of its own, configured to run everything it can
            "files": {**work, ".gitattributes": "* filter=evil\n", **hooks("hooks")},
            "run": [
                ["rm", "-f", ".git"],
                ["git", "init", "-q"],
                ["git", "config", "core.fsmonitor", touch_ignoring_arguments("dotgit-fsm")],
                ["git", "config", "core.hooksPath", "hooks"],
                *filter_config,
            ],
        },
        "commondir": {  # the worktree's administrative `commondir` pointed at its own clone
            "files": {**work, ".gitattributes": "* filter=evil\n", **hooks("fake/hooks")},
            "run": [
                ["git", "init", "-q", "--bare", "fake"],
                [
                    "git",
                    "--git-dir=fake",
                    "config",
                    "core.fsmonitor",
                    touch("commondir-fsm") + " #",
                ],
                ["git", "--git-dir=fake", "config", "core.hooksPath", f"{markers}/none"],
                *[["git", "--git-dir=fake", *command[1:]] for command in filter_config],
                ["sh", "-c", 'echo "$PWD/fake" > "$(sed "s/^gitdir: //" .git)/commondir"'],
            ],
        },
    }


#: The attacks that write the clone's configuration or hooks (which the sandbox refuses).
WRITES_THE_CLONE = {"fsmonitor", "hooksPath", "hooks_in_clone", "filter", "sshCommand"}


@dataclass
class Bench:
    registry: RegistryDir
    markers: Path

    @property
    def home(self) -> Path:
        return self.registry.settings.home.resolve()

    @property
    def clone(self) -> Path:
        return self.home / "workspaces" / "alpha" / "repo.git"

    def store(self) -> TaskStore:
        return TaskStore.from_settings(self.registry.settings, environ={})

    def add(self, prompt: str, **kwargs: str) -> str:
        store = self.store()
        try:
            return store.add("alpha", prompt, **kwargs).id
        finally:
            store.dispose()

    def retry(self, task_id: str) -> None:
        store = self.store()
        try:
            store.retry(task_id)
        finally:
            store.dispose()

    def execute(self, task_id: str, run_id: str) -> TaskOutcome:
        settings = self.registry.settings
        store = self.store()
        try:
            return run_task(
                store=store,
                registry=load_registry(settings, environ={}),
                project="alpha",
                task_id=task_id,
                run_id=run_id,
                home=settings.home,
                parent_env=os.environ,
                log=LOG,
            )
        finally:
            store.dispose()

    def fired(self) -> list[str]:
        return sorted(os.listdir(self.markers))

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return GitRepo.private_clone(self.clone).is_ancestor(ancestor, descendant)

    def report(self) -> dict:
        return json.loads((self.home / "workspaces" / "alpha" / "home" / "attack.json").read_text())


@pytest.fixture
def bench(
    registry_dir: RegistryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bench]:
    registry_dir.add_profile("hostile", HOSTILE)
    registry_dir.use_in(monkeypatch)
    monkeypatch.setenv("PATH", path_with_fakes(os.environ["PATH"]))
    for name in ("ORCH_TASKS_DB_URL", SANDBOX_VAR, "FAKE_CLAUDE_LOG", "GIT_SSH_COMMAND", "GIT_SSH"):
        monkeypatch.delenv(name, raising=False)
    registry_dir.project("alpha", "agent:\n  profile: hostile\n")
    markers = tmp_path / "markers"
    markers.mkdir()
    yield Bench(registry_dir, markers)


@pytest.mark.parametrize("attack", sorted(attack_plans(Path("/m"), Path("/c"))))
@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_the_orchestrators_git_runs_nothing_an_agent_configured(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, attack: str, sandbox: str
) -> None:
    monkeypatch.setenv(SANDBOX_VAR, sandbox)
    plan = {"report": "attack", **attack_plans(bench.markers, bench.clone)[attack], "exit": 3}

    # The attack, then the orchestrator's add, commit, diff and worktree removal.
    task_id = bench.add(json.dumps(plan))
    first = bench.execute(task_id, "run-1")
    assert first.task.status is TaskStatus.FAILED and "status 3" in (first.task.reason or "")
    assert first.commit is not None  # the agent's work was committed all the same
    assert bench.fired() == []
    if sandbox == "on" and attack in WRITES_THE_CLONE:
        report = bench.report()
        refused = [r for r in report["run"] if r["argv"][:2] == ["git", "config"]]
        refused += [{"ok": f["ok"]} for n, f in report["files"].items() if n.startswith("/")]
        assert refused and not any(r["ok"] for r in refused), report

    # The same task again: fetch, a worktree of the branch holding the agent's files, the
    # attack once more, add and commit.
    bench.retry(task_id)
    second = bench.execute(task_id, "run-2")
    assert second.task.status is TaskStatus.FAILED
    assert second.base == first.base  # the task's change still counts from where it began
    assert first.commit is not None and second.commit is not None
    assert bench.is_ancestor(first.commit, second.commit)  # it went on from the first attempt
    assert bench.fired() == []

    # The next task, a benign agent.
    nxt = bench.execute(bench.add("next\nWRITE next.txt n", profile="claude_code"), "run-3")
    assert nxt.task.status is TaskStatus.SUCCEEDED, nxt.task.reason
    assert bench.fired() == []
    config = (bench.clone / "config").read_text()
    assert "touch" not in config and SSH_REMOTE not in config


# --- the git seam alone, on a clone an agent has written to ----------------------------------


def _plain_git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as a user runs it (no pinning): the control that shows an attack works."""
    env = git_env(cwd) | {"PATH": os.environ["PATH"]}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture
def worktree(bench: Bench) -> Iterator[tuple[ProjectWorkspace, GitRepo]]:
    registry = load_registry(bench.registry.settings, environ={})
    workspace = ProjectWorkspace(bench.home, registry.project("alpha").spec)
    tree, _ = workspace.open_task_worktree("T0000000001")
    yield workspace, tree
    workspace.close_task_worktree("T0000000001")


def _configure(clone: Path, *pairs: tuple[str, str]) -> None:
    for key, value in pairs:
        done = _plain_git(clone, "config", key, value)
        assert done.returncode == 0, done.stderr


def test_pinned_fsmonitor_and_hooks_are_never_run(
    bench: Bench, worktree: tuple[ProjectWorkspace, GitRepo]
) -> None:
    _, tree = worktree
    hooks = bench.markers.parent / "hooks"
    hooks.mkdir()
    for hook in HOOKS:
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {bench.markers / hook}\n")
        (hooks / hook).chmod(0o755)
    _configure(
        bench.clone,
        ("core.fsmonitor", f"touch {bench.markers / 'fsmonitor'} #"),
        ("core.hooksPath", str(hooks)),
    )
    (tree.path / "work.txt").write_text("work\n")
    assert _plain_git(tree.path, "add", "--all").returncode == 0  # the control
    assert "fsmonitor" in bench.fired() and "post-index-change" in bench.fired()
    for marker in bench.markers.iterdir():
        marker.unlink()

    base = tree.resolve("HEAD")
    commit = tree.commit_all("work", author=AGENT_IDENTITY)
    assert commit is not None and base is not None
    assert tree.diff_stats(base, commit).files_changed == 1
    assert bench.fired() == []


def test_a_pinned_ssh_command_is_never_run(bench: Bench, worktree: object) -> None:
    _configure(
        bench.clone,
        ("core.sshCommand", f"touch {bench.markers / 'ssh'}; false"),
        ("remote.origin.url", SSH_REMOTE),
    )
    assert _plain_git(bench.clone, "fetch", "origin").returncode != 0  # the control
    assert bench.fired() == ["ssh"]
    (bench.markers / "ssh").unlink()

    with pytest.raises(GitError, match="fetch"):
        GitRepo.private_clone(bench.clone).fetch()
    assert bench.fired() == []


def test_the_clone_config_is_rewritten_before_git_reads_it(
    bench: Bench, worktree: tuple[ProjectWorkspace, GitRepo]
) -> None:
    """A filter driver can only be defined in configuration: it is gone before add and commit.
    So are an `include` of a file the agent controls and alternate object stores."""
    workspace, tree = worktree
    (bench.markers.parent / "included").write_text(
        f"[core]\n\tfsmonitor = touch {bench.markers / 'included'} #\n"
    )
    _configure(
        bench.clone,
        ("filter.evil.clean", f"touch {bench.markers / 'clean'}; cat"),
        ("include.path", str(bench.markers.parent / "included")),
    )
    (bench.clone / "objects" / "info" / "alternates").write_text(str(bench.markers.parent))
    (tree.path / ".gitattributes").write_text("* filter=evil\n")
    (tree.path / "work.txt").write_text("work\n")
    assert _plain_git(tree.path, "add", "--all").returncode == 0  # the control
    assert "clean" in bench.fired() and "included" in bench.fired()
    _plain_git(tree.path, "reset", "-q")
    for marker in bench.markers.iterdir():
        marker.unlink()
    # With per-worktree configuration on, git would read the agent's `config.worktree` too.
    _configure(bench.clone, ("extensions.worktreeConfig", "true"))

    workspace.restore_clone_config()
    assert tree.commit_all("work", author=AGENT_IDENTITY) is not None
    assert bench.fired() == []
    assert not (bench.clone / "objects" / "info" / "alternates").exists()
    config = _plain_git(bench.clone, "config", "--list", "--local").stdout
    assert "filter.evil" not in config and "include" not in config
    assert "worktreeconfig" not in config.lower()
    assert f"remote.origin.url={workspace.spec.repo}" in config


def test_git_gets_no_secret_of_the_orchestrators_environment(
    bench: Bench, worktree: tuple[ProjectWorkspace, GitRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a hook to run after all, it would see no project's secret."""
    _, tree = worktree
    monkeypatch.setenv("SECRET_B", "value-b")
    monkeypatch.setenv("GIT_DIR", "/somewhere/else")  # the orchestrator's own stray settings
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.fsmonitor'='touch /tmp/x'")
    seen = tree.run("var", "GIT_EDITOR", what="read git's view")
    assert seen == ":"  # the pinned editor, not the repository's
    env_dump = GitRepo(tree.path).run(
        "-c", "alias.env=!env", "env", what="print the environment git gives a program"
    )
    assert "value-b" not in env_dump and "/somewhere/else" not in env_dump


def test_links_the_agent_planted_lead_nowhere_outside_its_sandbox(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent points the reflogs git appends to on commit at a file of the host's. The
    orchestrator's own git commands on the agent's work run in the sandbox too, where that
    file is not there: the commit may fail (the agent spoilt its own task), the file is
    untouched."""
    monkeypatch.setenv(SANDBOX_VAR, "on")
    victim = bench.markers.parent / "victim.txt"
    victim.write_text("the host's file\n")
    branch_log = bench.clone / "logs" / "refs" / "heads" / "orch" / "alpha"
    plant = (
        f'mkdir -p {branch_log} && ln -sf {victim} "{branch_log}/$(basename "$PWD")" && '
        f'ln -sf {victim} "$(sed "s/^gitdir: //" .git)/logs/HEAD"'
    )
    plan = {"report": "attack", "files": {"work.txt": "w\n"}, "run": [["sh", "-c", plant]]}
    task_id = bench.add(json.dumps(plan))
    try:
        bench.execute(task_id, "run-1")
    except GitError as exc:
        assert "commit" in str(exc) or "stage" in str(exc)
    assert all(r["ok"] for r in bench.report()["run"]), bench.report()["run"]
    assert victim.read_text() == "the host's file\n"
