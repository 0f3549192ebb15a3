"""The task lifecycle against the run queue: which queued tasks to launch now and with which run
tags, runs that ended without recording their task, runs whose task heartbeat stopped (reaped),
tasks queued again, retried or cancelled.

Called alike by the dispatch sensor and the CLI. It reads and writes the Dagster instance (runs,
partitions) but builds no Dagster definitions: the sensor turns each `Launch` into a run
request.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from orchestration.agents.invocation import missing_executable
from orchestration.allocation.control import AllocationSettings, current_allocation
from orchestration.process import kill_process_group
from orchestration.registry.loader import Registry
from orchestration.registry.models import AgentsFile, ProjectSpec
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.settings import heartbeat_stale_after
from orchestration.tags import (
    INTERRUPTED_TAG,
    RUN_KEY_TAG,
    TASK_TAG,
    tasks_partitions_name,
)
from orchestration.tasks.dispatch import plan_dispatch, task_run_tags
from orchestration.tasks.models import Task, TaskStatus
from orchestration.tasks.outcomes import record_pending
from orchestration.tasks.store import TaskStore

#: The run statuses of a run still in progress, which its worker may have died in unseen.
IN_PROGRESS = frozenset(
    {
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    }
)
#: What a run whose task heartbeat stopped is failed with, and the task's interruption says.
NO_HEARTBEAT = "no heartbeat from worker"
#: What Dagster's run monitoring says when it fails a run whose worker it found dead.
RUN_WORKER_DIED = "Detected run worker status"
#: A task whose runs are lost this many times fails rather than being continued once more (its
#: work may be what kills them).
LOST_LIMIT = 3
#: A claimed task whose run has vanished from the instance after this long is queued again.
LAUNCH_GRACE_S = 600
#: A dispatched task whose run request never became a run after this long is queued again: its
#: sensor tick died with the daemon or the code server after the task was marked dispatched and
#: before the daemon recorded the request (a request it did record is submitted, by the resumed
#: tick, before the sensor evaluates again, so the run would be there by now).
REQUEST_GRACE_S = 60
#: Runs one dispatch creates at most. The daemon creates each task run with two calls to the
#: code server (the asset subset's job, its execution plan), 0.1-0.2 s on a small machine, so an
#: import of 200 tasks would hold a tick for half a minute, and cancellations, rebalancing and
#: live priority changes with it. The highest-ranked tasks go first; the rest follow on the
#: next ticks, far faster than slots free.
MAX_NEW_RUNS_PER_TICK = 20

WAITING_FOR_RELOAD = "waiting for the code location to load project {project!r}"


@dataclass(frozen=True)
class Launch:
    """One run to start for one task: the asset it materializes, its run key and tags."""

    task: Task
    run_key: str
    asset_path: tuple[str, str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class DispatchOutcome:
    """What one dispatch decided."""

    launches: list[Launch] = field(default_factory=list)
    #: Valid projects whose assets the running definitions do not have yet.
    unloaded: list[str] = field(default_factory=list)
    #: Why nothing at all was dispatched (a broken agents or pools file), else None.
    stopped: str | None = None


def dispatch(
    store: TaskStore,
    instance: dg.DagsterInstance,
    registry: Registry,
    *,
    fingerprint: str,
    loaded: Collection[str] | None = None,
    allocation: AllocationSettings | None = None,
    environ: Mapping[str, str] | None = None,
    limit: int = MAX_NEW_RUNS_PER_TICK,
    holds: Callable[[str], bool] | None = None,
) -> DispatchOutcome:
    """Launches for up to `limit` runnable queued tasks, the highest ranked by the allocation
    policy first.

    Nothing is launched, failed or blocked while the agents or pools file is broken. A task
    that can never run is blocked; one that may run once something is fixed (a broken project
    file, an unknown profile, a project the running definitions do not have yet) stays queued
    with the reason. A task whose agent program is missing fails with the reason, and the next
    ones of that profile wait until the registry or PATH changes (`fingerprint`).

    `holds` says which projects' tasks this dispatch is for (a shard's, `sharding.py`); the
    others' are another code location's to launch, and left as they are.
    """
    if registry.config_errors:
        return DispatchOutcome(stopped="; ".join(str(error) for error in registry.config_errors))
    assert registry.agents is not None
    env = os.environ if environ is None else environ
    queued = store.tasks(statuses=[TaskStatus.QUEUED])
    if holds is not None:
        queued = [task for task in queued if holds(task.project)]
    prerequisites = {p for task in queued for p in task.after}
    known = {task.id: task for task in store.tasks(ids=prerequisites)} if prerequisites else {}
    plan = plan_dispatch(queued, known, registry.names, registry.broken_names)
    for task, reason in plan.blocked:
        store.block(task.id, reason)
    for task, reason in plan.waiting:
        _wait(store, task, reason)

    # A set: `loaded` may be a sequence of thousands of names, looked up once per task.
    loaded_names = None if loaded is None else frozenset(loaded)
    unloaded: set[str] = set()
    ready: list[Task] = []
    check = _StartCheck(store, registry.agents, fingerprint, env)
    for task in plan.runnable:
        spec = registry.spec(task.project)
        assert spec is not None
        if loaded_names is not None and task.project not in loaded_names:
            unloaded.add(task.project)
            _wait(store, task, WAITING_FOR_RELOAD.format(project=task.project))
        elif check.may_start(task, spec):
            ready.append(task)
    if not ready:
        return DispatchOutcome(unloaded=sorted(unloaded))

    priorities: Mapping[str, int] = {}
    if allocation is not None:
        ranked_now, _, _ = current_allocation(instance, store, allocation, ready)
        priorities = ranked_now.priorities
    # Highest priority first: the run queue may start the first runs before the last exist.
    ranked = sorted(ready, key=lambda t: -priorities.get(t.id, 0))[:limit]
    ensure_partitions(instance, ranked)
    launches = []
    for task in ranked:
        if not store.mark_dispatched(task.id):
            continue
        spec = registry.spec(task.project)
        assert spec is not None
        launches.append(
            Launch(
                task=task,
                run_key=f"{task.id}.{task.dispatches + 1}",
                asset_path=(task.project, "tasks"),
                tags=task_run_tags(task, spec, priorities.get(task.id)),
            )
        )
    return DispatchOutcome(launches=launches, unloaded=sorted(unloaded))


def _wait(store: TaskStore, task: Task, reason: str) -> None:
    """Leave `task` queued, saying why; written only when the reason changed, since the
    dispatch runs every few seconds over the whole queue."""
    if task.reason != reason:
        store.note_waiting(task.id, reason)


class _StartCheck:
    """Whether a runnable task's profile can start now, looked up once per profile and
    command in one dispatch."""

    def __init__(
        self, store: TaskStore, agents: AgentsFile, fingerprint: str, env: Mapping[str, str]
    ) -> None:
        self.store = store
        self.agents = agents
        self.fingerprint = fingerprint
        self.env = env
        self._missing: dict[tuple[str, tuple[str, ...]], str | None] = {}

    def may_start(self, task: Task, spec: ProjectSpec) -> bool:
        """True when `task` may be launched; otherwise it is left queued with the reason, or
        failed when it is the first to find its agent program missing."""
        profile_name = task.profile or spec.agent.profile
        try:
            profile = resolve_profile(self.agents, spec, profile_name)
        except ProfileError as exc:
            _wait(self.store, task, str(exc))
            return False
        command = tuple(spec.agent.command or ())
        key = (profile_name, command)
        if key not in self._missing:
            self._missing[key] = missing_executable(profile, command, self.env)
        program = self._missing[key]
        if program is None:
            return True
        hold = f"profile:{profile_name}:{program}"
        held = self.store.holding(hold, self.fingerprint)
        if held is not None:
            _wait(self.store, task, f"held: {held}")
            return False
        reason = (
            f"agent program {program!r} of profile {profile_name!r} is not on PATH "
            f"({self.env.get('PATH', '')}); install it or fix PATH, then "
            f"`orch task retry {task.id}`. The other tasks of this profile wait until the "
            "registry or PATH changes."
        )
        self.store.finish(task.id, TaskStatus.FAILED, reason)
        self.store.hold(hold, self.fingerprint, f"agent program {program!r} not found", task.id)
        return False


def ensure_partitions(instance: dg.DagsterInstance, tasks: Iterable[Task]) -> None:
    """Add the tasks' partitions, one bulk call per project."""
    by_project: dict[str, list[str]] = {}
    for task in tasks:
        by_project.setdefault(task.project, []).append(task.id)
    for project, ids in by_project.items():
        name = tasks_partitions_name(project)
        missing = [i for i in ids if not instance.has_dynamic_partition(name, i)]
        if missing:
            try:
                instance.add_dynamic_partitions(name, missing)
            except sa.exc.IntegrityError:
                # Another process (the CLI, the sensor) added some of them a moment ago.
                for key in missing:
                    with contextlib.suppress(sa.exc.IntegrityError):
                        instance.add_dynamic_partitions(name, [key])


def reconcile_ended_runs(
    store: TaskStore,
    instance: dg.DagsterInstance,
    log: logging.Logger | dg.DagsterLogManager,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """A task whose run ended (failed, cancelled, crashed) without recording it never stays
    `running` or dispatched: it fails, is cancelled, or (if its run never appeared) is queued
    again. A running task whose run is still in progress but whose heartbeat stopped
    (`ORCH_HEARTBEAT_STALE_S` in `environ`) is reaped (`reap_lost_run`); so is a run that went
    silent without claiming its task, or after its task ended (`fail_silent_runs`). An agent
    left running by a dead run is stopped. Outcomes a run had to keep on disk under `home`
    (the database refused them) are recorded first."""
    if home is not None:
        for task_id in record_pending(store, home):
            log.info(f"task {task_id}: recorded the outcome its run kept on disk")
    stale_s = heartbeat_stale_after(os.environ if environ is None else environ)
    active = store.tasks(statuses=[TaskStatus.RUNNING, TaskStatus.QUEUED])
    # The claimed tasks' runs in one query: one lookup each cost a connection each (PostgreSQL)
    # and most of the tick with a few dozen tasks running.
    claimed = [task.run_id for task in active if task.run_id]
    known = (
        {run.run_id: run for run in instance.get_runs(filters=dg.RunsFilter(run_ids=claimed))}
        if claimed
        else {}
    )
    for task in active:
        if task.status is TaskStatus.QUEUED and not task.dispatched:
            continue
        if task.run_id:  # claimed: its run is known, however it was launched
            run = known.get(task.run_id)
            runs = [run] if run else []
        else:
            runs = list(instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task.id}), limit=1))
            # A run of an earlier dispatch (before a retry or an interruption) is not this one's.
            key = runs[0].tags.get(RUN_KEY_TAG) if runs else None
            if key is not None and key != f"{task.id}.{task.dispatches}":
                runs = []
        if not runs:
            age = (datetime.now(UTC) - task.updated_at).total_seconds()
            if task.run_id is None:
                again = age > REQUEST_GRACE_S and store.requeue(
                    task.id, "its run request was lost", dispatch=task.dispatches
                )
            else:
                again = age > LAUNCH_GRACE_S and store.requeue(task.id, "its run vanished")
            if again:
                log.warning(f"task {task.id}: no run after {age:.0f}s; queued again")
            continue
        latest = runs[0]
        if not latest.is_finished:
            if task.status is TaskStatus.RUNNING:
                if (
                    latest.run_id == task.run_id
                    and latest.status in IN_PROGRESS
                    and _silent_for(task) > stale_s
                ):
                    reap_lost_run(store, instance, task, latest, stale_s, log)
                continue
            failed = _end_silent_unclaimed_run(instance, task, latest, stale_s, log)
            if failed is None:
                continue
            latest = failed  # what follows puts its task back in the queue
        if "interrupt" in task.extra:
            # Asked to be interrupted, and its run ended without putting it back in the queue
            # (its worker died first): queued to continue the session it had, on its branch.
            continued = store.checkpoint(
                task.id,
                task.run_id,
                commit=None,
                session_id=task.extra.get("agent_session"),
            )
            ended = continued is not None
            if continued is not None:
                log.warning(f"task {task.id}: run {latest.run_id} ended; {continued.reason}")
        elif latest.status == dg.DagsterRunStatus.CANCELED:
            ended = store.fail_run(task.id, task.run_id, f"run {latest.run_id} was cancelled")
            if ended:
                log.info(f"task {task.id}: run {latest.run_id} cancelled")
        elif latest.status == dg.DagsterRunStatus.FAILURE or task.status is TaskStatus.RUNNING:
            cause = _failure_cause(instance, latest.run_id)
            if task.may_retry_early_failure:
                # Nothing of the agent's is lost: try again, and say what stopped the run.
                requeued = store.requeue_failed_start(task.id, latest.run_id, cause)
                if requeued:
                    log.warning(f"task {task.id}: {requeued}; queued again")
                continue
            if task.status is TaskStatus.RUNNING and RUN_WORKER_DIED in cause:
                # Run monitoring saw the run's worker die (a Celery pool process killed, say):
                # nothing the agent did ended it, so it continues, as after a lost heartbeat.
                taken = store.reap(
                    task.id,
                    latest.run_id,
                    stale_before=datetime.now(UTC) + timedelta(seconds=1),
                    reason=f"its run worker died ({cause})",
                    give_up_after=LOST_LIMIT,
                )
                if taken is not None:
                    log.warning(f"task {task.id}: run {latest.run_id} lost; {taken.reason}")
                    _stop_agent(task, log)
                    continue
            reason = f"run {latest.run_id} ended ({latest.status.value}) without recording the task"
            if cause:
                reason += f": {cause}"
            ended = store.fail_run(task.id, task.run_id, reason)
            if ended:
                log.warning(f"task {task.id}: {reason}")
        else:
            ended = False
        if ended:
            _stop_agent(task, log)
    fail_silent_runs(store, instance, stale_s, log)


def fail_silent_runs(
    store: TaskStore,
    instance: dg.DagsterInstance,
    stale_s: float,
    log: logging.Logger | dg.DagsterLogManager,
) -> list[str]:
    """Fail the task runs still in progress (STARTED, CANCELING) that their task no longer
    vouches for and that have been silent for `stale_s`: a run whose task ended (it recorded
    the outcome, or another did) and whose heartbeat stopped, or one that never held its
    task, started that long ago. Their workers died unseen after the part that matters (with
    their code server or host): left alone, each would hold its pool slots until its
    `dagster/max_runtime`. Runs of running or queued tasks are the reaper's and the dispatch's
    (above). The ids of the runs failed."""
    now = datetime.now(UTC)
    failed = []
    in_progress = dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    )
    for run in instance.get_runs(filters=in_progress):
        task_id = run.tags.get(TASK_TAG)
        task = store.get(task_id) if task_id else None
        if task is None or task.status in (TaskStatus.RUNNING, TaskStatus.QUEUED):
            continue
        if task.run_id == run.run_id:
            seen = max(
                (t for t in (task.heartbeat_at, task.finished_at) if t), default=task.started_at
            )
            last = seen.timestamp() if seen else None
        else:
            record = instance.get_run_record_by_id(run.run_id)
            last = record.start_time if record is not None else None
        if last is None or now.timestamp() - last <= stale_s:
            continue
        log.warning(
            f"task {task.id} ({task.status}): its run {run.run_id} is still {run.status.value} "
            f"and silent for {now.timestamp() - last:.0f}s; failing it"
        )
        _end_dead_run(instance, run.run_id, f"{NO_HEARTBEAT} after its task ended", log)
        failed.append(run.run_id)
    return failed


def _end_dead_run(
    instance: dg.DagsterInstance,
    run_id: str,
    message: str,
    log: logging.Logger | dg.DagsterLogManager,
) -> dg.DagsterRun | None:
    """Terminate a run whose worker is dead, as far as one can (its code server is likely what
    died with it), and fail it with `message`; the run as it is now."""
    try:
        instance.run_launcher.terminate(run_id)
    except Exception as exc:
        log.info(f"could not terminate run {run_id}: {exc}")
    current = instance.get_run_by_id(run_id)
    if current is not None and not current.is_finished:
        instance.report_run_failed(current, message=message)
    return instance.get_run_by_id(run_id)


def _silent_for(task: Task) -> float:
    """Seconds since the task's last heartbeat (or, before its first, its claim)."""
    last = task.heartbeat_at or task.started_at
    return 0.0 if last is None else (datetime.now(UTC) - last).total_seconds()


def reap_lost_run(
    store: TaskStore,
    instance: dg.DagsterInstance,
    task: Task,
    run: dg.DagsterRun,
    stale_s: float,
    log: logging.Logger | dg.DagsterLogManager,
) -> Task | None:
    """A running task whose run is in progress but has sent no heartbeat for `stale_s`: its
    worker died unseen (with its code server or its host, which Dagster's default launcher does
    not notice; the run would stay STARTED until its `dagster/max_runtime`). The task is taken
    back from the run (in one conditional write, so a run that beats meanwhile keeps it) and
    queued to continue its agent's session, or failed once lost LOST_LIMIT times; then the run
    is terminated (best effort) and failed with NO_HEARTBEAT, and the agent's process group,
    if it is still on this host, is killed. The task as it is now; None when it was not taken."""
    stale_before = datetime.now(UTC) - timedelta(seconds=stale_s)
    taken = store.reap(
        task.id,
        run.run_id,
        stale_before=stale_before,
        reason=NO_HEARTBEAT,
        give_up_after=LOST_LIMIT,
    )
    if taken is None:
        return None
    log.warning(
        f"task {task.id}: run {run.run_id} sent no heartbeat for {_silent_for(task):.0f}s; "
        f"{taken.reason}"
    )
    _end_dead_run(instance, run.run_id, NO_HEARTBEAT, log)
    _stop_agent(task, log)
    return taken


def _stop_agent(task: Task, log: logging.Logger | dg.DagsterLogManager) -> None:
    """Kill the agent's process group a dead run left behind, if it is still on this host."""
    pgid = task.extra.get("agent_pgid")
    if pgid and kill_process_group(int(pgid), task.extra.get("agent_started")):
        log.warning(f"task {task.id}: stopped its agent's process group {pgid}")


def _end_silent_unclaimed_run(
    instance: dg.DagsterInstance,
    task: Task,
    run: dg.DagsterRun,
    stale_s: float,
    log: logging.Logger | dg.DagsterLogManager,
) -> dg.DagsterRun | None:
    """A dispatched task's run that started more than `stale_s` ago and never claimed the task:
    its worker died before the claim (with its code server, or with its host), where no task
    heartbeat can tell. The run is terminated (best effort) and failed with NO_HEARTBEAT; the
    run as it is now, or None when it is alive (or not started) as far as can be told."""
    if run.status is not dg.DagsterRunStatus.STARTED:
        return None  # a run stuck STARTING is failed by run monitoring's start timeout
    record = instance.get_run_record_by_id(run.run_id)
    started = record.start_time if record is not None else None
    if started is None or datetime.now(UTC).timestamp() - started <= stale_s:
        return None
    log.warning(
        f"task {task.id}: run {run.run_id} started {datetime.now(UTC).timestamp() - started:.0f}s "
        "ago and never claimed the task; failing it"
    )
    ended = _end_dead_run(instance, run.run_id, f"{NO_HEARTBEAT}: it never claimed the task", log)
    return ended or run


def _failure_cause(instance: dg.DagsterInstance, run_id: str) -> str:
    """What a failed run's step (or the run itself) said went wrong, in one line."""
    for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=event_type, limit=1).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = getattr(event, "event_specific_data", None)
            error = getattr(data, "error", None)
            message = getattr(error, "message", None) or (event.message if event else None)
            if message:
                return " ".join(str(message).split())[:500]
    return "no error was recorded"


def cancel(
    store: TaskStore,
    instance: dg.DagsterInstance | None,
    task_id: str,
    reason: str = "cancelled by user",
) -> tuple[Task, list[str]]:
    """Cancel a task and terminate any run carrying it out (which ends its agent's process
    group); the task and the ids of the runs terminated. TaskError if it already ended."""
    cancelled = store.cancel(task_id, reason)
    stopped: list[str] = []
    if instance is None:
        return cancelled, stopped
    runs = list(instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task_id})))
    if cancelled.run_id and all(run.run_id != cancelled.run_id for run in runs):
        run = instance.get_run_by_id(cancelled.run_id)
        runs = [run, *runs] if run else runs
    for run in runs:
        if not run.is_finished:
            instance.run_coordinator.cancel_run(run.run_id)
            stopped.append(run.run_id)
    return cancelled, stopped


def interrupt(
    store: TaskStore,
    instance: dg.DagsterInstance,
    task: Task,
    *,
    kind: str,
    reason: str,
    by: str | None = None,
) -> str | None:
    """Interrupt a running or dispatched task without losing anything: it is marked, then its
    run is ended through the run queue (Dagster interrupts the step, whose handler commits the
    agent's work so far on the task branch and puts the task back in the queue to continue its
    session; see tasks/execution.py). A run still waiting in the queue is cancelled and its task
    queued again at once. `kind`: `stopped` or `preempted` (then `by` is the task it makes room
    for). The id of the run ended, or None when there was none."""
    run = current_run(instance, task)
    if run is not None and run.status == dg.DagsterRunStatus.QUEUED:
        # Never started: nothing to commit. Queued again first, so that the cancelled run is
        # not read as the task's end.
        store.requeue(task.id, f"{reason}; queued again", uncount=True)
        instance.run_coordinator.cancel_run(run.run_id)
        return run.run_id
    if not store.request_interrupt(task.id, kind, reason, by):
        return None
    if run is None or run.is_finished:
        return None  # the dispatch tick sees the run's end and re-queues the task
    instance.add_run_tags(run.run_id, {INTERRUPTED_TAG: kind})
    instance.run_coordinator.cancel_run(run.run_id)
    return run.run_id


def current_run(instance: dg.DagsterInstance, task: Task) -> dg.DagsterRun | None:
    """The run carrying out `task` now: the one that claimed it, else its latest."""
    if task.run_id:
        run = instance.get_run_by_id(task.run_id)
        if run is not None:
            return run
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TASK_TAG: task.id}), limit=1)
    return runs[0] if runs else None


def retry(store: TaskStore, instance: dg.DagsterInstance | None, task_id: str) -> Task:
    """Queue a failed, blocked or cancelled task again as a new attempt; TaskError for a task
    that is queued, running or succeeded."""
    task = store.retry(task_id)
    if instance is not None:
        ensure_partitions(instance, [task])
    return task
