"""Reading dependency manifests: which files are manifests, and what each one declares.

One parser per format, each a pure function of a file's path and text that never raises for bad
content (it records a problem naming the file instead), so the same code serves the assets, the
CLI and tests. `scan_files` and `scan_directory` read a whole repository into a `ProjectScan`,
held to the caps of `orchestration.dependencies.limits`; `ManifestSelection` picks the manifest
blobs of a git tree worth reading before any is read.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from orchestration.dependencies import limits
from orchestration.dependencies.model import ManifestScan, ProjectScan
from orchestration.dependencies.parsers.source import problem

__all__ = [
    "SKIPPED_DIRECTORIES",
    "ManifestSelection",
    "is_manifest",
    "manifest_ecosystem",
    "parse_manifest",
    "read_manifest",
    "scan_directory",
    "scan_files",
]

#: Folders whose files are never a project's own manifests (installed, vendored or built copies).
SKIPPED_DIRECTORIES = frozenset(
    {"node_modules", "vendor", ".git", "target", "dist", "build", ".venv", "venv", "__pycache__"}
)

Parser = Callable[[str, str], ManifestScan]


def _imported_when_used(module: str, function: str) -> Parser:
    """The parser `function` of `parsers.<module>`, whose module is imported at its first
    use: a detection that reads only package.json never imports the Python parsers."""

    def parse(path: str, text: str) -> ManifestScan:
        found: Parser = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        return found(path, text)

    parse.__name__ = parse.__qualname__ = function
    return parse


#: file name -> (ecosystem, parser)
PARSERS: Mapping[str, tuple[str, Parser]] = {
    "pyproject.toml": ("python", _imported_when_used("python", "parse_pyproject")),
    "setup.cfg": ("python", _imported_when_used("python", "parse_setup_cfg")),
    "package.json": ("npm", _imported_when_used("npm", "parse_package_json")),
    "go.mod": ("go", _imported_when_used("go", "parse_go_mod")),
    "Cargo.toml": ("cargo", _imported_when_used("cargo", "parse_cargo_toml")),
    ".gitmodules": ("git", _imported_when_used("gitmodules", "parse_gitmodules")),
}
_REQUIREMENTS = ("python", _imported_when_used("python", "parse_requirements_txt"))


def _parser_for(parts: list[str]) -> tuple[str, Parser] | None:
    """The parser of a file by its name (and, for requirements/*.txt, its folder)."""
    name = parts[-1]
    found = PARSERS.get(name)
    if found is not None:
        return found
    if name.endswith(".txt") and (
        name.startswith("requirements") or (len(parts) > 1 and parts[-2] == "requirements")
    ):
        return _REQUIREMENTS
    return None


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def manifest_ecosystem(path: str) -> str | None:
    """The ecosystem of the manifest at `path`, or None when it is not one we read."""
    parts = _parts(path)
    if not parts or any(part in SKIPPED_DIRECTORIES for part in parts[:-1]):
        return None
    found = _parser_for(parts)
    return found[0] if found else None


def is_manifest(path: str) -> bool:
    """Whether `path` (posix, relative to the repository root) is a manifest we read.

    Files under installed, vendored or built folders (node_modules/, vendor/, target/, ...)
    are not the project's own and are skipped.
    """
    return manifest_ecosystem(path) is not None


def parse_manifest(path: str, text: str) -> ManifestScan:
    """Everything the manifest at `path` declares.

    Never raises for bad content: what cannot be read becomes a problem naming the file (and
    the line, when known). Raises ValueError only when `path` is not a manifest file name.
    """
    parts = _parts(path)
    found = _parser_for(parts) if parts else None
    if found is None:
        raise ValueError(f"{path}: not a dependency manifest this scanner reads")
    ecosystem, parser = found
    text = text.removeprefix("\ufeff")
    try:
        scan = parser(path, text)
    except RecursionError:
        return limits.left_out(path, ecosystem, "nested too deeply to be read")
    except Exception as exc:  # a parser bug must not stop the scan of a whole repository
        message = (
            f"could not be read ({type(exc).__name__}: {exc}); "
            "this is a bug in the manifest parser, please report it with the file"
        )
        return limits.left_out(path, ecosystem, message)
    return limits.cap_manifest(scan)


def read_manifest(path: str, data: bytes) -> ManifestScan:
    """What the manifest at `path` declares, from its bytes as stored.

    A file over `limits.MAX_MANIFEST_BYTES` is left out with a problem. Bytes that are not
    UTF-8 are a problem too; the rest of the file is still read, each bad byte replaced.
    """
    ecosystem = manifest_ecosystem(path)
    if ecosystem is None:
        raise ValueError(f"{path}: not a dependency manifest this scanner reads")
    if len(data) > limits.MAX_MANIFEST_BYTES:
        return limits.left_out(path, ecosystem, limits.too_large(len(data)))
    try:
        return parse_manifest(path, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        bad = problem(
            path,
            None,
            f"is not UTF-8 text (byte {exc.start} is {data[exc.start : exc.start + 1]!r}); "
            "it was read with the bad bytes replaced, save it as UTF-8",
        )
    scan = parse_manifest(path, data.decode("utf-8", errors="replace"))
    return replace(scan, problems=(bad, *scan.problems))


class ManifestSelection:
    """Which manifests of one git tree to read, decided from the tree listing alone.

    Called with each blob's path, git mode and size before anything is read: regular files
    within the caps are wanted; a symbolic link (whose blob holds only the link's target), an
    oversized file, and everything past the repository's budget are not, and each becomes a
    manifest with a problem in `left_out`.
    """

    def __init__(self) -> None:
        self.left_out: dict[str, ManifestScan] = {}
        self._count = 0
        self._bytes = 0
        self._stopped_at: tuple[str, str, bool] | None = None  # path, ecosystem, by file count
        self._after_stop = 0

    def __call__(self, path: str, mode: str, size: int) -> bool:
        ecosystem = manifest_ecosystem(path)
        if ecosystem is None:
            return False
        if self._stopped_at is not None:
            self._after_stop += 1
            return False
        self._count += 1
        if self._count > limits.MAX_MANIFESTS:
            self._stopped_at = (path, ecosystem, True)
            return False
        reason = None
        if mode == limits.SYMLINK_MODE:
            reason = limits.symbolic_link()
        elif mode not in limits.REGULAR_MODES:
            reason = limits.not_a_regular_file(mode)
        elif size > limits.MAX_MANIFEST_BYTES:
            reason = limits.too_large(size)
        if reason is not None:
            self.left_out[path] = limits.left_out(path, ecosystem, reason)
            return False
        if self._bytes + size > limits.MAX_REPOSITORY_MANIFEST_BYTES:
            self._stopped_at = (path, ecosystem, False)
            return False
        self._bytes += size
        return True

    def skipped(self) -> dict[str, ManifestScan]:
        """Every manifest not read, with its problem (one for all past the budget)."""
        found = dict(self.left_out)
        if self._stopped_at is not None:
            path, ecosystem, by_count = self._stopped_at
            message = limits.over_repository_budget(self._after_stop, files=by_count)
            found[path] = limits.left_out(path, ecosystem, message)
        return found


def scan_files(
    project: str,
    files: Mapping[str, str | bytes],
    commit: str | None = None,
    *,
    skipped: Mapping[str, ManifestScan] | None = None,
) -> ProjectScan:
    """Parse the manifests among `files` (posix path -> text, or bytes as stored); other files
    are ignored. `skipped` are manifests that were not read (see `ManifestSelection`). The
    result is held to the per-repository caps."""
    manifests = dict(skipped or {})
    for path, content in files.items():
        if not is_manifest(path):
            continue
        if isinstance(content, bytes):
            manifests[path] = read_manifest(path, content)
            continue
        size = len(content) if content.isascii() else len(content.encode(errors="surrogatepass"))
        if size > limits.MAX_MANIFEST_BYTES:
            ecosystem = manifest_ecosystem(path) or ""
            manifests[path] = limits.left_out(path, ecosystem, limits.too_large(size))
        else:
            manifests[path] = parse_manifest(path, content)
    ordered = tuple(manifests[path] for path in sorted(manifests))
    return ProjectScan(project=project, commit=commit, manifests=limits.cap_repository(ordered))


def scan_directory(project: str, root: Path, commit: str | None = None) -> ProjectScan:
    """Parse the manifests of a checkout at `root`, skipping installed and built folders.

    Only manifest files are read, never through a symbolic link, and never one larger than the
    cap; each file left out, or not UTF-8 text, gives a problem.
    """
    files: dict[str, bytes] = {}
    selection = ManifestSelection()
    for directory, folders, names in os.walk(root):
        folders[:] = sorted(folder for folder in folders if folder not in SKIPPED_DIRECTORIES)
        relative = Path(directory).relative_to(root).as_posix()
        for name in sorted(names):
            path = name if relative == "." else f"{relative}/{name}"
            if manifest_ecosystem(path) is None:
                continue
            try:
                status = (Path(directory) / name).lstat()
                mode = (
                    limits.SYMLINK_MODE
                    if stat.S_ISLNK(status.st_mode)
                    else "100644"
                    if stat.S_ISREG(status.st_mode)
                    else f"{status.st_mode:o}"
                )
                if selection(path, mode, status.st_size):
                    files[path] = _read_regular_file(Path(directory) / name)
            except OSError as exc:
                message = f"cannot be read ({exc})"
                selection.left_out[path] = limits.left_out(
                    path, manifest_ecosystem(path) or "", message
                )
    return scan_files(project, files, commit, skipped=selection.skipped())


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, refusing to follow a link put there since it was listed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limits.MAX_MANIFEST_BYTES + 1)
