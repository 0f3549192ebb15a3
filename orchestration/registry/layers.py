"""Configuration layers: YAML documents read with the line of every key, merged with provenance.

A layer is plain data plus, for every key path in it, the origin that set it (a file and line, or
an environment variable). Maps merge deeply and lists replace, and the merged layer keeps, for
each key, the origin of whichever layer set it last.

Reading a document is bounded (size, nesting, what aliases may repeat) and every way it can fail
is a `YamlDocumentError`, so no file can cost more than a small, fixed amount or stop the others.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str, ...]

BUILTIN = "built-in default"
#: What every `ORCH__<PROJECT>__<KEY>` override variable starts with.
ENV_OVERRIDE_PREFIX = "ORCH__"

#: The largest registry file read; the shipped ones are a few KiB.
MAX_FILE_BYTES = 256 * 1024
#: How deeply mappings and lists may nest; the deepest shipped key is four levels down.
MAX_DEPTH = 32
#: How many values aliases (`*name`) may repeat in one document, counting every value inside
#: the repeated one: room for sharing a list or two, none for an alias bomb.
MAX_ALIAS_VALUES = 1000


@dataclass(frozen=True)
class Origin:
    """Where a configuration value was set: a file and line, a variable, or built in."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


@dataclass(frozen=True)
class Layer:
    """One source of configuration: its data and the origin of every key path in it."""

    data: Mapping[str, Any] = field(default_factory=dict)
    origins: Mapping[KeyPath, Origin] = field(default_factory=dict)


# libyaml's loader when PyYAML was built with it: same nodes and marks, several times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlDocumentError(Exception):
    """A YAML file that cannot be read as a mapping; carries the line where the problem is."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the current directory when inside it."""
    cwd = Path.cwd()
    if path.is_absolute() and path.is_relative_to(cwd):
        return str(path.relative_to(cwd))
    return str(path)


def read_yaml_layer(path: Path, *, within: Path | None = None) -> Layer:
    """Read a YAML file whose top level is a mapping, recording the line of every key.

    With `within`, the file (after following symbolic links) must be inside that directory.
    Any failure, whatever its cause, is a YamlDocumentError.
    """
    source = display_path(path)
    text = _read_text(path, within)
    try:
        _check_cost(text)
        loader = _SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Layer()
        if not isinstance(node, yaml.MappingNode):
            raise YamlDocumentError(
                "the top level must be a mapping of keys to values", node.start_mark.line + 1
            )
        origins: dict[KeyPath, Origin] = {}
        _record_origins(node, (), source, origins)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A value YAML's syntax allows and Python refuses: 2024-13-45, an integer of 5000 digits.
        raise YamlDocumentError(f"not valid YAML: a value cannot be read ({exc})") from None
    finally:
        loader.dispose()
    return Layer(data=data, origins=origins)


def parse_yaml_value(text: str) -> Any:
    """One YAML value (a scalar or a flow collection), read under the same bounds as a file;
    YamlDocumentError when it is not valid or costs too much."""
    try:
        _check_cost(text)
        return yaml.load(text, Loader=_SafeLoader)  # the safe loader: plain data only
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise YamlDocumentError(f"not valid YAML: a value cannot be read ({exc})") from None


def _read_text(path: Path, within: Path | None) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES of UTF-8, inside `within`."""
    try:
        real = path.resolve()
        if within is not None and not real.is_relative_to(within.resolve()):
            raise YamlDocumentError(
                f"the file leads (through a symbolic link) to {real}, outside "
                f"{display_path(within)}; registry files must live inside that directory"
            )
        # O_NONBLOCK: a FIFO must not block the load; O_NOFOLLOW: no link swapped in meanwhile.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(real, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise YamlDocumentError("cannot read file: not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _too_big(info.st_size)
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_BYTES and (chunk := os.read(fd, 64 * 1024)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise YamlDocumentError(f"cannot read file: {exc.strerror or exc}") from None
    except (ValueError, RuntimeError) as exc:  # a NUL in the name, a symlink loop
        raise YamlDocumentError(f"cannot read file: {exc}") from None
    if size > MAX_FILE_BYTES:  # it grew while being read
        raise _too_big(size)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlDocumentError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8", line
        ) from None


def _too_big(size: int) -> YamlDocumentError:
    return YamlDocumentError(
        f"the file is {size} bytes; registry files may be at most {MAX_FILE_BYTES // 1024} KiB"
    )


def _check_cost(text: str) -> None:
    """Refuse a document that nests deeper than MAX_DEPTH, whose aliases repeat more than
    MAX_ALIAS_VALUES values (an alias bomb), or with an alias inside its own anchor (a
    recursive value), before it is built: scanning its events costs one pass over the text."""
    loader = _SafeLoader(text)
    try:
        values = 0  # values in the document with every alias expanded
        repeated = 0  # of which aliases added
        open_anchors: list[tuple[str | None, int]] = []  # collections being read
        sizes: dict[str, int] = {}  # anchor -> values in it, aliases expanded
        while (event := loader.get_event()) is not None:
            line = event.start_mark.line + 1 if event.start_mark else None
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    if any(anchor == event.anchor for anchor, _ in open_anchors):
                        raise YamlDocumentError(
                            f"alias *{event.anchor} is inside its own anchor "
                            f"&{event.anchor}: a value cannot contain itself",
                            line,
                        )
                    continue  # an undefined alias: composing the document reports it
                values += sizes[event.anchor]
                repeated += sizes[event.anchor]
                if repeated > MAX_ALIAS_VALUES:
                    raise YamlDocumentError(
                        f"aliases repeat more than {MAX_ALIAS_VALUES} values (at "
                        f"*{event.anchor}); write the values out or share them with a template",
                        line,
                    )
            elif isinstance(event, yaml.ScalarEvent):
                values += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                values += 1
                open_anchors.append((event.anchor, values))
                if len(open_anchors) > MAX_DEPTH:
                    raise YamlDocumentError(
                        f"mappings and lists nest more than {MAX_DEPTH} levels deep", line
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, first = open_anchors.pop()
                if anchor:
                    sizes[anchor] = values - first + 1
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.YAMLError, text: str) -> YamlDocumentError:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return YamlDocumentError(
            f"not valid YAML: character U+{code:04X} is not allowed ({exc.reason})",
            text[: exc.position].count("\n") + 1,
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        return YamlDocumentError(f"not valid YAML: {exc.problem or exc}", line)
    return YamlDocumentError(f"not valid YAML: {exc}")


def _record_origins(
    node: yaml.MappingNode, prefix: KeyPath, source: str, origins: dict[KeyPath, Origin]
) -> None:
    for key_node, value_node in node.value:
        key = str(key_node.value)
        path = (*prefix, key)
        if path in origins:
            raise YamlDocumentError(
                f"key {'.'.join(path)!r} appears twice (first at line {origins[path].line})",
                key_node.start_mark.line + 1,
            )
        origins[path] = Origin(source, key_node.start_mark.line + 1)
        if isinstance(value_node, yaml.MappingNode):
            _record_origins(value_node, path, source, origins)


def merge(base: Layer, top: Layer) -> Layer:
    """`top` over `base`: maps merge deeply, any other value (lists too) replaces."""
    data = _deep_merge(base.data, top.data)
    origins = {
        path: top.origins.get(path) or base.origins.get(path) or Origin(BUILTIN)
        for path in iter_key_paths(data)
    }
    return Layer(data=data, origins=origins)


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def iter_key_paths(data: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key path in nested mappings, parents before children; lists are leaves."""
    for key, value in data.items():
        path = (*prefix, str(key))
        yield path
        if isinstance(value, Mapping):
            yield from iter_key_paths(value, path)


def env_override_layer(project: str, environ: Mapping[str, str]) -> Layer:
    """Overrides for one project from `ORCH__<PROJECT>__<KEY>[__<SUBKEY>]=value` variables.

    Values are read as YAML scalars or flow collections, so `3` is a number, `true` a boolean and
    `[a, b]` a list.
    """
    prefix = f"{ENV_OVERRIDE_PREFIX}{project.upper()}__"
    data: dict[str, Any] = {}
    origins: dict[KeyPath, Origin] = {}
    for variable in sorted(environ):
        if not variable.startswith(prefix) or len(variable) == len(prefix):
            continue
        path = tuple(part.lower() for part in variable[len(prefix) :].split("__"))
        try:
            value = parse_yaml_value(environ[variable])
        except YamlDocumentError:
            value = environ[variable]  # validation says what is wrong with it as text
        target = data
        for depth, part in enumerate(path[:-1]):
            origins.setdefault(path[: depth + 1], Origin(variable))
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[path[-1]] = value
        origins[path] = Origin(variable)
        if isinstance(value, Mapping):
            origins.update((sub, Origin(variable)) for sub in iter_key_paths(value, path))
    return Layer(data=data, origins=origins)
