"""Go manifests: go.mod `module`, `require` and `replace` directives, single-line and blocks.

There is no Python reader for go.mod, so this follows the grammar of the Go reference
(https://go.dev/ref/mod#go-mod-file): one directive per line or a parenthesised block of them,
`//` comments. `replace X => ../path` gives X's requirement a local path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestration.dependencies.model import ManifestScan, Package, Requirement
from orchestration.dependencies.parsers.source import problem

ECOSYSTEM = "go"

#: Directives that say nothing about packages or dependencies.
_IGNORED = frozenset({"go", "toolchain", "godebug", "exclude", "retract", "tool", "ignore"})
_KNOWN = _IGNORED | {"module", "require", "replace"}


@dataclass(frozen=True)
class _Replace:
    module: str
    version: str | None
    target: str
    target_version: str | None


def parse_go_mod(path: str, text: str) -> ManifestScan:
    """The module a go.mod declares and the modules it requires, with local replacements."""
    packages: list[Package] = []
    requirements: list[Requirement] = []
    replacements: list[_Replace] = []
    problems: list[str] = []
    block: str | None = None
    block_line = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        comment = raw.find("//")
        content = (raw if comment < 0 else raw[:comment]).strip()
        if not content:
            continue
        if block is not None:
            if content == ")":
                block = None
                continue
            if block not in _KNOWN:
                continue  # already reported at the block's first line
            verb, rest = block, content
        else:
            words = content.split(None, 1)
            verb, rest = words[0], words[1] if len(words) > 1 else ""
            if "(" in verb:  # `require(` written without a space
                verb, _, tail = verb.partition("(")
                rest = f"({tail} {rest}".strip()
            if rest in ("(", "()"):
                if verb not in _KNOWN:
                    problems.append(problem(path, number, f"unknown directive {verb!r}"))
                if rest == "(":
                    block, block_line = verb, number
                continue
        if verb in _IGNORED:
            continue
        if verb == "module":
            module = _unquote(rest)
            if module and " " not in module:
                packages.append(Package(ECOSYSTEM, module, None, path, number))
            else:
                problems.append(problem(path, number, "`module` should name one module path"))
        elif verb == "require":
            words = rest.split()
            if len(words) == 2:
                module, version = _unquote(words[0]), _unquote(words[1])
                requirements.append(
                    Requirement(ECOSYSTEM, module, version, "runtime", path, number, rest)
                )
            else:
                problems.append(
                    problem(path, number, f"`require {rest}` should be `<module path> <version>`")
                )
        elif verb == "replace":
            found = _replacement(rest)
            if found is None:
                problems.append(
                    problem(
                        path,
                        number,
                        f"`replace {rest}` should be `<module> [version] => <path or module> "
                        "[version]`",
                    )
                )
            else:
                replacements.append(found)
        else:
            problems.append(
                problem(path, number, f"unknown directive {verb!r}; is this really a go.mod?")
            )
    if block is not None:
        problems.append(problem(path, block_line, f"the `{block} (` block is never closed"))
    if not packages and not problems:
        problems.append(problem(path, None, "no `module` line; a go.mod must name its module"))
    return ManifestScan(
        path=path,
        ecosystem=ECOSYSTEM,
        packages=tuple(packages[:1]),
        requirements=tuple(_apply(requirements, replacements)),
        problems=tuple(problems),
    )


def _replacement(rest: str) -> _Replace | None:
    left, arrow, right = rest.partition("=>")
    old, new = left.split(), right.split()
    if not arrow or len(old) not in (1, 2) or len(new) not in (1, 2):
        return None
    return _Replace(
        module=_unquote(old[0]),
        version=_unquote(old[1]) if len(old) == 2 else None,
        target=_unquote(new[0]),
        target_version=_unquote(new[1]) if len(new) == 2 else None,
    )


def _is_directory(target: str) -> bool:
    """Go's rule: a replacement is a directory when it starts with ./ ../ or /."""
    return target in (".", "..") or target.startswith(("./", "../", "/", ".\\", "..\\"))


def _apply(requirements: list[Requirement], replacements: list[_Replace]) -> list[Requirement]:
    """Give each requirement the local path its last matching `replace` points to."""
    result = []
    for requirement in requirements:
        for found in replacements:
            if found.module != requirement.name:
                continue
            if found.version is not None and found.version != requirement.specifier:
                continue
            local = (
                found.target
                if found.target_version is None and _is_directory(found.target)
                else None
            )
            requirement = replace(requirement, local_path=local)
        result.append(requirement)
    return result


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in '"`':
        return word[1:-1]
    return word
