"""What a task's prompt may be: the one rule `orch task add` and task-list import both apply, so a
prompt no agent can be given is refused when the task is added, not when it runs."""

from __future__ import annotations

#: Linux refuses a single argument of 128 KiB or more (MAX_ARG_STRLEN), and a profile may pass
#: the prompt as one; this leaves room below that limit.
MAX_PROMPT_BYTES = 120 * 1024


def prompt_problem(prompt: str) -> str | None:
    """Why `prompt` cannot be a task's prompt, or None when it can."""
    if not prompt.strip():
        return "the prompt is empty"
    if "\x00" in prompt:
        return (
            "the prompt contains a NUL character (\\0), which no program can receive as an "
            "argument; remove it"
        )
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError:  # bytes that are not UTF-8, as a command line may carry them
        return "the prompt is not valid UTF-8 text"
    if size > MAX_PROMPT_BYTES:
        return (
            f"the prompt is larger than {MAX_PROMPT_BYTES // 1024} KiB ({size} bytes; Linux "
            "refuses a single argument of 128 KiB or more); shorten it or put the details in a "
            "file of the repository and refer to it"
        )
    return None
