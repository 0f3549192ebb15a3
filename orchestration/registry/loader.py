"""Reading the registry: project files with inheritance and overrides, agent profiles, pools.

Each project resolves as built-in defaults, then `projects/_defaults.yaml`, then its `extends`
chain of templates in `projects/templates/` (the farthest ancestor first), then its own file, then
`ORCH__<PROJECT>__<KEY>` environment variables. A broken file yields errors for that file only;
every other project still loads.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from orchestration.registry.channels import check_channels
from orchestration.registry.errors import (
    MISSING_MESSAGE,
    RegistryError,
    error_at,
    from_validation_error,
)
from orchestration.registry.layers import (
    ENV_OVERRIDE_PREFIX,
    KeyPath,
    Layer,
    Origin,
    YamlDocumentError,
    display_path,
    env_override_layer,
    merge,
    read_yaml_layer,
)
from orchestration.registry.models import (
    SLUG_PATTERN,
    AgentsFile,
    AlertsFile,
    BackupFile,
    PoolsFile,
    ProjectSpec,
    is_remote_url,
    placeholders,
    repo_problem,
)
from orchestration.registry.rules import ProfileError, resolve_profile
from orchestration.settings import Settings
from orchestration.tags import GLOBAL_POOL

DEFAULTS_FILE = "_defaults.yaml"
TEMPLATES_DIR = "templates"
#: Where the files of archived projects wait (`orch projects archive`), below the projects dir.
ARCHIVED_DIR = ".archived"
AGENTS_FILE = "agents.yaml"
POOLS_FILE = "pools.yaml"
BACKUP_FILE = "backup.yaml"
ALERTS_FILE = "alerts.yaml"
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
    #: The archived projects: the names of `projects/.archived/*.yaml`, not read.
    archived: tuple[str, ...] = ()
    #: The scheduled backup (`config/backup.yaml`); None when there is none (or it has errors).
    backup: BackupFile | None = None
    #: The alert webhooks (`config/alerts.yaml`); None when there is none (or it has errors).
    alerts: AlertsFile | None = None

    @property
    def config_errors(self) -> tuple[RegistryError, ...]:
        """Errors in `agents.yaml` or `pools.yaml`: with these, no task may start."""
        files = {
            display_path(self.settings.config_dir / AGENTS_FILE),
            display_path(self.settings.config_dir / POOLS_FILE),
        }
        return tuple(error for error in self.errors if error.file in files)

    @functools.cached_property
    def _by_name(self) -> Mapping[str, LoadedProject]:
        """The valid projects by name (the first of a name), made once per registry: a tick
        looks up a project per queued task, thousands of each."""
        index: dict[str, LoadedProject] = {}
        for project in self.projects:
            index.setdefault(project.name, project)
        return index

    def spec(self, name: str) -> ProjectSpec | None:
        """The valid project called `name`, or None."""
        project = self._by_name.get(name)
        return project.spec if project is not None else None

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
        if name in self._by_name:
            return self._by_name[name]
        broken = [error for error in self.errors if _file_stem(error.project_file) == name]
        if broken:
            raise KeyError(f"project {name!r} has errors: {broken[0]}")
        if name in self.archived:
            raise KeyError(
                f"project {name!r} is archived; `orch projects unarchive {name}` brings it back"
            )
        known = ", ".join(self.names) or "none"
        raise KeyError(f"no project named {name!r} (known projects: {known})")


@dataclass(frozen=True)
class LoadedProjects:
    """What reading the project files gave: the valid projects, the errors and warnings, and the
    local repository directories looked for (whether each existed decided an error)."""

    projects: tuple[LoadedProject, ...]
    errors: tuple[RegistryError, ...]
    warnings: tuple[str, ...]
    checked_dirs: Mapping[str, bool]


class ProjectsCache(Protocol):
    """Where `load_registry` may find the projects already read from the same files."""

    def get(self) -> LoadedProjects | None: ...

    def put(self, loaded: LoadedProjects) -> None: ...


def load_registry(
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    cache: ProjectsCache | None = None,
) -> Registry:
    """Read and validate the whole registry. Never raises for bad input: errors are collected.
    The project files are read only when `cache` does not have them (`registry/cache.py`)."""
    env = os.environ if environ is None else environ
    settings = settings or Settings.from_env(env)
    errors: list[RegistryError] = []
    agents = _load_resource(settings.config_dir / AGENTS_FILE, AgentsFile, errors, wrap=None)
    pools = _load_resource(
        settings.config_dir / POOLS_FILE, PoolsFile, errors, wrap="pools", beside=("preemption",)
    )
    _check_resources(agents, pools, settings, errors)
    backup_path = settings.config_dir / BACKUP_FILE
    backup = (
        _load_resource(backup_path, BackupFile, errors, wrap=None)
        if backup_path.is_file()
        else None
    )
    alerts_path = settings.config_dir / ALERTS_FILE
    alerts = (
        _load_resource(alerts_path, AlertsFile, errors, wrap=None)
        if alerts_path.is_file()
        else None
    )

    archived = archived_names(settings.projects_dir)
    found = cache.get() if cache is not None else None
    if found is None:
        loader = _ProjectLoader(settings, env, agents, archived)
        project_errors: list[RegistryError] = []
        found = LoadedProjects(
            tuple(loader.load_all(project_errors)),
            tuple(project_errors),
            tuple(loader.warnings),
            loader.checked_dirs,
        )
        if cache is not None:
            cache.put(found)
    errors += found.errors
    return Registry(
        settings=settings,
        projects=found.projects,
        agents=agents,
        pools=pools,
        errors=tuple(errors),
        warnings=(
            *settings.notices,
            *found.warnings,
            *_unset_alert_variables(alerts, alerts_path, env),
        ),
        archived=archived,
        backup=backup,
        alerts=alerts,
    )


def archived_names(projects_dir: Path) -> tuple[str, ...]:
    """The names of the archived projects (`projects/.archived/<name>.yaml`), sorted; their
    files are not read, so a broken one costs nothing."""
    try:
        return tuple(
            sorted(
                path.stem
                for path in (projects_dir / ARCHIVED_DIR).glob("*.yaml")
                if not path.name.startswith(("_", "."))
            )
        )
    except OSError:
        return ()


def resolve_repo_path(repo: str, settings: Settings, base: Path) -> Path:
    """The absolute path a local `repo` value names, as the registry resolves it: `${ORCH_HOME}`
    stands for ORCH_HOME, `~` for the user's home, and a relative path is relative to `base`,
    the directory of the file that set it. Whether it exists is not checked; OSError,
    ValueError or RuntimeError when it cannot be resolved (`~nobody`, a path too long)."""
    text = repo.strip()
    if text.startswith(HOME_PLACEHOLDER):
        target = Path(str(settings.home) + text[len(HOME_PLACEHOLDER) :])
    else:
        target = base / Path(text).expanduser()
    return target.resolve()


def _load_resource(
    path: Path,
    model: type[BaseModel],
    errors: list[RegistryError],
    *,
    wrap: str | None,
    beside: tuple[str, ...] = (),
) -> Any:
    """Validate one config file. With `wrap`, the file's top-level keys become the entries of
    the model's field `wrap`, except the keys named in `beside`, which stay fields of their own
    (pools.yaml: every key is a pool but `preemption`)."""
    shown = display_path(path)
    if not path.is_file():
        errors.append(RegistryError(shown, "", "file not found; the registry needs it"))
        return None
    try:
        layer = read_yaml_layer(path)
    except YamlDocumentError as exc:
        errors.append(RegistryError(shown, "", str(exc), exc.line))
        return None
    data: Mapping[str, Any] = layer.data
    origins: dict[KeyPath, Origin] = {}
    if wrap:
        data = {
            wrap: {k: v for k, v in layer.data.items() if k not in beside},
            **{k: v for k, v in layer.data.items() if k in beside},
        }
        origins = {
            (key if key[:1] and key[0] in beside else (wrap, *key)): origin
            for key, origin in layer.origins.items()
        }
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


def _unset_alert_variables(
    alerts: AlertsFile | None, path: Path, environ: Mapping[str, str]
) -> list[str]:
    """A warning per webhook URL that reads a variable this environment does not set: that
    webhook gets nothing where it is unset (the daemon's environment may differ from this one)."""
    if alerts is None:
        return []
    return [
        f"{display_path(path)}: webhooks[{index}].url: ${{{name}}} is not set here, so "
        f"webhook {webhook.name!r} gets no alerts from a process started like this one"
        for index, webhook in enumerate(alerts.webhooks)
        for name in placeholders(webhook.url)
        if not environ.get(name)
    ]


class _ProjectLoader:
    """Resolves project files one by one, sharing the defaults and template layers."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        agents: AgentsFile | None,
        archived: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.agents = agents
        self.archived = frozenset(archived)
        self.templates_dir = settings.projects_dir / TEMPLATES_DIR
        self._templates: dict[str, Layer | RegistryError | None] = {}
        self.warnings: list[str] = []
        #: Each local repository directory looked for, and whether it was there.
        self.checked_dirs: dict[str, bool] = {}

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
        resolved: list[_Resolved] = []
        for path in files:
            found = self._resolve(path, defaults, errors)
            if found is not None:
                resolved.append(found)

        resolved_paths = {found.path for found in resolved}
        all_names = {_declared_name(found.path, found.layer) for found in resolved} | {
            path.stem for path in files if path not in resolved_paths
        }
        self._warn_about_unknown_overrides(all_names)
        projects: list[LoadedProject] = []
        seen: dict[str, Path] = {}
        for found in resolved:
            project = self._validate(found, all_names, seen, errors)
            if project is not None:
                seen[project.name] = found.path
                projects.append(project)
        projects, channel_errors, channel_warnings = check_channels(
            projects, all_names, self.archived
        )
        errors += channel_errors
        self.warnings += channel_warnings
        return projects

    def _read(self, path: Path) -> Layer:
        """A file of the projects tree; it may not lead out of it through a symbolic link."""
        return read_yaml_layer(path, within=self.settings.projects_dir)

    def _defaults(self, errors: list[RegistryError]) -> Layer:
        path = self.settings.projects_dir / DEFAULTS_FILE
        if not path.is_file():
            return Layer()
        try:
            layer = self._read(path)
        except YamlDocumentError as exc:
            errors.append(RegistryError(display_path(path), "", str(exc), exc.line))
            return Layer()
        refused = [
            error_at(
                (key,),
                f"{key!r} cannot have a default; set it in each project file",
                layer.origins,
                display_path(path),
            )
            for key in ("name", "repo")
            if key in layer.data
        ]
        errors.extend(refused)
        return Layer() if refused else layer

    def _resolve(
        self, path: Path, defaults: Layer, errors: list[RegistryError]
    ) -> _Resolved | None:
        """Merge every layer of one project, noting what failed on the way; None (with the
        error added) only when the file itself cannot be read."""
        shown = display_path(path)
        try:
            own = self._read(path)
        except YamlDocumentError as exc:
            errors.append(RegistryError(shown, "", str(exc), exc.line))
            return None
        if "name" not in own.data:
            own = merge(own, Layer({"name": path.stem}, {("name",): Origin(shown)}))

        problems: list[RegistryError] = []
        base = merge(Layer(), defaults)
        extends = own.data.get("extends", defaults.data.get("extends"))
        extends_origin = own.origins.get(("extends",)) or defaults.origins.get(("extends",))
        chain = self._template_chain(extends, extends_origin, shown, problems)
        for template in chain or ():
            base = merge(base, template)
        name = own.data.get("name")
        overrides = env_override_layer(name, self.environ) if isinstance(name, str) else Layer()
        layer = merge(merge(base, own), overrides)
        layer = self._with_repo_resolved(layer, shown, problems)
        return _Resolved(path, layer, tuple(problems), extends_failed=chain is None)

    def _template_chain(
        self,
        name: object,
        origin: Origin | None,
        project_file: str,
        errors: list[RegistryError],
    ) -> list[Layer] | None:
        """The templates a project extends, farthest ancestor first; None (with the error
        added) when one of them cannot be used."""
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
            layer = self._read(path)
        except YamlDocumentError as exc:
            return RegistryError(shown, "", str(exc), exc.line)
        if "name" in layer.data:
            return error_at(("name",), "a template cannot set 'name'", layer.origins, shown)
        return layer

    def _with_repo_resolved(
        self, layer: Layer, project_file: str, errors: list[RegistryError]
    ) -> Layer:
        """Make a local `repo` path absolute, relative to the file that set it; when it does
        not exist, the error is added and the layer returned as it was."""
        repo = layer.data.get("repo")
        if not isinstance(repo, str) or not repo.strip() or repo_problem(repo):
            return layer  # validation reports the missing, mistyped or refused value
        if is_remote_url(repo):
            return layer
        origin = layer.origins.get(("repo",))
        try:
            base = _directory_of(origin, self.settings.projects_dir)
            target = resolve_repo_path(repo, self.settings, base)
            exists = target.is_dir()
            self.checked_dirs[str(target)] = exists
        except (OSError, ValueError, RuntimeError) as exc:  # ~nobody, a path too long
            errors.append(
                error_at(
                    ("repo",), f"{repo!r} is not a usable path: {exc}", layer.origins, project_file
                )
            )
            return layer
        if not exists:
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
            return layer
        return Layer({**layer.data, "repo": str(target)}, layer.origins)

    def _validate(
        self,
        resolved: _Resolved,
        all_names: set[str],
        seen: Mapping[str, Path],
        errors: list[RegistryError],
    ) -> LoadedProject | None:
        """The project when every check passes; otherwise every error of its file, at once."""
        path, layer = resolved.path, resolved.layer
        shown = display_path(path)
        found = list(resolved.problems)
        try:
            spec: ProjectSpec | None = ProjectSpec.model_validate(layer.data)
        except ValidationError as exc:
            invalid = [
                error
                for error in from_validation_error(exc, ProjectSpec, layer.origins, shown)
                # With its templates unknown, `extends` is already reported and a key the
                # templates might have set is not known to be missing.
                if not (
                    resolved.extends_failed
                    and (error.key == "extends" or error.message == MISSING_MESSAGE)
                )
            ]
            found += invalid
            spec = _partial_spec(layer.data, exc)
        if spec is not None:
            problems = [
                *self._check_profile(spec),
                *_check_dependencies(spec, all_names, self.archived),
            ]
            self.warnings += [
                f"{shown}: {key}: project {name!r} is archived"
                for key, name in _archived_dependencies(spec, all_names, self.archived)
            ]
            if spec.name in seen:
                problems.append(
                    (
                        ("name",),
                        f"duplicate project name {spec.name!r}: "
                        f"{display_path(seen[spec.name])} already defines it",
                    )
                )
            reported = {error.key for error in found}
            found += [
                error
                for error in (error_at(loc, msg, layer.origins, shown) for loc, msg in problems)
                if error.key not in reported
            ]
        if found or spec is None:
            # The file's own errors first, in the order of its lines; then those of its
            # templates and overrides.
            errors.extend(sorted(found, key=lambda e: (e.file != shown, e.file, e.line or 0)))
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

    def _warn_about_unknown_overrides(self, names: set[str]) -> None:
        """An `ORCH__<PROJECT>__...` variable for no project is a warning: it changes nothing,
        and a typo in a project's name would otherwise go unnoticed."""
        prefixes = tuple(f"{ENV_OVERRIDE_PREFIX}{name.upper()}__" for name in names)
        known = ", ".join(sorted(filter(SLUG_PATTERN.fullmatch, names))) or "none"
        for variable in sorted(self.environ):
            if not variable.startswith(ENV_OVERRIDE_PREFIX) or variable.startswith(prefixes):
                continue
            project = variable[len(ENV_OVERRIDE_PREFIX) :].split("__", 1)[0].lower()
            self.warnings.append(
                f"{variable}: no project named {project!r}, so this override changes nothing "
                f"(projects: {known})"
            )


@dataclass(frozen=True)
class _Resolved:
    """One project file with every layer merged, and what went wrong doing it."""

    path: Path
    layer: Layer
    problems: tuple[RegistryError, ...]
    extends_failed: bool


def _partial_spec(data: Mapping[str, Any], exc: ValidationError) -> ProjectSpec | None:
    """The project without the values pydantic refused, so the checks that span files can
    still look at the rest; None when that is not possible (its name is among them)."""
    kept = copy.deepcopy(dict(data))
    for detail in exc.errors():
        _drop(kept, tuple(detail["loc"]))
    if "name" not in kept:
        return None
    kept.setdefault("repo", ".")  # no check that spans files reads it
    try:
        return ProjectSpec.model_validate(kept)
    except ValidationError:
        return None


def _check_dependencies(
    spec: ProjectSpec, all_names: set[str], archived: frozenset[str]
) -> list[tuple[Loc, str]]:
    """What is wrong with the projects `spec` names; an archived project is known (a warning,
    from `_archived_dependencies`, not an error)."""
    problems: list[tuple[Loc, str]] = []
    for key in ("depends_on", "ignore_dependencies"):
        for index, name in enumerate(getattr(spec, key)):
            if name == spec.name:
                problems.append(((key, index), "a project cannot depend on itself"))
            elif name not in all_names and name not in archived:
                known = ", ".join(sorted(all_names - {spec.name})) or "none"
                problems.append(((key, index), f"unknown project {name!r}; projects: {known}"))
    return problems


def _archived_dependencies(
    spec: ProjectSpec, all_names: set[str], archived: frozenset[str]
) -> list[tuple[str, str]]:
    """The (key, project) pairs of `spec`'s `depends_on` and `ignore_dependencies` that name an
    archived project (and no project in use)."""
    return [
        (key, name)
        for key in ("depends_on", "ignore_dependencies")
        for name in getattr(spec, key)
        if name != spec.name and name not in all_names and name in archived
    ]


def _drop(data: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    """Remove the value at `loc` (a pydantic error location) from nested mappings: the value
    itself, or the nearest mapping entry on the way to it (a whole list for one of its items,
    so that the positions of the others, which errors name, stay as they were)."""
    parent: dict[str, Any] | None = None
    key = ""
    target: Any = data
    for part in loc:
        if not (isinstance(target, dict) and isinstance(part, str) and part in target):
            break
        parent, key, target = target, part, target[part]
    if parent is not None:
        del parent[key]


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
