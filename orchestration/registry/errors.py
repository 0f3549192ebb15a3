"""The errors a user sees about the registry: each names the file, the key and what is valid."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ValidationError

from orchestration.registry.layers import BUILTIN, KeyPath, Origin


@dataclass(frozen=True)
class RegistryError:
    """One problem in the registry.

    `file` is where the offending value was set (a project file, a template, `_defaults.yaml`, a
    resources file, or an `ORCH__...` environment variable); `project_file` is the project file
    that could not load because of it, when that is a different file.
    """

    file: str
    key: str
    message: str
    line: int | None = None
    project_file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        also = (
            f" (while loading {self.project_file})"
            if self.project_file and self.project_file != self.file
            else ""
        )
        return f"{where}:{key} {self.message}{also}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: What a key that must be set and is not says.
MISSING_MESSAGE = "required key is missing"


class RegistryLoadError(Exception):
    """Raised by callers that need a valid registry entry and did not get one."""

    def __init__(self, errors: typing.Sequence[RegistryError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


def dotted(path: typing.Sequence[str | int]) -> str:
    """A key path as users write it: `agent.max_parallel`, `verify[2]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def error_at(
    loc: typing.Sequence[str | int],
    message: str,
    origins: Mapping[KeyPath, Origin],
    project_file: str,
) -> RegistryError:
    """An error at key `loc` (list positions as ints), placed at the origin of that key or of
    its closest parent that has one."""
    loc = tuple(part for part in loc if part != "[key]")  # pydantic's marker for a dict key
    path = tuple(str(part) for part in loc if not isinstance(part, int))
    origin = None
    for depth in range(len(path), 0, -1):
        origin = origins.get(path[:depth])
        if origin is not None and origin.source != BUILTIN:
            break
    if origin is None or origin.source == BUILTIN:
        return RegistryError(project_file, dotted(loc), message, None, project_file)
    return RegistryError(origin.source, dotted(loc), message, origin.line, project_file)


def from_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    origins: Mapping[KeyPath, Origin],
    fallback_file: str,
) -> list[RegistryError]:
    """Translate pydantic's errors into registry errors that speak the YAML's language."""
    errors = []
    for detail in exc.errors():
        loc = tuple(detail["loc"])
        errors.append(error_at(loc, _message(detail, model, loc), origins, fallback_file))
    return errors


def _message(detail: Mapping[str, typing.Any], model: type[BaseModel], loc: tuple) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        suffix = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return f"unknown key {str(loc[-1])!r}{suffix}"
    if kind == "missing":
        return MISSING_MESSAGE
    message = str(detail["msg"])
    message = message.removeprefix("Value error, ")
    if kind != "value_error" and "input" in detail:
        message += f" (got {_short(detail['input'])})"
    return message


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model found by walking `loc` through nested models."""
    current: object = model
    for part in loc:
        if isinstance(part, int):
            continue
        if typing.get_origin(current) is dict:
            # A mapping of name -> model (profiles, pools): the part is a name, not a field.
            current = typing.get_args(current)[1]
            continue
        target = _model_in(current)
        field = target.model_fields.get(str(part)) if target else None
        if field is None:
            return []
        current = field.annotation
    target = _model_in(current)
    return sorted(target.model_fields) if target else []


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
