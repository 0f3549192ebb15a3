"""A change set verified together: every member's verify command (`verify_in_change`, else
`verify`) runs in a fresh checkout of its task's commit, with ORCH_CHANGE_<PROJECT> naming a
fresh checkout of every member's commit, so that a consumer is tested against its providers'
new code rather than their branch. The same checkouts give a consumer's agent its providers'
work (`member_checkouts`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from logging import Logger
from pathlib import Path

from orchestration.changes.sets import Change, ChangeError, MemberCheck
from orchestration.redaction import Redactor
from orchestration.registry.loader import Registry
from orchestration.registry.models import ProjectSpec
from orchestration.settings import sandbox_enabled
from orchestration.tasks.models import Task
from orchestration.verification import run_verification
from orchestration.workspace.git import GitRepo
from orchestration.workspace.isolation import child_environment
from orchestration.workspace.sandbox import other_checkouts, sandbox_program
from orchestration.workspace.workspace import ProjectWorkspace

#: The variable that names a member's checkout: ORCH_CHANGE_ and the project's name upper-cased.
CHANGE_VAR_PREFIX = "ORCH_CHANGE_"


def change_variable(project: str) -> str:
    return f"{CHANGE_VAR_PREFIX}{project.upper()}"


def member_commits(change: Change, home: Path, specs: Mapping[str, ProjectSpec]) -> dict[str, str]:
    """Each member's work as a commit of its private clone (`member_commit`)."""
    commits = {}
    for member in change.members:
        if member.task is None:
            raise ChangeError(f"change {change.id}: {member.project} has no task")
        commits[member.project] = member_commit(home, specs[member.project], member.task)
    return commits


def member_commit(home: Path, spec: ProjectSpec, task: Task) -> str:
    """The task's work as a commit of its project's private clone: its branch's tip (the
    commit recorded on the task when the branch is gone). ChangeError when it has neither."""
    workspace = ProjectWorkspace(home, spec)
    clone = GitRepo.private_clone(workspace.clone_path)
    commit = None
    if clone.is_repository():
        commit = clone.resolve(f"refs/heads/{workspace.task_branch(task.id)}") or (
            clone.resolve(task.commit) if task.commit else None
        )
    if commit is None:
        raise ChangeError(
            f"task {task.id} of {spec.name} ({task.status}) has no branch or commit in the "
            "project's private clone"
        )
    return commit


@contextmanager
def member_checkouts(
    home: Path, specs: Mapping[str, ProjectSpec], commits: Mapping[str, str], purpose: str
) -> Iterator[dict[str, GitRepo]]:
    """A fresh worktree of each project's commit in `commits`, removed afterwards."""
    with ExitStack() as stack:
        yield {
            project: stack.enter_context(
                ProjectWorkspace(home, specs[project]).checkout(purpose, commit)
            )
            for project, commit in commits.items()
        }


def change_environment(trees: Mapping[str, GitRepo]) -> dict[str, str]:
    """ORCH_CHANGE_<PROJECT> for every checkout in `trees`."""
    return {change_variable(project): str(tree.path) for project, tree in trees.items()}


def verify_change(
    change: Change,
    registry: Registry,
    home: Path,
    parent_env: Mapping[str, str],
    log: Logger,
) -> dict[str, MemberCheck]:
    """Every member's verification in the change set, together (see the module). ChangeError
    when a member's task has not succeeded or its project is not in the registry now."""
    if not change.all_succeeded:
        waiting = [
            m.project for m in change.members if m.task is None or not m.task.status.finished
        ]
        raise ChangeError(
            f"change {change.id} is {change.status}: every member's task must succeed before "
            f"it is verified together (not yet: {', '.join(waiting) or 'see orch change show'})"
        )
    specs: dict[str, ProjectSpec] = {}
    for project in change.projects:
        spec = registry.spec(project)
        if spec is None:
            raise ChangeError(f"change {change.id}: project {project!r} is not valid now")
        specs[project] = spec
    base_env = registry.agents.base_env if registry.agents else ()
    program = sandbox_program(parent_env) if sandbox_enabled(parent_env) else None
    commits = member_commits(change, home, specs)
    checks: dict[str, MemberCheck] = {}
    with member_checkouts(home, specs, commits, f"change-{change.id}") as trees:
        variables = change_environment(trees)
        for project, tree in trees.items():
            spec = specs[project]
            checks[project] = _verify_member(
                spec,
                tree,
                commits[project],
                env=child_environment(
                    parent_env,
                    [*base_env, *spec.secrets],
                    overrides={"HOME": str(ProjectWorkspace(home, spec).prepare_home())}
                    | variables,
                ),
                sandbox=_sandbox(home, spec, tree, program, registry, parent_env, trees),
                redact=Redactor.for_secrets(spec.secrets, parent_env),
            )
            outcome = "passed" if checks[project].passed else "FAILED"
            log.info(f"change {change.id}: {project} at {commits[project][:12]}: {outcome}")
    return checks


def _verify_member(
    spec: ProjectSpec,
    tree: GitRepo,
    commit: str,
    *,
    env: Mapping[str, str],
    sandbox: Sequence[str],
    redact: Redactor,
) -> MemberCheck:
    argv = spec.verify_in_change or spec.verify
    if not argv:
        return MemberCheck(True, commit, "no verify command is configured")
    result = run_verification(replace_verify(spec, argv), Path(tree.path), env, sandbox=sandbox)
    shown = " ".join(argv)
    return MemberCheck(
        passed=result.passed,
        commit=commit,
        summary=f"`{shown}`: {result.tests_passed} passed, {result.tests_failed} failed"
        + (" (timed out)" if result.timed_out else ""),
        output_tail=redact.text(result.output_tail),
        duration_s=round(result.duration_s, 3),
    )


def replace_verify(spec: ProjectSpec, argv: Sequence[str]) -> ProjectSpec:
    return spec.model_copy(update={"verify": tuple(argv)})


def _sandbox(
    home: Path,
    spec: ProjectSpec,
    tree: GitRepo,
    program: str | None,
    registry: Registry,
    parent_env: Mapping[str, str],
    trees: Mapping[str, GitRepo],
) -> list[str]:
    """The verify command's sandbox: as a task's, with the other members' checkouts readable."""
    if program is None:
        return []
    hidden = other_checkouts(
        [p.spec.repo for p in registry.projects if p.name != spec.name], own=spec.repo
    )
    others = [Path(t.path) for project, t in trees.items() if project != spec.name]
    return (
        ProjectWorkspace(home, spec)
        .sandbox(
            tree,
            program=program,
            environ=parent_env,
            also_hidden=hidden,
            also_readable=others,
        )
        .prefix(Path(tree.path))
    )
