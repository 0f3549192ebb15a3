"""The one result type every agent adapter produces, whatever CLI ran."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestration.agents.limits import UsageLimit


class AgentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class AgentResult:
    """What one agent run did, normalised across CLIs."""

    status: AgentStatus
    summary: str
    duration_s: float
    session_id: str | None = None
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    turns: int | None = None
    model: str | None = None
    error: str | None = None
    output: str = ""
    """What the agent printed: its stdout, then its stderr under a `--- stderr ---` line when
    there is any (each capped as the process runner caps it). Not redacted here."""
    limit: UsageLimit | None = None
    """The provider limit the run ran into, if any: a usage or rate limit that ended a failed
    run, or (on any run) a warning that the account is close to its limit."""

    @property
    def ok(self) -> bool:
        return self.status is AgentStatus.SUCCEEDED


class AgentOutputError(ValueError):
    """The agent's output is not in the format its profile promised."""
