"""The pure and file-level parts of channel delivery: which files of a publisher's tree a
contract copies (over real git repositories, read in process and by git alike), writing them
read-only, the clone's exclusion of `.orch/`, and reading an agent's outbox as if the agent
were hostile."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration.channels.delivery import (
    EXCLUDE_LINE,
    MAX_CONTRACT_FILE_BYTES,
    ContractSelection,
    OutboxNote,
    contract_matches,
    ignore_orch_dir,
    messages_text,
    read_outbox,
    remove_orch_dir,
    safe_relative_path,
    write_files,
)
from orchestration.channels.log import MAX_MESSAGE_BYTES, ChannelEvent, EventKind
from orchestration.dependencies.objects import read_files_in_process
from orchestration.workspace.git import read_tree_files
from tests.support.git import commit, git, make_git_repo

# --- which files cross ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("openapi.yaml", ["openapi.yaml"], True),
        ("api/v1/schema.json", ["api/*"], True),  # `*` crosses `/`
        ("api/v1/schema.json", ["api/*.json"], True),
        ("src/pkg/types.pyi", ["src/pkg/*.pyi"], True),
        ("src/pkg/types.py", ["src/pkg/*.pyi"], False),
        ("API/schema.json", ["api/*"], False),  # case counts
        ("other/api/schema.json", ["api/*"], False),  # anchored at the root
        (".env", ["api/*", "*.yaml"], False),
        ("docs/interface.md", ["api/*", "docs/interface.md"], True),
        ("api/x", [], False),
    ],
)
def test_contract_globs_match_whole_repository_paths(
    path: str, patterns: list[str], expected: bool
) -> None:
    assert contract_matches(path, patterns) is expected


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("api/schema.json", True),
        ("a/.hidden/b", True),
        ("a/../b", False),
        ("./a", False),
        ("a//b", False),
        ("a/.git/config", False),
        ("a/.GIT", False),
        ("a\\b", False),
        ("a/b\nc", False),
        ("", False),
    ],
)
def test_only_plain_paths_may_become_files(path: str, safe: bool) -> None:
    assert safe_relative_path(path) is safe


def test_the_selection_takes_matching_regular_files_and_says_why_it_left_others_out() -> None:
    selection = ContractSelection(["api/*"])
    assert selection("api/a.yaml", "100644", 10)
    assert selection("api/run.sh", "100755", 10)
    assert not selection("src/a.py", "100644", 10)  # not matching: not even counted
    assert not selection("api/link", "120000", 8)
    assert not selection("api/huge.bin", "100644", MAX_CONTRACT_FILE_BYTES + 1)
    assert not selection("api/../escape", "100644", 1)
    assert selection.left_out == {
        "api/link": "a symbolic link",
        "api/huge.bin": f"{MAX_CONTRACT_FILE_BYTES + 1} bytes, over {MAX_CONTRACT_FILE_BYTES}",
        "api/../escape": "a path that cannot be copied",
    }
    assert (selection.files, selection.total_bytes) == (2, 20)


def test_the_selection_stops_at_the_contracts_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestration.channels.delivery.MAX_CONTRACT_FILES", 2)
    selection = ContractSelection(["*"])
    assert [selection(f"f{i}", "100644", 1) for i in range(3)] == [True, True, False]
    assert selection.left_out == {"f2": "past the contract's cap"}


@pytest.mark.parametrize("reader", [read_files_in_process, read_tree_files])
def test_a_contract_read_from_git_objects_holds_only_matching_blobs(
    tmp_path: Path, reader: Callable[..., dict[str, bytes] | None]
) -> None:
    repo = make_git_repo(tmp_path / "core", {"README.md": "core"})
    (repo / "api").mkdir()
    os.symlink("../.env", repo / "api" / "secret.yaml")
    sha = commit(repo, {"api/a.yaml": "a: 1\n", "api/v1/b.json": "{}\n", ".env": "TOKEN=x\n"})
    # The work tree says otherwise: only git's objects are read.
    (repo / "api" / "a.yaml").write_text("changed in the work tree\n")
    (repo / "api" / "untracked.yaml").write_text("never committed\n")

    selection = ContractSelection(["api/*"])
    files = reader(repo, sha, selection)

    assert files == {"api/a.yaml": b"a: 1\n", "api/v1/b.json": b"{}\n"}
    assert selection.left_out == {"api/secret.yaml": "a symbolic link"}


# --- what is written -----------------------------------------------------------------------


def test_contract_files_are_written_read_only(tmp_path: Path) -> None:
    folder = tmp_path / "core" / "api"
    write_files(folder, {"api/a.yaml": b"a", "api/v1/b.json": b"b"})
    written = folder / "api" / "v1" / "b.json"
    assert written.read_bytes() == b"b"
    assert stat.S_IMODE(written.stat().st_mode) == 0o444
    with pytest.raises(ValueError, match="cannot be written"):
        write_files(folder, {"../escape": b"x"})
    assert not (tmp_path / "core" / "escape").exists()


def test_write_files_never_writes_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(outside, folder / "a.txt")
    with pytest.raises(FileExistsError):
        write_files(folder, {"a.txt": b"x"})
    assert outside.read_text() == "untouched"


def test_messages_text_lists_each_message_with_when_and_who() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    messages = [
        ChannelEvent(1, "core", "notes", EventKind.POST, "core", "t1", None, "first\n", None, at),
        ChannelEvent(2, "core", "notes", EventKind.POST, "core", None, None, "second", None, at),
    ]
    text = messages_text("core.notes", messages)
    assert text.startswith("# Messages on core.notes\n")
    assert "## 2026-01-02 03:04:05 UTC (core, task t1)\n\nfirst\n" in text
    assert "## 2026-01-02 03:04:05 UTC (core)\n\nsecond\n" in text
    assert text.index("first") < text.index("second")
    assert "No new messages." in messages_text("core.notes", [])
    assert "No new messages." not in text
    assert "wait for a later task" not in text
    assert messages_text("core.notes", messages, waiting=3).endswith(
        "second\n\n3 newer messages wait for a later task.\n"
    )


def test_the_clone_ignores_orch_once_and_replaces_a_link_rather_than_writing_through(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "repo.git"
    (clone / "info").mkdir(parents=True)
    (clone / "info" / "exclude").write_text("*.log")
    ignore_orch_dir(clone)
    ignore_orch_dir(clone)
    assert (clone / "info" / "exclude").read_text() == f"*.log\n{EXCLUDE_LINE}\n"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me\n")
    (clone / "info" / "exclude").unlink()
    os.symlink(elsewhere, clone / "info" / "exclude")
    ignore_orch_dir(clone)
    assert elsewhere.read_text() == "keep me\n"
    assert not (clone / "info" / "exclude").is_symlink()
    assert (clone / "info" / "exclude").read_text() == f"{EXCLUDE_LINE}\n"


def test_git_ignores_orch_in_a_worktree_of_the_clone(tmp_path: Path) -> None:
    source = make_git_repo(tmp_path / "source", {"README.md": "x"})
    clone = tmp_path / "clone.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(clone))
    ignore_orch_dir(clone)
    tree = tmp_path / "tree"
    git(clone, "worktree", "add", "-q", str(tree))
    (tree / ".orch" / "outbox").mkdir(parents=True)
    (tree / ".orch" / "outbox" / "a.md").write_text("note")
    (tree / "work.txt").write_text("work")
    assert git(tree, "status", "--porcelain", "--untracked-files=all") == "?? work.txt"


# --- what comes out ------------------------------------------------------------------------


def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / ".orch" / "outbox"
    folder.mkdir(parents=True)
    return folder


def test_the_outbox_gives_each_notes_text_by_channel(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    (box / "status.md").write_text("all green\n")
    (box / "notes.md").write_text("é ünïcode\n", encoding="utf-8")
    (box / "ignored.txt").write_text("not a note")
    assert read_outbox(tmp_path) == [
        OutboxNote("notes", text="é ünïcode\n"),
        OutboxNote("status", text="all green\n"),
    ]


def test_the_outbox_refuses_what_a_hostile_agent_may_leave(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN=hunter2\n")
    os.symlink(secret, box / "linked.md")
    (box / "folder.md").mkdir()
    (box / "Not-A-Slug.md").write_text("x")
    (box / "big.md").write_bytes(b"x" * (MAX_MESSAGE_BYTES + 1))
    (box / "binary.md").write_bytes(b"\xff\xfe\x00bad")
    (box / "blank.md").write_text("  \n")
    os.link(secret, box / "hardlink.md")
    os.mkfifo(box / "pipe.md")  # a reader that opened it would wait forever
    (box / "exact.md").write_bytes(b"y" * MAX_MESSAGE_BYTES)

    notes = {note.channel: note for note in read_outbox(tmp_path)}

    assert notes["exact"].text == "y" * MAX_MESSAGE_BYTES
    refused = {name: note.refused for name, note in notes.items() if name != "exact"}
    assert all(note.text is None for name, note in notes.items() if name != "exact")
    assert "symbolic link" in (refused["linked"] or "")
    assert "not a regular file" in (refused["folder"] or "")
    assert "does not name a channel" in (refused["Not-A-Slug"] or "")
    assert f"over {MAX_MESSAGE_BYTES} bytes" in (refused["big"] or "")
    assert "not UTF-8" in (refused["binary"] or "")
    assert "empty" in (refused["blank"] or "")
    assert "hard link" in (refused["hardlink"] or "")
    assert "not a regular file" in (refused["pipe"] or "")
    assert secret.read_text() == "TOKEN=hunter2\n"


def test_notes_past_the_outboxs_cap_are_refused_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestration.channels.delivery.MAX_OUTBOX_NOTES", 2)
    box = outbox(tmp_path)
    for name in ("a", "b", "c", "d", "e"):
        (box / f"{name}.md").write_text(name)
    notes = read_outbox(tmp_path)
    assert notes[:2] == [OutboxNote("a", text="a"), OutboxNote("b", text="b")]
    assert notes[2:] == [
        OutboxNote("c", refused="3 more notes past the outbox's cap of 2, not read")
    ]


def test_an_outbox_reached_through_a_link_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "outbox").mkdir(parents=True)
    (elsewhere / "outbox" / "status.md").write_text("from outside the worktree")
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(elsewhere, tree / ".orch")
    assert read_outbox(tree) == []
    (tree / ".orch").unlink()
    (tree / ".orch").mkdir()
    os.symlink(elsewhere / "outbox", tree / ".orch" / "outbox")
    assert read_outbox(tree) == []
    assert read_outbox(tmp_path / "missing") == []


def test_the_orch_folder_is_removed_even_read_only_and_a_link_is_never_followed(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    write_files(tree / ".orch" / "channels" / "core" / "api", {"api/a.yaml": b"a"})
    locked = tree / ".orch" / "channels" / "core"
    for folder in (locked / "api" / "api", locked / "api", locked):
        folder.chmod(0o555)
    (tree / ".orch" / "sealed").mkdir(mode=0o000)
    assert remove_orch_dir(tree)
    assert not (tree / ".orch").exists()

    target = tmp_path / "target"
    (target / "inner").mkdir(parents=True)
    (target / "inner" / "keep.txt").write_text("keep")
    os.symlink(target, tree / ".orch")
    assert remove_orch_dir(tree)
    assert not (tree / ".orch").is_symlink()
    assert (target / "inner" / "keep.txt").read_text() == "keep"
    assert remove_orch_dir(tree)  # nothing there: nothing to do
