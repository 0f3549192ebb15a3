"""Dagster resources: the I/O the assets ask for, behind typed methods.

`ProjectWorkspaces` is the one door to repositories and ORCH_HOME. It reads the environment only
when a run calls it, never when definitions load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dagster as dg

from orchestration.agents.invocation import needs_command
from orchestration.dependencies.detection import ScanOutcome, detect
from orchestration.dependencies.graph import DependencyGraph
from orchestration.registry import LoadedProject, load_registry
from orchestration.registry.loader import load_agents
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.tasks.execution import TaskOutcome, execute_task
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError, TaskStore
from orchestration.verification import VerificationResult, run_verification
from orchestration.workspace.isolation import child_environment
from orchestration.workspace.workspace import ProjectWorkspace, SourceState, observe_source


class _StateResource(dg.ConfigurableResource):
    """A resource that works under ORCH_HOME."""

    home: str | None = None
    """State directory; when unset, ORCH_HOME (default `./.orch`) at run time."""

    base_env: list[str] = ["PATH", "LANG", "LC_ALL", "TZ", "TERM"]
    """Variables of the parent environment every child process of a project may see."""

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home is None:
            return settings
        return Settings(settings.projects_dir, settings.resources_dir, Path(self.home).resolve())


class ProjectWorkspaces(_StateResource):
    """Projects' repositories and private state under ORCH_HOME."""

    def workspace(self, spec: ProjectSpec) -> ProjectWorkspace:
        return ProjectWorkspace(self.settings().home, spec)

    def observe(self, spec: ProjectSpec) -> SourceState:
        return observe_source(spec)

    def detect_dependencies(self, spec: ProjectSpec) -> tuple[ScanOutcome, DependencyGraph]:
        """Scan this project's manifests (cached by commit) and rebuild the graph with the
        other projects' last scans."""
        settings = self.settings()
        others = [p for p in load_registry(settings).projects if p.name != spec.name]
        this = LoadedProject(spec, settings.projects_dir / f"{spec.name}.yaml", {})
        graph, outcomes = detect([*others, this], settings, only=[spec.name])
        outcome = outcomes[spec.name]
        if isinstance(outcome, str):
            raise RuntimeError(f"dependency detection failed for {spec.name}: {outcome}")
        return outcome, graph

    def detect_all(self) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
        settings = self.settings()
        return detect(load_registry(settings).projects, settings)

    def verify(self, spec: ProjectSpec) -> VerificationResult:
        workspace = self.workspace(spec)
        env = child_environment(
            os.environ,
            [*self.base_env, *spec.secrets],
            overrides={"HOME": str(workspace.prepare_home())},
        )
        with workspace.checkout("verify") as workdir:
            return run_verification(spec, workdir, env)


class AgentTasks(_StateResource):
    """Task records and the agent runs that carry them out."""

    def store(self) -> TaskStore:
        return TaskStore.from_settings(self.settings())

    def execute(
        self, spec: ProjectSpec, task_id: str, run_id: str, log: logging.Logger
    ) -> TaskOutcome:
        """Claim the task for this run and carry it out; TaskError when it may not run."""
        store = self.store()
        try:
            task = store.claim(task_id, run_id)
            if task.project != spec.name:
                store.finish(task_id, TaskStatus.FAILED, f"task belongs to {task.project}")
                raise TaskError(
                    f"task {task_id} belongs to project {task.project}, not {spec.name}"
                )
            settings = self.settings()
            agents = load_agents(settings)
            profile_name = task.profile or spec.agent.profile
            profile = agents.profiles.get(profile_name)
            if profile is None:
                known = ", ".join(agents.profiles)
                reason = f"unknown agent profile {profile_name!r}; profiles: {known}"
                store.finish(task_id, TaskStatus.FAILED, reason)
                raise TaskError(reason)
            if needs_command(profile) and not spec.agent.command:
                reason = f"profile {profile_name!r} runs agent.command, and {spec.name} sets none"
                store.finish(task_id, TaskStatus.FAILED, reason)
                raise TaskError(reason)
            try:
                return execute_task(
                    task=task,
                    spec=spec,
                    profile_name=profile_name,
                    profile=profile,
                    base_env=tuple(self.base_env),
                    workspace=ProjectWorkspace(settings.home, spec),
                    store=store,
                    parent_env=os.environ,
                    log=log,
                )
            except Exception as exc:
                store.fail_run(task_id, run_id, f"{type(exc).__name__}: {exc}")
                raise
        finally:
            store.dispose()
