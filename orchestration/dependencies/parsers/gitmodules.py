"""Git submodules: each `[submodule "x"]` of a .gitmodules file with a `url` is a requirement."""

from __future__ import annotations

import configparser

from orchestration.dependencies.model import ManifestScan, Requirement, normalize_git_url
from orchestration.dependencies.parsers.source import IniLocator, problem

ECOSYSTEM = "git"


def parse_gitmodules(path: str, text: str) -> ManifestScan:
    """One requirement per submodule: the repository URL, checked out at the submodule's path."""
    parser = configparser.ConfigParser(
        interpolation=None,
        strict=False,
        allow_no_value=True,
        inline_comment_prefixes=("#", ";"),
    )
    try:
        parser.read_string(text)
    except (configparser.Error, AttributeError) as exc:
        # AttributeError: configparser itself fails so on an indented line that follows a
        # valueless key; it is still a file we cannot read.
        message = " ".join(f"not a valid .gitmodules file ({exc})".split())
        return ManifestScan(
            path=path, ecosystem=ECOSYSTEM, problems=(problem(path, None, message),)
        )
    where = IniLocator(text)
    requirements: list[Requirement] = []
    problems: list[str] = []
    for section in parser.sections():
        if not section.startswith("submodule"):
            continue
        url = _unquote(parser.get(section, "url", fallback=None))
        local_path = _unquote(parser.get(section, "path", fallback=None))
        written = where.option(section, "url")
        if not url or not normalize_git_url(url):
            problems.append(problem(path, where.sections.get(section), f"[{section}] has no `url`"))
            continue
        requirements.append(
            Requirement(
                ecosystem=ECOSYSTEM,
                name=normalize_git_url(url),
                specifier="",
                scope="runtime",
                manifest=path,
                line=written.line if written else where.sections.get(section),
                text=written.text if written else f"url = {url}",
                local_path=local_path or None,
                url=url,
            )
        )
    return ManifestScan(
        path=path, ecosystem=ECOSYSTEM, requirements=tuple(requirements), problems=tuple(problems)
    )


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value
