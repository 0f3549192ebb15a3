"""Reading the stand-in agent's log (`tests/support/fakes/claude`): one JSON object per line,
appended by every stand-in as it goes, read by tests while agents still run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def entries(*logs: Path) -> list[dict[str, Any]]:
    """Every complete entry of `logs`, log by log in the order given, each oldest first; a
    missing log holds none. A reader may see an append half done (a write is not atomic for
    readers, and a start line runs to several pages), so a last line without its newline is
    left for the next read."""
    found: list[dict[str, Any]] = []
    for log in logs:
        try:
            data = log.read_bytes()
        except FileNotFoundError:
            continue
        complete = data[: data.rfind(b"\n") + 1].decode("utf-8")
        found.extend(json.loads(line) for line in complete.splitlines() if line.strip())
    return found


def events(event: str, *logs: Path) -> list[dict[str, Any]]:
    """The complete entries of one kind (`start`, `end`, `barrier`, ...) of `logs`."""
    return [entry for entry in entries(*logs) if entry["event"] == event]
