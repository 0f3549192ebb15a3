"""The offline demo agent: a scripted stand-in that speaks Claude Code's JSON protocol.

It makes a small, real change in the working directory (a note under `orch-demo/` recording the
prompt) and prints one result object like `claude -p --output-format json -- PROMPT` does, with
zero cost. It exists so the sample projects run end to end without any paid agent service.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    # As Claude Code parses them: `-p`/`--print` is a flag, `--` ends the options, and the prompt
    # is the positional argument (read from standard input when there is none).
    parser = argparse.ArgumentParser(prog="orchestration.agents.demo", allow_abbrev=False)
    parser.add_argument("prompt", nargs="?")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--output-format", default="json", choices=["json", "text"])
    parser.add_argument("-r", "--resume", default=None)
    parser.add_argument("--session-id", default=None)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args(argv)
    if args.prompt is None:
        args.prompt = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not args.prompt.strip():
        parser.error("no prompt: give it after `--` or on standard input")

    started = time.monotonic()
    session_id = args.resume or args.session_id or str(uuid.uuid4())
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
    out = json.dumps(result) if args.output_format == "json" else summary
    sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
