"""A change set delivered all or none: every member is checked first (its task's branch there
is free or behind, the remote reachable), then each is delivered, providers first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestration.changes.sets import Change, ChangeError, ChangeSets
from orchestration.delivery.deliver import DeliveryError, deliver, deliver_task
from orchestration.registry.loader import Registry
from orchestration.tasks.store import TaskStore


def deliver_change(
    store: TaskStore,
    registry: Registry,
    home: Path,
    change: Change,
    to: str,
    *,
    report: Callable[[str], None] = lambda _line: None,
) -> Change:
    """Deliver every member's task branch to `to` (`local` or `origin`), providers first, once
    all were checked; ChangeError, with nothing delivered, when a check fails or the change is
    not verified together. Each member's delivery is recorded on its task, the change's on the
    change."""
    changes = ChangeSets(store)
    if not change.all_verified:
        raise ChangeError(
            f"change {change.id} is {change.status}: only a change verified together is "
            "delivered (`orch change show` says what is missing)"
        )
    members = []
    problems = []
    for member in change.members:
        spec = registry.spec(member.project)
        assert member.task is not None  # all verified: every member has its task
        if spec is None:
            problems.append(f"{member.project}: not valid in the registry now")
            continue
        try:
            deliver(home, spec, member.task, to, check_only=True)
        except DeliveryError as exc:
            problems.append(f"{member.project}: {exc}")
        members.append((spec, member.task))
    if problems:
        message = "nothing delivered; " + "; ".join(problems)
        changes.record_delivery(change.id, to, error=message)
        raise ChangeError(message)
    for spec, task in members:
        try:
            deliver_task(store, home, spec, task, to, report=report)
        except DeliveryError as exc:
            # Checked a moment ago: only something that changed since (a branch made there
            # meanwhile, the remote gone) stops it now, after the providers before it.
            message = f"{spec.name}: {exc} (the members before it were delivered)"
            changes.record_delivery(change.id, to, error=message)
            raise ChangeError(message) from None
    return changes.record_delivery(change.id, to)
