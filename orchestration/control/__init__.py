"""Project lifecycle: the states a project can be in (active, paused, stopped, archived), the
transitions between them with their audit log, and what each transition does to the project's
tasks, runs, pools and files."""
