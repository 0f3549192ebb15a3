"""What every benchmark records about the machine it ran on, and its progress lines.

Other work on the machine inflates wall times; the load average at the start and the end of a
run says how much there was.
"""

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def machine(**versions: str | None) -> dict[str, Any]:
    """Platform, Python, CPUs, the given tool versions, the date and the load average now."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        **versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_at_start": loadavg(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def progress(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def discard(root: Path, keep: bool) -> None:
    """Remove a run's temporary directory, or say where it is kept (daemon log, state)."""
    if keep:
        progress(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def finish(
    results: dict[str, Any], render: Callable[[dict[str, Any]], str], output: Path, began: float
) -> None:
    """Record the load average and wall time (since the monotonic `began`), render the table,
    write the results with it as JSON to `output`, print it."""
    results["machine"]["loadavg_at_end"] = loadavg()
    results["wall_s"] = round(time.monotonic() - began, 1)
    table = render(results)
    results["table"] = table
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(table)
    progress(f"done in {results['wall_s']} s; results in {output}")


def print_profile(path: Path, limit: int = 25) -> None:
    """The costliest calls of a cProfile dump, on stderr; the full data stays in `path`."""
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("cumulative").print_stats(limit)
    progress(out.getvalue())
