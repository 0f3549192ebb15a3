"""What every benchmark records about the machine it ran on, and its progress lines.

Other work on the machine inflates wall times; the load average at the start and the end of a
run says how much there was.
"""

import os
import platform
import time
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
