"""Getting an agent's work out of the orchestrator: the task's change as a patch, the transcript
of what its agent printed (`transcript.py`), and delivering its branch from the private clone to
the user's own repository or to the project's remote, never by force (`deliver.py`). Nothing
here imports Dagster: the `orch task diff`, `log` and `deliver` commands use it directly."""
