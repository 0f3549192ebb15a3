"""Dagster resources: the I/O the assets ask for, behind typed methods.

`ProjectWorkspaces` is the one door to repositories and ORCH_HOME. It reads the environment only
when a run calls it, never when definitions load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from orchestration.dependencies.manifests import Manifest, manifest_kind, read_manifest
from orchestration.registry.loader import load_agents
from orchestration.registry.models import ProjectSpec
from orchestration.settings import Settings
from orchestration.tasks.execution import TaskOutcome, execute_task
from orchestration.tasks.models import TaskStatus
from orchestration.tasks.store import TaskError, TaskStore
from orchestration.verification import VerificationResult, run_verification
from orchestration.workspace.isolation import child_environment
from orchestration.workspace.workspace import ProjectWorkspace, SourceState, observe_source


@dataclass(frozen=True)
class ManifestScan:
    """The manifests found at one commit of a project's branch."""

    commit: str | None
    manifests: tuple[Manifest, ...]
    problems: tuple[str, ...]

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(sorted({m.provides for m in self.manifests if m.provides}))


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

    def scan_manifests(self, spec: ProjectSpec) -> ManifestScan:
        workspace = self.workspace(spec)
        repo = workspace.sync()
        ref = workspace.upstream_ref
        commit = repo.resolve(ref)
        if commit is None:
            return ManifestScan(None, (), (f"branch {spec.branch!r} not found in {spec.repo}",))
        manifests, problems = [], []
        for path in repo.list_files(commit):
            if manifest_kind(path) is None:
                continue
            try:
                manifests.append(read_manifest(path, repo.read_file(commit, path)))
            except ValueError as exc:
                problems.append(str(exc))
        return ManifestScan(commit, tuple(manifests), tuple(problems))

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
