"""The offline demo agent: a scripted stand-in that speaks Claude Code's JSON protocols.

It makes a small, real change in the working directory (a note under `orch-demo/` recording the
prompt) and prints what `claude -p --output-format json -- PROMPT` prints (one result object,
zero cost), or with `--output-format stream-json --verbose` one JSON object per line (`system`
init, `assistant`, `result`). It exists so the sample projects run end to end without any paid
agent service.

While `ORCH_DEMO_LIMIT_UNTIL` holds a later moment (epoch seconds), it acts as an account at
its plan's usage limit, as Claude Code reports one: it changes nothing, prints a rejected
`rate_limit_event` (stream-json) and an error result "You've hit your limit · resets ..." and
exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: An epoch (seconds) until which the demo agent acts as an account at its usage limit.
LIMIT_UNTIL_VAR = "ORCH_DEMO_LIMIT_UNTIL"
#: What Claude Code says when asked for stream-json without `--verbose`.
STREAM_JSON_NEEDS_VERBOSE = (
    "Error: When using --print, --output-format=stream-json requires --verbose"
)


def main(argv: list[str] | None = None) -> int:
    # As Claude Code parses them: `-p`/`--print` is a flag, `--` ends the options, and the prompt
    # is the positional argument (read from standard input when there is none).
    parser = argparse.ArgumentParser(prog="orchestration.agents.demo", allow_abbrev=False)
    parser.add_argument("prompt", nargs="?")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--output-format", default="json", choices=["json", "stream-json", "text"])
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("-r", "--resume", default=None)
    parser.add_argument("--session-id", default=None)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args(argv)
    if args.output_format == "stream-json" and not args.verbose:
        sys.stderr.write(STREAM_JSON_NEEDS_VERBOSE + "\n")
        return 1
    limit_until = os.environ.get(LIMIT_UNTIL_VAR, "").strip()
    try:
        limited_until = float(limit_until) if limit_until else None
    except ValueError:
        parser.error(f"{LIMIT_UNTIL_VAR} must be an epoch in seconds, not {limit_until!r}")
    if args.prompt is None:
        args.prompt = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not args.prompt.strip():
        parser.error("no prompt: give it after `--` or on standard input")

    started = time.monotonic()
    session_id = args.resume or args.session_id or str(uuid.uuid4())
    if limited_until is not None and limited_until > time.time():
        return limited(args.output_format, session_id, args.model, limited_until)
    slug = re.sub(r"[^a-z0-9]+", "-", args.prompt.lower()).strip("-")[:40] or "task"
    note = Path("orch-demo") / f"{slug}.md"
    note.parent.mkdir(exist_ok=True)
    with note.open("a", encoding="utf-8") as handle:
        handle.write(f"# {slug}\n\nDemo agent session {session_id} worked on:\n\n")
        handle.write(args.prompt + "\n\n")
    summary = f"Demo agent recorded the task in {note.as_posix()}."
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": summary,
        "session_id": session_id,
        "num_turns": 1,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "total_cost_usd": 0.0,
        "model": args.model,
        "usage": {"input_tokens": len(args.prompt) // 4 + 1, "output_tokens": len(summary) // 4},
    }
    if args.output_format == "stream-json":
        emit(init(session_id, args.model))
        emit(assistant(session_id, args.model, summary))
    if args.output_format == "text":
        sys.stdout.write(summary + "\n")
    else:
        emit(result)
    return 0


def limited(output_format: str, session_id: str, model: str, until: float) -> int:
    """Report the account's usage limit, resetting at `until`, as Claude Code does; status 1."""
    resets = math.ceil(until)
    text = f"You've hit your limit · resets {clock(resets)} (UTC)"
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": 429,
        "result": text,
        "session_id": session_id,
        "num_turns": 1,
        "duration_ms": 0,
        "total_cost_usd": 0.0,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    if output_format == "stream-json":
        emit(init(session_id, model))
        emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {
                    "status": "rejected",
                    "resetsAt": resets,
                    "rateLimitType": "five_hour",
                },
                "session_id": session_id,
            }
        )
        emit({**assistant(session_id, model, text), "error": "rate_limit"})
    if output_format == "text":
        sys.stdout.write(text + "\n")
    else:
        emit(result)
    return 1


def clock(epoch: float) -> str:
    """The UTC time of day of `epoch` as Claude Code writes a reset time ("4:05pm"), rounded
    up to the minute so it is never before the reset."""
    moment = datetime.fromtimestamp(math.ceil(epoch / 60) * 60, UTC)
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d}{'am' if moment.hour < 12 else 'pm'}"


def init(session_id: str, model: str) -> dict[str, Any]:
    """stream-json's first line: the session and the model."""
    return {
        "type": "system",
        "subtype": "init",
        "cwd": os.getcwd(),
        "session_id": session_id,
        "model": model,
        "tools": [],
        "permissionMode": "default",
    }


def assistant(session_id: str, model: str, text: str) -> dict[str, Any]:
    """A stream-json assistant message saying `text`."""
    return {
        "type": "assistant",
        "message": {
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
    }


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
