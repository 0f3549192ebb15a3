"""How commands print: JSON for machines, aligned columns for people, errors to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns padded to their widest cell."""
    cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def text_argument(value: str, what: str) -> str:
    """A text argument as given, or standard input when it is `-` (as `orch task add` reads a
    PROMPT); `what` names it in the error for input that is not UTF-8."""
    if value != "-":
        return value
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        fail(f"the {what} is not valid UTF-8 text")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit with `code`.

    Not a `click.ClickException`: its `show()` prints `Error: ...`, so keeping this line would
    take a subclass, more code than these two lines, for the same behaviour."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)
