"""What a subscriber's task gets of its project's channels and what its agent may post.

Before the agent starts, the task's worktree gets `.orch/channels/<publisher>/<channel>/`: a
contract's files as of the publisher's branch tip (read from git's objects, read-only), or the
messages posted since the subscriber's last task (`messages.md`). After the agent ends, the
notes it left in `.orch/outbox/<channel>.md` are read (the agent is not trusted: no link, no
folder, no oversized or undecodable file) and `.orch/` is removed, so it is never committed; the
notes are posted when the task succeeds, each on a `messages` channel its project publishes.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import stat
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from logging import Logger
from pathlib import Path

from orchestration.channels.log import MAX_MESSAGE_BYTES, ChannelEvent, ChannelLog
from orchestration.dependencies.objects import read_files_in_process
from orchestration.registry.channels import split_ref, subscriptions
from orchestration.registry.models import SLUG_PATTERN, ChannelSpec, ProjectSpec
from orchestration.workspace.git import GitError, read_tree_files
from orchestration.workspace.workspace import ProjectWorkspace

#: The folder of a task's worktree that belongs to the orchestrator, never committed.
ORCH_DIR = ".orch"
CHANNELS_DIR = "channels"
OUTBOX_DIR = "outbox"
MESSAGES_FILE = "messages.md"
#: The line of the private clone's `info/exclude` (shared by its worktrees) ignoring `.orch/`.
EXCLUDE_LINE = f"/{ORCH_DIR}/"
#: A contract's file larger than this is left out (and counted): contracts are interfaces.
MAX_CONTRACT_FILE_BYTES = 1024 * 1024
#: What one contract may carry at most; past either, further files are left out (and counted).
MAX_CONTRACT_BYTES = 32 * 1024 * 1024
MAX_CONTRACT_FILES = 2000
#: The most messages of one channel a task is handed; newer ones wait for the next task.
MAX_MESSAGES_HANDED = 200
#: The most notes one task's outbox may hold; the rest are refused.
MAX_OUTBOX_NOTES = 32
#: git's modes of the only tree entries a contract copies: regular files.
_REGULAR_MODES = frozenset({"100644", "100755"})
_READ_ONLY_FILE = 0o444
_READ_ONLY_DIR = 0o555


class ContractError(Exception):
    """A contract that could not be read from its publisher's repository."""


@dataclass(frozen=True)
class ChannelSource:
    """A channel a task's project subscribes to, with the publisher's workspace (its private
    clone, where a contract's files are read)."""

    publisher: ProjectWorkspace
    channel: ChannelSpec

    @property
    def ref(self) -> str:
        return f"{self.publisher.spec.name}.{self.channel.name}"


def channel_sources(
    specs: Mapping[str, ProjectSpec], spec: ProjectSpec, home: Path, log: Logger
) -> list[ChannelSource]:
    """The channels `spec` subscribes to, resolved against the live registry's `specs`, in the
    order its file lists them. A subscription whose publisher is not valid now (broken,
    archived, removed) or no longer declares the channel reaches nothing: logged, left out."""
    found = subscriptions(specs, spec)
    reached = {item.ref for item in found}
    for ref in spec.channels.subscribe:
        if ref not in reached:
            publisher, _ = split_ref(ref)
            log.warning(
                f"project {spec.name}: channel {ref} is not delivered: project {publisher!r} "
                "is not valid in the registry now or no longer publishes it"
            )
    return [
        ChannelSource(ProjectWorkspace(home, specs[item.publisher]), item.channel)
        for item in found
        if item.channel.kind != "lease"  # a lease is a pool of runs, nothing in the worktree
    ]


# --- what goes into the worktree -----------------------------------------------------------


def contract_matches(path: str, patterns: Sequence[str]) -> bool:
    """Whether the repository path `path` matches one of a contract's globs (fnmatch over the
    whole path, case-sensitive; `*` crosses `/`)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def safe_relative_path(path: str) -> bool:
    """Whether a path from a git tree may become a file below a channel's folder: plain parts
    only (no empty part, `.`, `..`, `.git`, control character or backslash)."""
    parts = path.split("/")
    return all(
        part not in ("", ".", "..")
        and part.lower() != ".git"
        and "\\" not in part
        and all(char.isprintable() for char in part)
        for part in parts
    )


@dataclass
class ContractSelection:
    """Which files of the publisher's tree a contract copies (`wanted` of a tree read): regular
    files whose path matches the channel's globs, within the caps; what else matched is kept
    in `left_out` with why."""

    patterns: Sequence[str]
    left_out: dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0
    files: int = 0

    def __call__(self, path: str, mode: str, size: int) -> bool:
        if not contract_matches(path, self.patterns):
            return False
        if mode not in _REGULAR_MODES:
            reason = "a symbolic link" if mode == "120000" else f"not a regular file ({mode})"
        elif not safe_relative_path(path):
            reason = "a path that cannot be copied"
        elif size > MAX_CONTRACT_FILE_BYTES:
            reason = f"{size} bytes, over {MAX_CONTRACT_FILE_BYTES}"
        elif self.files >= MAX_CONTRACT_FILES or self.total_bytes + size > MAX_CONTRACT_BYTES:
            reason = "past the contract's cap"
        else:
            self.files += 1
            self.total_bytes += size
            return True
        self.left_out[path] = reason
        return False


@dataclass(frozen=True)
class Contract:
    """A contract's files (repository path -> bytes) as of the publisher's `commit`, and what
    matched but was left out (path -> why)."""

    commit: str
    files: dict[str, bytes]
    left_out: dict[str, str]


def read_contract(source: ChannelSource) -> Contract:
    """The contract's files at the tip of the publisher's branch, fetched into its private clone
    first; read from git's objects only (libgit2 in process, else git's object reader), never
    from a work tree. ContractError saying what went wrong."""
    workspace = source.publisher
    try:
        clone = workspace.sync()
        commit = clone.resolve(workspace.upstream_ref)
        if commit is None:
            raise ContractError(
                f"branch {workspace.spec.branch!r} of {workspace.spec.repo} was not found"
            )
        selection = ContractSelection(source.channel.paths)
        files = read_files_in_process(Path(clone.path), commit, selection)
        if files is None:
            selection = ContractSelection(source.channel.paths)
            files = read_tree_files(Path(clone.path), commit, selection)
    except (GitError, OSError) as exc:
        raise ContractError(f"could not read {source.ref}: {exc}") from exc
    return Contract(commit, files, dict(selection.left_out))


def ignore_orch_dir(clone: Path) -> None:
    """Have git ignore `.orch/` in every worktree of the private clone `clone` (its
    `info/exclude`, which the sandbox keeps read-only to the agent). A link or folder found in
    place of the file is replaced, never written through."""
    info = clone / "info"
    if info.is_symlink() or (info.exists() and not info.is_dir()):
        info.unlink()
    info.mkdir(exist_ok=True)
    exclude = info / "exclude"
    current = _read_no_follow(exclude)
    if EXCLUDE_LINE in current.splitlines():
        return
    if exclude.is_dir() and not exclude.is_symlink():
        shutil.rmtree(exclude)
    text = current + ("" if not current or current.endswith("\n") else "\n") + EXCLUDE_LINE + "\n"
    scratch = info / f".exclude.orch-{uuid.uuid4().hex}"
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, exclude)


def deliver_channels(
    workspace: ProjectWorkspace,
    worktree: Path,
    sources: Sequence[ChannelSource],
    ledger: ChannelLog,
    *,
    task: str,
    log: Logger,
) -> dict[str, str | int]:
    """Make git ignore `.orch/` in the worktrees of `workspace` (the subscriber's) and remove
    one the repository itself holds, then put each subscribed channel in the task's `worktree`
    under `.orch/channels/`, read-only, and record each delivery in the ledger; what was
    delivered, by `PUBLISHER.CHANNEL`: a contract's commit, or how many messages. A contract
    that cannot be read is logged and recorded as a refusal; the others are still delivered.
    Without sources no `.orch/` is made."""
    ignore_orch_dir(workspace.clone_path)
    root = worktree / ORCH_DIR
    if root.is_symlink() or root.exists():
        log.warning(
            f"task {task}: the repository holds {ORCH_DIR}, which the orchestrator reserves: "
            "it is removed from the task's worktree (and so from its work)"
        )
        remove_orch_dir(worktree)
    if not sources:
        return {}
    subscriber = workspace.spec.name
    root.mkdir()  # fails on anything left there: nothing below is written through a link
    delivered: dict[str, str | int] = {}
    for source in sources:
        folder = root / CHANNELS_DIR / source.publisher.spec.name / source.channel.name
        if source.channel.kind == "contract":
            commit = _deliver_contract(source, folder, ledger, subscriber, task, log)
            if commit is not None:
                delivered[source.ref] = commit
        elif source.channel.kind == "messages":
            delivered[source.ref] = _deliver_messages(source, folder, ledger, subscriber, task)
    _make_read_only(root / CHANNELS_DIR)
    return delivered


def _deliver_contract(
    source: ChannelSource, folder: Path, ledger: ChannelLog, subscriber: str, task: str, log: Logger
) -> str | None:
    """Copy the contract into `folder`; the publisher's commit, or None when it could not be
    read (logged, recorded as a refusal)."""
    publisher, channel = source.publisher.spec.name, source.channel.name
    try:
        contract = read_contract(source)
    except ContractError as exc:
        log.warning(f"task {task}: channel {source.ref} not delivered: {exc}")
        ledger.refused(publisher, channel, str(exc), project=subscriber, task=task)
        return None
    write_files(folder, contract.files)
    if contract.left_out:
        shown = ", ".join(f"{path} ({why})" for path, why in contract.left_out.items())
        log.warning(f"task {task}: contract {source.ref} left out: {shown[:2000]}")
    ledger.delivered(publisher, channel, project=subscriber, task=task, commit=contract.commit)
    log.info(
        f"task {task}: contract {source.ref} delivered as of {contract.commit[:12]} "
        f"({len(contract.files)} files)"
    )
    return contract.commit


def _deliver_messages(
    source: ChannelSource, folder: Path, ledger: ChannelLog, subscriber: str, task: str
) -> int:
    """Write the messages `subscriber` has not been handed yet (the oldest MAX_MESSAGES_HANDED
    of them) to `folder`/messages.md; how many."""
    publisher, channel = source.publisher.spec.name, source.channel.name
    unread = ledger.unread(publisher, channel, subscriber)
    messages = unread[:MAX_MESSAGES_HANDED]
    text = messages_text(source.ref, messages, waiting=len(unread) - len(messages))
    write_files(folder, {MESSAGES_FILE: text.encode("utf-8")})
    upto = messages[-1].id if messages else ledger.cursor(publisher, channel, subscriber)
    ledger.delivered(publisher, channel, project=subscriber, task=task, upto=upto)
    return len(messages)


def messages_text(ref: str, messages: Sequence[ChannelEvent], waiting: int = 0) -> str:
    """`messages.md`: the messages of channel `ref`, oldest first, each with when and by whom
    (project and task) it was posted; and how many newer ones wait for a later task."""
    lines = [f"# Messages on {ref}", ""]
    if not messages:
        lines += ["No new messages.", ""]
    for message in messages:
        when = message.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        by = message.project + (f", task {message.task}" if message.task else "")
        lines += [f"## {when} ({by})", "", (message.body or "").rstrip("\n"), ""]
    if waiting:
        lines += [f"{waiting} newer messages wait for a later task.", ""]
    return "\n".join(lines)


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` (relative path -> bytes) below `folder`, a folder the orchestrator makes
    now; every file read-only. Paths must pass `safe_relative_path`."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        if not safe_relative_path(relative):
            raise ValueError(f"{relative!r} cannot be written below {folder}")
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        handle = os.open(target, flags, _READ_ONLY_FILE)
        with os.fdopen(handle, "wb") as out:
            out.write(data)


def _make_read_only(top: Path) -> None:
    """Every file below `top` mode 0444 and every folder (and `top`) 0555."""
    if not top.is_dir():
        return
    for parent, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.chmod(os.path.join(parent, name), _READ_ONLY_FILE, follow_symlinks=False)
        for name in dirs:
            os.chmod(os.path.join(parent, name), _READ_ONLY_DIR)
    os.chmod(top, _READ_ONLY_DIR)


# --- what comes out of it ------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxNote:
    """A note an agent left in `.orch/outbox/<channel>.md`: its text, or why it was refused."""

    channel: str
    text: str | None = None
    refused: str | None = None


def read_outbox(worktree: Path) -> list[OutboxNote]:
    """The notes in the worktree's `.orch/outbox/`, by file name. Only `*.md` files are read;
    one is refused when it is not a regular file with one name (a link, a folder, a pipe, a
    hard link), its name is not a channel's (a slug), it is empty, over MAX_MESSAGE_BYTES or not
    UTF-8; past MAX_OUTBOX_NOTES, one refusal stands for the rest. Nothing is followed: `.orch`
    and `outbox` must be real folders (else no notes). OSError when the outbox cannot be
    listed."""
    try:
        top = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []
    try:
        orch = _open_dir(ORCH_DIR, top)
        if orch is None:
            return []
        try:
            outbox = _open_dir(OUTBOX_DIR, orch)
        finally:
            os.close(orch)
        if outbox is None:
            return []
        try:
            return _read_notes(outbox)
        finally:
            os.close(outbox)
    finally:
        os.close(top)


def _open_dir(name: str, parent: int) -> int | None:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return None


def _read_notes(outbox: int) -> list[OutboxNote]:
    names = sorted(name for name in os.listdir(outbox) if name.endswith(".md"))
    notes = []
    for name in names[:MAX_OUTBOX_NOTES]:
        channel = name[: -len(".md")]
        if SLUG_PATTERN.fullmatch(channel) and len(channel) <= 63:
            notes.append(_read_note(outbox, name, channel))
        else:
            reason = f"{name[:200]!r} does not name a channel"
            notes.append(OutboxNote(_shown_name(channel), refused=reason))
    rest = names[MAX_OUTBOX_NOTES:]
    if rest:
        reason = f"{len(rest)} more notes past the outbox's cap of {MAX_OUTBOX_NOTES}, not read"
        notes.append(OutboxNote(_shown_name(rest[0][: -len(".md")]), refused=reason))
    return notes


def _read_note(outbox: int, name: str, channel: str) -> OutboxNote:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        handle = os.open(name, flags, dir_fd=outbox)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
        return OutboxNote(channel, refused=f"outbox file {name} is {why}")
    try:
        found = os.fstat(handle)
        if not stat.S_ISREG(found.st_mode):
            return OutboxNote(channel, refused=f"outbox file {name} is not a regular file")
        if found.st_nlink != 1:
            return OutboxNote(channel, refused=f"outbox file {name} has other names (a hard link)")
        data = b""
        while len(data) <= MAX_MESSAGE_BYTES:
            chunk = os.read(handle, MAX_MESSAGE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        return OutboxNote(channel, refused=f"outbox file {name} is unreadable ({exc.strerror})")
    finally:
        os.close(handle)
    if len(data) > MAX_MESSAGE_BYTES:
        return OutboxNote(channel, refused=f"outbox file {name} is over {MAX_MESSAGE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return OutboxNote(channel, refused=f"outbox file {name} is not UTF-8 text")
    if not text.strip():
        return OutboxNote(channel, refused=f"outbox file {name} is empty")
    return OutboxNote(channel, text=text)


def _shown_name(name: str) -> str:
    """A file name as the ledger may hold it: printable, at most 63 characters."""
    return "".join(char if char.isprintable() else "?" for char in name)[:63] or "?"


def remove_orch_dir(worktree: Path) -> bool:
    """Remove the worktree's `.orch` (a folder made read-only, a link, a file), never following
    a link; whether it is gone. Never raises: what stays is still ignored by git."""
    target = worktree / ORCH_DIR
    try:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()
        elif target.is_dir():
            _make_writable(target)
            shutil.rmtree(target)
    except OSError:
        return False
    return not (target.is_symlink() or target.exists())


def _make_writable(top: Path) -> None:
    """`top` and every folder below it (not a link) writable by their owner, so that what they
    hold can be removed."""
    os.chmod(top, 0o755)
    for parent, dirs, _files in os.walk(top):  # parents first: a child is opened after chmod
        for name in dirs:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)


def take_outbox(worktree: Path, log: Logger, task: str) -> list[OutboxNote]:
    """Read the outbox the agent left, then remove `.orch/` from the worktree (before anything
    there is committed)."""
    try:
        notes = read_outbox(worktree)
    except OSError as exc:
        log.error(f"task {task}: could not list its outbox, nothing of it is posted: {exc}")
        notes = []
    finally:
        if not remove_orch_dir(worktree):
            log.error(f"task {task}: could not remove {worktree / ORCH_DIR}")
    if notes:
        log.info(f"task {task}: its agent left {len(notes)} note(s) in {ORCH_DIR}/{OUTBOX_DIR}")
    return notes


def post_outbox(
    notes: Sequence[OutboxNote],
    spec: ProjectSpec,
    ledger: ChannelLog,
    *,
    task: str,
    log: Logger,
) -> None:
    """Post the notes of a task that succeeded: each on the `messages` channel of its name that
    the task's project publishes; any other is refused (recorded in the ledger, logged)."""
    project = spec.name
    for note in notes:
        channel = spec.channels.published(note.channel)
        reason = note.refused
        if reason is None and (channel is None or channel.kind != "messages"):
            reason = f"project {project} publishes no messages channel {note.channel!r}"
        if reason is None and note.text is not None:
            try:
                ledger.post(project, note.channel, note.text, project=project, task=task)
                log.info(f"task {task}: posted its note on {project}.{note.channel}")
                continue
            except ValueError as exc:  # too long or empty
                reason = str(exc)
        reason = reason or "nothing to post"
        log.warning(f"task {task}: note for {project}.{note.channel} refused: {reason}")
        ledger.refused(project, note.channel, reason, project=project, task=task)


def _read_no_follow(path: Path) -> str:
    """The text of the regular file at `path`, never through a link; empty when there is
    none."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(handle, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            return ""
        return source.read(1024 * 1024).decode("utf-8", errors="replace")
