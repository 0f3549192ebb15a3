"""Getting an agent's work out: a task's patch read from the private clone, its branch delivered
into the user's repository or pushed to a remote (never by force), the transcript of what the
agent printed, and the `orch task diff | log | deliver` commands. Real git repositories in
temporary directories and the real SQLite task store; the task's work is committed the way
execution commits it (its own worktree and branch in the private clone)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestration.agents.invocation import AgentRequest, run_agent
from orchestration.agents.result import AgentResult, AgentStatus
from orchestration.cli import main
from orchestration.delivery.deliver import DeliveryError, deliver, deliver_task, task_diff
from orchestration.delivery.transcript import (
    TRANSCRIPT_CAP_BYTES,
    append_transcript,
    read_transcript,
    transcript_path,
)
from orchestration.registry.models import AgentProfile, ProjectSpec
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.store import TaskStore
from orchestration.workspace.isolation import IsolationError
from orchestration.workspace.workspace import ProjectWorkspace
from tests.support.git import commit, git
from tests.support.registry import RegistryDir

AUTHOR = ("Agent", "agent@example.invalid")


@dataclass
class Setup:
    """A registry with one project, its user repository, the task store and ORCH_HOME."""

    registry: RegistryDir
    store: TaskStore

    @property
    def home(self) -> Path:
        return self.registry.settings.home

    def spec(self, name: str = "alpha") -> ProjectSpec:
        return self.registry.load().project(name).spec

    def user_repo(self, name: str = "alpha") -> Path:
        return self.registry.root / "repos" / name

    def run_task(
        self,
        files: dict[str, str],
        *,
        project: str = "alpha",
        task: Task | None = None,
        status: TaskStatus = TaskStatus.SUCCEEDED,
    ) -> Task:
        """Carry out a task (a new one, or the failed `task` again) the way execution does: its
        worktree and branch in the private clone, `files` written and committed, the outcome
        (`status`) recorded."""
        spec = self.spec(project)
        if task is None:
            added = self.store.add(project, "change things")
            assert added is not None
            task = added
        else:
            self.store.retry(task.id)
        assert self.store.mark_dispatched(task.id)
        self.store.claim(task.id, f"run-{task.attempts + 1}")
        workspace = ProjectWorkspace(self.home, spec)
        tree, base = workspace.open_task_worktree(task.id)
        for name, text in files.items():
            (Path(tree.path) / name).write_text(text, encoding="utf-8")
        sha = tree.commit_all("agent work", author=AUTHOR)
        workspace.close_task_worktree(task.id)
        return self.store.finish(
            task.id,
            status,
            branch=workspace.task_branch(task.id),
            commit=sha,
            extra={"base": base},
        )


@pytest.fixture
def setup(registry_dir: RegistryDir) -> Iterator[Setup]:
    registry_dir.project("alpha")
    store = TaskStore.from_settings(registry_dir.settings, environ={})
    yield Setup(registry_dir, store)
    store.dispose()


def branch_of(task: Task) -> str:
    return f"orch/{task.project}/{task.id}"


def sha_in(repo: Path, ref: str) -> str | None:
    """The commit `ref` names in `repo`, None when it does not exist."""
    found = git(repo, "for-each-ref", "--format=%(objectname)", ref)
    return found or None


def bare_remote(path: Path, source: Path) -> Path:
    """A bare repository at `path` holding `source`'s main branch."""
    git(path.parent, "init", "-q", "--bare", str(path))
    git(source, "push", "-q", str(path), "main:refs/heads/main")
    return path


# --- task_diff --------------------------------------------------------------------------------


def test_the_diff_is_the_task_change_as_a_patch_and_as_a_stat(setup: Setup) -> None:
    task = setup.run_task({"feature.py": "print('hello')\n", "README.md": "alpha, changed\n"})
    patch = task_diff(setup.home, setup.spec(), task)
    assert "diff --git a/feature.py b/feature.py" in patch
    assert "+print('hello')" in patch
    assert "-alpha" in patch and "+alpha, changed" in patch
    stat = task_diff(setup.home, setup.spec(), task, stat=True)
    assert "feature.py" in stat and "README.md" in stat
    assert "2 files changed" in stat and "diff --git" not in stat
    # The patch applies to the user's repository as it was when the task started.
    user = setup.user_repo()
    git(user, "apply", "--check", stdin=(patch + "\n").encode())


def test_the_diff_without_a_recorded_base_starts_where_the_work_left_the_branch(
    setup: Setup,
) -> None:
    task = setup.run_task({"feature.py": "x = 1\n"})
    task = replace(task, extra={})  # recorded before tasks kept their starting commit
    patch = task_diff(setup.home, setup.spec(), task)
    assert "+x = 1" in patch and "README.md" not in patch


def test_the_diff_of_a_task_that_never_ran_says_so(setup: Setup) -> None:
    task = setup.store.add("alpha", "not yet")
    assert task is not None
    with pytest.raises(DeliveryError, match="has not run"):
        task_diff(setup.home, setup.spec(), task)


# --- deliver to the user's repository -----------------------------------------------------------


def test_local_delivery_adds_the_branch_and_leaves_head_index_and_files_alone(
    setup: Setup,
) -> None:
    user = setup.user_repo()
    task = setup.run_task({"feature.py": "print('hello')\n"})
    # The user is in the middle of something: a staged change and an unsaved one.
    (user / "staged.txt").write_text("staged\n", encoding="utf-8")
    git(user, "add", "staged.txt")
    (user / "README.md").write_text("my own edit\n", encoding="utf-8")
    head = git(user, "rev-parse", "HEAD")
    index = (user / ".git" / "index").read_bytes()
    status = git(user, "status", "--porcelain")

    description = deliver(setup.home, setup.spec(), task, "local")

    assert sha_in(user, f"refs/heads/{branch_of(task)}") == task.commit
    assert description.startswith(f"fetched {branch_of(task)} into {user}")
    assert git(user, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(user, "rev-parse", "HEAD") == head
    assert (user / ".git" / "index").read_bytes() == index
    assert (user / "README.md").read_text(encoding="utf-8") == "my own edit\n"
    assert not (user / "feature.py").exists()
    assert git(user, "status", "--porcelain") == status
    assert not (user / ".git" / "FETCH_HEAD").exists()


def test_delivering_twice_does_nothing_the_second_time_and_a_new_attempt_moves_on(
    setup: Setup,
) -> None:
    user = setup.user_repo()
    task = setup.run_task({"feature.py": "one\n"}, status=TaskStatus.FAILED)
    deliver(setup.home, setup.spec(), task, "local")
    again = deliver(setup.home, setup.spec(), task, "local")
    assert "nothing to do" in again
    assert sha_in(user, f"refs/heads/{branch_of(task)}") == task.commit

    retried = setup.run_task({"feature.py": "two\n"}, task=task)
    assert retried.commit != task.commit
    clone = ProjectWorkspace(setup.home, setup.spec()).clone_path
    assert sha_in(clone, f"refs/heads/{branch_of(task)}") == retried.commit  # the branch moved
    moved = deliver(setup.home, setup.spec(), retried, "local")
    assert "nothing to do" not in moved
    assert sha_in(user, f"refs/heads/{branch_of(task)}") == retried.commit


def test_a_branch_of_that_name_with_other_commits_is_refused_and_left_alone(
    setup: Setup,
) -> None:
    user = setup.user_repo()
    task = setup.run_task({"feature.py": "agent\n"})
    git(user, "checkout", "-q", "-b", branch_of(task))
    theirs = commit(user, {"mine.txt": "the user's\n"}, message="the user's own")
    git(user, "checkout", "-q", "main")

    with pytest.raises(DeliveryError) as caught:
        deliver(setup.home, setup.spec(), task, "local")

    message = str(caught.value)
    assert theirs in message and str(task.commit) in message
    assert sha_in(user, f"refs/heads/{branch_of(task)}") == theirs


def test_a_checked_out_branch_is_not_moved_and_the_error_says_why(setup: Setup) -> None:
    user = setup.user_repo()
    task = setup.run_task({"feature.py": "one\n"}, status=TaskStatus.FAILED)
    deliver(setup.home, setup.spec(), task, "local")
    git(user, "checkout", "-q", branch_of(task))
    retried = setup.run_task({"feature.py": "two\n"}, task=task)

    with pytest.raises(DeliveryError, match="is checked out in") as caught:
        deliver(setup.home, setup.spec(), retried, "local")

    assert "switch to another branch" in str(caught.value)
    assert sha_in(user, f"refs/heads/{branch_of(task)}") == task.commit
    assert (user / "feature.py").read_text(encoding="utf-8") == "one\n"
    git(user, "checkout", "-q", "main")
    deliver(setup.home, setup.spec(), retried, "local")
    assert sha_in(user, f"refs/heads/{branch_of(task)}") == retried.commit


def test_a_remote_project_cannot_be_delivered_locally(setup: Setup, tmp_path: Path) -> None:
    remote = bare_remote(tmp_path / "remote.git", setup.user_repo())
    setup.registry.project("beta", repo=f"file://{remote}")
    task = setup.run_task({"feature.py": "x\n"}, project="beta")
    with pytest.raises(DeliveryError, match="--to origin"):
        deliver(setup.home, setup.spec("beta"), task, "local")


def test_an_unknown_target_is_refused(setup: Setup) -> None:
    task = setup.run_task({"feature.py": "x\n"})
    with pytest.raises(DeliveryError, match="local, origin"):
        deliver(setup.home, setup.spec(), task, "--force")


# --- deliver to the remote -----------------------------------------------------------------------


def test_origin_delivery_pushes_to_the_user_repository_origin(setup: Setup, tmp_path: Path) -> None:
    user = setup.user_repo()
    remote = bare_remote(tmp_path / "remote.git", user)
    git(user, "remote", "add", "origin", str(remote))
    task = setup.run_task({"feature.py": "x\n"})

    description = deliver(setup.home, setup.spec(), task, "origin")

    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == task.commit
    assert description.startswith(f"pushed {branch_of(task)} to {remote}")
    assert sha_in(user, f"refs/heads/{branch_of(task)}") is None  # nothing local
    assert "nothing to do" in deliver(setup.home, setup.spec(), task, "origin")


def test_origin_delivery_of_a_relative_origin_path(setup: Setup, tmp_path: Path) -> None:
    user = setup.user_repo()
    remote = bare_remote(tmp_path / "remote.git", user)
    git(user, "remote", "add", "origin", "../../remote.git")
    assert (user / "../../remote.git").resolve() == remote.resolve()
    task = setup.run_task({"feature.py": "x\n"})
    deliver(setup.home, setup.spec(), task, "origin")
    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == task.commit


def test_origin_delivery_of_a_project_whose_repo_is_a_url(setup: Setup, tmp_path: Path) -> None:
    remote = bare_remote(tmp_path / "remote.git", setup.user_repo())
    setup.registry.project("beta", repo=f"file://{remote}")
    task = setup.run_task({"feature.py": "x\n"}, project="beta")

    deliver(setup.home, setup.spec("beta"), task, "origin")

    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == task.commit
    assert sha_in(remote, "refs/heads/main") == git(setup.user_repo(), "rev-parse", "main")


def test_origin_delivery_refuses_a_remote_branch_with_other_commits(
    setup: Setup, tmp_path: Path
) -> None:
    user = setup.user_repo()
    remote = bare_remote(tmp_path / "remote.git", user)
    git(user, "remote", "add", "origin", str(remote))
    task = setup.run_task({"feature.py": "agent\n"})
    git(user, "checkout", "-q", "-b", "elsewhere")
    theirs = commit(user, {"other.txt": "someone else\n"}, message="someone else's")
    git(user, "push", "-q", "origin", f"elsewhere:refs/heads/{branch_of(task)}")

    with pytest.raises(DeliveryError) as caught:
        deliver(setup.home, setup.spec(), task, "origin")

    assert theirs in str(caught.value) and str(task.commit) in str(caught.value)
    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == theirs


def test_origin_delivery_moves_a_remote_branch_forward(setup: Setup, tmp_path: Path) -> None:
    user = setup.user_repo()
    remote = bare_remote(tmp_path / "remote.git", user)
    git(user, "remote", "add", "origin", str(remote))
    task = setup.run_task({"feature.py": "one\n"}, status=TaskStatus.FAILED)
    deliver(setup.home, setup.spec(), task, "origin")
    retried = setup.run_task({"feature.py": "two\n"}, task=task)
    assert "from " in deliver(setup.home, setup.spec(), retried, "origin")
    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == retried.commit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("--upload-pack=touch /tmp/owned", "looks like a git option"),
        ("-oProxyCommand=touch owned", "looks like a git option"),
        ("ext::sh -c touch% owned", "runs a helper program"),
    ],
)
def test_an_origin_url_git_would_misread_is_refused(setup: Setup, url: str, expected: str) -> None:
    user = setup.user_repo()
    git(user, "config", "remote.origin.url", url)
    task = setup.run_task({"feature.py": "x\n"})
    with pytest.raises(DeliveryError, match=expected):
        deliver(setup.home, setup.spec(), task, "origin")


def test_a_password_in_the_remote_url_never_reaches_the_error(setup: Setup, tmp_path: Path) -> None:
    remote = bare_remote(tmp_path / "remote.git", setup.user_repo())
    setup.registry.project("beta", repo=f"file://{remote}")
    task = setup.run_task({"feature.py": "x\n"}, project="beta")
    unreachable = setup.spec("beta").model_copy(
        update={"repo": "https://someone:s3cr3t@127.0.0.1:9/beta.git"}
    )
    with pytest.raises(DeliveryError) as caught:
        deliver(setup.home, unreachable, task, "origin")
    assert "s3cr3t" not in str(caught.value) and "someone:***@127.0.0.1" in str(caught.value)


def test_origin_delivery_without_an_origin_remote_says_what_to_do(setup: Setup) -> None:
    task = setup.run_task({"feature.py": "x\n"})
    with pytest.raises(DeliveryError, match="has no `origin` remote"):
        deliver(setup.home, setup.spec(), task, "origin")


# --- recording ---------------------------------------------------------------------------------


def test_deliver_task_records_success_and_failure(setup: Setup) -> None:
    task = setup.run_task({"feature.py": "x\n"})
    said: list[str] = []
    delivered = deliver_task(
        setup.store, setup.home, setup.spec(), task, "local", report=said.append
    )
    assert delivered.delivered_to == "local" and delivered.delivered_at is not None
    assert delivered.delivery_error is None
    assert said and said[0].startswith("fetched")

    with pytest.raises(DeliveryError, match="no `origin` remote"):
        deliver_task(setup.store, setup.home, setup.spec(), task, "origin")
    recorded = setup.store.require(task.id)
    assert recorded.delivery_error is not None and "no `origin` remote" in recorded.delivery_error
    assert recorded.delivered_to == "local"  # the earlier delivery stays recorded


# --- the commands ------------------------------------------------------------------------------

Invoke = Callable[..., Result]


@pytest.fixture
def orch(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    setup.registry.use_in(monkeypatch)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_task_diff_prints_the_patch_and_the_stat(setup: Setup, orch: Invoke) -> None:
    task = setup.run_task({"feature.py": "print('hello')\n"})
    patch = orch("task", "diff", task.id)
    assert patch.exit_code == 0, patch.output
    assert "+print('hello')" in patch.stdout and patch.stdout.endswith("\n")
    git(setup.user_repo(), "apply", "--check", stdin=patch.stdout_bytes)
    stat = orch("task", "diff", task.id, "--stat")
    assert stat.exit_code == 0 and "feature.py" in stat.stdout and "+print" not in stat.stdout


def test_task_diff_of_a_task_that_changed_nothing_says_so(setup: Setup, orch: Invoke) -> None:
    task = setup.run_task({})
    assert task.commit is None
    assert task_diff(setup.home, setup.spec(), task) == ""
    result = orch("task", "diff", task.id)
    assert result.exit_code == 0 and result.stdout == ""
    assert f"task {task.id} changed nothing" in result.stderr


def test_task_diff_of_an_unknown_or_unrun_task_fails(setup: Setup, orch: Invoke) -> None:
    unknown = orch("task", "diff", "t0000000000zz")
    assert unknown.exit_code == 1 and "error: no task with id 't0000000000zz'" in unknown.stderr
    queued = setup.store.add("alpha", "later")
    assert queued is not None
    result = orch("task", "diff", queued.id)
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "has not run" in result.stderr


def test_task_log_prints_the_transcript(setup: Setup, orch: Invoke) -> None:
    task = setup.run_task({"feature.py": "x\n"})
    missing = orch("task", "log", task.id)
    assert missing.exit_code == 1 and "no transcript kept for task" in missing.stderr
    append_transcript(
        setup.home, "alpha", task.id, header="=== attempt 1 ===", text="I changed feature.py\n"
    )
    shown = orch("task", "log", task.id)
    assert shown.exit_code == 0
    assert shown.stdout == "=== attempt 1 ===\nI changed feature.py\n"


def test_task_deliver_records_what_task_show_prints(setup: Setup, orch: Invoke) -> None:
    task = setup.run_task({"feature.py": "x\n"})
    done = orch("task", "deliver", task.id)  # the project's `deliver` is none: local
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"fetched {branch_of(task)}")
    assert sha_in(setup.user_repo(), f"refs/heads/{branch_of(task)}") == task.commit
    shown = json.loads(orch("task", "show", task.id, "--json").stdout)
    assert shown["delivered_to"] == "local" and shown["delivered_at"]
    assert shown["delivery_error"] is None
    text = orch("task", "show", task.id).stdout
    assert "delivered_to:   local" in text and "delivered_at:" in text

    failed = orch("task", "deliver", task.id, "--to", "origin")
    assert failed.exit_code == 1
    assert "error:" in failed.stderr and "no `origin` remote" in failed.stderr
    shown = json.loads(orch("task", "show", task.id, "--json").stdout)
    assert "no `origin` remote" in shown["delivery_error"]
    assert shown["delivered_to"] == "local"
    assert "delivery_error:" in orch("task", "show", task.id).stdout


def test_task_deliver_defaults_to_the_project_deliver_key(
    setup: Setup, orch: Invoke, tmp_path: Path
) -> None:
    remote = bare_remote(tmp_path / "remote.git", setup.user_repo())
    setup.registry.project("beta", "deliver: origin\n", repo=f"file://{remote}")
    task = setup.run_task({"feature.py": "x\n"}, project="beta")
    done = orch("task", "deliver", task.id)
    assert done.exit_code == 0, done.output
    assert sha_in(remote, f"refs/heads/{branch_of(task)}") == task.commit
    assert setup.store.require(task.id).delivered_to == "origin"


def test_task_deliver_of_an_unknown_task_fails(orch: Invoke) -> None:
    result = orch("task", "deliver", "t0000000000zz")
    assert result.exit_code == 1 and "no task with id" in result.stderr


# --- transcripts --------------------------------------------------------------------------------


def test_transcript_sections_are_appended_and_read_back(tmp_path: Path) -> None:
    assert read_transcript(tmp_path, "alpha", "t1") is None
    path = append_transcript(tmp_path, "alpha", "t1", header="=== attempt 1 ===", text="one")
    append_transcript(tmp_path, "alpha", "t1", header="=== attempt 2 ===\nsneaky", text="two\n")
    assert path == tmp_path.resolve() / "workspaces" / "alpha" / "logs" / "t1.log"
    assert path == transcript_path(tmp_path, "alpha", "t1")
    assert read_transcript(tmp_path, "alpha", "t1") == (
        "=== attempt 1 ===\none\n\n=== attempt 2 === sneaky\ntwo\n"
    )
    assert [p.name for p in path.parent.iterdir()] == ["t1.log"]  # no scratch file left


@pytest.mark.parametrize(("project", "task_id"), [("alpha", "../t1"), ("../alpha", "t1")])
def test_a_transcript_never_leaves_its_project_directory(
    tmp_path: Path, project: str, task_id: str
) -> None:
    with pytest.raises(IsolationError):
        transcript_path(tmp_path, project, task_id)


def test_a_transcript_is_capped_keeping_its_first_header_and_its_end(tmp_path: Path) -> None:
    line = "0123456789abcdef" * 4 + "\n"  # 65 bytes
    first = line * (TRANSCRIPT_CAP_BYTES // len(line) // 2)
    append_transcript(tmp_path, "alpha", "t1", header="=== attempt 1 ===", text=first)
    append_transcript(tmp_path, "alpha", "t1", header="=== attempt 2 ===", text=first + "END 2\n")
    path = transcript_path(tmp_path, "alpha", "t1")
    assert path.stat().st_size <= TRANSCRIPT_CAP_BYTES
    text = read_transcript(tmp_path, "alpha", "t1")
    assert text is not None and "bytes cut" not in text  # both fit

    append_transcript(tmp_path, "alpha", "t1", header="=== attempt 3 ===", text=first + "END 3\n")
    size = path.stat().st_size
    assert TRANSCRIPT_CAP_BYTES - 200 <= size <= TRANSCRIPT_CAP_BYTES
    text = read_transcript(tmp_path, "alpha", "t1")
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "=== attempt 1 ==="
    assert lines[1].startswith("[... ") and "earlier bytes cut" in lines[1]
    cut_once = int(lines[1].split()[1])
    assert lines[2] == line.strip()  # the cut ends at a line
    assert "=== attempt 3 ===" in lines and text.endswith("END 3\n")
    assert "END 2" in text  # only the oldest bytes went

    huge = "x" * (TRANSCRIPT_CAP_BYTES + 10)  # one line longer than the cap
    append_transcript(tmp_path, "alpha", "t1", header="=== attempt 4 ===", text=huge)
    assert path.stat().st_size <= TRANSCRIPT_CAP_BYTES
    lines = (read_transcript(tmp_path, "alpha", "t1") or "").splitlines()
    assert lines[0] == "=== attempt 1 ===" and len(lines) == 3
    assert int(lines[1].split()[1]) > cut_once  # the note counts every cut
    assert set(lines[2]) == {"x"}


# --- what the agent printed ---------------------------------------------------------------------

PRINTER = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); {rest}"


def test_run_agent_keeps_what_the_agent_printed(tmp_path: Path) -> None:
    profile = AgentProfile(
        argv=(sys.executable, "-c", PRINTER.format(rest="pass"), "--", "{prompt}"),
        output="text",
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = run_agent(profile, AgentRequest("go", tmp_path), env=env, timeout_s=30)
    assert result.ok, result.error
    assert result.output == "to stdout\n--- stderr ---\nto stderr\n"


def test_run_agent_keeps_the_output_of_a_malformed_answer(tmp_path: Path) -> None:
    profile = AgentProfile(
        argv=(sys.executable, "-c", PRINTER.format(rest="print('{{not json')"), "--", "{prompt}"),
        output="claude_json",
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = run_agent(profile, AgentRequest("go", tmp_path), env=env, timeout_s=30)
    assert result.status is AgentStatus.FAILED and "malformed" in (result.error or "")
    assert "{not json" in result.output and "--- stderr ---\nto stderr" in result.output


def test_an_agent_that_printed_nothing_has_no_output(tmp_path: Path) -> None:
    profile = AgentProfile(argv=(sys.executable, "-c", "pass", "--", "{prompt}"), output="text")
    result = run_agent(
        profile, AgentRequest("go", tmp_path), env={"PATH": "/usr/bin:/bin"}, timeout_s=30
    )
    assert result.output == ""
    assert AgentResult(AgentStatus.SUCCEEDED, "", 0.0).output == ""


# --- metadata -----------------------------------------------------------------------------------


def test_task_metadata_shows_the_transcript_and_the_delivery(setup: Setup) -> None:
    from orchestration.defs.metadata import task_metadata
    from orchestration.tasks.execution import TaskOutcome
    from orchestration.workspace.git import DiffStats

    task = setup.run_task({"feature.py": "x\n"})

    def outcome(recorded: Task, transcript: Path | None) -> TaskOutcome:
        return TaskOutcome(
            task=recorded,
            profile="demo",
            model=None,
            agent=AgentResult(AgentStatus.SUCCEEDED, "done", 1.0),
            branch=branch_of(recorded),
            commit=recorded.commit,
            base=str(recorded.extra["base"]),
            diff=DiffStats(1, 1, 0),
            verification=None,
            transcript=transcript,
        )

    plain = task_metadata(outcome(task, None))
    assert not {"transcript", "delivered_to", "delivery_error"} & set(plain)

    log = transcript_path(setup.home, "alpha", task.id)
    delivered = setup.store.record_delivery(task.id, "local")
    failed = setup.store.record_delivery(task.id, "origin", error="no origin")
    metadata = task_metadata(outcome(failed, log))
    assert metadata["transcript"].path == str(log)
    assert metadata["delivered_to"] == "local" and metadata["delivery_error"] == "no origin"
    assert delivered.delivery_error is None


def test_task_metadata_shows_interruptions_and_preemptions(setup: Setup) -> None:
    from dataclasses import replace

    from orchestration.defs.metadata import task_metadata
    from orchestration.tasks.execution import TaskOutcome
    from orchestration.workspace.git import DiffStats

    task = setup.run_task({"feature.py": "x\n"})
    history = [{"kind": "preempted", "by": "t000other", "commit": "abc", "session": "s1"}]
    others = [{"task": "t000victim", "at": "2026-11-29T00:00:00+00:00"}]
    recorded = replace(
        task, extra={**task.extra, "interruptions": history, "preempted_others": others}
    )
    metadata = task_metadata(
        TaskOutcome(
            task=recorded,
            profile="demo",
            model=None,
            agent=AgentResult(AgentStatus.SUCCEEDED, "done", 1.0),
            branch=branch_of(recorded),
            commit=recorded.commit,
            base=str(recorded.extra["base"]),
            diff=DiffStats(1, 1, 0),
            verification=None,
        )
    )
    assert metadata["interruptions"].data == history and metadata["times_preempted"] == 1
    assert metadata["preempted_others"].data == others
