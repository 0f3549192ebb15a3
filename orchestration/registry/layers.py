"""Configuration layers: YAML documents read with the line of every key, merged with provenance.

A layer is plain data plus, for every key path in it, the origin that set it (a file and line, or
an environment variable). Maps merge deeply and lists replace, and the merged layer keeps, for
each key, the origin of whichever layer set it last.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str, ...]

BUILTIN = "built-in default"


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


def read_yaml_layer(path: Path) -> Layer:
    """Read a YAML file whose top level is a mapping, recording the line of every key."""
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlDocumentError(f"cannot read file: {exc.strerror or exc}") from None
    loader = _SafeLoader(text)
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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlDocumentError(f"not valid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise YamlDocumentError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return Layer(data=data, origins=origins)


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
    prefix = f"ORCH__{project.upper()}__"
    data: dict[str, Any] = {}
    origins: dict[KeyPath, Origin] = {}
    for variable in sorted(environ):
        if not variable.startswith(prefix) or len(variable) == len(prefix):
            continue
        path = tuple(part.lower() for part in variable[len(prefix) :].split("__"))
        try:
            value = yaml.safe_load(environ[variable])
        except yaml.YAMLError:
            value = environ[variable]
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
