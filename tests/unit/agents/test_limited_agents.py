"""Agents at their provider's limit, run as real programs: the stand-in `claude` CLI
(tests/support/fakes/claude) and the offline demo agent in stream-json and at a usage limit,
and run_agent's part: a profile's `set_env` over the parent's environment and the clock that
places a reset time."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration.agents.adapters import parse_agent_output
from orchestration.agents.invocation import AgentRequest, run_agent
from orchestration.agents.limits import LimitKind
from orchestration.agents.result import AgentStatus
from orchestration.process import ProcessResult, run_process
from orchestration.registry.models import AgentProfile
from tests.support.agent_log import events
from tests.support.paths import path_with_fakes

#: 2026-11-29 14:00 UTC.
NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
STREAM_JSON = ("--output-format", "stream-json", "--verbose")
NEEDS_VERBOSE = "Error: When using --print, --output-format=stream-json requires --verbose"


def records(process: ProcessResult) -> list[dict]:
    return [json.loads(line) for line in process.stdout.splitlines()]


# --- run_agent ------------------------------------------------------------------------------


def test_set_env_overrides_the_parents_value(tmp_path: Path) -> None:
    print_tz = "import os; print(os.environ.get('TZ'))"
    profile = AgentProfile(
        argv=(sys.executable, "-c", print_tz),
        prompt_stdin=True,
        output="text",
        set_env={"TZ": "UTC"},
    )
    env = {"PATH": os.environ["PATH"], "TZ": "Europe/Berlin"}

    result = run_agent(profile, AgentRequest("go", tmp_path), env=env, timeout_s=30)

    assert result.ok, result.error
    assert result.summary == "UTC"
    assert env["TZ"] == "Europe/Berlin"  # the caller's mapping is left as it was


def test_without_set_env_the_parents_value_stays(tmp_path: Path) -> None:
    print_tz = "import os; print(os.environ.get('TZ'))"
    profile = AgentProfile(argv=(sys.executable, "-c", print_tz), prompt_stdin=True, output="text")
    env = {"PATH": os.environ["PATH"], "TZ": "Europe/Berlin"}

    result = run_agent(profile, AgentRequest("go", tmp_path), env=env, timeout_s=30)

    assert result.summary == "Europe/Berlin"


def test_run_agent_places_a_reset_time_by_the_clock_it_is_given(tmp_path: Path) -> None:
    """Codex prints a clock time in its (UTC) zone; the given `now` says which day it is."""
    failed = {
        "type": "turn.failed",
        "error": {"message": "You've hit your usage limit. Try again at 3:05 PM."},
    }
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(failed) + "\n", encoding="utf-8")
    program = "import sys; sys.stdout.write(open(sys.argv[1]).read()); sys.exit(1)"
    profile = AgentProfile(
        argv=(sys.executable, "-c", program, str(events)), prompt_stdin=True, output="codex_jsonl"
    )

    result = run_agent(
        profile,
        AgentRequest("go", tmp_path),
        env={"PATH": os.environ["PATH"]},
        timeout_s=30,
        now=lambda: NOW,
    )

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime(2026, 11, 29, 15, 5, tzinfo=UTC)
    assert "hit your usage limit" in result.output


# --- the stand-in `claude` ------------------------------------------------------------------


@dataclass(frozen=True)
class StandIn:
    """The stand-in `claude`, run in `work` and logging to `log`."""

    work: Path
    log: Path

    def __call__(self, prompt: str, *options: str) -> ProcessResult:
        """`claude -p OPTIONS -- PROMPT`."""
        env = {
            "PATH": path_with_fakes(f"/usr/bin{os.pathsep}/bin"),
            "FAKE_CLAUDE_LOG": str(self.log),
        }
        argv = ["claude", "-p", *options, "--", prompt]
        return run_process(argv, cwd=self.work, env=env, timeout_s=30)


@pytest.fixture
def claude(tmp_path: Path) -> StandIn:
    work = tmp_path / "work"
    work.mkdir()
    return StandIn(work, tmp_path / "fake_claude.jsonl")


def log_end(log: Path) -> dict:
    """The stand-in's end line."""
    (end,) = events("end", log)
    return end


def test_the_stand_in_streams_init_assistant_and_result(claude: StandIn) -> None:
    done = claude("add a line", *STREAM_JSON, "--session-id", "s-1")

    assert done.returncode == 0, done.stderr
    lines = records(done)
    assert [line["type"] for line in lines] == ["system", "assistant", "result"]
    assert {line["session_id"] for line in lines} == {"s-1"}
    result = parse_agent_output("claude_stream_json", done)
    assert result.ok and result.summary == "Recorded in CHANGES.md: add a line"
    assert (result.session_id, result.cost_usd, result.tokens_in) == ("s-1", 0.0123, 150)
    assert (claude.work / "CHANGES.md").read_text(encoding="utf-8") == "- add a line\n"


def test_the_stand_in_resumes_in_stream_json_as_in_json(claude: StandIn) -> None:
    streamed = parse_agent_output("claude_stream_json", claude("NOOP", *STREAM_JSON, "-r", "s-9"))
    single = parse_agent_output(
        "claude_json", claude("NOOP", "--output-format", "json", "-r", "s-9")
    )

    assert streamed.session_id == single.session_id == "s-9"


def test_the_stand_in_wants_verbose_for_stream_json(claude: StandIn) -> None:
    refused = claude("add a line", "--output-format", "stream-json")

    assert refused.returncode == 1
    assert refused.stderr.strip() == NEEDS_VERBOSE
    assert not (claude.work / "CHANGES.md").exists()


def test_limituntil_is_a_usage_limit_until_its_epoch(claude: StandIn) -> None:
    until = int(time.time()) + 3 * 3600

    done = claude(f"add a line LIMITUNTIL{until}", *STREAM_JSON, "--session-id", "s-2")

    assert done.returncode == 1
    assert [line["type"] for line in records(done)] == [
        "system",
        "rate_limit_event",
        "assistant",
        "result",
    ]
    result = parse_agent_output("claude_stream_json", done)
    assert result.status is AgentStatus.FAILED and result.session_id == "s-2"
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime.fromtimestamp(until, UTC)
    assert result.limit.window == "five_hour"
    assert not (claude.work / "CHANGES.md").exists()
    end = log_end(claude.log)
    assert (end["exit"], end["limited"]) == (1, True)


def test_limituntil_in_json_reads_the_reset_from_the_text(claude: StandIn) -> None:
    until = int(time.time()) + 3 * 3600

    done = claude(f"LIMITUNTIL{until}", "--output-format", "json")

    result = parse_agent_output("claude_json", done)
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    # The text names the minute, rounded up: never before the reset.
    assert result.limit.resets_at == datetime.fromtimestamp(math.ceil(until / 60) * 60, UTC)


def test_after_limituntil_the_stand_in_works_as_usual(claude: StandIn) -> None:
    done = claude(f"add a line LIMITUNTIL{int(time.time()) - 1}", *STREAM_JSON)

    result = parse_agent_output("claude_stream_json", done)
    assert result.ok and result.limit is None
    assert (claude.work / "CHANGES.md").is_file()
    assert "limited" not in log_end(claude.log)


def test_rate429_is_a_transient_rate_limit(claude: StandIn) -> None:
    done = claude("add a line RATE429", *STREAM_JSON)

    assert done.returncode == 1
    assert [line["type"] for line in records(done)] == ["system", "result"]
    result = parse_agent_output("claude_stream_json", done)
    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.TRANSIENT
    assert not (claude.work / "CHANGES.md").exists()


def test_limitnoreset_is_a_usage_limit_with_no_reset(claude: StandIn) -> None:
    done = claude("add a line LIMITNORESET", *STREAM_JSON)

    assert done.returncode == 1
    result = parse_agent_output("claude_stream_json", done)
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at is None
    assert not (claude.work / "CHANGES.md").exists()


# --- the demo agent -------------------------------------------------------------------------


def demo(cwd: Path, *options: str, limit_until: float | None = None) -> ProcessResult:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    if limit_until is not None:
        env["ORCH_DEMO_LIMIT_UNTIL"] = str(limit_until)
    argv = [sys.executable, "-m", "orchestration.agents.demo", "-p", *options, "--", "hi"]
    return run_process(argv, cwd=cwd, env=env, timeout_s=60)


def test_the_demo_agent_streams_json(tmp_path: Path) -> None:
    done = demo(tmp_path, *STREAM_JSON, "--session-id", "d-1")

    assert done.returncode == 0, done.stderr
    assert [line["type"] for line in records(done)] == ["system", "assistant", "result"]
    result = parse_agent_output("claude_stream_json", done)
    assert result.ok and result.session_id == "d-1" and result.limit is None
    assert (tmp_path / "orch-demo" / "hi.md").is_file()


def test_the_demo_agent_wants_verbose_for_stream_json(tmp_path: Path) -> None:
    refused = demo(tmp_path, "--output-format", "stream-json")

    assert refused.returncode == 1
    assert refused.stderr.strip() == NEEDS_VERBOSE
    assert not (tmp_path / "orch-demo").exists()


def test_the_demo_agent_at_its_limit_changes_nothing(tmp_path: Path) -> None:
    until = time.time() + 3600.5

    done = demo(tmp_path, *STREAM_JSON, "--session-id", "d-2", limit_until=until)

    assert done.returncode == 1
    lines = records(done)
    event = next(line for line in lines if line["type"] == "rate_limit_event")
    assert event["rate_limit_info"] == {
        "status": "rejected",
        "resetsAt": math.ceil(until),
        "rateLimitType": "five_hour",
    }
    final = lines[-1]
    assert (final["type"], final["subtype"], final["is_error"], final["api_error_status"]) == (
        "result",
        "success",
        True,
        429,
    )
    assert final["result"].startswith("You've hit your limit · resets ")
    assert final["result"].endswith("m (UTC)")
    result = parse_agent_output("claude_stream_json", done)
    assert result.status is AgentStatus.FAILED and result.session_id == "d-2"
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime.fromtimestamp(math.ceil(until), UTC)
    assert list(tmp_path.iterdir()) == []


def test_the_demo_agent_after_its_limit_works_as_usual(tmp_path: Path) -> None:
    done = demo(tmp_path, *STREAM_JSON, limit_until=time.time() - 60)

    assert parse_agent_output("claude_stream_json", done).ok
    assert (tmp_path / "orch-demo" / "hi.md").is_file()


def test_the_demo_agent_at_its_limit_in_json(tmp_path: Path) -> None:
    done = demo(tmp_path, "--output-format", "json", limit_until=time.time() + 600)

    result = parse_agent_output("claude_json", done)
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert not (tmp_path / "orch-demo").exists()
