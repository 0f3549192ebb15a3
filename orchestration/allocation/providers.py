"""Provider accounts and their usage limits: when an agent's run says the account it spends hit
its plan's limit, the account's pool (`provider_<name>`) closes until the provider's reset plus
a grace, then reopens through one canary slot, then fully.

- A limit with a reset time closes the pool until that time plus the pool's `grace_seconds`.
- A limit without one (the text could not be read) closes it for a backoff: 15 minutes, doubling
  on each limit in a row, at most the provider's window (5 hours, or 7 days for a weekly one);
  a success resets it. An account out of credits stays closed until `orch providers resume`.
- A plain 429 without a plan signal (an API key's per-minute limit) closes it briefly: 90 s,
  doubling on each in a row, at most 15 minutes.
- Once the pause ends, the pool holds one slot (the canary) until a task on the account
  succeeds or `CANARY_S` passes without a new limit; a canary that hits the limit again closes
  the pool anew, for longer: never a tight loop.

Pure transitions over `ProviderState`, and `ProviderStates`, their table in the task database
(`orch_providers`, revision 0005), so the daemon, the run workers and the CLI see the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.registry.models import PoolsFile
from orchestration.tags import provider_pool
from orchestration.tasks.store import TaskStore

#: How long the canary slot is all the account gets after a pause ends.
CANARY_S = 120.0
#: The first backoff when a limit gave no reset time; it doubles on each limit in a row.
BACKOFF_MIN_S = 15 * 60.0
#: The longest backoff without a reset time, by the provider's window.
BACKOFF_MAX_S = {"five_hour": 5 * 3600.0, "seven_day": 7 * 86400.0}
DEFAULT_BACKOFF_MAX_S = 5 * 3600.0
#: A plain 429 (no plan signal): the first pause, doubling on each in a row, at most...
TRANSIENT_MIN_S = 90.0
TRANSIENT_MAX_S = 15 * 60.0
#: The grace after a reset when the pool's own is not configured.
DEFAULT_GRACE_S = 90.0
#: Who a transition made by an agent's run is recorded as.
LIMIT_ACTOR = "usage limit"


class ProviderStatus(StrEnum):
    OPEN = "open"
    #: Closed: no task on the account starts (its pool's limit is 0).
    PAUSED = "paused"
    #: Tried again through one slot.
    CANARY = "canary"


@dataclass(frozen=True)
class ProviderState:
    """Where one provider account stands."""

    name: str
    status: ProviderStatus = ProviderStatus.OPEN
    #: Paused: when the canary may try (None: until resumed by hand). Canary: when the account
    #: reopens fully if no new limit came.
    until: datetime | None = None
    reason: str | None = None
    #: The provider's window of the last limit (five_hour, seven_day, ...), when it said.
    window: str | None = None
    source_task: str | None = None
    since: datetime | None = None
    #: The last backoff used for a limit in a row (0 after a success).
    backoff_s: float = 0.0
    actor: str | None = None

    @property
    def paused(self) -> bool:
        """Whether tasks on the account are held back (closed, or tried through one slot)."""
        return self.status is not ProviderStatus.OPEN

    def limit(self, configured: int) -> int:
        """The account's pool limit now, `configured` when open."""
        if self.status is ProviderStatus.PAUSED:
            return 0
        if self.status is ProviderStatus.CANARY:
            return min(1, configured)
        return configured

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "paused": self.paused,
            "until": self.until.isoformat() if self.until else None,
            "reason": self.reason,
            "window": self.window,
            "source_task": self.source_task,
            "since": self.since.isoformat() if self.since else None,
            "backoff_s": self.backoff_s,
            "actor": self.actor,
        }


def after_limit(
    state: ProviderState, limit: UsageLimit, *, task: str | None, now: datetime, grace_s: float
) -> ProviderState:
    """The account's state once a run on it hit `limit` (USAGE_LIMIT or TRANSIENT) at `now`.
    Idempotent for the runs in flight that hit the same limit: a pause is only ever extended."""
    backoff = 0.0
    if limit.kind is LimitKind.TRANSIENT:
        backoff = _doubled(state.backoff_s, TRANSIENT_MIN_S, TRANSIENT_MAX_S)
        until: datetime | None = now + timedelta(seconds=backoff)
        reason = f"rate limited (HTTP 429, no plan limit): paused {backoff:.0f}s"
    elif limit.resets_at is not None and limit.resets_at > now:
        until = limit.resets_at + timedelta(seconds=grace_s)
        reason = f"usage limit; resets {limit.resets_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
    elif limit.source == "codex_credits":
        until = None
        reason = "out of credits: `orch providers resume` once the account has credit again"
    else:
        cap = BACKOFF_MAX_S.get(_window_class(limit.window), DEFAULT_BACKOFF_MAX_S)
        backoff = _doubled(state.backoff_s, BACKOFF_MIN_S, cap)
        until = now + timedelta(seconds=backoff)
        reason = f"usage limit, no reset time given: paused {backoff / 60:.0f} min"
    if limit.message:
        reason += f" ({limit.message[:200]})"
    if state.status is ProviderStatus.PAUSED:
        if state.until is None:
            return state  # held until resumed by hand
        if until is not None and until <= state.until:
            return state  # another run in flight hit the same limit
    return ProviderState(
        name=state.name,
        status=ProviderStatus.PAUSED,
        until=until,
        reason=reason,
        window=limit.window,
        source_task=task,
        since=now,
        backoff_s=backoff or state.backoff_s,
        actor=LIMIT_ACTOR,
    )


def advanced(state: ProviderState, now: datetime) -> ProviderState:
    """The state as time moved it: a pause that ended becomes a canary, a canary window that
    ended without a new limit opens the account."""
    if state.status is ProviderStatus.PAUSED and state.until is not None and now >= state.until:
        return replace(
            state,
            status=ProviderStatus.CANARY,
            until=now + timedelta(seconds=CANARY_S),
            since=now,
            reason=f"trying one task after the pause ({state.reason})",
        )
    if state.status is ProviderStatus.CANARY and state.until is not None and now >= state.until:
        return _opened(state, now, "no limit during the canary window")
    return state


def after_success(state: ProviderState, now: datetime) -> ProviderState:
    """The state once a task on the account succeeded: a canary opens it, a backoff resets.
    A success of a run that started before a pause does not end the pause."""
    if state.status is ProviderStatus.CANARY:
        return _opened(state, now, f"canary succeeded; {state.reason or ''}".rstrip("; "))
    if state.status is ProviderStatus.OPEN and state.backoff_s:
        return replace(state, backoff_s=0.0)
    return state


def resumed(state: ProviderState, now: datetime, actor: str) -> ProviderState:
    """The account opened by hand (`orch providers resume`)."""
    return ProviderState(state.name, since=now, actor=actor, reason=f"resumed by {actor}")


def _opened(state: ProviderState, now: datetime, reason: str) -> ProviderState:
    return ProviderState(
        state.name, since=now, actor=state.actor, reason=reason, backoff_s=state.backoff_s
    )


def _doubled(previous: float, first: float, cap: float) -> float:
    return min(cap, max(first, previous * 2)) if previous >= first else min(cap, first)


def _window_class(window: str | None) -> str:
    return "seven_day" if window and window.startswith("seven_day") else "five_hour"


_metadata = sa.MetaData()
#: Made by the task database's migrations (orchestration.tasks.migrations, revision 0005).
providers_table = sa.Table(
    "orch_providers",
    _metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column("window", sa.String(64)),
    sa.Column("source_task", sa.String(64)),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("backoff_s", sa.Float, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
)


class ProviderStates:
    """The provider accounts' states in the task database; an account never recorded is open."""

    def __init__(self, store: TaskStore) -> None:
        self.engine = store.engine

    def all(self) -> dict[str, ProviderState]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(providers_table)).all()
        return {row.name: _state(row) for row in rows}

    def get(self, name: str) -> ProviderState:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(providers_table).where(providers_table.c.name == name)
            ).first()
        return _state(row) if row is not None else ProviderState(name)

    def hit_limit(
        self, name: str, limit: UsageLimit, *, task: str | None, now: datetime, grace_s: float
    ) -> ProviderState:
        """Record that a run on `name` hit `limit`; the state after."""
        return self._change(
            name, lambda state: after_limit(state, limit, task=task, now=now, grace_s=grace_s)
        )

    def succeeded(self, name: str, now: datetime) -> ProviderState:
        return self._change(name, lambda state: after_success(state, now))

    def resume(self, name: str, now: datetime, actor: str) -> ProviderState:
        return self._change(name, lambda state: resumed(state, now, actor))

    def advance(self, now: datetime, names: Iterable[str] | None = None) -> list[ProviderState]:
        """Move every recorded account on with time (pauses ended, canary windows over); the
        accounts that changed, as they are now."""
        moved = []
        for name, state in self.all().items():
            if names is not None and name not in names:
                continue
            if advanced(state, now) != state:
                moved.append(self._change(name, lambda current: advanced(current, now)))
        return moved

    def _change(self, name: str, change: Callable[[ProviderState], ProviderState]) -> ProviderState:
        """Apply `change` to the account's state as a compare-and-set on the stored row (tried
        again while another process changes it meanwhile); the state after."""
        for _ in range(50):
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(providers_table).where(providers_table.c.name == name)
                ).first()
            before = _state(row) if row is not None else ProviderState(name)
            after = change(before)
            if after == before:
                return before
            try:
                with self.engine.begin() as conn:
                    if row is None:
                        conn.execute(providers_table.insert().values(**_row(after)))
                        return after
                    same = sa.and_(
                        *(
                            providers_table.c[key] == value
                            if value is not None
                            else providers_table.c[key].is_(None)
                            for key, value in row._mapping.items()
                        )
                    )
                    if conn.execute(
                        providers_table.update().where(same).values(**_row(after))
                    ).rowcount:
                        return after
            except sa.exc.IntegrityError:
                continue  # another process recorded the account first
        raise RuntimeError(f"provider {name}: its state kept changing under this process")


def _state(row: Any) -> ProviderState:
    return ProviderState(
        name=row.name,
        status=ProviderStatus(row.status),
        until=_utc(row.until),
        reason=row.reason,
        window=row.window,
        source_task=row.source_task,
        since=_utc(row.since),
        backoff_s=float(row.backoff_s or 0.0),
        actor=row.actor,
    )


def _row(state: ProviderState) -> dict[str, Any]:
    return {
        "name": state.name,
        "status": str(state.status),
        "until": state.until,
        "reason": state.reason,
        "window": state.window,
        "source_task": state.source_task,
        "since": state.since or datetime.now(UTC),
        "backoff_s": state.backoff_s,
        "actor": state.actor or LIMIT_ACTOR,
    }


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def provider_pools(profiles: Mapping[str, Any]) -> list[str]:
    """The provider accounts the agent profiles name, sorted."""
    return sorted({p.provider_pool for p in profiles.values() if p.provider_pool})


def provider_slots(pools: PoolsFile | None, account: str, global_slots: int) -> int:
    """How many slots an account's pool has when open: its own entry in pools.yaml, else as
    many as the global pool (`global_slots`), so that only a usage limit ever holds it back."""
    pool = pools.pools.get(provider_pool(account)) if pools else None
    return pool.slots if pool is not None else global_slots


def grace_seconds(pools: PoolsFile | None, account: str) -> float:
    """How long after a reset the account's pool stays closed: its pool's `grace_seconds` in
    pools.yaml, else DEFAULT_GRACE_S."""
    pool = pools.pools.get(provider_pool(account)) if pools else None
    return float(pool.grace_seconds) if pool is not None else DEFAULT_GRACE_S
