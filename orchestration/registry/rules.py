"""Rules that span registry files, each written once: which agent profile a project's task runs
with, and whether that profile can run for that project. The loader, the CLI and task execution
all ask here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestration.registry.models import AgentProfile, AgentsFile, ProjectSpec


@dataclass(frozen=True)
class ProfileError(Exception):
    """A profile that cannot run a project's task: `key` is the project key at fault."""

    key: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message


def resolve_profile(
    agents: AgentsFile | Mapping[str, AgentProfile], spec: ProjectSpec, name: str | None = None
) -> AgentProfile:
    """The profile `name` (default: the project's `agent.profile`) if it exists and can run a
    task of `spec`; ProfileError saying what to change otherwise."""
    profiles = agents.profiles if isinstance(agents, AgentsFile) else agents
    name = name or spec.agent.profile
    profile = profiles.get(name)
    if profile is None:
        valid = ", ".join(sorted(profiles)) or "none"
        raise ProfileError(
            ("agent", "profile"), f"unknown agent profile {name!r}; profiles: {valid}"
        )
    if profile.runs_project_command and not spec.agent.command:
        raise ProfileError(
            ("agent", "command"),
            f"profile {name!r} runs the project's own command, and {spec.name} sets none: "
            "set agent.command to an argv list",
        )
    return profile
