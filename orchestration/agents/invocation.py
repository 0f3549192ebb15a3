"""Turning an agent profile and a task into the argv, environment and directory of one run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from orchestration.agents.adapters import parse_agent_output
from orchestration.agents.result import AgentOutputError, AgentResult, AgentStatus
from orchestration.process import (
    ExecutableNotFoundError,
    ProcessResult,
    find_executable,
    run_process,
)
from orchestration.registry.models import (
    COMMAND_PLACEHOLDER,
    END_OF_OPTIONS,
    PROMPT_FILE_PLACEHOLDER,
    AgentProfile,
)

#: How much of an agent's stdout and stderr is kept (each); the rest is cut from the middle.
OUTPUT_CAP_BYTES = 4 * 1024 * 1024
#: What `{prompt_file}` stands for: the agent's standard input, which carries the prompt. No
#: file on disk to clean up or to mount into a sandbox; any program that opens a path reads it.
PROMPT_FILE_PATH = "/dev/stdin"


@dataclass(frozen=True)
class AgentRequest:
    """Everything that varies between two runs of one profile."""

    prompt: str
    workdir: Path
    model: str | None = None
    session_id: str | None = None
    """A session to resume (the profile's `resume_args`)."""
    new_session_id: str | None = None
    """The id a new session is to take (the profile's `session_args`), when it has them."""
    command: Sequence[str] = ()
    budget_usd: float | None = None
    """What the run may spend at most (the profile's `budget_args`), when it has a cap."""


def build_argv(profile: AgentProfile, request: AgentRequest) -> list[str]:
    """The agent's argv: the profile's template with placeholders filled, never a shell line.

    Each placeholder fills exactly one argument (the prompt stays one argument whatever it
    contains), except `{command}`, which stands for the project's whole `agent.command` list.
    The model and session options (`resume_args` for a session to resume, else `session_args`
    for a new one whose id the orchestrator chose) go before the template's `--`, so the
    prompt after it is the one argument no option parser reads; a profile may instead take the
    prompt on standard input (`prompt_stdin`).
    """
    values = {
        "prompt": request.prompt,
        "prompt_file": PROMPT_FILE_PATH,
        "model": request.model or "",
        "session_id": request.session_id or request.new_session_id or "",
        "workdir": str(request.workdir),
        "python": sys.executable,
        "command": "",
        "budget": f"{request.budget_usd:.2f}" if request.budget_usd is not None else "",
    }
    options: list[str] = []
    if request.model and profile.model_args:
        options += profile.model_args
    if request.session_id and profile.resume_args:
        options += profile.resume_args
    elif request.new_session_id and profile.session_args:
        options += profile.session_args
    if request.budget_usd is not None and profile.budget_args:
        options += profile.budget_args
    template = list(profile.argv)
    end = template.index(END_OF_OPTIONS) if END_OF_OPTIONS in template else len(template)
    template[end:end] = options
    if profile.runs_project_command and not request.command:
        raise ValueError("this profile runs the project's agent.command, and none is set")
    argv: list[str] = []
    for part in template:
        if part == COMMAND_PLACEHOLDER:
            argv.extend(request.command)
        else:
            argv.append(part.format_map(values))
    return argv


def prompt_input(profile: AgentProfile, request: AgentRequest) -> str | None:
    """What the agent gets on standard input: the prompt when the profile reads it from there
    (`prompt_stdin`, or `{prompt_file}`, which is the standard input); else nothing."""
    if profile.prompt_stdin or PROMPT_FILE_PLACEHOLDER in profile.argv:
        return request.prompt
    return None


def agent_environment(profile: AgentProfile, env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: `env` (what the allowlist let through, and the orchestrator's
    own variables) with the profile's `set_env` values on top, whatever the parent's say."""
    return {**env, **profile.set_env}


def missing_executable(
    profile: AgentProfile, command: Sequence[str], env: Mapping[str, str]
) -> str | None:
    """The program the profile would start when it is a bare name that is not on `env`'s PATH
    (with the profile's `set_env` on top); None when it is there (or is a path, which only the
    task's worktree can tell)."""
    program = build_argv(profile, AgentRequest(prompt="", workdir=Path("."), command=command))[0]
    if os.sep in program and not os.path.isabs(program):
        return None
    try:
        find_executable(program, cwd=Path("/"), env=agent_environment(profile, env))
    except ExecutableNotFoundError:
        return program
    return None


def run_agent(
    profile: AgentProfile,
    request: AgentRequest,
    *,
    env: Mapping[str, str],
    timeout_s: float,
    on_start: Callable[[int], None] | None = None,
    sandbox: Sequence[str] = (),
    now: Callable[[], datetime] | None = None,
) -> AgentResult:
    """Run one agent to completion (or timeout) and normalise what it reported, with the
    provider limit it ran into.

    `env` is the agent's environment as the caller built it (`child_environment`); the
    profile's `set_env` values are set on top of it here, just before the agent starts.
    `sandbox` is the launcher it runs under (`Sandbox.prefix`), if any; `now` the clock that
    places a reset time the agent gave as a clock time (the current time by default)."""
    argv = build_argv(profile, request)
    try:
        process = run_process(
            argv,
            cwd=request.workdir,
            env=agent_environment(profile, env),
            timeout_s=timeout_s,
            output_cap_bytes=OUTPUT_CAP_BYTES,
            stdin_text=prompt_input(profile, request),
            on_start=on_start,
            wrapper=sandbox,
        )
    except ExecutableNotFoundError as exc:
        return AgentResult(AgentStatus.FAILED, "", 0.0, error=f"agent binary not found: {exc}")
    except OSError as exc:  # e.g. E2BIG: one argument over the kernel's 128 KiB limit
        return AgentResult(AgentStatus.FAILED, "", 0.0, error=f"could not start the agent: {exc}")
    output = agent_output(process)
    try:
        result = parse_agent_output(profile.output, process, now() if now else None)
    except AgentOutputError as exc:
        return AgentResult(
            AgentStatus.FAILED,
            "",
            process.duration_s,
            error=f"malformed agent output: {exc}",
            output=output,
        )
    return replace(result, output=output)


def agent_output(process: ProcessResult) -> str:
    """What an agent printed, as one text: stdout, then stderr under a `--- stderr ---` line
    when it wrote any."""
    if not process.stderr:
        return process.stdout
    separator = "" if not process.stdout or process.stdout.endswith("\n") else "\n"
    return f"{process.stdout}{separator}--- stderr ---\n{process.stderr}"
