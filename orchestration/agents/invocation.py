"""Turning an agent profile and a task into the argv, environment and directory of one run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.agents.adapters import parse_agent_output
from orchestration.agents.result import AgentOutputError, AgentResult, AgentStatus
from orchestration.process import ExecutableNotFoundError, run_process
from orchestration.registry.models import AgentProfile

#: How much of an agent's stdout and stderr is kept (each); the rest is cut from the middle.
OUTPUT_CAP_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class AgentRequest:
    """Everything that varies between two runs of one profile."""

    prompt: str
    workdir: Path
    model: str | None = None
    session_id: str | None = None
    command: Sequence[str] = ()


def needs_command(profile: AgentProfile) -> bool:
    """True when the profile runs the project's own `agent.command`."""
    return any(part == "{command}" for part in profile.argv)


def build_argv(profile: AgentProfile, request: AgentRequest) -> list[str]:
    """The agent's argv: the profile's template with placeholders filled, never a shell line.

    Each placeholder fills exactly one argument (the prompt stays one argument whatever it
    contains), except `{command}`, which stands for the project's whole `agent.command` list.
    """
    values = {
        "prompt": request.prompt,
        "model": request.model or "",
        "session_id": request.session_id or "",
        "workdir": str(request.workdir),
        "python": sys.executable,
        "command": "",
    }
    template = list(profile.argv)
    if request.model and profile.model_args:
        template += profile.model_args
    if request.session_id and profile.resume_args:
        template += profile.resume_args
    if needs_command(profile) and not request.command:
        raise ValueError("this profile runs the project's agent.command, and none is set")
    argv: list[str] = []
    for part in template:
        if part == "{command}":
            argv.extend(request.command)
        else:
            argv.append(part.format_map(values))
    return argv


def run_agent(
    profile: AgentProfile,
    request: AgentRequest,
    *,
    env: Mapping[str, str],
    timeout_s: float,
    on_start: Callable[[int], None] | None = None,
) -> AgentResult:
    """Run one agent to completion (or timeout) and normalise what it reported."""
    argv = build_argv(profile, request)
    try:
        process = run_process(
            argv,
            cwd=request.workdir,
            env=env,
            timeout_s=timeout_s,
            output_cap_bytes=OUTPUT_CAP_BYTES,
            on_start=on_start,
        )
    except ExecutableNotFoundError as exc:
        return AgentResult(AgentStatus.FAILED, "", 0.0, error=f"agent binary not found: {exc}")
    except OSError as exc:  # e.g. E2BIG: one argument over the kernel's 128 KiB limit
        return AgentResult(AgentStatus.FAILED, "", 0.0, error=f"could not start the agent: {exc}")
    try:
        return parse_agent_output(profile.output, process)
    except AgentOutputError as exc:
        return AgentResult(
            AgentStatus.FAILED, "", process.duration_s, error=f"malformed agent output: {exc}"
        )
