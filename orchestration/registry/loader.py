"""Reading the registry: project files with inheritance and overrides, agent profiles, pools.

Each project resolves as built-in defaults, then `projects/_defaults.yaml`, then its `extends`
chain of templates in `projects/templates/` (the farthest ancestor first), then its own file, then
`ORCH__<PROJECT>__<KEY>` environment variables. A broken file yields errors for that file only;
every other project still loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestration.registry.errors import (
    RegistryError,
    error_at,
    from_validation_error,
)
from orchestration.registry.layers import (
    KeyPath,
    Layer,
    Origin,
    YamlDocumentError,
    display_path,
    env_override_layer,
    merge,
    read_yaml_layer,
)
from orchestration.registry.models import AgentsFile, PoolsFile, ProjectSpec, is_remote_url
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.settings import Settings
from orchestration.tags import GLOBAL_POOL

DEFAULTS_FILE = "_defaults.yaml"
TEMPLATES_DIR = "templates"
AGENTS_FILE = "agents.yaml"
POOLS_FILE = "pools.yaml"
HOME_PLACEHOLDER = "${ORCH_HOME}"

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedProject:
    """A valid project: its spec, the file it came from and where each resolved key was set."""

    spec: ProjectSpec
    path: Path
    origins: Mapping[KeyPath, Origin]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Registry:
    """Everything the registry holds: the valid projects, the resources, and every error found."""

    settings: Settings
    projects: tuple[LoadedProject, ...]
    agents: AgentsFile | None
    pools: PoolsFile | None
    errors: tuple[RegistryError, ...]
    warnings: tuple[str, ...] = ()

    @property
    def config_errors(self) -> tuple[RegistryError, ...]:
        """Errors in `agents.yaml` or `pools.yaml`: with these, no task may start."""
        files = {
            display_path(self.settings.config_dir / AGENTS_FILE),
            display_path(self.settings.config_dir / POOLS_FILE),
        }
        return tuple(error for error in self.errors if error.file in files)

    def spec(self, name: str) -> ProjectSpec | None:
        """The valid project called `name`, or None."""
        for project in self.projects:
            if project.name == name:
                return project.spec
        return None

    @property
    def broken_names(self) -> frozenset[str]:
        """Projects whose file has errors (named after the file)."""
        return frozenset(
            stem for error in self.errors if (stem := _file_stem(error.project_file)) is not None
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(project.name for project in self.projects)

    def project(self, name: str) -> LoadedProject:
        """The valid project called `name`; a KeyError that says what exists otherwise."""
        for project in self.projects:
            if project.name == name:
                return project
        broken = [error for error in self.errors if _file_stem(error.project_file) == name]
        if broken:
            raise KeyError(f"project {name!r} has errors: {broken[0]}")
        known = ", ".join(self.names) or "none"
        raise KeyError(f"no project named {name!r} (known projects: {known})")


def load_registry(
    settings: Settings | None = None, environ: Mapping[str, str] | None = None
) -> Registry:
    """Read and validate the whole registry. Never raises for bad input: errors are collected."""
    env = os.environ if environ is None else environ
    settings = settings or Settings.from_env(env)
    errors: list[RegistryError] = []
    agents = _load_resource(settings.config_dir / AGENTS_FILE, AgentsFile, errors, wrap=None)
    pools = _load_resource(settings.config_dir / POOLS_FILE, PoolsFile, errors, wrap="pools")
    _check_resources(agents, pools, settings, errors)

    loader = _ProjectLoader(settings, env, agents)
    projects = loader.load_all(errors)
    return Registry(
        settings=settings,
        projects=tuple(projects),
        agents=agents,
        pools=pools,
        errors=tuple(errors),
        warnings=settings.notices,
    )


def _load_resource(
    path: Path, model: type[BaseModel], errors: list[RegistryError], *, wrap: str | None
) -> Any:
    shown = display_path(path)
    if not path.is_file():
        errors.append(RegistryError(shown, "", "file not found; the registry needs it"))
        return None
    try:
        layer = read_yaml_layer(path)
    except YamlDocumentError as exc:
        errors.append(RegistryError(shown, "", str(exc), exc.line))
        return None
    data = {wrap: dict(layer.data)} if wrap else layer.data
    origins = {(wrap, *key): origin for key, origin in layer.origins.items()} if wrap else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = from_validation_error(exc, model, origins or layer.origins, shown)
        if wrap:
            prefix = f"{wrap}."
            found = [
                RegistryError(e.file, e.key.removeprefix(prefix), e.message, e.line) for e in found
            ]
        errors.extend(found)
        return None


def _check_resources(
    agents: AgentsFile | None,
    pools: PoolsFile | None,
    settings: Settings,
    errors: list[RegistryError],
) -> None:
    pools_file = display_path(settings.config_dir / POOLS_FILE)
    agents_file = display_path(settings.config_dir / AGENTS_FILE)
    if pools is not None and GLOBAL_POOL not in pools.pools:
        errors.append(
            RegistryError(
                pools_file, GLOBAL_POOL, "the global pool is missing: add 'agents: {slots: N}'"
            )
        )
    if agents is None or pools is None:
        return
    for name, profile in agents.profiles.items():
        if profile.pool not in pools.pools:
            errors.append(
                RegistryError(
                    agents_file,
                    f"profiles.{name}.pool",
                    f"unknown pool {profile.pool!r}; pools in {pools_file}: "
                    f"{', '.join(sorted(pools.pools))}",
                )
            )


class _ProjectLoader:
    """Resolves project files one by one, sharing the defaults and template layers."""

    def __init__(
        self, settings: Settings, environ: Mapping[str, str], agents: AgentsFile | None
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.agents = agents
        self.templates_dir = settings.projects_dir / TEMPLATES_DIR
        self._templates: dict[str, Layer | RegistryError | None] = {}

    def load_all(self, errors: list[RegistryError]) -> list[LoadedProject]:
        projects_dir = self.settings.projects_dir
        if not projects_dir.is_dir():
            errors.append(
                RegistryError(
                    display_path(projects_dir),
                    "",
                    "projects directory not found; set ORCH_PROJECTS_DIR or create it",
                )
            )
            return []
        defaults = self._defaults(errors)
        files = sorted(
            path
            for path in [*projects_dir.glob("*.yaml"), *projects_dir.glob("*.yml")]
            if not path.name.startswith(("_", "."))
        )
        resolved: list[tuple[Path, Layer]] = []
        for path in files:
            layer = self._resolve(path, defaults, errors)
            if layer is not None:
                resolved.append((path, layer))

        resolved_paths = {path for path, _ in resolved}
        all_names = {_declared_name(path, layer) for path, layer in resolved} | {
            path.stem for path in files if path not in resolved_paths
        }
        projects: list[LoadedProject] = []
        seen: dict[str, Path] = {}
        for path, layer in resolved:
            project = self._validate(path, layer, all_names, seen, errors)
            if project is not None:
                seen[project.name] = path
                projects.append(project)
        return projects

    def _defaults(self, errors: list[RegistryError]) -> Layer:
        path = self.settings.projects_dir / DEFAULTS_FILE
        if not path.is_file():
            return Layer()
        try:
            layer = read_yaml_layer(path)
        except YamlDocumentError as exc:
            errors.append(RegistryError(display_path(path), "", str(exc), exc.line))
            return Layer()
        for key in ("name", "repo"):
            if key in layer.data:
                errors.append(
                    error_at(
                        (key,),
                        f"{key!r} cannot have a default; set it in each project file",
                        layer.origins,
                        display_path(path),
                    )
                )
                return Layer()
        return layer

    def _resolve(self, path: Path, defaults: Layer, errors: list[RegistryError]) -> Layer | None:
        """Merge every layer of one project; None (with errors added) when that is impossible."""
        shown = display_path(path)
        try:
            own = read_yaml_layer(path)
        except YamlDocumentError as exc:
            errors.append(RegistryError(shown, "", str(exc), exc.line))
            return None
        if "name" not in own.data:
            own = merge(own, Layer({"name": path.stem}, {("name",): Origin(shown)}))

        base = merge(Layer(), defaults)
        extends = own.data.get("extends", defaults.data.get("extends"))
        extends_origin = own.origins.get(("extends",)) or defaults.origins.get(("extends",))
        chain = self._template_chain(extends, extends_origin, shown, errors)
        if chain is None:
            return None
        for template in chain:
            base = merge(base, template)
        name = own.data.get("name")
        overrides = env_override_layer(name, self.environ) if isinstance(name, str) else Layer()
        layer = merge(merge(base, own), overrides)
        return self._with_repo_resolved(layer, shown, errors)

    def _template_chain(
        self,
        name: object,
        origin: Origin | None,
        project_file: str,
        errors: list[RegistryError],
    ) -> list[Layer] | None:
        """The templates a project extends, farthest ancestor first."""
        chain: list[Layer] = []
        visited: list[str] = []
        origins: Mapping[KeyPath, Origin] = {("extends",): origin} if origin else {}
        while name is not None:
            if not isinstance(name, str):
                errors.append(
                    error_at(
                        ("extends",),
                        f"must be a template name, got {name!r}",
                        origins,
                        project_file,
                    )
                )
                return None
            if name in visited:
                loop = " -> ".join([*visited, name])
                errors.append(
                    error_at(("extends",), f"template loop: {loop}", origins, project_file)
                )
                return None
            visited.append(name)
            template = self._template(name, origins, project_file)
            if isinstance(template, RegistryError):
                errors.append(template)
                return None
            chain.append(template)
            origins = template.origins
            name = template.data.get("extends")
        return list(reversed(chain))

    def _template(
        self, name: str, origins: Mapping[KeyPath, Origin], project_file: str
    ) -> Layer | RegistryError:
        """The template `name` for the project in `project_file`, or the error that stops it."""
        if name not in self._templates:
            self._templates[name] = self._read_template(name)
        found = self._templates[name]
        if isinstance(found, Layer):
            return found
        if found is None:
            available = sorted(p.stem for p in self.templates_dir.glob("*.yaml"))
            return error_at(
                ("extends",),
                f"unknown template {name!r}; templates in {display_path(self.templates_dir)}: "
                f"{', '.join(available) or 'none'}",
                origins,
                project_file,
            )
        return replace(found, project_file=project_file)

    def _read_template(self, name: str) -> Layer | RegistryError | None:
        """A template file read once; None when there is no such template."""
        path = self.templates_dir / f"{name}.yaml"
        if not _is_plain_name(name) or not path.is_file():
            return None
        shown = display_path(path)
        try:
            layer = read_yaml_layer(path)
        except YamlDocumentError as exc:
            return RegistryError(shown, "", str(exc), exc.line)
        if "name" in layer.data:
            return error_at(("name",), "a template cannot set 'name'", layer.origins, shown)
        return layer

    def _with_repo_resolved(
        self, layer: Layer, project_file: str, errors: list[RegistryError]
    ) -> Layer | None:
        """Make a local `repo` path absolute, relative to the file that set it."""
        repo = layer.data.get("repo")
        if not isinstance(repo, str) or not repo.strip():
            return layer  # validation reports the missing or mistyped value
        if is_remote_url(repo):
            return layer
        origin = layer.origins.get(("repo",))
        text = repo.strip()
        if text.startswith(HOME_PLACEHOLDER):
            target = Path(str(self.settings.home) + text[len(HOME_PLACEHOLDER) :])
        else:
            base = _directory_of(origin, self.settings.projects_dir)
            target = base / Path(text).expanduser()
        target = target.resolve()
        if not target.is_dir():
            hint = (
                "make the sample repositories with `orch samples init` (`bin/up` does it too)"
                if target.is_relative_to(self.settings.samples_dir.resolve())
                else "give an existing directory (relative to the file that sets it) or a git URL"
            )
            errors.append(
                error_at(
                    ("repo",),
                    f"local repository path {repo!r} does not exist (looked for {target}); {hint}",
                    layer.origins,
                    project_file,
                )
            )
            return None
        return Layer({**layer.data, "repo": str(target)}, layer.origins)

    def _validate(
        self,
        path: Path,
        layer: Layer,
        all_names: set[str],
        seen: Mapping[str, Path],
        errors: list[RegistryError],
    ) -> LoadedProject | None:
        shown = display_path(path)
        try:
            spec = ProjectSpec.model_validate(layer.data)
        except ValidationError as exc:
            errors.extend(from_validation_error(exc, ProjectSpec, layer.origins, shown))
            return None
        problems = [
            *self._check_profile(spec),
            *_check_dependencies(spec, all_names),
        ]
        if spec.name in seen:
            problems.append(
                (
                    ("name",),
                    f"duplicate project name {spec.name!r}: "
                    f"{display_path(seen[spec.name])} already defines it",
                )
            )
        if problems:
            errors.extend(error_at(loc, message, layer.origins, shown) for loc, message in problems)
            return None
        return LoadedProject(spec=spec, path=path, origins=dict(layer.origins))

    def _check_profile(self, spec: ProjectSpec) -> list[tuple[Loc, str]]:
        if self.agents is None:
            return []  # agents.yaml itself is broken; that error is already reported
        try:
            resolve_profile(self.agents, spec)
        except ProfileError as exc:
            return [(exc.key, exc.message)]
        return []


def _check_dependencies(spec: ProjectSpec, all_names: set[str]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for key in ("depends_on", "ignore_dependencies"):
        for index, name in enumerate(getattr(spec, key)):
            if name == spec.name:
                problems.append(((key, index), "a project cannot depend on itself"))
            elif name not in all_names:
                known = ", ".join(sorted(all_names - {spec.name})) or "none"
                problems.append(((key, index), f"unknown project {name!r}; projects: {known}"))
    return problems


def _declared_name(path: Path, layer: Layer) -> str:
    name = layer.data.get("name")
    return name if isinstance(name, str) else path.stem


def _directory_of(origin: Origin | None, fallback: Path) -> Path:
    if origin is None or origin.line is None:
        return fallback
    source = Path(origin.source)
    return (source if source.is_absolute() else Path.cwd() / source).parent


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _file_stem(path: str | None) -> str | None:
    return Path(path).stem if path else None
