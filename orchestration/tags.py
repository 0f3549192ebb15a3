"""The tag names the orchestrator puts on assets and runs, in one place."""

#: Asset tag: which of a project's assets this is (source, manifest, verification, tasks, ...).
ROLE_TAG = "orch/role"
#: Asset and run tag: the project.
PROJECT_TAG = "project"
#: Run tag: the task a run carries out.
TASK_TAG = "orch/task"
#: Run tag: the linked session a task belongs to (`orch task add --propagate`).
SESSION_TAG = "orch/session"
#: Run tag read by Dagster's run queue: higher starts first.
PRIORITY_TAG = "dagster/priority"
#: Run tag read by Dagster's run monitoring: a run still going after this many seconds is ended.
MAX_RUNTIME_TAG = "dagster/max_runtime"
