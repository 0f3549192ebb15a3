"""Dagster resources: the assets' and sensors' door to the live registry, the repositories, the
task store and ORCH_HOME.

They read the environment only when a run or tick calls them, never when definitions load, and
they hand out domain objects: the logic lives in the rooms (`tasks/`, `workspace/`, ...).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import dagster as dg

from orchestration.control.store import ProjectStates, StateRecord
from orchestration.dependencies.detection import ScanOutcome, detect
from orchestration.dependencies.graph import DependencyGraph
from orchestration.redaction import Redactor
from orchestration.registry.live import LiveRegistry
from orchestration.registry.loader import LoadedProject, Registry
from orchestration.registry.models import DEFAULT_BASE_ENV, ProjectSpec
from orchestration.settings import Settings, sandbox_enabled
from orchestration.tasks.execution import TaskOutcome, run_task
from orchestration.tasks.store import WRITE_RETRY_S, TaskStore
from orchestration.verification import VerificationResult, run_verification
from orchestration.workspace.isolation import child_environment
from orchestration.workspace.sandbox import other_checkouts, sandbox_program
from orchestration.workspace.workspace import ProjectWorkspace, SourceState, observe_source


class OrchestratorResource(dg.ConfigurableResource):
    """A resource that works on the registry and under ORCH_HOME."""

    home: str | None = None
    """State directory; when unset, ORCH_HOME (default `./.orch`) at run time."""

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home is None:
            return settings
        return Settings(
            settings.projects_dir,
            settings.config_dir,
            Path(self.home).resolve(),
            settings.origins,
            settings.notices,
        )

    def live_registry(self) -> LiveRegistry:
        return LiveRegistry.of(self.settings())

    def registry(self) -> Registry:
        """The registry as its files say now."""
        return self.live_registry().current()

    def project_state(self, project: str) -> StateRecord:
        """The project's lifecycle state now (active, paused, stopped, archived)."""
        store = TaskStore.from_settings(self.settings())
        try:
            return ProjectStates(store).get(project)
        finally:
            store.dispose()

    def project_states(self) -> dict[str, StateRecord]:
        """Every project whose state was ever set (the others are active)."""
        store = TaskStore.from_settings(self.settings())
        try:
            return ProjectStates(store).all()
        finally:
            store.dispose()

    def spec(self, project: str) -> ProjectSpec:
        """The project's configuration now; a Failure when its file is gone or broken."""
        registry = self.registry()
        spec = registry.spec(project)
        if spec is None:
            try:
                registry.project(project)
            except KeyError as exc:
                raise dg.Failure(description=exc.args[0]) from None
        assert spec is not None
        return spec


class ProjectWorkspaces(OrchestratorResource):
    """Projects' repositories and private state under ORCH_HOME."""

    def workspace(self, spec: ProjectSpec) -> ProjectWorkspace:
        return ProjectWorkspace(self.settings().home, spec)

    def observe(self, spec: ProjectSpec) -> SourceState:
        return observe_source(spec)

    def detect_dependencies(self, spec: ProjectSpec) -> tuple[ScanOutcome, DependencyGraph]:
        """Scan this project's manifests (cached by commit) and rebuild the graph with the
        other projects' last scans."""
        registry = self.registry()
        settings = registry.settings
        others = [p for p in registry.projects if p.name != spec.name]
        this = LoadedProject(spec, settings.projects_dir / f"{spec.name}.yaml", {})
        graph, outcomes = detect([*others, this], settings, only=[spec.name])
        outcome = outcomes[spec.name]
        if isinstance(outcome, str):
            raise RuntimeError(f"dependency detection failed for {spec.name}: {outcome}")
        return outcome, graph

    def detect_all(self) -> tuple[DependencyGraph, dict[str, ScanOutcome | str]]:
        registry = self.registry()
        return detect(registry.projects, registry.settings)

    def verify(self, spec: ProjectSpec) -> VerificationResult:
        """Run the project's verify command on a fresh worktree of its branch, in the sandbox
        unless `ORCH_SANDBOX=off` (SandboxError when it is on but cannot be built here)."""
        registry = self.registry()
        base_env = registry.agents.base_env if registry.agents else DEFAULT_BASE_ENV
        workspace = self.workspace(spec)
        program = sandbox_program(os.environ) if sandbox_enabled(os.environ) else None
        env = child_environment(
            os.environ,
            [*base_env, *spec.secrets],
            overrides={"HOME": str(workspace.prepare_home())},
        )
        others = [p.spec.repo for p in registry.projects if p.name != spec.name]
        with workspace.checkout("verify") as tree:
            sandbox = (
                workspace.sandbox(
                    tree,
                    program=program,
                    environ=os.environ,
                    also_hidden=other_checkouts(others, own=spec.repo),
                ).prefix(tree.path)
                if program
                else []
            )
            result = run_verification(spec, tree.path, env, sandbox=sandbox)
        # The tests may print the project's secrets: never shown as they are.
        redact = Redactor.for_secrets(spec.secrets, os.environ)
        return replace(result, output_tail=redact.text(result.output_tail))


class AgentTasks(OrchestratorResource):
    """Task records and the agent runs that carry them out."""

    def store(self, *, write_retry_s: float = 0.0) -> TaskStore:
        return TaskStore.from_settings(self.settings(), write_retry_s=write_retry_s)

    def execute(self, project: str, task_id: str, run_id: str, log: logging.Logger) -> TaskOutcome:
        """Claim the task for this run and carry it out; TaskError when it may not run."""
        # The agent's work must be recorded: the writes after it retry while the database
        # is locked or unreachable.
        store = self.store(write_retry_s=WRITE_RETRY_S)
        try:
            registry = self.registry()
            return run_task(
                store=store,
                registry=registry,
                project=project,
                task_id=task_id,
                run_id=run_id,
                home=registry.settings.home,
                parent_env=os.environ,
                log=log,
            )
        finally:
            store.dispose()
