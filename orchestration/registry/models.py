"""The registry's data: projects, agent profiles and slot pools as frozen pydantic models.

Every model forbids unknown keys, so a typo in YAML is an error rather than a silent default.
Validators here check one value at a time; checks that span files (a profile that must exist,
a dependency on another project) live in the loader.
"""

from __future__ import annotations

import re
import string
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from orchestration.tags import GLOBAL_POOL

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
TAG_KEY_PATTERN = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")
TAG_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*$")
REMOTE_REPO_PATTERN = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)")
#: URL schemes a `repo` may use. Plain http:// is left out: anyone on the path could change the
#: code the agents then work on and run.
REPO_SCHEMES = ("https", "ssh", "git", "git+ssh", "ssh+git", "file")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
#: git's `<transport>::<address>` form runs a helper program (`ext::sh -c ...`, `fd::`).
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z0-9+.-]+::")
_SCP_LIKE = re.compile(r"^(?P<user>[\w.-]+)@(?P<host>[\w.-]+):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The argv element that stands for the project's whole `agent.command` list.
COMMAND_PLACEHOLDER = "{command}"
#: The argv element that stands for the prompt, which must come after END_OF_OPTIONS.
PROMPT_PLACEHOLDER = "{prompt}"
#: The argv element that stands for a path the agent reads the prompt from.
PROMPT_FILE_PLACEHOLDER = "{prompt_file}"
#: The argv element after which a CLI's option parser reads no options.
END_OF_OPTIONS = "--"
#: The variables every agent and test command may see when `agents.yaml` names none.
DEFAULT_BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")


def is_remote_url(repo: str) -> bool:
    """True when `repo` is a git URL (`https://`, `ssh://`, `git@host:org/repo`), not a path."""
    return bool(REMOTE_REPO_PATTERN.match(repo.strip()))


def repo_problem(repo: str) -> str | None:
    """Why git must not be given `repo`, or None when it is a URL of an allowed kind or a path.

    Refused: values git would read as an option (`--upload-pack=...`, `-c...`), its
    `<transport>::` form that runs a program (`ext::sh -c ...`, `fd::3`), schemes other than
    REPO_SCHEMES, hosts or users that ssh would read as an option, and control characters.
    """
    text = repo.strip()
    usable = (
        f"use {', '.join(scheme + '://' for scheme in REPO_SCHEMES)}, user@host:path "
        "or a local path"
    )
    if _CONTROL.search(text):
        return f"{repo!r} contains a control character; {usable}"
    if text.startswith("-"):
        return (
            f"{repo!r} looks like a git option, not a repository; {usable} "
            "(write ./-name for a local directory whose name starts with '-')"
        )
    if _TRANSPORT_PREFIX.match(text):
        return f"{repo!r} uses git's '<transport>::' form, which runs a helper program; {usable}"
    url = _URL_SCHEME.match(text)
    if url:
        scheme, rest = url.group(1).lower(), url.group(2)
        if scheme not in REPO_SCHEMES:
            hint = " (http:// can be tampered with on the way: use https://)" * (scheme == "http")
            return f"{repo!r}: the {scheme}:// scheme is not allowed{hint}; {usable}"
        authority = rest.split("/", 1)[0]
        if authority.startswith("-") or authority.rpartition("@")[2].startswith("-"):
            return f"{repo!r}: a user or host that starts with '-' would be read as an option"
        return None
    scp = _SCP_LIKE.match(text)
    if scp and (scp.group("user").startswith("-") or scp.group("host").startswith("-")):
        return f"{repo!r}: a user or host that starts with '-' would be read as an option"
    return None


#: Named priority classes and the integer each one stands for.
PRIORITY_CLASSES: dict[str, int] = {"critical": 100, "high": 75, "normal": 50, "low": 25}

#: Names a project may not take: they are used by the orchestrator's own assets and groups.
RESERVED_NAMES = frozenset({"orchestration", "default"})

#: Placeholders an agent profile's argv may contain.
ARGV_PLACEHOLDERS = frozenset(
    {"prompt", "prompt_file", "model", "session_id", "workdir", "python", "command", "budget"}
)


def priority_class(priority: int) -> str:
    """The named class a numeric priority falls in (critical, high, normal, low)."""
    for name, floor in sorted(PRIORITY_CLASSES.items(), key=lambda item: -item[1]):
        if priority >= floor:
            return name
    return "low"


def _slug(value: str) -> str:
    if not SLUG_PATTERN.fullmatch(value) or len(value) > 63:
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits and '_', "
            f"starting with a letter (for example {_suggest_slug(value)!r})"
        )
    return value


def _suggest_slug(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_")
    cleaned = re.sub(r"^[^a-z]+", "", cleaned)
    return cleaned[:63] or "my_project"


def validate_project_name(value: str) -> str:
    _slug(value)
    if value in RESERVED_NAMES:
        raise ValueError(f"{value!r} is reserved; choose another project name")
    return value


def parse_priority(value: object) -> object:
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        try:
            return PRIORITY_CLASSES[value.strip().lower()]
        except KeyError:
            raise ValueError(
                f"{value!r} is not a priority: use one of {', '.join(PRIORITY_CLASSES)} "
                "or an integer from 0 to 100"
            ) from None
    return value


def _duration(value: object) -> object:
    """Seconds as an integer, or a string such as '90s', '30m', '2h'."""
    if isinstance(value, str):
        match = DURATION_PATTERN.fullmatch(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration: use seconds (600) or '90s', '30m', '2h'"
            )
        factor = {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
        return int(match.group(1)) * factor
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (letters, digits, '_')")
    return value


def _branch(value: str) -> str:
    if not BRANCH_PATTERN.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
        raise ValueError(
            f"{value!r} is not a usable branch name: letters, digits, '.', '_', '-', '/', "
            "starting with a letter or digit, without '..'"
        )
    return value


def _owner(value: str) -> str:
    if not (EMAIL_PATTERN.fullmatch(value) or re.fullmatch(r"team:[A-Za-z0-9_.-]+", value)):
        raise ValueError(f"{value!r} is not an owner: use an email address or 'team:<name>'")
    return value


def _tag_key(value: str) -> str:
    if not TAG_KEY_PATTERN.fullmatch(value):
        raise ValueError(
            f"tag key {value!r} is invalid: letters, digits, '_', '-', '.', at most 63 characters, "
            "optionally one 'namespace/' prefix"
        )
    return value


def _tag_value(value: object) -> object:
    if isinstance(value, bool | int | float):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str) and not TAG_VALUE_PATTERN.fullmatch(value):
        raise ValueError(
            f"tag value {value!r} is invalid: letters, digits, '_', '-', '.', at most 63 characters"
        )
    return value


def is_dagster_cron(value: str) -> bool:
    """True when Dagster accepts `value` as a schedule, so a schedule valid here loads there.

    The same checks as `is_valid_cron_string` in dagster/_utils/schedules.py, on the croniter
    release Dagster vendors, without importing Dagster (whose import is most of a CLI command's
    time): croniter parses it, it has five fields (no seconds), and it is not only February 30
    or 31. tests/unit/registry/test_cron.py compares the two.
    """
    from croniter import croniter  # imported for a schedule only

    if not croniter.is_valid(value):
        return False
    expanded, *_ = croniter.expand(value)
    if len(expanded) != 5:
        return False
    _, _, days, months, _ = expanded
    return not (len(months) == 1 and months[0] == 2 and len(days) == 1 and days[0] in {30, 31})


def _uses(part: str, name: str) -> bool:
    """Whether the argv template element `part` uses the placeholder `name`."""
    return any(field == name for _, field, _, _ in string.Formatter().parse(part))


def _repo(value: str) -> str:
    problem = repo_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _argument(value: str) -> str:
    """A value that becomes one argument of a program: no NUL (no program can receive one)."""
    if "\x00" in value:
        raise ValueError(f"{value!r} contains a NUL character, which no program can receive")
    return value


def _option_value(value: str) -> str:
    """A value filled into an option's place (the model): it must not read as an option."""
    if value.startswith("-") or _CONTROL.search(value):
        raise ValueError(
            f"{value!r} is not a usable value here: it must not start with '-' "
            "or contain control characters"
        )
    return value


def _cron(value: str) -> str:
    if not is_dagster_cron(value):
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '0 6 * * 1-5')")
    return value


def _argv_placeholders(argv: tuple[str, ...]) -> tuple[str, ...]:
    for part in argv:
        try:
            names = {
                field for _, field, _, _ in string.Formatter().parse(part) if field is not None
            }
        except ValueError as exc:
            raise ValueError(f"argv element {part!r} is not a valid template: {exc}") from None
        unknown = names - ARGV_PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"argv element {part!r} uses unknown placeholder(s) "
                f"{', '.join(sorted(unknown))}; valid: {', '.join(sorted(ARGV_PLACEHOLDERS))}"
            )
    return argv


Slug = Annotated[str, AfterValidator(_slug)]
ProjectName = Annotated[str, AfterValidator(validate_project_name)]
Priority = Annotated[int, BeforeValidator(parse_priority), Field(ge=0, le=100)]
Seconds = Annotated[int, BeforeValidator(_duration), Field(ge=1, le=7 * 24 * 3600)]
EnvName = Annotated[str, AfterValidator(_env_name)]
BranchName = Annotated[str, AfterValidator(_branch)]
Owner = Annotated[str, AfterValidator(_owner)]
TagKey = Annotated[str, AfterValidator(_tag_key)]
TagValue = Annotated[str, BeforeValidator(_tag_value)]
Cron = Annotated[str, AfterValidator(_cron)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_argument)]
Argv = Annotated[tuple[NonEmptyText, ...], AfterValidator(_argv_placeholders)]
Repo = Annotated[NonEmptyText, AfterValidator(_repo)]
OptionValue = Annotated[str, Field(min_length=1), AfterValidator(_option_value)]
Dollars = Annotated[float, Field(gt=0, le=1_000_000)]
EnvValue = Annotated[str, AfterValidator(_argument)]


def validate_queue_name(value: str) -> str:
    """A Celery queue name (it becomes a routing key); ValueError saying what is wrong."""
    if not SLUG_PATTERN.fullmatch(value.replace("-", "_")) or len(value) > 63:
        raise ValueError(
            f"{value!r} is not a queue name: 1-63 letters, digits, '_' and '-', starting with "
            "a lowercase letter"
        )
    return value


QueueName = Annotated[str, AfterValidator(validate_queue_name)]


def _channel_path(value: str) -> str:
    """A glob over the publisher's files, relative to its repository root: matched against the
    paths in git's tree (fnmatch, `*` crossing `/`), never given to git or a shell."""
    parts = value.split("/")
    if (
        not value
        or _CONTROL.search(value)
        or value.startswith(("/", "-"))
        or "\\" in value
        or any(part in ("", ".", "..") for part in parts)
        or parts[0] in (".git", ".orch")
    ):
        raise ValueError(
            f"{value!r} is not a channel path: a glob relative to the repository root "
            "(such as 'openapi.yaml' or 'src/pkg/*.pyi'), without '..', a leading '/' or '-', "
            "empty parts, control characters, or .git/ or .orch/"
        )
    return value


def _channel_ref(value: str) -> str:
    publisher, dot, channel = value.partition(".")
    if not dot:
        raise ValueError(f"{value!r} is not a channel: write PUBLISHER.CHANNEL (acme_core.api)")
    validate_project_name(publisher)
    _slug(channel)
    return value


ChannelPath = Annotated[str, Field(max_length=512), AfterValidator(_channel_path)]
ChannelRef = Annotated[str, AfterValidator(_channel_ref)]
ChannelKind = Literal["contract", "messages", "lease"]


class FrozenModel(BaseModel):
    """Base of every registry model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class AgentSettings(FrozenModel):
    """How a project's tasks are run by a coding agent."""

    profile: Slug = "demo"
    max_parallel: int = Field(default=1, ge=1, le=1000)
    timeout: Seconds = 1800
    model: OptionValue | None = None
    resume: bool = False
    command: tuple[NonEmptyText, ...] | None = None


class Budget(FrozenModel):
    """`budget:` of a project, or in pools.yaml of all projects together: what their agents
    may spend in US dollars, a day (UTC) and a calendar month. Each is optional. At 80 % a
    warning; at 100 % the project (or every project) is paused until the period ends."""

    daily_usd: Dollars | None = None
    monthly_usd: Dollars | None = None


class ChannelSpec(FrozenModel):
    """One channel a project publishes: files its subscribers' agents get read-only
    (`contract`), notes posted to them (`messages`), or a shared resource at most `slots`
    of their task runs use at once (`lease`)."""

    name: Slug
    kind: ChannelKind
    paths: tuple[ChannelPath, ...] = ()
    """`contract` only: globs of the files that cross, relative to the repository root."""
    slots: int | None = Field(default=None, ge=1, le=1000)
    """`lease` only: how many subscribers' task runs may hold it at once (default 1)."""
    allow: tuple[ProjectName, ...] | None = None
    """The projects that may subscribe; unset: any project."""
    description: str = ""

    @model_validator(mode="after")
    def _fits_kind(self) -> ChannelSpec:
        if self.kind == "contract" and not self.paths:
            raise ValueError(f"contract channel {self.name!r} needs paths: the files that cross")
        if self.kind != "contract" and self.paths:
            raise ValueError(f"paths are for contract channels; {self.name!r} is {self.kind}")
        if self.kind != "lease" and self.slots is not None:
            raise ValueError(f"slots are for lease channels; {self.name!r} is {self.kind}")
        return self

    @property
    def lease_slots(self) -> int:
        return self.slots or 1


class Channels(FrozenModel):
    """What a project offers other projects (`publish`) and takes from them (`subscribe`:
    `PUBLISHER.CHANNEL` names); checked across files by the loader."""

    publish: tuple[ChannelSpec, ...] = ()
    subscribe: tuple[ChannelRef, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Channels:
        for what, names in (
            ("published channel", [channel.name for channel in self.publish]),
            ("subscription", list(self.subscribe)),
        ):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{what} {', '.join(map(repr, repeated))} is listed twice")
        return self

    def published(self, name: str) -> ChannelSpec | None:
        return next((channel for channel in self.publish if channel.name == name), None)


class ProjectSpec(FrozenModel):
    """One project (a git repository) as the registry resolved it."""

    name: ProjectName
    repo: Repo
    branch: BranchName = "main"
    priority: Priority = PRIORITY_CLASSES["normal"]
    extends: Slug | None = None
    description: str = ""
    agent: AgentSettings = AgentSettings()
    depends_on: tuple[ProjectName, ...] = ()
    ignore_dependencies: tuple[ProjectName, ...] = ()
    verify: tuple[NonEmptyText, ...] = ()
    verify_in_change: tuple[NonEmptyText, ...] = ()
    """The argv that verifies the project inside a change set, with ORCH_CHANGE_<PROJECT>
    naming the other members' checkouts; empty: `verify`."""
    verify_timeout: Seconds = 1800
    secrets: tuple[EnvName, ...] = ()
    schedule: Cron | None = None
    owners: tuple[Owner, ...] = ()
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)
    deliver: Literal["none", "local", "origin"] = "none"
    """Where a task's branch goes on its own once the task succeeded and its verification
    passed: nowhere, the user's own repository (`local`), or the project's remote (`origin`)."""
    budget: Budget | None = None
    """What the project's agents may spend a day and a month; none: no limit."""
    placement: QueueName | None = None
    """The Celery queue (so the host) the project's runs go to; none: one chosen by a stable
    hash of its name among ORCH_CELERY_QUEUES."""
    channels: Channels = Channels()
    """The channels it publishes and those of other projects it subscribes to."""

    @property
    def is_remote(self) -> bool:
        """True when `repo` is a git URL rather than a local path."""
        return is_remote_url(self.repo)

    @property
    def priority_class(self) -> str:
        """The named class the numeric priority falls in (critical, high, normal, low)."""
        return priority_class(self.priority)


OutputFormat = Literal["claude_json", "claude_stream_json", "codex_jsonl", "gemini_json", "text"]


class AgentProfile(FrozenModel):
    """How to run one coding-agent CLI: an argv template, its output format, what it may see.

    The prompt reaches the CLI where no option parser can take it, exactly one way: as the
    argv element `{prompt}` after a `--` element, on standard input (`prompt_stdin`), or
    through `{prompt_file}`, a path the CLI reads it from (the orchestrator feeds it there
    through standard input). `model_args` and `resume_args` go just before argv's `--`.
    """

    description: str = ""
    argv: Argv = Field(min_length=1)
    output: OutputFormat
    env: tuple[EnvName, ...] = ()
    model_args: Argv = ()
    resume_args: Argv = ()
    session_args: Argv = ()
    """Options that start a new session under an id the orchestrator chooses (`{session_id}`),
    so the session of an agent interrupted before it answered can still be resumed."""
    budget_args: Argv = ()
    """Options that cap what one run may spend (`{budget}`: US dollars), given to the tasks of
    a project with a budget: what is left of it (Claude Code: `--max-budget-usd`)."""
    prompt_stdin: bool = False
    """Whether the CLI reads the prompt from its standard input."""
    config_dir_env: EnvName | None = None
    pool: Slug = GLOBAL_POOL
    provider_pool: Slug | None = None
    """The provider account the agent spends (say `anthropic_max`): profiles on one account
    share its pool `provider_<name>`, which a usage limit closes until the provider's reset."""
    set_env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    """Variables set in the agent's environment whatever the parent's say (Codex: `TZ: UTC`,
    so the reset time it prints is read as UTC)."""
    offline: bool = False
    network: bool = True
    """Whether the agent's sandbox may reach the network (agents call their providers' APIs)."""

    @model_validator(mode="after")
    def _set_env_keeps_isolation(self) -> AgentProfile:
        own = {"HOME", *([self.config_dir_env] if self.config_dir_env else [])}
        taken = sorted(own & set(self.set_env))
        if taken:
            raise ValueError(
                f"set_env: {', '.join(taken)} cannot be set here: the orchestrator sets it to "
                "the project's own agent home"
            )
        return self

    @model_validator(mode="after")
    def _command_is_a_whole_argument(self) -> AgentProfile:
        for key in ("argv", "model_args", "resume_args", "session_args", "budget_args"):
            for part in getattr(self, key):
                if COMMAND_PLACEHOLDER in part and (key != "argv" or part != COMMAND_PLACEHOLDER):
                    raise ValueError(
                        f"{key}: {COMMAND_PLACEHOLDER} stands for the project's whole "
                        "agent.command list, so it must be an argv element of its own "
                        f"(found {part!r})"
                    )
        return self

    @model_validator(mode="after")
    def _prompt_is_never_an_option(self) -> AgentProfile:
        for key in ("model_args", "resume_args", "session_args", "budget_args"):
            for part in getattr(self, key):
                if _uses(part, "prompt") or _uses(part, "prompt_file"):
                    raise ValueError(
                        f"{key}: the prompt cannot be passed in {key} (found {part!r}); "
                        f"put {PROMPT_PLACEHOLDER} in argv after a '{END_OF_OPTIONS}' element"
                    )
                if part == END_OF_OPTIONS:
                    raise ValueError(
                        f"{key}: '{END_OF_OPTIONS}' cannot appear here; {key} are options, "
                        f"placed before the '{END_OF_OPTIONS}' of argv"
                    )
        ways = []
        for index, part in enumerate(self.argv):
            for name in ("prompt", "prompt_file"):
                if not _uses(part, name):
                    continue
                placeholder = "{" + name + "}"
                if part != placeholder:
                    raise ValueError(
                        f"argv: {placeholder} must be an argv element of its own, so that "
                        f"nothing is glued to the prompt (found {part!r})"
                    )
                if name == "prompt" and END_OF_OPTIONS not in self.argv[:index]:
                    raise ValueError(
                        f"argv: {PROMPT_PLACEHOLDER} must come after a '{END_OF_OPTIONS}' "
                        "element, so that a prompt such as '--resume=x' or '- fix it' is never "
                        "read as an option; or set prompt_stdin: true"
                    )
                ways.append(placeholder)
        if self.prompt_stdin:
            ways.append("prompt_stdin: true")
        if len(ways) != 1:
            found = ", ".join(ways) if ways else "none"
            raise ValueError(
                "argv: the profile must pass the prompt exactly one way: "
                f"{PROMPT_PLACEHOLDER} after '{END_OF_OPTIONS}', {PROMPT_FILE_PLACEHOLDER}, "
                f"or prompt_stdin: true (found {found})"
            )
        return self

    @property
    def runs_project_command(self) -> bool:
        """True when the profile runs the project's own `agent.command`."""
        return COMMAND_PLACEHOLDER in self.argv


class AgentsFile(FrozenModel):
    """`resources/agents.yaml`: the environment every agent gets, and the profiles."""

    base_env: tuple[EnvName, ...] = DEFAULT_BASE_ENV
    profiles: dict[Slug, AgentProfile]


class Pool(FrozenModel):
    """A number of agent slots that runs share."""

    slots: int = Field(ge=0, le=100_000)
    description: str = ""
    ageing_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """Only for the global `agents` pool: how long a waiting task takes to outrank any task
    that waited less (starvation protection)."""
    grace_seconds: int = Field(default=90, ge=0, le=24 * 3600)
    """Only for a provider pool (`provider_<name>`): how long after the provider's reset time
    its pool stays closed before one canary task may try it."""


class Preemption(FrozenModel):
    """`preemption:` in pools.yaml: when a waiting task may take a running task's slot."""

    after: Seconds
    """How long a task must have waited before it may preempt."""
    min_priority: Priority = PRIORITY_CLASSES["critical"]
    """The priority (class or 0-100) a waiting task needs, its project's or its own."""
    max_per_task: int = Field(default=2, ge=0, le=100)
    """How many times one task may be preempted; then it runs to its end."""


class BackupFile(FrozenModel):
    """`config/backup.yaml` (optional): the scheduled backup, off when the file is absent."""

    schedule: Cron
    """When to back up and verify: a five-field cron expression."""
    keep: int = Field(default=7, ge=1, le=1000)
    """How many backups to keep in `to`; older ones are deleted after a new one verified."""
    to: str | None = None
    """The directory backups go to (`${ORCH_HOME}` may start it); default ORCH_HOME/backups."""
    verify: bool = True
    """Restore each new backup into a scratch place and compare its digest."""


class PoolsFile(FrozenModel):
    """`config/pools.yaml`: the slot pools (`agents` is the global pool every agent uses) and
    the preemption rule (off when absent)."""

    pools: dict[Slug, Pool]
    preemption: Preemption | None = None
    budget: Budget | None = None
    """What all projects' agents together may spend a day and a month."""


#: What an alert can be about (config/alerts.yaml `events`). `budget` and `provider` (an
#: account paused by its usage limit, and open again) are posted by the `monitoring` sensor
#: through `orchestration.alerts.Alerts.notify`.
AlertEvent = Literal["task_failed", "verification_failed", "budget", "provider", "run_stuck"]
ALERT_EVENTS: tuple[AlertEvent, ...] = get_args(AlertEvent)
#: `${NAME}` in a webhook URL: the value of the environment variable NAME, read when posting.
ENV_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
WEBHOOK_SCHEMES = ("http", "https")


def placeholders(text: str) -> tuple[str, ...]:
    """The environment variables `text` reads as `${NAME}`, in order."""
    return tuple(ENV_PLACEHOLDER.findall(text))


def expand_placeholders(text: str, environ: Mapping[str, str]) -> str:
    """`text` with every `${NAME}` replaced by NAME's value in `environ`; KeyError naming the
    first variable that is not set (or empty)."""

    def value(match: re.Match[str]) -> str:
        found = environ.get(match.group(1))
        if not found:
            raise KeyError(match.group(1))
        return found

    return ENV_PLACEHOLDER.sub(value, text)


def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be posted to, or None: an http(s) URL with a host, no whitespace or
    control characters. The message never repeats the URL, which may hold a secret."""
    if _CONTROL.search(url) or any(char.isspace() for char in url):
        return "the webhook URL contains whitespace or a control character"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in WEBHOOK_SCHEMES or not parts.hostname:
        return "the webhook URL must be http:// or https:// with a host"
    return None


def _webhook_url(value: str) -> str:
    """A webhook URL as written in alerts.yaml: checked as far as it can be before the
    environment fills its `${VAR}` parts (a URL that is all `${VAR}` is checked when posting)."""
    for name in placeholders(value):
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"${{{name}}} does not name an environment variable (letters, digits, '_')"
            )
    if "${" in ENV_PLACEHOLDER.sub("", value):
        raise ValueError("a '${' in the webhook URL is not closed by '}'")
    if value.startswith("${"):
        return value
    problem = webhook_url_problem(ENV_PLACEHOLDER.sub("x", value))
    if problem:
        raise ValueError(f"{problem}, or ${{VAR}} to read it from the environment")
    return value


def _webhook_list(webhooks: tuple[AlertWebhook, ...]) -> tuple[AlertWebhook, ...]:
    """At least one webhook, each name once (checked once every entry is valid)."""
    if not webhooks:
        raise ValueError("add at least one webhook (name and url); without any, delete the file")
    names = [webhook.name for webhook in webhooks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"webhook names must differ: {', '.join(repeated)} is used twice")
    return webhooks


class AlertWebhook(FrozenModel):
    """One place alerts are posted to."""

    name: Slug
    """Names the webhook in logs (its URL is never logged whole)."""
    url: Annotated[str, Field(min_length=1), AfterValidator(_webhook_url)]
    """http(s) URL; `${VAR}` parts are read from the environment when posting (secrets)."""
    format: Literal["json", "slack"] = "json"
    """`json`: the alert as a JSON object; `slack`: Slack's incoming-webhook message."""
    events: tuple[AlertEvent, ...] = Field(default=ALERT_EVENTS, min_length=1)
    """Which alerts go to this webhook (default: all)."""
    timeout_s: float = Field(default=5, gt=0, le=60)
    """How long one POST may take."""


class AlertsFile(FrozenModel):
    """`config/alerts.yaml` (optional): where alerts are posted; no alerts when it is absent."""

    webhooks: Annotated[tuple[AlertWebhook, ...], AfterValidator(_webhook_list)]
    """Where alerts go: at least one."""
    retries: int = Field(default=3, ge=0, le=10)
    """How many times a failed POST is tried again."""
    backoff_s: float = Field(default=2, ge=0, le=600)
    """The wait before the first retry; it doubles with each retry."""
    stuck_after_s: Seconds = 3600
    """A run in progress for longer than this is stuck (one alert per run)."""
