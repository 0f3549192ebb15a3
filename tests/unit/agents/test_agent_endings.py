"""How an agent's end is reported: a kill by a signal says so, whatever the output format."""

from __future__ import annotations

import json
import signal

import pytest

from orchestration.agents.adapters import PARSERS, ended_how, parse_agent_output
from orchestration.agents.result import AgentStatus
from orchestration.process import ProcessResult


def ended(stdout: str, returncode: int | None) -> ProcessResult:
    return ProcessResult(
        argv=("agent",),
        returncode=returncode,
        stdout=stdout,
        stderr="",
        timed_out=False,
        duration_s=3.0,
        truncated=False,
    )


@pytest.mark.parametrize("output_format", sorted(PARSERS))
def test_a_killed_agent_is_reported_as_killed_by_its_signal(output_format: str) -> None:
    result = parse_agent_output(output_format, ended("half a line of outp", -signal.SIGKILL))
    assert result.status is AgentStatus.FAILED
    assert (result.error or "").startswith("was killed by SIGKILL (signal 9)")


def test_a_killed_agent_keeps_what_it_reported_before() -> None:
    partial = json.dumps({"result": "half done", "session_id": "s1", "total_cost_usd": 0.5})
    result = parse_agent_output("claude_json", ended(partial, -signal.SIGTERM))
    assert (result.error or "").startswith("was killed by SIGTERM")
    assert (result.session_id, result.cost_usd) == ("s1", 0.5)


@pytest.mark.parametrize(
    ("returncode", "words"),
    [(3, "exited with status 3"), (-15, "was killed by SIGTERM (signal 15)"), (None, "could not")],
)
def test_ended_how(returncode: int | None, words: str) -> None:
    assert ended_how(returncode).startswith(words)
