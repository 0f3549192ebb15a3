"""Channels across project files: who publishes what, who may subscribe, and the checks the
loader makes once every file is read (a subscription must name a channel its publisher
declares and allows the subscriber; a lease's pool name must be its own)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestration.registry.errors import RegistryError, error_at
from orchestration.registry.layers import display_path
from orchestration.registry.models import ChannelSpec, ProjectSpec
from orchestration.tags import lease_pool

if TYPE_CHECKING:
    from orchestration.registry.loader import LoadedProject


@dataclass(frozen=True)
class Subscription:
    """One subscribed channel, resolved: its publisher and its declaration."""

    publisher: str
    channel: ChannelSpec

    @property
    def ref(self) -> str:
        return f"{self.publisher}.{self.channel.name}"


def split_ref(ref: str) -> tuple[str, str]:
    """`PUBLISHER.CHANNEL` as (publisher, channel)."""
    publisher, _, channel = ref.partition(".")
    return publisher, channel


def subscriptions(specs: Mapping[str, ProjectSpec], spec: ProjectSpec) -> list[Subscription]:
    """The channels `spec` subscribes to whose publisher is among `specs` and declares them, in
    the order the file lists them (a publisher broken or archived since is left out)."""
    found = []
    for ref in spec.channels.subscribe:
        publisher, name = split_ref(ref)
        declared = specs[publisher].channels.published(name) if publisher in specs else None
        if declared is not None:
            found.append(Subscription(publisher, declared))
    return found


def subscribers(specs: Mapping[str, ProjectSpec], publisher: str, channel: str) -> list[str]:
    """The projects among `specs` that subscribe to `publisher.channel`, sorted."""
    ref = f"{publisher}.{channel}"
    return sorted(name for name, spec in specs.items() if ref in spec.channels.subscribe)


def published(specs: Mapping[str, ProjectSpec]) -> list[tuple[str, ChannelSpec]]:
    """Every (publisher, channel) among `specs`, sorted by publisher then channel."""
    return sorted(
        ((name, channel) for name, spec in specs.items() for channel in spec.channels.publish),
        key=lambda item: (item[0], item[1].name),
    )


def lease_pools(specs: Mapping[str, ProjectSpec]) -> dict[str, int]:
    """Every lease channel's pool and its slots."""
    return {
        lease_pool(publisher, channel.name): channel.lease_slots
        for publisher, channel in published(specs)
        if channel.kind == "lease"
    }


def check_channels(
    projects: Sequence[LoadedProject], all_names: Iterable[str], archived: Iterable[str]
) -> tuple[list[LoadedProject], list[RegistryError], list[str]]:
    """The projects whose channels hold across files, the errors of the others (each in the
    file at fault, naming the other file too), and warnings.

    First each publisher: an `allow` entry must name a project, and a lease's pool name must
    not be another lease's. Then each subscriber, against the publishers left: the channel must
    be declared and allow it. A subscription to a project that is broken or archived is a
    warning (its channels cannot be checked now), not an error.
    """
    names, gone = set(all_names), set(archived)
    errors: list[RegistryError] = []
    warnings: list[str] = []
    broken: set[str] = set()
    pools: dict[str, str] = {}
    for project in projects:
        shown = display_path(project.path)
        for index, channel in enumerate(project.spec.channels.publish):
            loc: tuple[str | int, ...] = ("channels", "publish", index)
            for position, allowed in enumerate(channel.allow or ()):
                if allowed not in names and allowed not in gone:
                    known = ", ".join(sorted(names - {project.name})) or "none"
                    errors.append(
                        error_at(
                            (*loc, "allow", position),
                            f"unknown project {allowed!r}; projects: {known}",
                            project.origins,
                            shown,
                        )
                    )
                    broken.add(project.name)
            if channel.kind == "lease":
                pool = lease_pool(project.name, channel.name)
                other = pools.setdefault(pool, f"{project.name}.{channel.name}")
                if other != f"{project.name}.{channel.name}":
                    errors.append(
                        error_at(
                            (*loc, "name"),
                            f"lease {project.name}.{channel.name} would share the pool {pool!r} "
                            f"with lease {other}: rename one of them",
                            project.origins,
                            shown,
                        )
                    )
                    broken.add(project.name)
    publishers = {p.name: p for p in projects if p.name not in broken}
    for project in projects:
        if project.name in broken:
            continue
        shown = display_path(project.path)
        for index, ref in enumerate(project.spec.channels.subscribe):
            problem = _subscription_problem(project.name, ref, publishers, names, gone)
            if problem is None:
                continue
            message, is_error = problem
            if is_error:
                errors.append(
                    error_at(("channels", "subscribe", index), message, project.origins, shown)
                )
                broken.add(project.name)
            else:
                warnings.append(f"{shown}: channels.subscribe.{index}: {message}")
    return [p for p in projects if p.name not in broken], errors, warnings


def _subscription_problem(
    subscriber: str,
    ref: str,
    publishers: Mapping[str, LoadedProject],
    names: set[str],
    archived: set[str],
) -> tuple[str, bool] | None:
    """What is wrong with `subscriber` subscribing to `ref`, and whether it is an error (or a
    warning); None when nothing is."""
    publisher, name = split_ref(ref)
    if publisher == subscriber:
        return f"{ref}: a project cannot subscribe to its own channel", True
    if publisher not in publishers:
        if publisher in archived and publisher not in names:
            return f"{ref}: project {publisher!r} is archived; its channels reach no one", False
        if publisher in names:
            return (
                f"{ref}: project {publisher!r} has errors, so its channels cannot be checked "
                "(its channels reach no one until it is fixed)",
                False,
            )
        known = ", ".join(sorted(names - {subscriber})) or "none"
        return f"{ref}: unknown project {publisher!r}; projects: {known}", True
    source = publishers[publisher]
    channel = source.spec.channels.published(name)
    source_file = display_path(source.path)
    if channel is None:
        offered = ", ".join(c.name for c in source.spec.channels.publish) or "none"
        return (
            f"{ref}: {source_file} publishes no channel {name!r} (it publishes: {offered})",
            True,
        )
    if channel.allow is not None and subscriber not in channel.allow:
        allowed = ", ".join(channel.allow) or "no project"
        return (
            f"{ref}: {source_file} allows only {allowed} to subscribe to {name!r}, "
            f"not {subscriber}",
            True,
        )
    return None
