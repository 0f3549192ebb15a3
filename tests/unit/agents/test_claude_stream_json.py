"""Claude Code's stream-json output and the provider limits parse_agent_output attaches to a
run, on realistic output of each CLI: a usage limit fails the run and says until when, a plain
429 is a short rate limit, a warning close to the limit rides along on a success."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime

import pytest

from orchestration.agents.adapters import parse_agent_output, parse_claude_json
from orchestration.agents.limits import LimitKind
from orchestration.agents.result import AgentOutputError, AgentStatus
from orchestration.process import ProcessResult

#: 2026-11-29 14:00 UTC.
NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
RESET = 1_795_968_000  # 2026-11-29 16:00 UTC
SESSION = "5f1c2d8e-7a9b-4c1d-9e2f-0a1b2c3d4e5f"

INIT = {
    "type": "system",
    "subtype": "init",
    "cwd": "/w",
    "session_id": SESSION,
    "tools": ["Bash", "Edit"],
    "model": "claude-sonnet-4-5",
    "permissionMode": "default",
}
ASSISTANT = {
    "type": "assistant",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Looking at the parser."}],
    },
    "parent_tool_use_id": None,
    "session_id": SESSION,
}
TOOL_RESULT = {
    "type": "user",
    "message": {"role": "user", "content": [{"type": "tool_result", "content": "ok"}]},
    "session_id": SESSION,
}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 48213,
    "num_turns": 3,
    "result": "Added input validation to parse_args and a test for it.",
    "session_id": SESSION,
    "total_cost_usd": 0.0123,
    "usage": {
        "input_tokens": 120,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 30000,
        "output_tokens": 850,
    },
}


def process(
    stdout: str, *, returncode: int | None = 0, stderr: str = "", timed_out: bool = False
) -> ProcessResult:
    return ProcessResult(
        argv=("agent",),
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=12.5,
        truncated=False,
    )


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def rejected(**info: object) -> dict:
    return {
        "type": "rate_limit_event",
        "rate_limit_info": {"status": "rejected", "rateLimitType": "five_hour", **info},
        "session_id": SESSION,
    }


# --- the stream-json parser -----------------------------------------------------------------


def test_a_stream_is_read_from_its_result_line() -> None:
    stdout = jsonl(INIT, ASSISTANT, TOOL_RESULT, ASSISTANT, RESULT)

    result = parse_agent_output("claude_stream_json", process(stdout), now=NOW)

    assert result.ok and result.error is None and result.limit is None
    assert result.summary == RESULT["result"]
    assert result.session_id == SESSION
    assert result.cost_usd == pytest.approx(0.0123)
    assert (result.tokens_in, result.tokens_out, result.turns) == (32120, 850, 3)
    assert result.model == "claude-sonnet-4-5"  # from the init line: the result has none
    assert result.duration_s == 12.5


def test_a_stream_reads_as_the_same_run_as_the_one_object() -> None:
    stream = parse_agent_output("claude_stream_json", process(jsonl(INIT, RESULT)))
    single = parse_agent_output("claude_json", process(json.dumps(RESULT)))

    assert stream.summary == single.summary and stream.session_id == single.session_id
    assert (stream.cost_usd, stream.tokens_in, stream.tokens_out, stream.turns) == (
        single.cost_usd,
        single.tokens_in,
        single.tokens_out,
        single.turns,
    )


def test_lines_that_are_not_json_objects_are_skipped() -> None:
    stdout = (
        "Warning: update available\n"
        + jsonl(INIT, ASSISTANT)
        + '{"type": "assistant", "message": {"cut\n'
        + "[1, 2]\n"
        + jsonl(RESULT)
        + "bye\n"
    )

    result = parse_agent_output("claude_stream_json", process(stdout))

    assert result.ok and result.summary == RESULT["result"]


def test_an_error_result_fails_and_keeps_the_session() -> None:
    failed = {**RESULT, "subtype": "error_max_turns", "is_error": True}

    result = parse_agent_output("claude_stream_json", process(jsonl(INIT, failed), returncode=1))

    assert result.status is AgentStatus.FAILED
    assert "error_max_turns" in (result.error or "")
    assert result.session_id == SESSION and result.limit is None


def test_a_stream_without_a_result_line_fails_with_its_session() -> None:
    result = parse_agent_output(
        "claude_stream_json", process(jsonl(INIT, ASSISTANT), returncode=1, stderr="boom")
    )

    assert result.status is AgentStatus.FAILED
    assert (result.error or "").startswith("no result line")
    assert "boom" in (result.error or "")
    assert result.session_id == SESSION
    assert result.limit is None


def test_a_killed_stream_keeps_its_session_for_a_resume() -> None:
    result = parse_agent_output(
        "claude_stream_json", process(jsonl(INIT, ASSISTANT), returncode=-signal.SIGTERM)
    )

    assert (result.error or "").startswith("was killed by SIGTERM")
    assert result.session_id == SESSION


@pytest.mark.parametrize("stdout", ["", "not json at all\n", '{"type": "system", "cut\n'])
def test_a_stream_without_any_json_line_is_malformed(stdout: str) -> None:
    with pytest.raises(AgentOutputError, match="stream-json") as raised:
        parse_agent_output("claude_stream_json", process(stdout, stderr="stderr words"))
    assert "stderr words" in str(raised.value)


# --- claude_json, as before -----------------------------------------------------------------


def test_the_one_result_object_still_parses() -> None:
    result = parse_claude_json(process(json.dumps(RESULT)))

    assert result.ok and result.limit is None
    assert (result.summary, result.session_id) == (RESULT["result"], SESSION)
    assert (result.tokens_in, result.tokens_out, result.turns) == (32120, 850, 3)
    assert parse_agent_output("claude_json", process(json.dumps(RESULT)), now=NOW) == result


def test_the_one_result_object_shows_a_limit_text() -> None:
    data = {**RESULT, "is_error": True, "result": "You've hit your limit · resets 6pm (UTC)"}

    result = parse_agent_output("claude_json", process(json.dumps(data), returncode=1), now=NOW)

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


def test_a_limit_printed_as_plain_text_fails_the_run_instead_of_being_malformed() -> None:
    result = parse_agent_output(
        "claude_json", process(f"Claude AI usage limit reached|{RESET}\n", returncode=1), now=NOW
    )

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    assert "usage limit" in (result.error or "")


# --- limits attached by parse_agent_output --------------------------------------------------


def test_a_rejected_rate_limit_event_is_a_usage_limit_until_its_reset() -> None:
    limited = {
        **RESULT,
        "is_error": True,
        "api_error_status": 429,
        "result": "You've hit your limit · resets 4pm (UTC)",
    }
    stdout = jsonl(INIT, rejected(resetsAt=RESET), {**ASSISTANT, "error": "rate_limit"}, limited)

    result = parse_agent_output("claude_stream_json", process(stdout, returncode=1), now=NOW)

    assert result.status is AgentStatus.FAILED
    assert result.session_id == SESSION
    limit = result.limit
    assert limit is not None and limit.kind is LimitKind.USAGE_LIMIT
    assert limit.resets_at == datetime.fromtimestamp(RESET, UTC)
    assert (limit.source, limit.window) == ("rate_limit_event", "five_hour")


def test_a_limit_before_any_result_is_still_a_usage_limit() -> None:
    stdout = jsonl(INIT, rejected(resetsAt=RESET))

    result = parse_agent_output("claude_stream_json", process(stdout, returncode=1), now=NOW)

    assert (result.error or "").startswith("no result line")
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime.fromtimestamp(RESET, UTC)


def test_a_successful_run_whose_summary_reads_like_a_limit_is_a_success() -> None:
    said_ok = {**RESULT, "result": "You've hit your target: every test passes"}

    result = parse_agent_output("claude_stream_json", process(jsonl(INIT, said_ok)), now=NOW)

    assert result.ok and result.limit is None


def test_a_plain_429_is_a_transient_rate_limit() -> None:
    plain = {**RESULT, "is_error": True, "api_error_status": 429, "result": "API Error: 429"}

    result = parse_agent_output("claude_stream_json", process(jsonl(INIT, plain), returncode=1))

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.TRANSIENT
    assert result.limit.resets_at is None


def test_a_usage_limit_fails_a_run_the_cli_called_a_success() -> None:
    said_ok = {**RESULT, "result": "You've hit your limit · resets 4pm (UTC)"}
    reset = datetime(2026, 11, 29, 16, 0, tzinfo=UTC).timestamp()
    stream = jsonl(INIT, rejected(resetsAt=reset), said_ok)

    result = parse_agent_output("claude_stream_json", process(stream), now=NOW)

    assert result.status is AgentStatus.FAILED
    assert (result.error or "").startswith(
        "agent hit its provider's usage limit (five_hour), resets 2026-11-29 16:00 UTC"
    )
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.session_id == SESSION  # kept for a resume after the reset


def test_a_warning_close_to_the_limit_rides_along_on_a_success() -> None:
    warning = {
        "type": "rate_limit_event",
        "rate_limit_info": {
            "status": "allowed_warning",
            "utilization": 0.95,
            "resetsAt": RESET,
            "rateLimitType": "seven_day",
        },
    }

    result = parse_agent_output("claude_stream_json", process(jsonl(INIT, warning, RESULT)))

    assert result.ok and result.error is None
    assert result.limit is not None and result.limit.kind is LimitKind.SOFT
    assert (result.limit.utilization, result.limit.window) == (0.95, "seven_day")


def test_a_timed_out_run_has_no_limit() -> None:
    stdout = jsonl(INIT, rejected(resetsAt=RESET))

    result = parse_agent_output(
        "claude_stream_json", process(stdout, returncode=-15, timed_out=True), now=NOW
    )

    assert result.status is AgentStatus.TIMED_OUT and result.limit is None


def codex(*events: dict) -> str:
    return jsonl(
        {"type": "thread.started", "thread_id": "0199a213"}, {"type": "turn.started"}, *events
    )


def test_codex_turn_failed_with_its_usage_limit_resets_at_the_utc_time_it_names() -> None:
    message = "You've hit your usage limit. Upgrade to Pro or try again at 3:05 PM."
    stdout = codex({"type": "turn.failed", "error": {"message": message}})

    result = parse_agent_output("codex_jsonl", process(stdout, returncode=1), now=NOW)

    assert result.status is AgentStatus.FAILED and result.session_id == "0199a213"
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime(2026, 11, 29, 15, 5, tzinfo=UTC)


def test_codex_error_event_with_a_429_is_transient() -> None:
    stdout = codex({"type": "error", "message": "exceeded retry limit, last status: 429"})

    result = parse_agent_output("codex_jsonl", process(stdout, returncode=1), now=NOW)

    assert result.limit is not None and result.limit.kind is LimitKind.TRANSIENT


def test_codex_limit_on_stderr_without_events_fails_the_run() -> None:
    stderr = "ERROR: You've hit your usage limit. Try again at 9:00 AM.\n"

    result = parse_agent_output("codex_jsonl", process("", returncode=1, stderr=stderr), now=NOW)

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.USAGE_LIMIT
    assert result.limit.resets_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_codex_success_and_an_ordinary_failure_have_no_limit() -> None:
    done = codex({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}})
    failed = codex({"type": "turn.failed", "error": {"message": "stream disconnected"}})

    assert parse_agent_output("codex_jsonl", process(done), now=NOW).limit is None
    assert parse_agent_output("codex_jsonl", process(failed, returncode=1)).limit is None


@pytest.mark.parametrize(
    "error",
    [
        {"type": "ApiError", "message": "Resource has been exhausted", "code": 429},
        {"message": "[RESOURCE_EXHAUSTED] Quota exceeded for quota metric"},
    ],
)
def test_gemini_resource_exhausted_is_transient(error: dict) -> None:
    stdout = json.dumps({"response": "", "error": error})

    result = parse_agent_output("gemini_json", process(stdout, returncode=1))

    assert result.status is AgentStatus.FAILED
    assert result.limit is not None and result.limit.kind is LimitKind.TRANSIENT
    assert result.limit.source == "retry_429"


def test_gemini_other_errors_and_text_output_have_no_limit() -> None:
    other = json.dumps({"response": "", "error": {"message": "invalid API key", "code": 400}})
    assert parse_agent_output("gemini_json", process(other, returncode=1)).limit is None
    text = parse_agent_output(
        "text", process("You've hit your limit · resets 4pm (UTC)\n", returncode=1), now=NOW
    )
    assert text.status is AgentStatus.FAILED and text.limit is None
