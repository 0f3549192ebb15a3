"""`orch task` and `orch session` through click's CliRunner against a real registry, real git
repositories and the real SQLite task store; no Dagster instance is set up or touched."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from orchestration.cli import main
from orchestration.tasks.models import TaskStatus, is_task_id
from orchestration.tasks.store import TaskStore
from tests.support.git import make_git_repo
from tests.support.registry import RegistryDir

Invoke = Callable[..., Result]

TASK_LIST = """\
# Tasks

- [ ] a
  - [ ] nested b
- [x] done
"""


@pytest.fixture
def registry(registry_dir: RegistryDir) -> RegistryDir:
    registry_dir.project("alpha")
    registry_dir.project("beta")
    return registry_dir


@pytest.fixture
def orch(registry: RegistryDir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """Run `orch ARGS...` with ORCH_* at `registry` and no Dagster instance anywhere."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("ORCH_TASKS_DB_URL", raising=False)
    settings = registry.settings

    def invoke(*args: str, input: str | None = None) -> Result:
        env = {
            "ORCH_PROJECTS_DIR": str(settings.projects_dir),
            "ORCH_CONFIG_DIR": str(settings.config_dir),
            "ORCH_HOME": str(settings.home),
            "DAGSTER_HOME": None,
        }
        return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    yield invoke
    assert not settings.dagster_home.exists()  # no instance was created


def add(orch: Invoke, *args: str, input: str | None = None) -> str:
    result = orch("task", "add", *args, input=input)
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert is_task_id(task_id), result.stdout
    return task_id


# --- task add -------------------------------------------------------------------------------


def test_add_prints_the_id_and_stores_the_task(orch: Invoke, store: TaskStore) -> None:
    task_id = add(orch, "alpha", "Fix the flaky test", "--priority", "80")
    task = store.get(task_id)
    assert task.project == "alpha" and task.prompt == "Fix the flaky test"
    assert task.priority == 80 and task.status is TaskStatus.QUEUED
    assert task.source == "cli" and task.profile is None


def test_add_with_profile_and_after(orch: Invoke, store: TaskStore) -> None:
    first = add(orch, "alpha", "first")
    second = add(orch, "alpha", "second", "--after", first, "--profile", "codex")
    task = store.get(second)
    assert task.after == (first,) and task.profile == "codex"


def test_add_unknown_project_is_refused(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "add", "gamma", "do something")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no project named 'gamma'" in result.stderr
    assert "known projects: alpha, beta" in result.stderr
    assert store.tasks() == []


def test_add_unknown_profile_is_refused(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "add", "alpha", "x", "--profile", "gpt_agent")
    assert result.exit_code == 1
    assert "unknown agent profile 'gpt_agent'" in result.stderr
    assert "claude_code" in result.stderr and "demo" in result.stderr
    assert store.tasks() == []


def test_add_command_profile_without_agent_command_is_refused(
    orch: Invoke, store: TaskStore
) -> None:
    result = orch("task", "add", "alpha", "true", "--profile", "command")
    assert result.exit_code == 1
    assert "agent.command" in result.stderr
    assert store.tasks() == []


@pytest.mark.parametrize("after", ["t0000000000zz", "not-an-id", "../../etc"])
def test_add_after_unknown_task_is_refused(orch: Invoke, store: TaskStore, after: str) -> None:
    add(orch, "alpha", "exists")
    result = orch("task", "add", "alpha", "x", "--after", after)
    assert result.exit_code == 1
    assert f"--after {after}: no such task" in result.stderr
    assert len(store.tasks()) == 1


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t\n"])
def test_add_empty_prompt_is_refused(orch: Invoke, store: TaskStore, prompt: str) -> None:
    result = orch("task", "add", "alpha", prompt)
    assert result.exit_code == 1
    assert "the prompt is empty" in result.stderr
    assert store.tasks() == []


def test_add_empty_stdin_is_refused(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "add", "alpha", "-", input="")
    assert result.exit_code == 1
    assert "the prompt is empty" in result.stderr


def test_add_huge_prompt_is_refused(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "add", "alpha", "-", input="x" * (120 * 1024 + 1))
    assert result.exit_code == 1
    assert "larger than 120 KiB (122881 bytes" in result.stderr
    assert store.tasks() == []


def test_a_prompt_of_exactly_the_limit_is_accepted(orch: Invoke, store: TaskStore) -> None:
    prompt = "é" * (60 * 1024)  # two bytes each: 120 KiB of UTF-8
    task_id = add(orch, "alpha", "-", input=prompt)
    assert store.get(task_id).prompt == prompt


@pytest.mark.parametrize("prompt", ["fix\x00it", "\x00", "- [ ] a\n\x00"])
def test_add_prompt_with_a_nul_is_refused(orch: Invoke, store: TaskStore, prompt: str) -> None:
    result = orch("task", "add", "alpha", "-", input=prompt)
    assert result.exit_code == 1
    assert "error: the prompt contains a NUL character" in result.stderr
    assert store.tasks() == []


@pytest.mark.parametrize(
    "prompt", ["--resume=evil", "--dangerously-skip-permissions", "- fix the bug", "-p", "--"]
)
def test_an_option_like_prompt_is_stored_verbatim(
    orch: Invoke, store: TaskStore, prompt: str
) -> None:
    by_argument = add(orch, "alpha", "--", prompt)
    by_stdin = add(orch, "alpha", "-", input=prompt)
    assert store.get(by_argument).prompt == store.get(by_stdin).prompt == prompt


def test_add_dash_reads_stdin(orch: Invoke, store: TaskStore) -> None:
    prompt = 'Refactor `parse()`;\nkeep $(behaviour) and "quotes".\n'
    task_id = add(orch, "alpha", "-", input=prompt)
    assert store.get(task_id).prompt == prompt


def test_priority_out_of_range_is_refused(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "add", "alpha", "x", "--priority", "101")
    assert result.exit_code == 2
    assert store.tasks() == []


# --- task list / show -----------------------------------------------------------------------

JSON_KEYS = {
    "id",
    "project",
    "prompt",
    "status",
    "reason",
    "branch",
    "commit",
    "session_id",
    "cost_usd",
    "duration_s",
    "run_id",
}


def test_list_table_and_filters(orch: Invoke, store: TaskStore) -> None:
    a = add(orch, "alpha", "first task for alpha")
    b = add(orch, "beta", "task for beta")
    store.cancel(b)

    table = orch("task", "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "PROJECT", "STATUS", "PRIORITY", "CREATED", "PROMPT", "REASON"]
    assert [row.split()[0] for row in rows] == [a, b]
    assert "cancelled by user" in rows[1]

    only_alpha = orch("task", "list", "alpha")
    assert [row.split()[0] for row in only_alpha.stdout.splitlines()[1:]] == [a]
    cancelled = orch("task", "list", "--status", "cancelled")
    assert [row.split()[0] for row in cancelled.stdout.splitlines()[1:]] == [b]
    both = orch("task", "list", "--status", "cancelled", "--status", "queued")
    assert len(both.stdout.splitlines()) == 3


def test_list_json(orch: Invoke, store: TaskStore) -> None:
    a = add(orch, "alpha", "json me")
    store.claim(a, "run-1")
    store.finish(
        a,
        TaskStatus.SUCCEEDED,
        branch=f"orch/alpha/{a}",
        commit="c" * 40,
        session_id="sess-1",
        cost_usd=0.5,
        duration_s=12.0,
    )
    add(orch, "beta", "other")
    result = orch("task", "list", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data) == 2
    assert all(JSON_KEYS <= set(item) for item in data)
    first = data[0]
    assert (first["id"], first["project"], first["prompt"], first["status"]) == (
        a,
        "alpha",
        "json me",
        "succeeded",
    )
    assert first["branch"] == f"orch/alpha/{a}" and first["commit"] == "c" * 40
    assert (first["session_id"], first["cost_usd"], first["duration_s"]) == ("sess-1", 0.5, 12.0)
    assert first["run_id"] == "run-1" and first["reason"] is None
    filtered = json.loads(orch("task", "list", "--json", "--status", "queued").stdout)
    assert [item["project"] for item in filtered] == ["beta"]


def test_list_rejects_an_unknown_status(orch: Invoke) -> None:
    result = orch("task", "list", "--status", "done")
    assert result.exit_code == 2
    assert "done" in result.output


def test_show(orch: Invoke, store: TaskStore) -> None:
    task_id = add(orch, "alpha", "show me", "--priority", "60")
    text = orch("task", "show", task_id)
    assert text.exit_code == 0
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert lines["id:"] == task_id and lines["project:"] == "alpha"
    assert lines["status:"] == "queued" and lines["priority:"] == "60"
    assert "branch:" not in lines  # empty fields are left out

    data = json.loads(orch("task", "show", task_id, "--json").stdout)
    assert JSON_KEYS <= set(data)
    assert data["id"] == task_id and data["prompt"] == "show me" and data["after"] == []


def test_show_unknown_task(orch: Invoke) -> None:
    result = orch("task", "show", "t0000000000zz")
    assert result.exit_code == 1
    assert "no task with id 't0000000000zz'" in result.stderr


# --- task cancel ----------------------------------------------------------------------------


def test_cancel_then_cancel_again(orch: Invoke, store: TaskStore) -> None:
    task_id = add(orch, "alpha", "cancel me")
    result = orch("task", "cancel", task_id)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cancelled {task_id}"
    assert store.get(task_id).status is TaskStatus.CANCELLED

    again = orch("task", "cancel", task_id)
    assert again.exit_code == 1
    assert f"task {task_id} already cancelled; nothing to cancel" in again.stderr


def test_cancel_a_finished_task_fails(orch: Invoke, store: TaskStore) -> None:
    task_id = add(orch, "alpha", "done already")
    store.claim(task_id, "run-1")
    store.finish(task_id, TaskStatus.SUCCEEDED)
    result = orch("task", "cancel", task_id)
    assert result.exit_code == 1
    assert "already succeeded" in result.stderr
    assert store.get(task_id).status is TaskStatus.SUCCEEDED


def test_cancel_unknown_task(orch: Invoke) -> None:
    result = orch("task", "cancel", "t0000000000zz")
    assert result.exit_code == 1
    assert "no task with id 't0000000000zz'" in result.stderr


# --- task import ----------------------------------------------------------------------------


def test_import_agent_os_task_lists_once(
    registry: RegistryDir, orch: Invoke, store: TaskStore
) -> None:
    repo = make_git_repo(
        registry.root / "repos" / "specs",
        {
            "README.md": "specs",
            ".agent-os/specs/x/tasks.md": TASK_LIST,
            ".agent-os/specs/x/spec.md": "- [ ] not a task list\n",
        },
    )
    registry.project("gamma", repo=str(repo))

    first = orch("task", "import", "gamma")
    assert first.exit_code == 0, first.output
    assert "imported 2 new task(s) for gamma" in first.stderr
    printed = first.stdout.splitlines()
    assert len(printed) == 2 and all(is_task_id(line.split()[0]) for line in printed)

    tasks = store.tasks(project="gamma")
    assert [t.prompt.splitlines()[0] for t in tasks] == ["a", "nested b"]
    assert tasks[0].prompt.endswith("(Task from .agent-os/specs/x/tasks.md, line 3.)")
    assert all(t.source == "agent-os" and t.status is TaskStatus.QUEUED for t in tasks)

    second = orch("task", "import", "gamma")
    assert second.exit_code == 0
    assert "imported 0 new task(s) for gamma" in second.stderr
    assert second.stdout == ""
    assert len(store.tasks(project="gamma")) == 2
    # The user's repository was only read.
    assert sorted(p.name for p in repo.iterdir()) == [".agent-os", ".git", "README.md"]


def test_import_skips_items_no_agent_can_receive(
    registry: RegistryDir, orch: Invoke, store: TaskStore
) -> None:
    tasks_md = (
        "- [ ] fine\n"
        "- [ ] has a \x00 in it\n"
        f"- [ ] {'long ' * 30_000}\n"
        "- [ ] --resume=evil\n"
        "- [ ]    \t\n"
    )
    repo = make_git_repo(
        registry.root / "repos" / "specs",
        {"README.md": "x", ".agent-os/specs/y/tasks.md": tasks_md},
    )
    registry.project("gamma", repo=str(repo))
    result = orch("task", "import", "gamma")
    assert result.exit_code == 0, result.output
    assert "imported 2 new task(s) for gamma" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: gamma: .agent-os/specs/y/tasks.md:2: item skipped: the prompt contains a NUL "
        "character (\\0), which no program can receive as an argument; remove it",
        "warning: gamma: .agent-os/specs/y/tasks.md:3: item skipped: the prompt is larger than "
        "120 KiB (150048 bytes; Linux refuses a single argument of 128 KiB or more); shorten "
        "it or put the details in a file of the repository and refer to it",
    ]
    prompts = [task.prompt.splitlines()[0] for task in store.tasks(project="gamma")]
    assert prompts == ["fine", "--resume=evil"]


def test_import_without_task_lists(orch: Invoke, store: TaskStore) -> None:
    result = orch("task", "import", "alpha")
    assert result.exit_code == 0
    assert "imported 0 new task(s) for alpha" in result.stderr
    assert store.tasks() == []


def test_import_unknown_project(orch: Invoke) -> None:
    result = orch("task", "import", "gamma")
    assert result.exit_code == 1
    assert "no project named 'gamma'" in result.stderr


# --- session list ---------------------------------------------------------------------------


def test_session_list(orch: Invoke, store: TaskStore) -> None:
    assert json.loads(orch("session", "list", "--json").stdout) == []
    store.save_session("alpha", "claude_code", "sess-alpha", "t0000000000aa")
    store.save_session("beta", "codex", "thread-beta", "t0000000000bb")

    data = json.loads(orch("session", "list", "--json").stdout)
    assert [(s["project"], s["profile"], s["session_id"], s["task_id"]) for s in data] == [
        ("alpha", "claude_code", "sess-alpha", "t0000000000aa"),
        ("beta", "codex", "thread-beta", "t0000000000bb"),
    ]
    assert all(isinstance(s["updated_at"], str) for s in data)

    only_beta = json.loads(orch("session", "list", "beta", "--json").stdout)
    assert [s["session_id"] for s in only_beta] == ["thread-beta"]

    table = orch("session", "list")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == [
        "PROJECT",
        "PROFILE",
        "SESSION_ID",
        "TASK_ID",
        "UPDATED_AT",
    ]
    assert "sess-alpha" in table.stdout and "thread-beta" in table.stdout
