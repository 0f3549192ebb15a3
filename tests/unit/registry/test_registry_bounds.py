"""What reading one registry file may cost, and how each way of failing to read it becomes that
file's error: size, nesting, aliases, encoding, values Python refuses, what the file is and where
it leads. The hostile corpus (tests/integration/test_hostile_registry.py) loads the dangerous
cases in a child process with a memory limit; these are the cheap ones and the rules' edges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestration.registry.layers import (
    MAX_ALIAS_VALUES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    YamlDocumentError,
    parse_yaml_value,
    read_yaml_layer,
)
from tests.support.registry import RegistryDir


def write(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, **kwargs: Path) -> YamlDocumentError:
    with pytest.raises(YamlDocumentError) as caught:
        read_yaml_layer(path, **kwargs)
    return caught.value


# --- aliases ----------------------------------------------------------------------------------


def test_anchors_and_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "verify: &checks [pytest, -q]\nother: *checks\ntags: &t {a: b}\nmore: *t\n",
    )
    layer = read_yaml_layer(path)
    assert layer.data["other"] == ["pytest", "-q"]
    assert layer.data["more"] == {"a": "b"}


def test_aliases_may_repeat_up_to_the_budget(tmp_path: Path) -> None:
    # An anchored list of 99 values (100 with the list) repeated ten times: exactly the budget.
    items = ", ".join(["x"] * 99)
    text = f"a: &a [{items}]\n" + "".join(f"b{i}: *a\n" for i in range(10))
    assert read_yaml_layer(write(tmp_path, text)).data["b9"] == ["x"] * 99
    error = refused(write(tmp_path, text + "b10: *a\n", "over.yaml"))
    assert f"aliases repeat more than {MAX_ALIAS_VALUES} values (at *a)" in error.args[0]
    assert error.line == 12


def test_nested_aliases_count_everything_they_expand_to(tmp_path: Path) -> None:
    # Each level repeats the one below four times: 4 + 16 + 64 + 256 + 1024 values.
    text = "l0: &l0 x\n" + "".join(
        f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]\n" for i in range(1, 6)
    )
    error = refused(write(tmp_path, text))
    assert "aliases repeat more than" in error.args[0]
    assert error.line == 6


@pytest.mark.parametrize(
    "text",
    [
        "tags: &a {k: *a}\n",
        "verify: &v [x, *v]\n",
        "agent: &a\n  profile: demo\n  nested:\n    deeper: *a\n",
    ],
)
def test_a_value_that_contains_itself_is_refused(tmp_path: Path, text: str) -> None:
    error = refused(write(tmp_path, text))
    assert "is inside its own anchor" in error.args[0]
    assert "a value cannot contain itself" in error.args[0]
    assert error.line is not None


def test_an_undefined_alias_is_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "a: 1\nb: *nowhere\n"))
    assert error.args[0].startswith("not valid YAML")
    assert error.line == 2


# --- nesting, size, encoding, values ---------------------------------------------------------


def test_nesting_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    deep = "".join(f"{'  ' * level}k{level}:\n" for level in range(MAX_DEPTH)) + "  " * MAX_DEPTH
    assert read_yaml_layer(write(tmp_path, deep + "x\n"))  # MAX_DEPTH mappings: fine
    error = refused(write(tmp_path, deep + "k: [x]\n", "deeper.yaml"))
    assert f"nest more than {MAX_DEPTH} levels deep" in error.args[0]
    assert error.line == MAX_DEPTH + 1


def test_a_flow_collection_nested_thousands_deep_is_refused(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "tags: " + "[" * 50_000 + "\n"))
    assert "nest" in error.args[0]


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    at_limit = "description: " + "x" * (MAX_FILE_BYTES - len("description: ") - 1) + "\n"
    assert len(at_limit) == MAX_FILE_BYTES
    assert read_yaml_layer(write(tmp_path, at_limit))
    error = refused(write(tmp_path, at_limit + "#", "big.yaml"))
    assert error.args[0] == (
        f"the file is {MAX_FILE_BYTES + 1} bytes; registry files may be at most 256 KiB"
    )


def test_invalid_utf8_names_the_line_and_the_byte(tmp_path: Path) -> None:
    error = refused(write(tmp_path, b"name: p\ndescription: caf\xe9\n"))
    assert error.args[0] == "not valid UTF-8 (byte 0xe9); save the file as UTF-8"
    assert error.line == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("description: 2024-13-45\n", "month must be in 1..12"),
        ("priority: " + "9" * 5000 + "\n", "Exceeds the limit"),
        ("? [a, b]\n: 1\n", "not valid YAML"),
        ("a: \x00\n", "not valid YAML"),
        ("--- {a: 1}\n--- {b: 2}\n", "not valid YAML"),
    ],
)
def test_values_python_refuses_are_the_files_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refused(write(tmp_path, text)).args[0]


# --- what the file is and where it leads -----------------------------------------------------


def test_a_directory_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it for reading would wait for a writer
    for name in ("dir.yaml", "fifo.yaml"):
        assert refused(tmp_path / name).args[0] == "cannot read file: not a regular file"


def test_a_file_that_leads_out_of_its_directory_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "projects"
    inside.mkdir()
    outside = write(tmp_path, "name: p\n", "outside.yaml")
    (inside / "link.yaml").symlink_to(outside)
    (inside / "sub").mkdir()
    (inside / "sub" / "ok.yaml").write_text("name: q\n")
    (inside / "in.yaml").symlink_to(inside / "sub" / "ok.yaml")
    error = refused(inside / "link.yaml", within=inside)
    assert f"to {outside}, outside" in error.args[0]
    assert "registry files must live inside that directory" in error.args[0]
    assert read_yaml_layer(inside / "in.yaml", within=inside).data == {"name": "q"}
    assert read_yaml_layer(inside / "link.yaml").data == {"name": "p"}  # no `within`: followed


def test_a_dangling_link_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    error = refused(tmp_path / "gone.yaml", within=tmp_path)
    assert error.args[0].startswith("cannot read file")


# --- environment override values ------------------------------------------------------------


def test_override_values_are_read_under_the_same_bounds() -> None:
    assert parse_yaml_value("[a, b]") == ["a", "b"]
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x, x]"] + ["*a"] * 200) + "]"
    with pytest.raises(YamlDocumentError, match="aliases repeat"):
        parse_yaml_value(bomb)
    with pytest.raises(YamlDocumentError, match="month must be in 1..12"):
        parse_yaml_value("2024-13-45")


def test_an_override_value_that_cannot_be_read_is_validated_as_text(
    registry_dir: RegistryDir,
) -> None:
    registry_dir.project("p")
    registry_dir.env["ORCH__P__DESCRIPTION"] = "2024-13-45"
    registry_dir.env["ORCH__P__TAGS"] = "&a {k: *a}"
    registry = registry_dir.load()
    [error] = registry.errors
    assert (error.file, error.key) == ("ORCH__P__TAGS", "tags")
    assert "valid dictionary" in error.message
    assert registry.names == ()
    registry_dir.env.pop("ORCH__P__TAGS")
    assert registry_dir.load().project("p").spec.description == "2024-13-45"
