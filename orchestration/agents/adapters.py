"""One parser per agent output format, each a pure function of the CLI's stdout, and the
provider limit (usage limit, rate limit) each CLI's output shows.

Formats, as the CLIs document them:
- `claude_json`: Claude Code `-p --output-format json` prints one JSON object with `type:
  "result"`, `subtype`, `is_error`, `result`, `session_id`, `total_cost_usd`, `num_turns`,
  `duration_ms` and `usage` (`input_tokens`, `output_tokens`, cache token counts).
- `claude_stream_json`: Claude Code `-p --output-format stream-json --verbose` prints one JSON
  object per line: `system` (subtype `init`, with `session_id` and `model`), `assistant` and
  `user` messages (an assistant message may carry `error: "rate_limit"`), `rate_limit_event`
  (`rate_limit_info`: `status`, `resetsAt`, `rateLimitType`, ...) and last the same `result`
  object as `claude_json`.
- `codex_jsonl`: `codex exec --json` prints one JSON event per line: `thread.started`
  (`thread_id`), `item.completed` (items such as `agent_message` with `text`), `turn.completed`
  (`usage`: `input_tokens`, `cached_input_tokens`, `output_tokens`), `turn.failed` and `error`.
- `gemini_json`: Gemini CLI `--output-format json` prints `response`, `stats` (per-model
  `tokens`: `prompt`, `candidates`, ...) and, on failure, `error`.
- `text`: anything; success is the exit code, the summary is the output's tail.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orchestration.agents.limits import (
    LimitKind,
    UsageLimit,
    claude_limit,
    claude_limit_in_text,
    codex_limit,
)
from orchestration.agents.result import AgentOutputError, AgentResult, AgentStatus
from orchestration.process import ProcessResult

Parser = Callable[[ProcessResult], AgentResult]

#: How much of stderr is read for a limit text when stdout is not what the format promises.
STDERR_TAIL_CHARS = 2000


def parse_agent_output(
    output_format: str, process: ProcessResult, now: datetime | None = None
) -> AgentResult:
    """The normalised result of one agent process, with the provider limit its output shows
    (`now`, by default the current time, places a reset time given as a clock time);
    AgentOutputError when the output is not what the format promises and shows no limit (the
    message carries the output's tail).

    A usage limit or a rate limit is attached to a failed run; a usage limit always fails the
    run, whatever the CLI said. A warning that the account is close to its limit is attached
    to any run. A timed-out run has no limit."""
    if process.timed_out:
        return AgentResult(
            AgentStatus.TIMED_OUT,
            summary="",
            duration_s=process.duration_s,
            error=f"timed out after {process.duration_s:.0f}s; output tail:\n{process.tail()}",
        )
    try:
        parser = PARSERS[output_format]
    except KeyError:
        raise AgentOutputError(f"no parser for output format {output_format!r}") from None
    limit = read_limit(output_format, process, now or datetime.now(UTC))
    if process.returncode is not None and process.returncode < 0:
        # Killed by a signal: whatever it printed is cut short, so report the kill.
        try:
            partial: AgentResult | None = parser(process)
        except AgentOutputError:
            partial = None
        return _with_limit(_failed(process, ended_how(process.returncode), partial), limit, process)
    try:
        result = parser(process)
    except AgentOutputError:
        if limit is None or limit.kind is LimitKind.SOFT:
            raise
        return replace(_failed(process, describe_limit(limit)), limit=limit)
    if process.returncode != 0 and result.ok:
        result = _failed(process, ended_how(process.returncode), result)
    return _with_limit(result, limit, process)


def describe_limit(limit: UsageLimit) -> str:
    """A provider limit in words, for a run's error."""
    if limit.kind is LimitKind.TRANSIENT:
        return "agent hit its provider's rate limit"
    words = "agent hit its provider's usage limit"
    if limit.window:
        words += f" ({limit.window})"
    if limit.resets_at is None:
        return f"{words}, no reset time given"
    return f"{words}, resets {limit.resets_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _with_limit(
    result: AgentResult, limit: UsageLimit | None, process: ProcessResult
) -> AgentResult:
    """`result` with the limit it ran into: a near-limit warning on any run, a usage or rate
    limit on a failed one; a run the CLI called a success fails when it met a usage limit."""
    if limit is None:
        return result
    if limit.kind is LimitKind.SOFT or not result.ok:
        return replace(result, limit=limit)
    if limit.kind is LimitKind.USAGE_LIMIT:
        return replace(_failed(process, describe_limit(limit), result), limit=limit)
    return result  # a rate limit the CLI got past


def ended_how(returncode: int | None) -> str:
    """How a process ended, in words: its exit status, or the signal that killed it."""
    if returncode is None:
        return "could not be reaped"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


def _failed(process: ProcessResult, why: str, partial: AgentResult | None = None) -> AgentResult:
    base = partial or AgentResult(AgentStatus.FAILED, "", process.duration_s)
    return AgentResult(
        status=AgentStatus.FAILED,
        summary=base.summary,
        duration_s=process.duration_s,
        session_id=base.session_id,
        cost_usd=base.cost_usd,
        tokens_in=base.tokens_in,
        tokens_out=base.tokens_out,
        turns=base.turns,
        model=base.model,
        error=f"{why}; output tail:\n{process.tail()}",
    )


def _json_object(process: ProcessResult, what: str) -> Mapping[str, Any]:
    text = process.stdout.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Some CLIs print warnings before the JSON: take the last line that parses.
        data = None
        for line in reversed(text.splitlines()):
            try:
                data = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(data, dict):
        raise AgentOutputError(
            f"expected {what} JSON object on stdout (exit status {process.returncode}); "
            f"output tail:\n{process.tail()}"
        )
    return data


def _mapping(value: object) -> Mapping[str, Any]:
    """`value` when the CLI gave an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every JSON object printed on a line of its own; other lines are skipped."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _text_of(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_claude_json(process: ProcessResult) -> AgentResult:
    data = _json_object(process, "a Claude Code result")
    if "result" not in data and "is_error" not in data and "session_id" not in data:
        raise AgentOutputError(
            f"JSON on stdout is not a Claude Code result (keys: {', '.join(sorted(data))}); "
            f"output tail:\n{process.tail()}"
        )
    return _claude_result(data, process)


def parse_claude_stream_json(process: ProcessResult) -> AgentResult:
    records = _json_lines(process.stdout)
    if not records:
        raise AgentOutputError(
            f"expected Claude Code stream-json lines on stdout (exit status "
            f"{process.returncode}); output tail:\n{process.tail()}"
        )
    results = [record for record in records if record.get("type") == "result"]
    models = [_text_of(r.get("model")) for r in records if r.get("type") == "system"]
    model = next((m for m in reversed(models) if m), None)
    if results:
        result = _claude_result(results[-1], process)
        return result if result.model or model is None else replace(result, model=model)
    # Ended before its result (killed, or stopped by a limit): the session may still resume.
    sessions = [_text_of(record.get("session_id")) for record in records]
    partial = AgentResult(
        AgentStatus.FAILED,
        "",
        process.duration_s,
        session_id=next((s for s in reversed(sessions) if s), None),
        model=model,
    )
    return _failed(process, "no result line", partial)


def _claude_result(data: Mapping[str, Any], process: ProcessResult) -> AgentResult:
    """The run a Claude Code result object (`json`'s one object, `stream-json`'s last line)
    reports."""
    usage = _mapping(data.get("usage"))
    tokens_in = sum(
        _int(usage.get(key)) or 0
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    is_error = bool(data.get("is_error")) or data.get("subtype") not in (None, "success")
    cost = data.get("total_cost_usd", data.get("cost_usd"))
    result = AgentResult(
        status=AgentStatus.FAILED if is_error else AgentStatus.SUCCEEDED,
        summary=str(data.get("result") or ""),
        duration_s=process.duration_s,
        session_id=_text_of(data.get("session_id")),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        tokens_in=tokens_in if usage else None,
        tokens_out=_int(usage.get("output_tokens")),
        turns=_int(data.get("num_turns")),
        model=_text_of(data.get("model")),
    )
    if is_error:
        return _failed(
            process, f"agent reported an error ({data.get('subtype') or 'is_error'})", result
        )
    return result


#: The Codex events that report an error.
CODEX_FAILURES = ("turn.failed", "error")


def parse_codex_jsonl(process: ProcessResult) -> AgentResult:
    session_id = None
    messages: list[str] = []
    tokens_in = tokens_out = 0
    turns = 0
    failure = None
    events = _json_lines(process.stdout)
    for event in events:
        kind = event.get("type")
        if kind in ("thread.started", "thread.resumed"):
            session_id = event.get("thread_id") or session_id
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") in ("agent_message", "assistant_message") and item.get("text"):
                messages.append(str(item["text"]))
        elif kind == "turn.completed":
            turns += 1
            usage = event.get("usage") or {}
            tokens_in += _int(usage.get("input_tokens")) or 0
            tokens_out += _int(usage.get("output_tokens")) or 0
        elif kind in CODEX_FAILURES:
            failure = _codex_error(event)
    if not events:
        raise AgentOutputError(
            f"expected Codex JSONL events on stdout (exit status {process.returncode}); "
            f"output tail:\n{process.tail()}"
        )
    result = AgentResult(
        status=AgentStatus.SUCCEEDED,
        summary=messages[-1] if messages else "",
        duration_s=process.duration_s,
        session_id=session_id,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        turns=turns,
    )
    return _failed(process, f"agent reported an error: {failure}", result) if failure else result


def _codex_error(event: Mapping[str, Any]) -> str:
    """The message of a `turn.failed` (`error.message`) or `error` (`message`) event."""
    error = event.get("error") or event
    return str(error.get("message") if isinstance(error, dict) else error)


def parse_gemini_json(process: ProcessResult) -> AgentResult:
    data = _json_object(process, "a Gemini CLI result")
    stats = _mapping(data.get("stats"))
    models = _mapping(stats.get("models"))
    tokens_in = tokens_out = 0
    for model_stats in models.values():
        tokens = _mapping(_mapping(model_stats).get("tokens"))
        tokens_in += _int(tokens.get("prompt")) or 0
        tokens_out += _int(tokens.get("candidates")) or 0
    result = AgentResult(
        status=AgentStatus.SUCCEEDED,
        summary=str(data.get("response") or ""),
        duration_s=process.duration_s,
        session_id=data.get("session_id") if isinstance(data.get("session_id"), str) else None,
        tokens_in=tokens_in if models else None,
        tokens_out=tokens_out if models else None,
        model=next(iter(models), None),
    )
    if data.get("error"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else error
        return _failed(process, f"agent reported an error: {message}", result)
    return result


def parse_text(process: ProcessResult) -> AgentResult:
    summary = process.stdout.strip()[-2000:]
    if process.returncode != 0:
        return _failed(process, ended_how(process.returncode))
    return AgentResult(AgentStatus.SUCCEEDED, summary=summary, duration_s=process.duration_s)


def read_limit(output_format: str, process: ProcessResult, now: datetime) -> UsageLimit | None:
    """The provider limit an agent's output shows, read as its format says; None for `text`,
    whose programs may print anything."""
    match output_format:
        case "claude_json":
            return claude_json_limit(process, now)
        case "claude_stream_json":
            return claude_stream_json_limit(process, now)
        case "codex_jsonl":
            return codex_jsonl_limit(process, now)
        case "gemini_json":
            return gemini_json_limit(process)
    return None


def claude_json_limit(process: ProcessResult, now: datetime) -> UsageLimit | None:
    """The limit Claude Code's one JSON object shows, else the limit its plain output names."""
    try:
        data = _json_object(process, "a Claude Code result")
    except AgentOutputError:
        return claude_limit_in_text(_plain_output(process), now=now)
    return claude_limit([data], now=now)


def claude_stream_json_limit(process: ProcessResult, now: datetime) -> UsageLimit | None:
    """The limit Claude Code's stream-json lines show, else (no result line) the limit its
    plain output names."""
    records = _json_lines(process.stdout)
    found = claude_limit(records, now=now) if records else None
    if found is None and not any(record.get("type") == "result" for record in records):
        found = claude_limit_in_text(_plain_output(process), now=now)
    return found


def codex_jsonl_limit(process: ProcessResult, now: datetime) -> UsageLimit | None:
    """The limit Codex's error events show, else (none) the limit its plain lines show."""
    events = _json_lines(process.stdout)
    messages = [_codex_error(event) for event in events if event.get("type") in CODEX_FAILURES]
    if not messages:
        plain = [line for line in process.stdout.splitlines() if not line.lstrip().startswith("{")]
        messages = [*plain, *process.stderr.splitlines()]
    return codex_limit(messages, now=now)


_GEMINI_EXHAUSTED = re.compile(r"RESOURCE_EXHAUSTED|\b429\b")


def gemini_json_limit(process: ProcessResult) -> UsageLimit | None:
    """A rate limit when Gemini CLI's error is a 429 (RESOURCE_EXHAUSTED): it gives no reset."""
    try:
        error = _json_object(process, "a Gemini CLI result").get("error")
    except AgentOutputError:
        return None
    if not error or not _GEMINI_EXHAUSTED.search(json.dumps(error)):
        return None
    message = error.get("message") if isinstance(error, dict) else error
    return UsageLimit(LimitKind.TRANSIENT, None, "retry_429", message=str(message or ""))


def _plain_output(process: ProcessResult) -> str:
    return f"{process.stdout}\n{process.stderr[-STDERR_TAIL_CHARS:]}"


PARSERS: Mapping[str, Parser] = {
    "claude_json": parse_claude_json,
    "claude_stream_json": parse_claude_stream_json,
    "codex_jsonl": parse_codex_jsonl,
    "gemini_json": parse_gemini_json,
    "text": parse_text,
}
