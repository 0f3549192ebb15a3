"""The files and history of an archived or removed project: archiving keeps what cannot be made
again (the private clone's branches as a git bundle, the agent home and sessions) under
`ORCH_HOME/archive/<project>` and moves the project's file to `projects/.archived/`;
unarchiving puts it all back; purging deletes it, and the project's history in Dagster.

Nothing here ever deletes the user's own repository: every deletion is inside ORCH_HOME or the
projects directory, and is refused when the project's `repo` lies in what would be deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from orchestration.dependencies.detection import DetectionCache
from orchestration.registry.layers import YamlDocumentError, env_override_layer, read_yaml_layer
from orchestration.registry.loader import ARCHIVED_DIR, resolve_repo_path
from orchestration.registry.models import SLUG_PATTERN, is_remote_url, repo_problem
from orchestration.settings import Settings
from orchestration.state.copies import special_files
from orchestration.tags import PROJECT_TAG, project_pool, tasks_partitions_name
from orchestration.workspace.git import GitError, GitRepo, run_git
from orchestration.workspace.isolation import IsolationError, path_inside, project_dir

if TYPE_CHECKING:
    import dagster as dg

#: Below ORCH_HOME: one directory per archived project.
ARCHIVE_DIR = "archive"
BUNDLE_FILE = "repo.bundle"
REFS_FILE = "refs.txt"
MANIFEST_FILE = "archive.json"
MANIFEST_VERSION = 1
#: The directories of a project's workspace that are kept: the agent home and the per-profile
#: agent sessions. Worktrees, outcomes and logs are not (see `archive_project`).
KEPT_DIRS = ("home", "agents")
CLONE_DIR = "repo.git"
YAML_SUFFIXES = (".yaml", ".yml")
OUTCOMES_DIR = "outcomes"
#: The format of refs.txt: what `for-each-ref` prints, one ref a line.
REFS_FORMAT = "%(objectname) %(refname)"
#: The asset keys of a project (`[project, <name>]`), wiped by `purge_project_history`.
PROJECT_ASSETS = ("source", "manifest", "verification", "tasks")
#: How long to wait for a run of the project to let go of its workspace.
LOCK_TIMEOUT_S = 60.0


class ArchiveError(Exception):
    """Archiving, unarchiving or purging a project could not be done; the message says which
    file or step failed and what was left as it was."""


@dataclass(frozen=True)
class ArchiveRecord:
    """What `archive_project` kept and where."""

    project: str
    archive: Path
    #: The git bundle of the private clone; None when there was no clone (or one without refs).
    bundle: Path | None
    refs: Path
    #: sha256 of refs.txt: the refs the bundle holds, as `git for-each-ref` printed them.
    refs_digest: str
    #: The project's file, where it was and where it is now.
    original_yaml: Path
    archived_yaml: Path
    #: The workspace directories copied into the archive (`home/`, `agents/`) that existed.
    kept: tuple[str, ...]
    #: Task worktrees found in the workspace: their uncommitted changes were not kept.
    dropped_worktrees: tuple[str, ...]
    #: The workspace directory deleted once everything was kept.
    workspace: Path

    def __str__(self) -> str:
        return str(self.archive)


def archive_dir(home: Path, project: str) -> Path:
    """Where an archived project's clone bundle and sessions are kept: `ORCH_HOME/archive/<p>`."""
    if not SLUG_PATTERN.fullmatch(project):
        raise IsolationError(f"{project!r} is not a project name")
    return _not_a_link(path_inside(home, ARCHIVE_DIR) / project)


def archived_yaml_path(settings: Settings, project: str) -> Path:
    """Where an archived project's file waits: `projects/.archived/<project>.yaml`."""
    if not SLUG_PATTERN.fullmatch(project):
        raise IsolationError(f"{project!r} is not a project name")
    return path_inside(settings.projects_dir, ARCHIVED_DIR) / f"{project}.yaml"


def _workspace_root(home: Path, project: str) -> Path:
    """The project's workspace directory, which must not be a symbolic link."""
    root = project_dir(home, project)
    _not_a_link(path_inside(home, "workspaces") / project)
    return root


def _not_a_link(path: Path) -> Path:
    if path.is_symlink():
        raise IsolationError(f"{path} is a symbolic link; the orchestrator made no such link")
    return path


# Archiving -----------------------------------------------------------------------------------


def archive_project(settings: Settings, project: str, project_file: Path) -> ArchiveRecord:
    """Keep what cannot be made again of `project` and take it out of the registry: the private
    clone's refs and objects as `repo.bundle` (verified) with `refs.txt`, the agent home and
    sessions, and the project's file moved to `projects/.archived/`; only then the workspace
    directory is deleted.

    The caller makes sure nothing of the project runs (no task, no refresh): uncommitted work in
    a task worktree, and pending outcomes, are not kept, so pending outcomes are refused here.
    On any failure before the deletion nothing is deleted and the file stays where it was.
    """
    home = settings.home
    archive = _safe(lambda: archive_dir(home, project))
    target_yaml = _safe(lambda: archived_yaml_path(settings, project))
    root = _safe(lambda: _workspace_root(home, project))
    source_yaml = _top_level_file(settings, Path(project_file))
    if archive.exists() or archive.is_symlink():
        raise ArchiveError(
            f"{archive} already exists: project {project!r} is archived already, or an earlier "
            "archive was left there; unarchive it, or remove that directory"
        )
    if target_yaml.exists() or target_yaml.is_symlink():
        raise ArchiveError(
            f"{target_yaml} already exists: an archived file of project {project!r} is there; "
            "move it away (or unarchive it) first"
        )
    pending = sorted((root / OUTCOMES_DIR).glob("*.json")) if root.is_dir() else []
    if pending:
        raise ArchiveError(
            f"{len(pending)} task outcome(s) of {project!r} are not recorded yet "
            f"({root / OUTCOMES_DIR}); let the dispatch sensor record them, then archive"
        )
    repo = _declared_repo(settings, source_yaml)
    with _workspace_lock(root):
        record = _keep(project, source_yaml, target_yaml, archive, root, repo)
        try:
            _remove_tree(root)
        except OSError as exc:
            raise ArchiveError(
                f"{project!r} is archived in {archive} and its file moved to {target_yaml}, but "
                f"its workspace {root} could not be deleted ({exc}); delete it by hand"
            ) from exc
    return record


def _keep(
    project: str,
    source_yaml: Path,
    target_yaml: Path,
    archive: Path,
    root: Path,
    repo: str | None,
) -> ArchiveRecord:
    """Every step of archiving but the deletion; on failure, undone."""
    step = f"create {archive}"
    made = moved = False
    try:
        archive.mkdir(parents=True)
        made = True
        step = f"bundle the private clone {root / CLONE_DIR}"
        bundle, refs_text, object_format, clone_remote = _bundle_clone(root / CLONE_DIR, archive)
        refs = archive / REFS_FILE
        refs.write_text(refs_text, encoding="utf-8")
        digest = hashlib.sha256(refs_text.encode("utf-8")).hexdigest()
        kept: list[str] = []
        for name in KEPT_DIRS:
            source = root / name
            if source.is_dir() and not source.is_symlink():
                step = f"copy {source} to {archive / name}"
                _copy_tree(source, archive / name)
                kept.append(name)
        worktrees = root / "worktrees"
        dropped = tuple(sorted(p.name for p in worktrees.iterdir())) if worktrees.is_dir() else ()
        step = f"write {archive / MANIFEST_FILE}"
        manifest = {
            "version": MANIFEST_VERSION,
            "project": project,
            "archived_at": datetime.now(UTC).isoformat(),
            "original_yaml": str(source_yaml),
            "archived_yaml": str(target_yaml),
            "bundle": bundle is not None,
            "refs_sha256": digest,
            "object_format": object_format,
            "repo": repo or clone_remote,
            "kept": kept,
            "dropped_worktrees": list(dropped),
        }
        (archive / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        step = f"move {source_yaml} to {target_yaml}"
        target_yaml.parent.mkdir(exist_ok=True)
        _move_no_clobber(source_yaml, target_yaml)
        moved = True
    except BaseException as exc:
        undone = _undo(
            [
                *([lambda: _move_no_clobber(target_yaml, source_yaml)] if moved else []),
                *([lambda: _remove_tree(archive)] if made else []),
            ]
        )
        if not isinstance(exc, OSError | GitError | ArchiveError):
            raise
        raise ArchiveError(
            f"could not archive {project!r}: could not {step}: {exc}; nothing was deleted{undone}"
        ) from exc
    return ArchiveRecord(
        project=project,
        archive=archive,
        bundle=bundle,
        refs=refs,
        refs_digest=digest,
        original_yaml=source_yaml,
        archived_yaml=target_yaml,
        kept=tuple(kept),
        dropped_worktrees=dropped,
        workspace=root,
    )


def _bundle_clone(clone: Path, archive: Path) -> tuple[Path | None, str, str, str | None]:
    """Bundle every ref of the private clone into the archive and verify the bundle: the bundle
    (None when there is no clone or it has no refs), the refs as for-each-ref prints them, the
    clone's object format and its remote's URL."""
    kept = bundle_clone(clone, archive / BUNDLE_FILE)
    if kept is None:
        return None, "", "sha1", None  # a clone whose creation failed: sync would remake it
    if kept.bundle is None:
        return None, "", kept.object_format, kept.remote
    return kept.bundle, kept.refs + "\n", kept.object_format, kept.remote


@dataclass(frozen=True)
class ClonedRefs:
    """What `bundle_clone` kept of a private clone."""

    #: The verified bundle; None when the clone has no ref (there is nothing to bundle).
    bundle: Path | None
    #: The refs as `git for-each-ref --format=REFS_FORMAT` prints them, one a line.
    refs: str
    object_format: str
    #: The clone's `origin` URL as its configuration said; None when it had none.
    remote: str | None


def bundle_clone(clone: Path, bundle: Path, *, verify: bool = True) -> ClonedRefs | None:
    """Write every ref and object of the private clone at `clone` to the git bundle `bundle` and
    (with `verify`) verify it (shared by archiving and `orch backup`). None when there is no
    repository there; no bundle is written for a clone without refs."""
    if not clone.is_dir():
        return None
    repo = GitRepo.private_clone(clone)
    if not repo.is_repository():
        return None
    refs_text = _refs(repo)
    config = repo.config_values()
    object_format = config.get("extensions.objectformat", "sha1").lower()
    remote = config.get("remote.origin.url") or None
    if not refs_text:
        return ClonedRefs(None, "", object_format, remote)
    repo.run("bundle", "create", str(bundle), "--all", what=f"write the bundle {bundle}")
    if verify:
        # git 2.39 verifies a bundle only inside a repository: the clone it came from.
        repo.run("bundle", "verify", str(bundle), what=f"verify the bundle {bundle}")
    return ClonedRefs(bundle, refs_text, object_format, remote)


def unbundle_clone(clone: Path, bundle: Path | None, *, object_format: str, source: str) -> str:
    """Make the private clone at `clone` again from `bundle` (every ref exactly as bundled; an
    empty clone for None), its configuration written for the remote `source` (shared by
    unarchiving and `orch backup restore`). The refs of the new clone, as `bundle_clone` lists
    them, for the caller to compare with what was kept."""
    run_git(
        ("init", "--quiet", "--bare", f"--object-format={object_format}", str(clone)),
        cwd=clone.parent,
        what=f"create a private clone at {clone}",
    )
    repo = GitRepo.private_clone(clone)
    if bundle is not None:
        repo.run(
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            str(bundle),
            "+refs/*:refs/*",
            what=f"fetch every ref of {bundle}",
        )
    repo.reset_clone_config(source)
    return _refs(repo)


def _refs(repo: GitRepo) -> str:
    return str(repo.run("for-each-ref", f"--format={REFS_FORMAT}", what="list the refs"))


def _clone_remote(clone: Path) -> str | None:
    return GitRepo.private_clone(clone).config_values().get("remote.origin.url") or None


# Unarchiving ---------------------------------------------------------------------------------


def unarchive_project(settings: Settings, project: str) -> Path:
    """Put an archived project back: its private clone made again from the bundle (refs exactly
    as they were, configuration from the project's file), its agent home and sessions, and its
    file where it was. The restored file's path.

    Refused while a file of that project is in the projects directory again, or when there is
    no archive; on any failure the archive is left intact and nothing is restored.
    """
    home = settings.home
    archive = _safe(lambda: archive_dir(home, project))
    archived_yaml = _safe(lambda: archived_yaml_path(settings, project))
    root = _safe(lambda: _workspace_root(home, project))
    manifest = _read_manifest(archive, project)
    if not archived_yaml.is_file():
        raise ArchiveError(
            f"{archived_yaml} is missing: project {project!r} has an archive in {archive} but "
            "no archived file; put its project file back there to unarchive it"
        )
    target = _restore_target(settings, project, manifest)
    for path in {target, *_active_files(settings, project)}:
        if path.exists() or path.is_symlink():
            raise ArchiveError(
                f"{path} exists: a project file for {project!r} is in the projects directory "
                f"again; move it away to unarchive the archived one ({archived_yaml})"
            )
    if root.exists() and any(p.name != ".lock" for p in root.iterdir()):
        raise ArchiveError(
            f"{root} is not empty: project {project!r} has a workspace again; remove it to "
            f"unarchive (the archive is in {archive})"
        )
    refs_text = _read_refs(archive, manifest)
    bundle = archive / BUNDLE_FILE if manifest.get("bundle") else None
    source = None
    if bundle is not None:
        source = _declared_repo(settings, archived_yaml) or _usable(manifest.get("repo"))
        if source is None:
            raise ArchiveError(
                f"cannot tell which repository {project!r} uses: {archived_yaml} sets no usable "
                "`repo`; set it, then unarchive"
            )
    made_root = not root.exists()
    step = f"create {root}"
    try:
        with _workspace_lock(root, create=True):
            if bundle is not None and source is not None:
                step = f"restore the private clone from {bundle}"
                _restore_clone(root / CLONE_DIR, bundle, source, refs_text, manifest)
            for name in KEPT_DIRS:
                if (archive / name).is_dir():
                    step = f"copy {archive / name} to {root / name}"
                    _copy_tree(archive / name, root / name)
            step = f"move {archived_yaml} to {target}"
            _move_no_clobber(archived_yaml, target)
    except BaseException as exc:
        made = [root] if made_root else [root / name for name in (CLONE_DIR, *KEPT_DIRS)]
        undone = _undo([partial(_remove_tree, path) for path in made])
        if not isinstance(exc, OSError | GitError | ArchiveError):
            raise
        raise ArchiveError(
            f"could not unarchive {project!r}: could not {step}: {exc}; the archive in {archive} "
            f"is intact{undone}"
        ) from exc
    try:
        _remove_tree(archive)
    except OSError as exc:
        raise ArchiveError(
            f"{project!r} is back ({target}), but its archive {archive} could not be deleted "
            f"({exc}); delete it by hand before archiving the project again"
        ) from exc
    return target


def _restore_clone(
    clone: Path, bundle: Path, source: str, refs_text: str, manifest: Mapping[str, Any]
) -> None:
    object_format = manifest.get("object_format") or "sha1"
    if object_format not in ("sha1", "sha256"):
        raise ArchiveError(f"unknown object format {object_format!r} in the archive's manifest")
    restored = unbundle_clone(clone, bundle, object_format=object_format, source=source)
    if restored != refs_text.rstrip("\n"):
        raise ArchiveError(
            f"the refs of the restored clone differ from {bundle.parent / REFS_FILE}"
        )


def _read_manifest(archive: Path, project: str) -> dict[str, Any]:
    path = archive / MANIFEST_FILE
    if not archive.is_dir():
        raise ArchiveError(f"project {project!r} has no archive (looked for {archive})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("project") != project:
        raise ArchiveError(f"{path} is not the archive manifest of project {project!r}")
    return data


def _read_refs(archive: Path, manifest: Mapping[str, Any]) -> str:
    path = archive / REFS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != manifest.get("refs_sha256"):
        raise ArchiveError(f"{path} does not match the digest in {archive / MANIFEST_FILE}")
    if manifest.get("bundle") and not (archive / BUNDLE_FILE).is_file():
        raise ArchiveError(f"{archive / BUNDLE_FILE} is missing")
    return text


def _restore_target(settings: Settings, project: str, manifest: Mapping[str, Any]) -> Path:
    """Where the project's file was before it was archived, if that is still a plain file name
    in the projects directory; `projects/<project>.yaml` otherwise."""
    original = manifest.get("original_yaml")
    if isinstance(original, str):
        path = Path(original)
        if (
            path.parent == settings.projects_dir.resolve()
            and path.suffix in YAML_SUFFIXES
            and not path.name.startswith(("_", "."))
        ):
            return settings.projects_dir / path.name
    return settings.projects_dir / f"{project}.yaml"


# Purging -------------------------------------------------------------------------------------


def purge_project_files(
    settings: Settings,
    project: str,
    *,
    project_file: Path | None = None,
    protect: Iterable[Path] = (),
) -> list[Path]:
    """Delete every file of `project` the orchestrator keeps: its workspace, its archive, its
    project file (in use or archived; `project_file` when it is not `projects/<project>.yaml`)
    and its cached dependency scans. The paths deleted.

    Never the user's repository: nothing is deleted when the project's `repo` (as its file,
    its archive, its clone or an `ORCH__<PROJECT>__REPO` variable says), or a path in
    `protect`, is or lies inside one of those paths.
    """
    home = settings.home
    root = _safe(lambda: _workspace_root(home, project))
    archive = _safe(lambda: archive_dir(home, project))
    files = [
        *_active_files(settings, project),
        _safe(lambda: archived_yaml_path(settings, project)),
    ]
    if project_file is not None:
        files.append(_top_level_file(settings, Path(project_file)))
    files = [path for path in dict.fromkeys(files) if path.is_file() or path.is_symlink()]
    for path in files:
        declared = _declared_name(settings, path)
        if declared != project:
            raise ArchiveError(
                f"{path} defines project {declared!r}, not {project!r}; nothing was deleted"
            )
    cache = DetectionCache(home)
    scans = [
        _safe(partial(path_inside, cache.root, directory.name, project))
        for directory in sorted(cache.root.glob("scans-v*"))
        if directory.is_dir()
    ]
    directories = [path for path in (root, archive, *scans) if path.exists()]
    guarded = _guarded_repos(settings, project, root, archive, files, protect)
    for path in directories:
        for repo in guarded:
            if repo == path or repo.is_relative_to(path):
                raise ArchiveError(
                    f"refusing to delete {path}: the repository of {project!r} ({repo}) is "
                    "there; move the repository out of ORCH_HOME (and change `repo`), then "
                    "remove the project; nothing was deleted"
                )
    deleted: list[Path] = []
    try:
        for path in files:
            path.unlink()
            deleted.append(path)
        for path in directories:
            if path in scans:
                with cache.locked():
                    _remove_tree(path)
            else:
                _remove_tree(path)
            deleted.append(path)
    except OSError as exc:
        done = ", ".join(str(path) for path in deleted) or "nothing"
        raise ArchiveError(
            f"could not delete all the files of {project!r}: {exc}; deleted so far: {done}"
        ) from exc
    return deleted


def _guarded_repos(
    settings: Settings,
    project: str,
    root: Path,
    archive: Path,
    files: Iterable[Path],
    protect: Iterable[Path],
) -> list[Path]:
    """Every local path the project's repository may be at, resolved."""
    found: list[str | None] = [_declared_repo(settings, path) for path in files]
    with suppress(ArchiveError):
        found.append(_usable(_read_manifest(archive, project).get("repo")))
    if (root / CLONE_DIR / "config").is_file():
        found.append(_usable(_clone_remote(root / CLONE_DIR)))
    override = env_override_layer(project, os.environ).data.get("repo")
    if isinstance(override, str) and _usable(override):
        with suppress(OSError, ValueError, RuntimeError):
            found.append(str(resolve_repo_path(override, settings, settings.projects_dir)))
    paths = [Path(repo) for repo in found if repo and not is_remote_url(repo)]
    paths += [Path(path) for path in protect]
    resolved: list[Path] = []
    for path in paths:
        with suppress(OSError, RuntimeError):
            resolved.append(path.resolve())
    return resolved


def purge_project_history(instance: dg.DagsterInstance, project: str) -> dict[str, int]:
    """Delete `project`'s history from the Dagster instance: its assets' events, its task
    partitions, every run tagged with it, and its pool's limit. How many of each were deleted.

    Runs still queued or in progress are deleted too: stop them first.
    """
    import dagster as dg

    wanted = {dg.AssetKey([project, name]) for name in PROJECT_ASSETS}
    existing = [key for key in instance.get_asset_keys(prefix=[project]) if key in wanted]
    if existing:
        instance.wipe_assets(existing)
    partitions_name = tasks_partitions_name(project)
    partitions = list(instance.get_dynamic_partitions(partitions_name))
    for key in partitions:
        instance.delete_dynamic_partition(partitions_name, key)
    run_ids = instance.get_run_ids(filters=dg.RunsFilter(tags={PROJECT_TAG: project}))
    for run_id in run_ids:
        instance.delete_run(run_id)
    pool = project_pool(project)
    storage = instance.event_log_storage
    pools = 0
    if pool in storage.get_concurrency_keys():
        storage.delete_concurrency_limit(pool)
        pools = 1
    return {
        "assets": len(existing),
        "partitions": len(partitions),
        "runs": len(run_ids),
        "pools": pools,
    }


# Shared --------------------------------------------------------------------------------------


def _safe(make: Callable[[], Path]) -> Path:
    """A path built by the isolation rules; their refusal as an ArchiveError."""
    try:
        return make()
    except IsolationError as exc:
        raise ArchiveError(str(exc)) from exc


def _top_level_file(settings: Settings, path: Path) -> Path:
    """`path`, which must be a project file at the top level of the projects directory."""
    projects = settings.projects_dir.resolve()
    try:
        parent = path.parent.resolve()
    except (OSError, RuntimeError) as exc:
        raise ArchiveError(f"{path} cannot be used as a project file: {exc}") from exc
    if parent != projects or path.name.startswith(("_", ".")) or path.suffix not in YAML_SUFFIXES:
        raise ArchiveError(f"{path} is not a project file of {settings.projects_dir}")
    located = projects / path.name
    if not located.is_file():
        raise ArchiveError(f"{located} is not a file")
    return located


def _active_files(settings: Settings, project: str) -> list[Path]:
    """The project files a project of that name may have in use."""
    return [settings.projects_dir / f"{project}{suffix}" for suffix in YAML_SUFFIXES]


def _project_layer(settings: Settings, path: Path) -> Mapping[str, Any] | None:
    """A project file's own keys (bounded like every registry read); None when unreadable."""
    try:
        return read_yaml_layer(path, within=settings.projects_dir).data
    except YamlDocumentError:
        return None


def _declared_name(settings: Settings, path: Path) -> str:
    """The name of the project a file defines: its `name`, or else its file name."""
    data = _project_layer(settings, path)
    name = data.get("name") if data else None
    return name if isinstance(name, str) else path.stem


def _declared_repo(settings: Settings, path: Path) -> str | None:
    """The project's `repo` as its file `path` sets it, resolved as the registry resolves it
    (relative to the projects directory, where the file was when it was in use); None when the
    file sets none that git may be given."""
    data = _project_layer(settings, path)
    repo = _usable(data.get("repo") if data else None)
    if repo is None or is_remote_url(repo):
        return repo
    try:
        return str(resolve_repo_path(repo, settings, settings.projects_dir))
    except (OSError, ValueError, RuntimeError):
        return None


def _usable(repo: object) -> str | None:
    if not isinstance(repo, str) or not repo.strip() or repo_problem(repo):
        return None
    return repo.strip()


@contextmanager
def _workspace_lock(root: Path, *, create: bool = False) -> Iterator[None]:
    """The lock runs of the project take on its workspace (`ProjectWorkspace._exclusive`), when
    the workspace exists (or is to be made, with `create`)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        yield
        return
    try:
        with FileLock(root / ".lock", timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout as exc:
        raise ArchiveError(
            f"the workspace {root} stayed in use for {LOCK_TIMEOUT_S:g} s; stop the project's "
            "runs and try again"
        ) from exc


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a directory; symbolic links are copied as links, never followed, and sockets,
    pipes and devices are left out."""
    shutil.copytree(source, target, symlinks=True, ignore=special_files)


def _move_no_clobber(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} already exists")
    os.rename(source, target)


def _remove_tree(path: Path) -> None:
    """Delete a directory (a link to one: the link only), with read-only directories in it
    (an agent's cache) made writable first when they are in the way."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        _make_writable(path)
        shutil.rmtree(path)


def _make_writable(top: Path) -> None:
    """Give the owner full rights on `top` and every directory below it (not through links)."""
    _add_owner_rights(str(top))
    for directory, subdirectories, _files in os.walk(top):
        for name in subdirectories:
            _add_owner_rights(os.path.join(directory, name))


def _add_owner_rights(path: str) -> None:
    with suppress(OSError):
        if not os.path.islink(path):
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | stat.S_IRWXU)


def _undo(steps: Iterable[Callable[[], object]]) -> str:
    """Run the steps that undo a half-done change; what could not be undone, as a sentence
    to add to the error."""
    failed = []
    for step in steps:
        try:
            step()
        except OSError as exc:
            failed.append(str(exc))
    return f" (and undoing failed: {'; '.join(failed)})" if failed else ""
