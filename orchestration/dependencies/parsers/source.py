"""Where things are written in a manifest's text, and how a problem names that place.

The standard parsers (tomllib, json, configparser) return values without positions. The
locators here scan the same text once more, only to tell on which line a key or a string is
written and how it reads there. They run on text the real parser accepted, and answer None
rather than guess when they cannot find something.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_NEWLINE = re.compile(r"\n")


def problem(path: str, line: int | None, message: str) -> str:
    """A problem as `path:line: message`, the form editors and CI logs link to."""
    return f"{path}:{line}: {message}" if line else f"{path}: {message}"


def describe(value: Any) -> str:
    """A short name of a parsed value's type for error messages (`a number`, `a table`)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def load_toml(path: str, text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed document, or None and the problem that stopped tomllib."""
    import tomllib  # imported by the TOML manifests only

    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        message = f"not valid TOML ({exc}); fix the syntax so its dependencies can be read"
    except RecursionError:
        message = "nested too deeply to be read as TOML"
    return None, problem(path, None, message)


@dataclass(frozen=True)
class Written:
    """A key or value as it appears in the text: its 1-based line and its source text."""

    line: int
    text: str


class LineIndex:
    """1-based line numbers of character offsets in one text."""

    __slots__ = ("_starts",)

    def __init__(self, text: str) -> None:
        self._starts = [0, *(m.end() for m in _NEWLINE.finditer(text))]

    def line(self, offset: int) -> int:
        return bisect_right(self._starts, offset)


def match_in_order(
    candidates: Sequence[tuple[int, str]], values: Sequence[object]
) -> list[int | None]:
    """For each value, the position of the next unused candidate written the same way.

    Candidates are (line, text) in the order they are written; values come from the real
    parser in the same order, so a greedy forward match pairs duplicates correctly.
    """
    found: list[int | None] = []
    cursor = 0
    for value in values:
        line = None
        for index in range(cursor, len(candidates)):
            if candidates[index][1] == value:
                line = candidates[index][0]
                cursor = index + 1
                break
        found.append(line)
    return found


# -- TOML ---------------------------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\\n]|\\.)*"'
_LITERAL = r"'[^'\n]*'"
_KEY_PART = f"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_KEY_PATH = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_TOML_HEADER = re.compile(rf"[ \t]*(\[\[?[ \t]*({_KEY_PATH})[ \t]*\]\]?)")
_TOML_KEY = re.compile(rf"[ \t]*({_KEY_PATH})[ \t]*=")
_TOML_KEY_PART = re.compile(_KEY_PART)
_TOML_VALUE_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""(?:"{1,2})?'
    r"|'''[\s\S]*?'''(?:'{1,2})?"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[\[\]{}\n]"
)


def _toml_string(raw: str) -> str:
    """The value of a TOML string or key token (escapes decoded where JSON agrees with TOML)."""
    if raw[:3] in ('"""', "'''"):
        return raw[3:-3].removeprefix("\n")
    if raw[0] == "'":
        return raw[1:-1]
    if raw[0] == '"':
        if "\\" not in raw:
            return raw[1:-1]
        try:
            return str(json.loads(raw))
        except ValueError:
            return raw[1:-1]
    return raw


def _key_path(written: str) -> tuple[str, ...]:
    return tuple(_toml_string(m.group()) for m in _TOML_KEY_PART.finditer(written))


class TomlLocator:
    """Lines of the tables, keys and strings of one TOML document.

    Keys are addressed by their full path as tomllib nests them: `("dependencies", "tokio")`
    finds `tokio = "1"` under `[dependencies]`, the header `[dependencies.tokio]`, or the first
    of `tokio.version = "1"` / `tokio.path = "../tokio"`.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines = LineIndex(text)
        self._spans: dict[tuple[str, ...], tuple[int, int]] = {}
        self._strings: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        self._scan()

    def written(self, path: tuple[str, ...]) -> Written | None:
        """The key (or table header) at `path`, with the text of its whole entry."""
        span = self._spans.get(path)
        if span is None:
            return None
        start, end = span
        return Written(self._lines.line(start), self._text[start:end].strip())

    def line(self, path: tuple[str, ...]) -> int | None:
        """The line of `path`, or of its nearest enclosing key or table that is written."""
        for size in range(len(path), 0, -1):
            span = self._spans.get(path[:size])
            if span is not None:
                return self._lines.line(span[0])
        return None

    def string_lines(self, path: tuple[str, ...], values: Sequence[object]) -> list[int | None]:
        """The lines of the strings of the array at `path`, one per parsed value, in order.

        A value that cannot be found gets the line of the key.
        """
        key_line = self.line(path)
        found = match_in_order(self._strings.get(path, ()), values)
        return [key_line if line is None else line for line in found]

    def _scan(self) -> None:
        text = self._text
        size = len(text)
        pos = 0
        table: tuple[str, ...] = ()
        while pos < size:
            header = _TOML_HEADER.match(text, pos)
            if header:
                table = _key_path(header.group(2))
                self._spans.setdefault(table, (header.start(1), header.end(1)))
                pos = _next_line(text, header.end())
                continue
            key = _TOML_KEY.match(text, pos)
            if key:
                path = table + _key_path(key.group(1))
                end = self._scan_value(path, key.end())
                span = (key.start(1), end)
                for depth in range(len(table) + 1, len(path) + 1):
                    self._spans.setdefault(path[:depth], span)
                pos = _next_line(text, end)
                continue
            pos = _next_line(text, pos)

    def _scan_value(self, path: tuple[str, ...], pos: int) -> int:
        """Record the strings of the value starting at `pos`; return where the value ends."""
        strings = self._strings.setdefault(path, [])
        depth = 0
        for token in _TOML_VALUE_TOKEN.finditer(self._text, pos):
            raw = token.group()
            first = raw[0]
            if first == "\n":
                if depth <= 0:
                    return token.start()
            elif first == "#":
                if depth <= 0:
                    return token.start()
            elif first in "[{":
                depth += 1
            elif first in "]}":
                depth -= 1
            else:
                strings.append((self._lines.line(token.start()), _toml_string(raw)))
        return len(self._text)


def _next_line(text: str, pos: int) -> int:
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


# -- JSON ---------------------------------------------------------------------------------------

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],]')


class JsonLocator:
    """Lines of the keys of a JSON document's top-level object and of the objects it holds.

    `written(("dependencies", "vue"))` gives the line of `"vue": "^3.5"` and that text.
    """

    def __init__(self, text: str, depth: int = 2) -> None:
        self._text = text
        self._lines = LineIndex(text)
        self._spans: dict[tuple[str, ...], list[int]] = {}
        self._scan(depth)

    def written(self, path: tuple[str, ...]) -> Written | None:
        span = self._spans.get(path)
        if span is None:
            return None
        return Written(self._lines.line(span[0]), self._text[span[0] : span[1]])

    def _scan(self, depth: int) -> None:
        # Each open container: [is_object, path, current key, expecting a key].
        open_: list[list[Any]] = []
        pending: list[int] | None = None  # span of the key whose value comes next
        for token in _JSON_TOKEN.finditer(self._text):
            raw = token.group()
            first = raw[0]
            top = open_[-1] if open_ else None
            if first == '"':
                if top is not None and top[0] and top[3]:
                    key = raw[1:-1] if "\\" not in raw else _json_string(raw)
                    top[2] = key
                    top[3] = False
                    pending = None
                    if len(top[1]) < depth:
                        pending = [token.start(), token.end()]
                        self._spans[(*top[1], key)] = pending
                    continue
                if pending is not None:
                    pending[1] = token.end()
                pending = None
            elif first in "{[":
                pending = None
                if top is None:
                    path: tuple[str, ...] = ()
                else:
                    path = (*top[1], top[2] if top[0] else "")
                open_.append([first == "{", path, "", first == "{"])
            elif first in "}]":
                pending = None
                if open_:
                    open_.pop()
            elif top is not None and top[0]:  # a comma in an object: a key comes next
                top[3] = True


def _json_string(raw: str) -> str:
    try:
        return str(json.loads(raw))
    except ValueError:
        return raw[1:-1]


# -- INI (setup.cfg, .gitmodules) ---------------------------------------------------------------

_INI_SECTION = re.compile(r"\[(.+)\]")
_INI_OPTION = re.compile(r"([^=:]+?)[ \t]*[=:]")


class IniLocator:
    """Lines of the sections, options and multi-line values of an INI file.

    Follows configparser's reading: a line indented deeper than its option continues that
    option's value; `#` and `;` start comment lines. Option names are lower-cased as
    configparser does.
    """

    def __init__(self, text: str) -> None:
        self.sections: dict[str, int] = {}
        self._options: dict[tuple[str, str], Written] = {}
        self._values: dict[tuple[str, str], list[tuple[int, str]]] = {}
        section = ""
        current: tuple[str, str] | None = None
        indent = 0
        for number, raw in enumerate(text.split("\n"), start=1):
            stripped = raw.strip()
            if not stripped or stripped[0] in "#;":
                continue
            level = len(raw) - len(raw.lstrip())
            if current is not None and level > indent:
                self._values[current].append((number, stripped))
                continue
            header = _INI_SECTION.match(stripped)
            if header:
                section = header.group(1)
                self.sections.setdefault(section, number)
                current = None
                continue
            option = _INI_OPTION.match(stripped)
            if option is None:
                current = None
                continue
            current = (section, option.group(1).strip().lower())
            indent = level
            self._options.setdefault(current, Written(number, stripped))
            rest = stripped[option.end() :].strip()
            self._values.setdefault(current, []).append((number, rest))

    def option(self, section: str, key: str) -> Written | None:
        """The line where `key` is set in `section`, and that line's text."""
        return self._options.get((section, key))

    def value_lines(self, section: str, key: str, items: Sequence[str]) -> list[int | None]:
        """The lines of the items of a multi-line value, one per item, in order."""
        option = self._options.get((section, key))
        found = match_in_order(self._values.get((section, key), ()), items)
        fallback = option.line if option else None
        return [fallback if line is None else line for line in found]
