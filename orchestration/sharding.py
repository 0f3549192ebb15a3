"""Which code location holds a project when the registry is split over several.

A registry of thousands of projects loads in time proportional to its size, and every reload of
the code location (the UI's button, the daemon's workspace refresh, a new project, a changed
dependency graph) pays all of it again, as does every run worker that starts. Split over N code
locations (`ORCH_SHARD=i/N` for a code server, or the attribute `shard_<i>_of_<N>` of
`orchestration.defs.definitions` in a workspace file), each defines only the projects a stable
hash of their name gives it, so each load, reload and run start pays for its share.

What stays global lives in the instance and the task database, which every shard shares: the
pools and their limits, the run queue and its priorities, the tasks. What is defined once
lives in shard 0, the primary: the registry and dependency assets, the portfolio, providers and
change sets, and the sensors that keep global state (pool limits, holds, re-ranking, the
reconciliation of ended runs, monitoring, channels, imports, backups, alerts). Every shard
launches its own projects' task runs and refreshes its own projects.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SHARD_VAR = "ORCH_SHARD"
DEFINITIONS_MODULE = "orchestration.defs.definitions"
#: The code location of an unsplit registry (workspace.yaml), and the prefix of a shard's.
LOCATION = "orchestration"
_SHARD_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_ATTRIBUTE = re.compile(r"shard_(\d+)_of_(\d+)")
_LOCATION = re.compile(re.escape(LOCATION) + r"_(\d+)_of_(\d+)")
#: More code locations than this is a typo, not a deployment.
MAX_SHARDS = 256
#: The most projects one Dagster op holds checks of (`split_evenly`).
MOST_PER_OP = 500


class ShardError(ValueError):
    """An `ORCH_SHARD` value (or a shard attribute) that names no shard."""


def stable_bucket(name: str, count: int) -> int:
    """One of `count` buckets for `name`, the same on every host, load and Python (CRC-32 of
    its UTF-8 bytes, not `hash()`, which is salted per process)."""
    return zlib.crc32(name.encode("utf-8")) % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; `Shard(0, 1)` is the whole registry in one code location."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"the number of shards must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"shard {self.index} of {self.count} does not exist: shards are numbered "
                f"0 to {self.count - 1}"
            )

    @property
    def primary(self) -> bool:
        """The shard that defines what exists once (see the module's docstring)."""
        return self.index == 0

    @property
    def whole(self) -> bool:
        return self.count == 1

    def holds(self, project: str) -> bool:
        return self.whole or stable_bucket(project, self.count) == self.index

    @property
    def location(self) -> str:
        """Its code location's name: `orchestration`, or `orchestration_<i>_of_<N>`."""
        return LOCATION if self.whole else f"{LOCATION}_{self.index}_of_{self.count}"

    @property
    def attribute(self) -> str:
        """Its definitions' attribute in `orchestration.defs.definitions`."""
        return "defs" if self.whole else f"shard_{self.index}_of_{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


#: The whole registry in one code location (no `ORCH_SHARD`).
WHOLE = Shard()


def parse_shard(text: str) -> Shard:
    """`i/N` -> Shard(i, N); ShardError naming the variable otherwise."""
    match = _SHARD_TEXT.fullmatch(text)
    if match is None:
        raise ShardError(f"{SHARD_VAR}={text!r}: expected INDEX/COUNT, for example 0/4")
    try:
        return Shard(int(match.group(1)), int(match.group(2)))
    except ShardError as exc:
        raise ShardError(f"{SHARD_VAR}={text!r}: {exc}") from None


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard:
    """The shard `ORCH_SHARD` names; the whole registry when it is unset or empty."""
    env = os.environ if environ is None else environ
    text = env.get(SHARD_VAR, "").strip()
    return parse_shard(text) if text else WHOLE


def shard_of_attribute(name: str) -> Shard | None:
    """The shard an attribute name `shard_<i>_of_<N>` names; None for any other name."""
    match = _ATTRIBUTE.fullmatch(name)
    return Shard(int(match.group(1)), int(match.group(2))) if match else None


def location_of(project: str, locations: list[str]) -> str | None:
    """The code location among `locations` (a workspace's) that holds `project`: the unsplit
    one, or the shard whose index its name hashes to; None when the workspace has neither."""
    if LOCATION in locations:
        return LOCATION
    for name in locations:
        match = _LOCATION.fullmatch(name)
        if match is None:
            continue
        try:
            shard = Shard(int(match.group(1)), int(match.group(2)))
        except ShardError:
            continue
        if shard.holds(project):
            return name
    return None


def split_evenly(names: Sequence[str], most: int = MOST_PER_OP) -> list[list[str]]:
    """`names` in as few groups of about `most` as a stable hash makes (one group up to `most`),
    each name in the same group on every load of the same number of groups.

    For one Dagster op over many assets or checks: Dagster joins an op's inputs to its checks
    in time proportional to their product (`build_node_deps`, dagster 1.13), so one op over
    10,000 projects' checks costs a hundred times one over 1,000.
    """
    count = -(-len(names) // most)
    if count <= 1:
        return [list(names)] if names else []
    groups: list[list[str]] = [[] for _ in range(count)]
    for name in names:
        groups[stable_bucket(name, count)].append(name)
    return [group for group in groups if group]


def workspace_document(count: int, working_directory: str = ".") -> dict[str, object]:
    """A Dagster workspace file's content for `count` shards on this host: one code location per
    shard (`orchestration_<i>_of_<N>`, the attribute `shard_<i>_of_<N>`), the unsplit
    `orchestration` location for one."""
    shards = [Shard(index, count) for index in range(count)]
    return {
        "load_from": [
            {
                "python_module": {
                    "module_name": DEFINITIONS_MODULE,
                    **({} if shard.whole else {"attribute": shard.attribute}),
                    "working_directory": working_directory,
                    "location_name": shard.location,
                }
            }
            for shard in shards
        ]
    }
