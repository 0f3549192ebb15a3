"""What one repository may cost dependency detection: the caps on its manifests, and how a scan
is held to them.

Detection reads every project's repository in one process and keeps what it found in a cache
every later detection reads, so a repository holding a 50 MB manifest (generated, vendored or
hostile) must cost no more than a large ordinary one, and never the other projects their edges.
A manifest over a cap is left out (or its requirements are) with a problem naming the file and
the cap; the rest of the repository still counts.

The caps sit far above what real repositories hold: the largest manifest among vue-core,
Tokio and OpenTelemetry (Python and Go) is 12 KB, the most requirements in one manifest 237,
in one repository 635; a large npm monorepo (aws-sdk-js-v3) has about 450 package.json files
and 10,000 requirements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from orchestration.dependencies.model import ManifestScan, Requirement
from orchestration.dependencies.parsers.source import problem

#: The largest manifest read (bytes). Larger files are never read into memory: their size comes
#: from git's tree listing. Parsing a 1 MiB manifest takes at most about 1.5 s and 100 MB.
MAX_MANIFEST_BYTES = 1 << 20
#: The most manifest bytes read from one repository; the manifests after (in path order) are not.
MAX_REPOSITORY_MANIFEST_BYTES = 8 << 20
#: The most manifest files looked at in one repository (links and oversized files included).
MAX_MANIFESTS = 5_000
#: The most requirements one manifest may declare; over it, none of its requirements count.
MAX_REQUIREMENTS_PER_MANIFEST = 5_000
#: The most requirements counted in one repository, manifests taken in path order.
MAX_REQUIREMENTS_PER_REPOSITORY = 25_000
#: Problems kept per manifest (a broken file of 100,000 lines is not 100,000 problems).
MAX_PROBLEMS_PER_MANIFEST = 20
#: The longest text kept of a problem or of a requirement as written (it becomes evidence).
MAX_TEXT = 500

#: git's mode of a symbolic link: its blob holds the link's target, never the file linked to.
SYMLINK_MODE = "120000"
#: git's modes of regular files (100664 is an old spelling git still reads).
REGULAR_MODES = frozenset({"100644", "100755", "100664"})


def size_text(size: int) -> str:
    """A size as people read it: `980 bytes`, `12.5 KiB`, `50.2 MiB`, `1 MiB`."""
    if size < 1024:
        return f"{size} bytes"
    unit, scale = ("KiB", 1024) if size < 1 << 20 else ("MiB", 1 << 20)
    return f"{size // scale} {unit}" if size % scale == 0 else f"{size / scale:.1f} {unit}"


def left_out(path: str, ecosystem: str, message: str) -> ManifestScan:
    """A manifest that was not read, with the problem that says why."""
    return ManifestScan(path=path, ecosystem=ecosystem, problems=(problem(path, None, message),))


def too_large(size: int) -> str:
    return (
        f"not read: {size_text(size)} is over the {size_text(MAX_MANIFEST_BYTES)} limit for one "
        "manifest, so its dependencies are not counted (keep generated or vendored files out of "
        "manifests)"
    )


def symbolic_link() -> str:
    return (
        "not read: it is a symbolic link, and links are never followed (the file it points to "
        "is read only if it is itself a manifest in the repository)"
    )


def not_a_regular_file(mode: str) -> str:
    return f"not read: it is not a regular file (mode {mode})"


def over_repository_budget(following: int, *, files: bool) -> str:
    limit = (
        f"{MAX_MANIFESTS:,} manifest files"
        if files
        else f"{size_text(MAX_REPOSITORY_MANIFEST_BYTES)} of manifests"
    )
    rest = f", nor are the {following:,} after it" if following else ""
    return (
        f"not read{rest}: the repository holds more than {limit}, the most one repository may "
        "cost detection (manifests are read in path order)"
    )


def cap_manifest(scan: ManifestScan) -> ManifestScan:
    """`scan` held to the per-manifest caps: requirements, problems, and the length of texts."""
    requirements = scan.requirements
    problems = list(scan.problems)
    if len(requirements) > MAX_REQUIREMENTS_PER_MANIFEST:
        problems.insert(
            0,
            problem(
                scan.path,
                None,
                f"declares {len(requirements):,} requirements, over the limit of "
                f"{MAX_REQUIREMENTS_PER_MANIFEST:,} for one manifest, so none of them are counted",
            ),
        )
        requirements = ()
    if len(problems) > MAX_PROBLEMS_PER_MANIFEST:
        hidden = len(problems) - MAX_PROBLEMS_PER_MANIFEST + 1
        problems = [
            *problems[: MAX_PROBLEMS_PER_MANIFEST - 1],
            problem(scan.path, None, f"and {hidden:,} more problems in this file"),
        ]
    problems = [_trimmed(text) for text in problems]
    if any(len(r.text) > MAX_TEXT for r in requirements):
        requirements = tuple(_trimmed_requirement(r) for r in requirements)
    if requirements is scan.requirements and problems == list(scan.problems):
        return scan
    return replace(scan, requirements=tuple(requirements), problems=tuple(problems))


def cap_repository(manifests: Sequence[ManifestScan]) -> tuple[ManifestScan, ...]:
    """The manifests of one repository (in path order) held to the per-repository requirement
    cap: once it is reached, later manifests keep their packages but not their requirements,
    and the first of them says so."""
    counted = 0
    over: list[ManifestScan] = []
    kept: list[ManifestScan] = []
    for scan in manifests:
        if over or counted + len(scan.requirements) > MAX_REQUIREMENTS_PER_REPOSITORY:
            if scan.requirements:
                over.append(scan)
                kept.append(replace(scan, requirements=()))
            else:
                kept.append(scan)
            continue
        counted += len(scan.requirements)
        kept.append(scan)
    if over:
        first = over[0]
        rest = (
            f", nor are those of the {len(over) - 1:,} manifests after it" if len(over) > 1 else ""
        )
        message = problem(
            first.path,
            None,
            f"its {len(first.requirements):,} requirements are not counted{rest}: the "
            f"repository declares more than {MAX_REQUIREMENTS_PER_REPOSITORY:,} requirements, "
            "the most counted for one repository (manifests are read in path order)",
        )
        kept = [
            replace(scan, problems=(message, *scan.problems)) if scan.path == first.path else scan
            for scan in kept
        ]
    return tuple(kept)


def _trimmed(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _trimmed_requirement(requirement: Requirement) -> Requirement:
    if len(requirement.text) <= MAX_TEXT:
        return requirement
    return replace(requirement, text=_trimmed(requirement.text))
