"""The names the orchestrator gives to Dagster things, in one place: tags on assets and runs, slot
pools, partition sets. Plain strings, so any room can use them without importing Dagster."""

#: Asset tag: which of a project's assets this is (source, manifest, verification, tasks, ...).
ROLE_TAG = "orch/role"
#: Asset and run tag: the project.
PROJECT_TAG = "project"
#: Run tag: the task a run carries out.
TASK_TAG = "orch/task"
#: Run tag: the linked session a task belongs to (`orch task add --propagate`).
SESSION_TAG = "orch/session"
#: Run tag: why a task's run was ended early to be continued later (`stopped`, `preempted`).
INTERRUPTED_TAG = "orch/interrupted"
#: Run tag: the project a `project_control` run acts on, and the action.
CONTROL_TAG = "orch/control"
#: Run tag held at a limit of 0 by the run queue (dagster.yaml `tag_concurrency_limits`): a
#: queued run of a paused project's assets (a refresh, a verification) carries it until the
#: project resumes.
HOLD_TAG = "orch/hold"
HOLD_VALUE = "paused"
#: Run tag Dagster gives a run a sensor requested with a run key (ours: `<task id>.<dispatch>`).
RUN_KEY_TAG = "dagster/run_key"
#: Run tag read by Dagster's run retries (dagster.yaml `run_retries`): a task run is never
#: re-executed by Dagster; a task's own retry belongs to the orchestrator, which counts attempts
#: and continues sessions.
MAX_RETRIES_TAG = "dagster/max_retries"
#: Run tag read by Dagster's run queue: higher starts first.
PRIORITY_TAG = "dagster/priority"
#: Run tag read by Dagster's run monitoring: a run still going after this many seconds is ended.
MAX_RUNTIME_TAG = "dagster/max_runtime"
#: Asset tags: the project's priority class, its agent profile, and `demo` for the offline agent.
PRIORITY_CLASS_TAG = "priority"
AGENT_PROFILE_TAG = "agent_profile"
AGENT_TAG = "agent"

#: The Celery queue a run is sent to (read by dagster_celery's CeleryRunLauncher).
CELERY_QUEUE_TAG = "dagster-celery/queue"

#: The global pool: every agent run holds one of its slots.
GLOBAL_POOL = "agents"


#: A project's own pool's name begins so: `project_<name>`.
PROJECT_POOL_PREFIX = "project_"


def project_pool(project: str) -> str:
    """The pool that holds one project's concurrent agents to its `max_parallel`."""
    return f"{PROJECT_POOL_PREFIX}{project}"


#: A provider pool's name begins so: `provider_<account>`.
PROVIDER_POOL_PREFIX = "provider_"


def provider_pool(account: str) -> str:
    """The pool of one provider account (a profile's `provider_pool`), which a usage limit
    closes until the provider's reset."""
    return f"{PROVIDER_POOL_PREFIX}{account}"


#: A lease channel's pool name begins so: `lease_<publisher>_<channel>`.
LEASE_POOL_PREFIX = "lease_"


def lease_pool(publisher: str, channel: str) -> str:
    """The pool of a `lease` channel, which every task run of a subscriber holds."""
    return f"{LEASE_POOL_PREFIX}{publisher}_{channel}"


def channel_asset_name(channel: str) -> str:
    """The last part of a published channel's asset key, `<publisher>/channel_<name>`."""
    return f"channel_{channel}"


def tasks_partitions_name(project: str) -> str:
    """The dynamic partitions definition holding a project's task ids."""
    return f"{project}_tasks"
