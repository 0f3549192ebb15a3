"""Running one task: claim it, check it may run, then its own worktree and branch, the agent,
the commit, the project's tests, and the outcome recorded.

The steps are plain calls on the workspace, the agent runner and the task store, so the same
functions serve Dagster runs and tests. The agent and the verify command run in the sandbox
(`workspace/sandbox.py`) unless `ORCH_SANDBOX=off`. From its claim to its outcome the run
writes the task's heartbeat (`TaskHeartbeat`), by which the dispatch tick tells a dead run from
a slow one (`tasks/lifecycle.py`); a run the task was taken from records nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from logging import Logger
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestration.agents.invocation import AgentRequest, run_agent
from orchestration.agents.limits import LimitKind
from orchestration.agents.result import AgentResult, AgentStatus
from orchestration.allocation.providers import DEFAULT_GRACE_S, ProviderStates, grace_seconds
from orchestration.changes.handoff import Handoff, change_handoff, handoff_paths
from orchestration.channels.delivery import (
    ChannelSource,
    OutboxNote,
    channel_sources,
    deliver_channels,
    post_outbox,
    remove_orch_dir,
    take_outbox,
)
from orchestration.channels.log import ChannelLog
from orchestration.control.budget import budget_now
from orchestration.delivery.deliver import DeliveryError, deliver_task
from orchestration.delivery.results import publish_result
from orchestration.delivery.transcript import append_transcript
from orchestration.process import interrupts_deferred, process_start_time
from orchestration.redaction import Redactor
from orchestration.registry.loader import Registry
from orchestration.registry.models import AgentProfile, ProjectSpec
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.settings import SANDBOX_VAR, heartbeat_interval, sandbox_enabled
from orchestration.tasks.models import KEPT_EXTRA, Task, TaskStatus
from orchestration.tasks.outcomes import PendingOutcome, save_pending
from orchestration.tasks.store import TaskError, TaskLost, TaskStore
from orchestration.verification import VerificationResult, run_verification
from orchestration.workspace.git import DiffStats, GitRepo
from orchestration.workspace.isolation import child_environment
from orchestration.workspace.sandbox import SandboxError, other_checkouts, sandbox_program
from orchestration.workspace.workspace import ProjectWorkspace

AGENT_IDENTITY = ("Orchestration Agent", "agent@orchestration.invalid")
#: The trailer on the commit that keeps an interrupted agent's work so far.
INTERRUPTED_TRAILER = "Orch-Interrupted: true"
#: How long the end of a run waits for its heartbeat thread to stop (it may be in a write).
HEARTBEAT_STOP_S = 5.0


class TaskHeartbeat:
    """While a run works on its task, a daemon thread that writes the task's heartbeat (at once,
    then every `interval_s`), only while the task is this run's (running under it, then with
    the outcome it recorded while it delivers): the dispatch tick takes a running task whose
    heartbeat stopped back from its run, and fails a run that went silent after its task
    ended (its worker, code server or host died). A write that fails is logged and tried
    again at the next beat; nothing is raised into the run. `lost` turns true once the task
    is found no longer the run's.

        with TaskHeartbeat(store, task_id, run_id, interval_s, log) as heartbeat: ...
    """

    def __init__(
        self, store: TaskStore, task_id: str, run_id: str, interval_s: float, log: Logger
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.run_id = run_id
        self.interval_s = interval_s
        self.log = log
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat of task {task_id}", daemon=True
        )

    @property
    def lost(self) -> bool:
        """True once a beat found the task no longer this run's."""
        return self._lost.is_set()

    def start(self) -> TaskHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No beat after this returns (bar one already writing, which the store writes only
        while the task is this run's)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=HEARTBEAT_STOP_S)

    def __enter__(self) -> TaskHeartbeat:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _beat(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.store.beat(self.task_id, self.run_id):
                    self._lost.set()
                    return  # taken back from this run, or retried: never ours again
                failures = 0
            except Exception as exc:  # never into the run: the next beat tries again
                failures += 1
                self.log.warning(
                    f"task {self.task_id}: could not write its heartbeat ({failures} in a row; "
                    f"{type(exc).__name__}: {exc}); trying again in {self.interval_s:g}s"
                )
            self._stop.wait(self.interval_s)


@dataclass(frozen=True)
class TaskOutcome:
    """What running one task produced."""

    task: Task
    profile: str
    model: str | None
    agent: AgentResult
    branch: str
    commit: str | None
    base: str
    diff: DiffStats
    verification: VerificationResult | None
    transcript: Path | None = None
    """The file holding what the agent printed (`orch task log`), when it was kept."""


def run_task(
    *,
    store: TaskStore,
    registry: Registry,
    project: str,
    task_id: str,
    run_id: str,
    home: Path,
    parent_env: Mapping[str, str],
    log: Logger,
) -> TaskOutcome:
    """Claim the task for the run `run_id`, check that it may run now, and carry it out.

    TaskError when it may not run. A task claimed while the set-up is broken (the agents file,
    the project file or its profile) goes back to the queue rather than failing: fixing the
    files lets it run.
    """
    task = store.claim(task_id, run_id)
    with TaskHeartbeat(store, task_id, run_id, heartbeat_interval(parent_env), log) as heartbeat:
        return _carry_out(store, registry, project, task, run_id, home, parent_env, log, heartbeat)


def _carry_out(
    store: TaskStore,
    registry: Registry,
    project: str,
    task: Task,
    run_id: str,
    home: Path,
    parent_env: Mapping[str, str],
    log: Logger,
    heartbeat: TaskHeartbeat,
) -> TaskOutcome:
    """The claimed task checked, carried out, its outcome recorded and its work delivered."""
    task_id = task.id
    if task.project != project:
        store.finish(task_id, TaskStatus.FAILED, f"task belongs to {task.project}", run_id=run_id)
        raise TaskError(f"task {task_id} belongs to project {task.project}, not {project}")
    try:
        spec, profile_name, profile, base_env = _runnable(registry, task)
    except TaskError as exc:
        store.requeue(task_id, str(exc), run_id=run_id)
        raise
    held = _held_back(store, spec.name)
    if held is not None:
        # Paused (by hand or by its budget) after this run was launched: no agent starts while
        # the project is held; the task waits in the queue, this dispatch not counted.
        store.requeue(task_id, held, uncount=True, run_id=run_id)
        raise TaskError(f"task {task_id}: {held}; it is queued again")
    specs = {p.name: p.spec for p in registry.projects}
    try:
        with change_handoff(store, specs, home, task, log) as handoff:
            outcome = execute_task(
                task=task,
                spec=spec,
                profile_name=profile_name,
                profile=profile,
                base_env=base_env,
                workspace=ProjectWorkspace(home, spec),
                store=store,
                parent_env=parent_env,
                log=log,
                # Only a sandbox hides them: without one, every project's path is not resolved.
                hidden=other_checkouts(
                    [p.spec.repo for p in registry.projects if p.name != spec.name], own=spec.repo
                )
                if sandbox_enabled(parent_env)
                else (),
                heartbeat=heartbeat,
                budget_usd=_task_cap(registry, spec, store, parent_env)
                if profile.budget_args
                else None,
                provider_grace_s=grace_seconds(registry.pools, profile.provider_pool)
                if profile.provider_pool
                else DEFAULT_GRACE_S,
                channels=channel_sources(specs, spec, home, log),
                handoff=handoff,
            )
    except ProviderLimited:
        raise  # the task is queued again, to continue once the account reopens
    except Exception as exc:
        cause = Redactor.for_secrets(spec.secrets, parent_env).text(f"{type(exc).__name__}: {exc}")
        _end_failed_run(store, task_id, run_id, cause, retry=not isinstance(exc, SandboxError))
        raise
    publish_result(ProjectWorkspace(home, spec), outcome.task, parent_env, log)
    if outcome.task.status is TaskStatus.SUCCEEDED and spec.deliver != "none":
        outcome = replace(outcome, task=_deliver(store, home, spec, outcome.task, log))
    return outcome


def _held_back(store: TaskStore, project: str) -> str | None:
    """Why no agent of `project` may start now (it is paused, stopped or archived); None when
    it may."""
    from orchestration.control.store import ProjectStates

    record = ProjectStates(store).get(project)
    if not record.state.holds_tasks:
        return None
    return f"project {project} is {record.state}" + (f" ({record.reason})" if record.reason else "")


def _task_cap(
    registry: Registry, spec: ProjectSpec, store: TaskStore, environ: Mapping[str, str]
) -> float | None:
    """What this task may spend: what is left of its project's and all projects' budgets."""
    from orchestration.control.budget import task_cap
    from orchestration.monitoring.usage import usage_by_project

    all_projects = registry.pools.budget if registry.pools else None
    if spec.budget is None and all_projects is None:
        return None
    usage = usage_by_project(store.tasks(), budget_now(environ), [spec.name])
    return task_cap(spec.budget, all_projects, usage, spec.name)


def _deliver(store: TaskStore, home: Path, spec: ProjectSpec, task: Task, log: Logger) -> Task:
    """Deliver a task that succeeded (its verification passed) where the project's `deliver`
    key says; a failure is recorded on the task (`delivery_error`), which stays succeeded, and
    `orch task deliver` tries again."""
    try:
        return deliver_task(store, home, spec, task, spec.deliver, report=log.info)
    except DeliveryError as exc:
        log.warning(f"task {task.id}: delivery to {spec.deliver} failed: {exc}")
    except Exception as exc:  # the work is done and recorded: never fail the task for this
        log.error(f"task {task.id}: delivery to {spec.deliver} failed: {exc}")
        store.record_delivery(task.id, spec.deliver, error=f"{type(exc).__name__}: {exc}")
    return store.require(task.id)


def _end_failed_run(store: TaskStore, task_id: str, run_id: str, cause: str, retry: bool) -> None:
    """A run that raised: its task goes back to the queue when its agent never started (nothing
    is lost and the cause may pass: the clone was unavailable, say), a few times; otherwise it
    fails with the cause."""
    try:
        task = store.require(task_id)
    except Exception:  # the database itself is the trouble: the dispatch tick sees the run end
        return
    if task.run_id != run_id:
        return  # taken back from this run (its heartbeat had stopped): not ours to end
    if retry and task.may_retry_early_failure:
        store.requeue_failed_start(task_id, run_id, cause)
    else:
        store.fail_run(task_id, run_id, cause)


def _runnable(
    registry: Registry, task: Task
) -> tuple[ProjectSpec, str, AgentProfile, tuple[str, ...]]:
    """The project, profile and base environment a task runs with; TaskError saying what is
    broken."""
    if registry.config_errors:
        raise TaskError("; ".join(str(error) for error in registry.config_errors))
    assert registry.agents is not None
    spec = registry.spec(task.project)
    if spec is None:
        raise TaskError(f"project {task.project!r} is not valid in the registry now")
    profile_name = task.profile or spec.agent.profile
    try:
        profile = resolve_profile(registry.agents, spec, profile_name)
    except ProfileError as exc:
        raise TaskError(str(exc)) from None
    return spec, profile_name, profile, registry.agents.base_env


def execute_task(
    *,
    task: Task,
    spec: ProjectSpec,
    profile_name: str,
    profile: AgentProfile,
    base_env: tuple[str, ...],
    workspace: ProjectWorkspace,
    store: TaskStore,
    parent_env: Mapping[str, str],
    log: Logger,
    hidden: Sequence[Path] = (),
    heartbeat: TaskHeartbeat | None = None,
    budget_usd: float | None = None,
    provider_grace_s: float = DEFAULT_GRACE_S,
    channels: Sequence[ChannelSource] = (),
    handoff: Handoff | None = None,
) -> TaskOutcome:
    """Run a claimed (running) task to its end and record the outcome in the store.

    The agent, the verify command and the orchestrator's git commands on the agent's work run
    in the sandbox, which also hides `hidden` (the other projects' checkouts). SandboxError,
    before anything runs, when the sandbox is on but cannot be built here. TaskLost when the
    task is no longer this run's by the time its agent ends (taken back because its heartbeat
    had stopped, or cancelled): the agent's work is then kept as work so far (trailer
    `Orch-Interrupted`), never committed as the task's result, and nothing is recorded.

    The agent finds the `channels` its project subscribes to in `.orch/channels/`; the notes it
    leaves in `.orch/outbox/` are posted when the task succeeds; `.orch/` is never committed.
    In a change set, the `handoff` of its providers' work goes to `.orch/change/` and, as
    ORCH_CHANGE_<PROJECT> variables naming read-only checkouts, to the agent.
    """
    # What the agent and the tests print may hold the project's secrets: never recorded as is.
    redact = Redactor.for_secrets(spec.secrets, parent_env)
    # Checked before the worktree exists: a machine without the sandbox fails the task at once.
    program = sandbox_program(parent_env) if sandbox_enabled(parent_env) else None
    tree, start = workspace.open_task_worktree(task.id)
    # A task continued after an interruption starts from its branch's tip (the work so far);
    # its change is still measured from where its first attempt started.
    base = str(task.extra.get("base") or start)
    branch = workspace.task_branch(task.id)
    git_tree = tree  # where the orchestrator's own git commands on the agent's work run
    session = task.resume_session or (
        store.last_session(spec.name, profile_name) if spec.agent.resume else None
    )
    # A new session gets its id now, when the profile can be told it, so that the session of
    # an agent interrupted before it answered can be continued.
    new_session = str(uuid.uuid4()) if session is None and profile.session_args else None
    try:
        channels_read = deliver_channels(
            workspace, Path(tree.path), channels, ChannelLog(store), task=task.id, log=log
        )
        if handoff is not None:
            handoff.write(Path(tree.path))
        home = str(workspace.prepare_home())
        config_dir = workspace.agent_config_dir(profile_name) if profile.config_dir_env else None
        agent_env = child_environment(
            parent_env,
            [*base_env, *profile.env, *spec.secrets],
            overrides={"HOME": home}
            | ({profile.config_dir_env: str(config_dir)} if profile.config_dir_env else {})
            | (handoff.environment if handoff else {}),
        )
        agent_sandbox: list[str] = []
        verify_sandbox: list[str] = []
        if program is not None:
            agent_sandbox = workspace.sandbox(
                tree,
                program=program,
                environ=parent_env,
                network=profile.network,
                config_dir=config_dir,
                also_hidden=hidden,
                also_readable=handoff_paths(handoff),
            ).prefix(tree.path)
            verify_sandbox = workspace.sandbox(
                tree, program=program, environ=parent_env, also_hidden=hidden
            ).prefix(tree.path)
            git_tree = tree.confined(
                workspace.sandbox(
                    tree, program=program, environ=parent_env, network=False, also_hidden=hidden
                ).prefix(tree.path)
            )
        request = AgentRequest(
            prompt=task.prompt,
            workdir=tree.path,
            model=spec.agent.model,
            session_id=session,
            new_session_id=new_session,
            command=spec.agent.command or (),
            budget_usd=budget_usd,
        )
        log.info(
            f"task {task.id}: running agent profile {profile_name!r} in {tree.path}"
            + (f" (resuming session {session})" if session else "")
            + (
                " in the sandbox" + ("" if profile.network else " without network")
                if program
                else f" WITHOUT the sandbox ({SANDBOX_VAR}=off)"
            )
        )
        agent = run_agent(
            profile,
            request,
            env=agent_env,
            timeout_s=spec.agent.timeout,
            on_start=lambda pgid: _note_agent(store, task, pgid, session or new_session, base),
            sandbox=agent_sandbox,
            now=lambda: budget_now(parent_env),
        )
        agent = replace(
            agent,
            summary=redact.text(agent.summary),
            error=redact.optional(agent.error),
            output=redact.text(agent.output),
        )
        outbox = [
            replace(note, text=redact.optional(note.text))
            for note in take_outbox(Path(tree.path), log, task.id)
        ]
        transcript = append_transcript(
            workspace.orch_home,
            spec.name,
            task.id,
            header=f"=== attempt {task.attempts}, run {task.run_id}, {_utc_now()}, "
            f"{agent.status.value} ===",
            text=agent.output,
        )
        # Whatever the agent wrote to the clone's configuration and the worktree's links, git
        # reads only the orchestrator's from here; in the sandbox too, so that nothing else the
        # agent left behind (a symbolic link, a feature of git's unknown to us) reaches further.
        workspace.reclaim(tree)
        if _stopped_by_limit(agent, profile):
            _pause_for_limit(
                task,
                agent,
                profile,
                store,
                workspace,
                (tree, git_tree),
                base,
                log,
                now=budget_now(parent_env),
                grace_s=provider_grace_s,
            )
        parent = _result_parent(git_tree, task)
        lost = _announce_result(store, task, parent, heartbeat)
        if lost is not None:
            # Taken back from this run while its agent worked (its heartbeat had stopped), or
            # cancelled: another run may continue the task, so this is only ever work so far.
            _commit_work_so_far(task, workspace, tree, git_tree, "run lost the task", log)
            raise TaskLost(
                f"task {task.id} is no longer run {task.run_id}'s ({lost}); its agent's work is "
                "kept on its branch as work so far"
            )
        if parent != git_tree.resolve("HEAD"):
            # A run before this one committed its result and died before recording it: that
            # commit (and what came after) is folded into this one, the task's one result.
            git_tree.reset_soft(parent)
            log.warning(f"task {task.id}: folded the result its lost run committed into this one")
        commit = git_tree.commit_all(_commit_message(task, agent), author=AGENT_IDENTITY)
        if commit is None and git_tree.resolve("HEAD") != base:
            commit = git_tree.resolve("HEAD")  # the agent committed its work itself
        diff = git_tree.diff_stats(base, commit or base)
        verification = None
        if agent.ok and spec.verify:
            verify_env = child_environment(
                parent_env, [*base_env, *spec.secrets], overrides={"HOME": home}
            )
            verification = run_verification(
                spec, Path(tree.path), verify_env, sandbox=verify_sandbox
            )
            verification = replace(verification, output_tail=redact.text(verification.output_tail))
    except BaseException as stop:
        if isinstance(stop, Exception):
            raise
        # The run is being ended (Dagster interrupts the step when its run is terminated: a
        # stopped project, a preemption, the UI's Terminate): keep the work so far on the task
        # branch and, when the task was asked to be interrupted, queue it to continue.
        with interrupts_deferred():
            _keep_interrupted_work(
                task, workspace, tree, git_tree, store, branch, base, session or new_session, log
            )
        raise
    finally:
        remove_orch_dir(Path(tree.path))
        workspace.close_task_worktree(task.id)

    status, reason = _status(agent, verification)
    fields = {
        "branch": branch,
        "commit": commit,
        "session_id": agent.session_id,
        "cost_usd": agent.cost_usd,
        "duration_s": round(agent.duration_s, 3),
        "tokens_in": agent.tokens_in,
        "tokens_out": agent.tokens_out,
        "turns": agent.turns,
        "summary": agent.summary[:4000],
        "profile": profile_name,
        "extra": {
            **_kept_extra(store, task),
            "files_changed": diff.files_changed,
            "lines_added": diff.lines_added,
            "lines_removed": diff.lines_removed,
            "base": base,
            "verify_passed": verification.tests_passed if verification else None,
            "verify_failed": verification.tests_failed if verification else None,
            **({"channels_read": channels_read} if channels_read else {}),
        },
    }
    saved = (spec.name, profile_name, agent.session_id) if agent.session_id else None
    try:
        if saved is not None:
            store.save_session(*saved, task.id)
        final = store.finish(task.id, status, reason, run_id=task.run_id, **fields)
        if status is TaskStatus.SUCCEEDED and profile.provider_pool:
            _provider_succeeded(store, profile.provider_pool, parent_env, log)
    except TaskLost as exc:
        log.warning(f"task {task.id}: {exc}")
        raise
    except Exception as exc:
        # The store retried for minutes: keep the outcome on disk for the next dispatch tick,
        # so the agent's work (its commit, cost, session) is never lost to bookkeeping.
        kept = save_pending(
            workspace.root,
            PendingOutcome(task.id, task.run_id or "", str(status), reason, fields, saved),
        )
        log.error(f"task {task.id}: could not record the outcome ({exc}); kept it in {kept}")
        raise
    _hand_over_outbox(outbox, final, spec, store, log)
    return TaskOutcome(
        task=final,
        profile=profile_name,
        model=agent.model or spec.agent.model,
        agent=agent,
        branch=branch,
        commit=commit,
        base=base,
        diff=diff,
        verification=verification,
        transcript=transcript,
    )


class ProviderLimited(TaskError):
    """The task's agent stopped at its provider account's usage limit: the task is queued
    again (that attempt not counted, its work so far committed, its session kept) and the
    account's pool is closed until its reset."""

    def __init__(self, message: str, account: str) -> None:
        super().__init__(message)
        self.account = account


def _hand_over_outbox(
    notes: Sequence[OutboxNote], task: Task, spec: ProjectSpec, store: TaskStore, log: Logger
) -> None:
    """Post the notes the agent left when its task succeeded; drop them otherwise. Never
    raises: the task's outcome is recorded."""
    if not notes:
        return
    if task.status is not TaskStatus.SUCCEEDED:
        log.warning(f"task {task.id}: {len(notes)} note(s) of its outbox dropped: it {task.status}")
        return
    try:
        post_outbox(notes, spec, ChannelLog(store), task=task.id, log=log)
    except Exception as exc:
        log.error(f"task {task.id}: could not post its outbox: {type(exc).__name__}: {exc}")


def _stopped_by_limit(agent: AgentResult, profile: AgentProfile) -> bool:
    """Whether the agent's run ended on its provider account's limit (a plan's usage limit, or
    a plain rate limit), for a profile that names its account."""
    return (
        profile.provider_pool is not None
        and not agent.ok
        and agent.limit is not None
        and agent.limit.kind in (LimitKind.USAGE_LIMIT, LimitKind.TRANSIENT)
    )


def _pause_for_limit(
    task: Task,
    agent: AgentResult,
    profile: AgentProfile,
    store: TaskStore,
    workspace: ProjectWorkspace,
    trees: tuple[GitRepo, GitRepo],
    base: str,
    log: Logger,
    *,
    now: datetime,
    grace_s: float,
) -> None:
    """Close the account's pool until its reset, commit the work so far, and queue the task to
    continue its session; raises ProviderLimited (TaskLost when the task is no longer this
    run's)."""
    assert agent.limit is not None and profile.provider_pool is not None
    account, limit = profile.provider_pool, agent.limit
    state = ProviderStates(store).hit_limit(
        account,
        limit,
        task=task.id,
        now=now,
        grace_s=grace_s,
    )
    log.warning(
        f"task {task.id}: provider account {account} hit its {limit.kind} "
        f"({limit.source}); the account is {state.status}"
        + (f" until {state.until:%Y-%m-%d %H:%M:%S}Z" if state.until else " until resumed")
    )
    commit = _commit_work_so_far(task, workspace, *trees, "usage limit", log)
    requeued = store.limited(
        task.id,
        task.run_id,
        reason=f"provider {account}: {state.reason or limit.kind}",
        limit=limit.to_dict() | {"account": account},
        commit=commit,
        session_id=agent.session_id,
        branch=workspace.task_branch(task.id),
        base=base,
    )
    if requeued is None:
        lost = _why_not_held(store, task) or "it moved on"
        raise TaskLost(f"task {task.id} is no longer run {task.run_id}'s ({lost})")
    raise ProviderLimited(f"task {task.id}: {requeued.reason}", account)


def _provider_succeeded(
    store: TaskStore, account: str, environ: Mapping[str, str], log: Logger
) -> None:
    """A task on `account` succeeded: a canary reopens it. Never raises."""
    try:
        state = ProviderStates(store).succeeded(account, budget_now(environ))
    except Exception as exc:  # the next dispatch tick opens it when the canary window ends
        log.warning(f"provider {account}: could not record the success: {exc}")
        return
    if not state.paused:
        log.info(f"provider {account}: open")


def _status(
    agent: AgentResult, verification: VerificationResult | None
) -> tuple[TaskStatus, str | None]:
    if agent.status is AgentStatus.TIMED_OUT:
        return TaskStatus.FAILED, f"agent {agent.error}"
    if not agent.ok:
        return TaskStatus.FAILED, agent.error or "agent failed"
    if verification is not None and not verification.passed:
        return TaskStatus.FAILED, (
            f"verification failed: {verification.tests_failed} failed, "
            f"{verification.tests_passed} passed (exit {verification.exit_code}); output tail:\n"
            f"{verification.output_tail[-1500:]}"
        )
    return TaskStatus.SUCCEEDED, None


def _keep_interrupted_work(
    task: Task,
    workspace: ProjectWorkspace,
    tree: GitRepo,
    git_tree: GitRepo,
    store: TaskStore,
    branch: str,
    base: str,
    session: str | None,
    log: Logger,
) -> None:
    """Commit whatever the interrupted agent left in the worktree (trailer
    `Orch-Interrupted: true`) and, when the task was asked to be interrupted, put it back in the
    queue to continue `session` on its branch. Never raises: the run is ending either way."""
    try:
        append_transcript(
            workspace.orch_home,
            task.project,
            task.id,
            header=f"=== attempt {task.attempts}, run {task.run_id}, {_utc_now()}, interrupted ===",
            text="(the run was ended before the agent answered; its output is not kept)",
        )
    except Exception as exc:
        log.error(f"task {task.id}: could not note the interruption in its transcript: {exc}")
    commit = _commit_work_so_far(task, workspace, tree, git_tree, "interrupted", log)
    try:
        requeued = store.checkpoint(
            task.id, task.run_id, commit=commit, session_id=session, branch=branch, base=base
        )
    except Exception as exc:  # the dispatch tick re-queues it from the run's end
        log.error(f"task {task.id}: could not record the interruption: {exc}")
        return
    if requeued is not None:
        log.warning(f"task {task.id}: {requeued.reason}")
    else:
        log.warning(f"task {task.id}: run ended; the work so far is committed on {branch}")


def _commit_work_so_far(
    task: Task,
    workspace: ProjectWorkspace,
    tree: GitRepo,
    git_tree: GitRepo,
    why: str,
    log: Logger,
) -> str | None:
    """Commit what an agent that did not finish its attempt left in the worktree, with the
    trailer `Orch-Interrupted: true` (never taken for the task's result); the branch's tip, or
    None when the clone is unusable. Never raises."""
    try:
        remove_orch_dir(Path(tree.path))
        workspace.reclaim(tree)
        title = " ".join(task.prompt.split())[:60] or task.id
        return git_tree.commit_all(
            f"orch: {title} ({why}, work so far)\n\nOrch-Task: {task.id}\n{INTERRUPTED_TRAILER}\n",
            author=AGENT_IDENTITY,
        ) or git_tree.resolve("HEAD")
    except Exception as exc:  # the clone is unusable: the task's branch keeps what it had
        log.error(f"task {task.id}: could not commit the work so far ({why}): {exc}")
        return None


def _note_agent(store: TaskStore, task: Task, pgid: int, session: str | None, base: str) -> None:
    """Record the agent just started for `task` (its process group, session and base); TaskLost,
    which stops it at once, when the task is no longer this run's (taken back, cancelled)."""
    if not store.note_agent(
        task.id, pgid, process_start_time(pgid), session, base=base, run_id=task.run_id
    ):
        lost = _why_not_held(store, task) or "it moved on"
        raise TaskLost(f"task {task.id} is no longer run {task.run_id}'s ({lost}); agent stopped")


def _result_parent(git_tree: GitRepo, task: Task) -> str:
    """The commit this attempt's result commit goes on: HEAD, or, when an earlier run announced
    a result commit and died before recording it (`result_pending`), the commit it announced
    to commit on, if that is in HEAD's history."""
    head = git_tree.resolve("HEAD")
    assert head is not None
    pending = task.extra.get("result_pending") or {}
    parent = pending.get("parent") if pending.get("run") != task.run_id else None
    if isinstance(parent, str) and parent != head and git_tree.is_ancestor(parent, head):
        return parent
    return head


def _announce_result(
    store: TaskStore, task: Task, parent: str, heartbeat: TaskHeartbeat | None
) -> str | None:
    """Announce this run's result commit on `parent` (`TaskStore.note_committing`) while it
    still holds the task; why it does not hold it any more, or None. When the store does not
    answer, the commit goes ahead (recording the outcome decides then) unless the heartbeat
    found the task taken."""
    try:
        if store.note_committing(task.id, task.run_id or "", parent):
            return None
    except Exception:
        return "its heartbeat found it taken back" if heartbeat and heartbeat.lost else None
    return _why_not_held(store, task) or "it moved on"


def _why_not_held(store: TaskStore, task: Task) -> str | None:
    """Why the run that claimed `task` no longer holds it (running under it), as the store
    says; None while it does, or when the store does not answer."""
    try:
        current = store.get(task.id)
    except Exception:
        return None
    if current is None:
        return "it was deleted"
    if current.status is TaskStatus.RUNNING and current.run_id == task.run_id:
        return None
    held = f" under run {current.run_id}" if current.run_id not in (None, task.run_id) else ""
    return f"it is {current.status}{held}: {current.reason or 'no reason recorded'}"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _kept_extra(store: TaskStore, task: Task) -> dict[str, Any]:
    """What the task's record keeps from its earlier attempts (its interruptions, the tasks
    preempted for it), as recorded now."""
    try:
        current = store.require(task.id).extra
    except Exception:  # the database refuses: the outcome is what matters; history as claimed
        current = task.extra
    return {key: current[key] for key in KEPT_EXTRA if key in current}


def _commit_message(task: Task, agent: AgentResult) -> str:
    title = " ".join(task.prompt.split())[:60] or task.id
    state = "" if agent.ok else f" ({agent.status.value}, partial work)"
    body = agent.summary.strip()[:2000]
    return f"orch: {title}{state}\n\n{body}\n\nOrch-Task: {task.id}\n".replace("\n\n\n", "\n\n")
