"""A task's transcript: what its agent printed, one section per attempt, kept in
`ORCH_HOME/workspaces/<project>/logs/<task-id>.log` and capped at TRANSCRIPT_CAP_BYTES.

The caller redacts the project's secrets before appending; nothing here reads or masks them.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from orchestration.workspace.isolation import path_inside, project_dir

#: The most a transcript keeps: past it, the oldest bytes after its first header are dropped.
TRANSCRIPT_CAP_BYTES = 2 * 1024 * 1024
#: The longest header line kept (a header is one line; the rest of a long one is cut).
_HEADER_MAX_CHARS = 500
#: Where bytes were dropped: right after the first header, counting everything dropped so far.
_CUT_NOTE = "[... {count} earlier bytes cut to keep this transcript under {cap} bytes ...]\n"
_CUT_NOTE_PATTERN = re.compile(rb"\[\.\.\. (\d+) earlier bytes cut [^\n]*\]\n")
#: How far past a cut to look for the start of a line before cutting mid-line instead.
_LINE_SEARCH_BYTES = 64 * 1024


def transcript_path(home: Path, project: str, task_id: str) -> Path:
    """Where task `task_id` of `project` keeps its transcript; never outside the project's
    directory under `home` (IsolationError for a name that would leave it)."""
    return path_inside(project_dir(home, project), "logs", f"{task_id}.log")


def append_transcript(home: Path, project: str, task_id: str, *, header: str, text: str) -> Path:
    """Add one section to the task's transcript: the one-line `header` (e.g.
    `=== attempt 2, run <id>, <UTC time> ===`), then `text`. The file stays at most
    TRANSCRIPT_CAP_BYTES: the oldest bytes after its first header are dropped and a line says
    how many. The file is replaced whole (written beside it, then renamed), so a reader never
    sees half a section. Returns the transcript's path."""
    path = transcript_path(home, project, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        existing = b""
    line = " ".join(header.splitlines()).strip()[:_HEADER_MAX_CHARS]
    section = f"{line}\n{text}".encode("utf-8", errors="replace")
    if not section.endswith(b"\n"):
        section += b"\n"
    if existing:
        if not existing.endswith(b"\n"):
            existing += b"\n"
        section = existing + b"\n" + section
    _replace(path, _capped(section, TRANSCRIPT_CAP_BYTES))
    return path


def read_transcript(home: Path, project: str, task_id: str) -> str | None:
    """The task's transcript, or None when none has been kept (the task has not run yet)."""
    try:
        data = transcript_path(home, project, task_id).read_bytes()
    except FileNotFoundError:
        return None
    return data.decode("utf-8", errors="replace")


def _capped(data: bytes, cap: int) -> bytes:
    """`data` if it fits in `cap` bytes, else its first line, a note of how much was cut in
    all, and as much of its end as fits (starting at a line, or at least at a character)."""
    if len(data) <= cap:
        return data
    first_end = data.index(b"\n") + 1
    head, rest = data[:first_end], data[first_end:]
    dropped = 0
    earlier = _CUT_NOTE_PATTERN.match(rest)
    if earlier:  # cut before: count it in the new note
        dropped = int(earlier.group(1))
        rest = rest[earlier.end() :]
    longest_note = len(_note(dropped + len(rest), cap))
    room = max(cap - len(head) - longest_note, 0)
    tail = rest[len(rest) - room :] if room < len(rest) else rest
    if len(tail) < len(rest):
        newline = tail.find(b"\n", 0, _LINE_SEARCH_BYTES)
        if 0 <= newline < len(tail) - 1:
            tail = tail[newline + 1 :]
        else:
            start = 0
            while start < len(tail) and 0x80 <= tail[start] < 0xC0:  # a character's middle
                start += 1
            tail = tail[start:]
    dropped += len(rest) - len(tail)
    return head + _note(dropped, cap) + tail


def _note(count: int, cap: int) -> bytes:
    return _CUT_NOTE.format(count=count, cap=cap).encode()


def _replace(path: Path, data: bytes) -> None:
    """Put `data` at `path` by renaming a new file (readable by this user only) over it."""
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
