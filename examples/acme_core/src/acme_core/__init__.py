"""Small text and version helpers shared by the Acme services."""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

__all__ = ["SemVer", "parse_version", "slugify"]
__version__ = "0.3.0"

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?$"
)


class SemVer(NamedTuple):
    """A parsed semantic version; compares by (major, minor, patch) then pre-release."""

    major: int
    minor: int
    patch: int
    pre: str = ""

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.pre}" if self.pre else core


def slugify(text: str, *, separator: str = "-") -> str:
    """Turn free text into a lowercase ASCII slug, e.g. "Héllo, World!" -> "hello-world"."""
    ascii_text = (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    )
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return separator.join(words)


def parse_version(text: str) -> SemVer:
    """Parse "MAJOR.MINOR.PATCH[-PRE]" (an optional leading "v" is allowed).

    Raises ValueError naming the text when it is not a semantic version.
    """
    match = _SEMVER.match(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r} (expected MAJOR.MINOR.PATCH)")
    return SemVer(
        int(match["major"]), int(match["minor"]), int(match["patch"]), match["pre"] or ""
    )
