"""One parser per agent output format, each a pure function of the CLI's stdout.

Formats, as the CLIs document them:
- `claude_json`: Claude Code `-p --output-format json` prints one JSON object with `type:
  "result"`, `subtype`, `is_error`, `result`, `session_id`, `total_cost_usd`, `num_turns`,
  `duration_ms` and `usage` (`input_tokens`, `output_tokens`, cache token counts).
- `codex_jsonl`: `codex exec --json` prints one JSON event per line: `thread.started`
  (`thread_id`), `item.completed` (items such as `agent_message` with `text`), `turn.completed`
  (`usage`: `input_tokens`, `cached_input_tokens`, `output_tokens`), `turn.failed` and `error`.
- `gemini_json`: Gemini CLI `--output-format json` prints `response`, `stats` (per-model
  `tokens`: `prompt`, `candidates`, ...) and, on failure, `error`.
- `text`: anything; success is the exit code, the summary is the output's tail.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from typing import Any

from orchestration.agents.result import AgentOutputError, AgentResult, AgentStatus
from orchestration.process import ProcessResult

Parser = Callable[[ProcessResult], AgentResult]


def parse_agent_output(output_format: str, process: ProcessResult) -> AgentResult:
    """The normalised result of one agent process; AgentOutputError when the output is not
    what the format promises (the message carries the output's tail)."""
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
    if process.returncode is not None and process.returncode < 0:
        # Killed by a signal: whatever it printed is cut short, so report the kill.
        try:
            partial: AgentResult | None = parser(process)
        except AgentOutputError:
            partial = None
        return _failed(process, ended_how(process.returncode), partial)
    result = parser(process)
    if process.returncode != 0 and result.ok:
        return _failed(process, ended_how(process.returncode), result)
    return result


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


def parse_claude_json(process: ProcessResult) -> AgentResult:
    data = _json_object(process, "a Claude Code result")
    if "result" not in data and "is_error" not in data and "session_id" not in data:
        raise AgentOutputError(
            f"JSON on stdout is not a Claude Code result (keys: {', '.join(sorted(data))}); "
            f"output tail:\n{process.tail()}"
        )
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
        session_id=data.get("session_id") if isinstance(data.get("session_id"), str) else None,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        tokens_in=tokens_in if usage else None,
        tokens_out=_int(usage.get("output_tokens")),
        turns=_int(data.get("num_turns")),
        model=data.get("model") if isinstance(data.get("model"), str) else None,
    )
    if is_error:
        return _failed(
            process, f"agent reported an error ({data.get('subtype') or 'is_error'})", result
        )
    return result


def parse_codex_jsonl(process: ProcessResult) -> AgentResult:
    session_id = None
    messages: list[str] = []
    tokens_in = tokens_out = 0
    turns = 0
    failure = None
    events = 0
    for line in process.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        events += 1
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
        elif kind in ("turn.failed", "error"):
            error = event.get("error") or event
            failure = str(error.get("message") if isinstance(error, dict) else error)
    if events == 0:
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


PARSERS: Mapping[str, Parser] = {
    "claude_json": parse_claude_json,
    "codex_jsonl": parse_codex_jsonl,
    "gemini_json": parse_gemini_json,
    "text": parse_text,
}
