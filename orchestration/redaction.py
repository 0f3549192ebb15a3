"""Masking a project's declared secret values in everything the orchestrator records or shows:
task reasons and summaries, verification output, materialization metadata, log lines.

An agent or a test command sees its project's secrets (they are in its environment) and may
print them; what it printed must not reach the task database, the UI or the compute logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

MASK = "***"
#: Values shorter than this are not masked: they would blank out ordinary words and digits.
MIN_SECRET_LENGTH = 4

T = TypeVar("T")


@dataclass(frozen=True)
class Redactor:
    """Replaces each secret value with `***` in text and in nested data."""

    values: tuple[str, ...] = ()

    @classmethod
    def for_secrets(cls, names: Iterable[str], environ: Mapping[str, str]) -> Redactor:
        """The redactor of the variables `names` as `environ` holds them."""
        found = {environ[name] for name in names if len(environ.get(name, "")) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        return cls(tuple(sorted(found, key=lambda value: (-len(value), value))))

    def text(self, value: str) -> str:
        for secret in self.values:
            value = value.replace(secret, MASK)
        return value

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def data(self, value: T) -> T:
        """`value` with every string in it masked (dicts, lists and tuples followed)."""
        if not self.values:
            return value
        return self._data(value)

    def _data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self._data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._data(item) for item in value)
        return value
