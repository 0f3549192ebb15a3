"""Provider accounts' pauses: a usage limit closes the account until its reset plus the grace,
then one canary slot, then open; no reset known means a growing backoff; a plain 429 a short
one; out of credits waits for a resume by hand. The transitions, and their table in a real
SQLite task database shared by two stores (two processes' view)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestration.agents.limits import LimitKind, UsageLimit
from orchestration.allocation.providers import (
    BACKOFF_MIN_S,
    CANARY_S,
    TRANSIENT_MAX_S,
    TRANSIENT_MIN_S,
    ProviderState,
    ProviderStates,
    ProviderStatus,
    advanced,
    after_limit,
    after_success,
    resumed,
)
from orchestration.tasks.store import TaskStore

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
GRACE = 90.0


def limit(resets_in_s: float | None = None, **kwargs: object) -> UsageLimit:
    resets = NOW + timedelta(seconds=resets_in_s) if resets_in_s is not None else None
    values: dict[str, object] = {
        "kind": LimitKind.USAGE_LIMIT,
        "resets_at": resets,
        "source": "rate_limit_event",
    }
    values.update(kwargs)
    return UsageLimit(**values)  # type: ignore[arg-type]


def test_a_limit_with_a_reset_closes_the_account_until_the_reset_plus_the_grace() -> None:
    state = after_limit(ProviderState("acct"), limit(3600), task="t1", now=NOW, grace_s=GRACE)
    assert state.status is ProviderStatus.PAUSED
    assert state.until == NOW + timedelta(seconds=3600 + GRACE)
    assert state.source_task == "t1" and state.limit(4) == 0
    assert "resets 2026-11-29 13:00:00Z" in (state.reason or "")


def test_a_second_run_hitting_the_same_limit_changes_nothing_a_later_reset_extends() -> None:
    first = after_limit(ProviderState("acct"), limit(3600), task="t1", now=NOW, grace_s=GRACE)
    again = after_limit(first, limit(3600), task="t2", now=NOW, grace_s=GRACE)
    assert again == first
    later = after_limit(first, limit(7200), task="t3", now=NOW, grace_s=GRACE)
    assert later.until == NOW + timedelta(seconds=7200 + GRACE) and later.source_task == "t3"


def test_the_pause_ends_in_a_canary_slot_then_the_account_opens() -> None:
    paused = after_limit(ProviderState("acct"), limit(60), task="t1", now=NOW, grace_s=GRACE)
    assert advanced(paused, NOW + timedelta(seconds=60 + GRACE - 1)) == paused
    reopened_at = NOW + timedelta(seconds=60 + GRACE)
    canary = advanced(paused, reopened_at)
    assert canary.status is ProviderStatus.CANARY and canary.limit(4) == 1 and canary.limit(0) == 0
    assert canary.until == reopened_at + timedelta(seconds=CANARY_S)
    # Either the canary succeeds...
    assert after_success(canary, reopened_at).status is ProviderStatus.OPEN
    # ...or its window passes without a new limit.
    opened = advanced(canary, reopened_at + timedelta(seconds=CANARY_S))
    assert opened.status is ProviderStatus.OPEN and opened.limit(4) == 4


def test_without_a_reset_the_backoff_doubles_and_a_success_resets_it() -> None:
    state = ProviderState("acct")
    waits = []
    now = NOW
    for _ in range(3):
        state = after_limit(state, limit(None), task="t", now=now, grace_s=GRACE)
        assert state.until is not None
        waits.append((state.until - now).total_seconds())
        now = state.until
        state = advanced(state, now)  # the canary...
        assert state.status is ProviderStatus.CANARY  # ...hits the limit again
    assert waits == [BACKOFF_MIN_S, 2 * BACKOFF_MIN_S, 4 * BACKOFF_MIN_S]
    opened = after_success(state, now)
    assert opened.status is ProviderStatus.OPEN
    assert after_success(opened, now).backoff_s == 0.0
    assert after_limit(opened, limit(None), task="t", now=now, grace_s=GRACE).backoff_s == (
        2 * 4 * BACKOFF_MIN_S
    ), "an open account keeps its backoff until a success"


def test_the_backoff_stops_at_the_window() -> None:
    state = ProviderState("acct", backoff_s=4 * 3600.0)
    five_hour = after_limit(state, limit(None, window="five_hour"), task="t", now=NOW, grace_s=0)
    assert five_hour.backoff_s == 5 * 3600.0
    weekly = after_limit(state, limit(None, window="seven_day"), task="t", now=NOW, grace_s=0)
    assert weekly.backoff_s == 8 * 3600.0


def test_a_reset_already_past_is_no_reset() -> None:
    state = after_limit(ProviderState("acct"), limit(-10), task="t", now=NOW, grace_s=GRACE)
    assert state.until == NOW + timedelta(seconds=BACKOFF_MIN_S)


def test_a_plain_429_is_a_short_pause_growing_to_fifteen_minutes() -> None:
    transient = limit(None, kind=LimitKind.TRANSIENT, source="retry_429")
    state = ProviderState("acct")
    waits = []
    for _ in range(6):
        state = after_limit(state, transient, task="t", now=NOW, grace_s=GRACE)
        assert state.until is not None
        waits.append((state.until - NOW).total_seconds())
        state = advanced(state, state.until)
    assert waits[0] == TRANSIENT_MIN_S and waits[1] == 2 * TRANSIENT_MIN_S
    assert max(waits) == TRANSIENT_MAX_S


def test_out_of_credits_waits_for_a_resume_by_hand() -> None:
    out_of_credits = limit(None, source="codex_credits")
    state = after_limit(ProviderState("acct"), out_of_credits, task="t", now=NOW, grace_s=GRACE)
    assert state.status is ProviderStatus.PAUSED and state.until is None
    far = NOW + timedelta(days=30)
    assert advanced(state, far) == state
    assert after_limit(state, limit(10), task="t2", now=far, grace_s=GRACE) == state
    opened = resumed(state, far, "alice")
    assert opened.status is ProviderStatus.OPEN and opened.actor == "alice"


@pytest.fixture
def stores(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    first, second = TaskStore(url), TaskStore(url)
    yield first, second
    first.dispose()
    second.dispose()


def test_states_are_shared_through_the_task_database(stores: tuple[TaskStore, TaskStore]) -> None:
    worker, daemon = (ProviderStates(store) for store in stores)
    assert daemon.all() == {}
    assert daemon.get("acct") == ProviderState("acct")
    paused = worker.hit_limit("acct", limit(60), task="t1", now=NOW, grace_s=GRACE)
    assert daemon.all() == {"acct": paused}
    assert daemon.advance(NOW + timedelta(seconds=10)) == []
    (canary,) = daemon.advance(NOW + timedelta(seconds=60 + GRACE))
    assert canary.status is ProviderStatus.CANARY and worker.get("acct") == canary
    assert worker.succeeded("acct", NOW + timedelta(seconds=200)).status is ProviderStatus.OPEN
    again = worker.hit_limit(
        "acct", limit(None, source="codex_credits"), task="t2", now=NOW, grace_s=GRACE
    )
    assert daemon.get("acct") == again and again.until is None
    assert daemon.resume("acct", NOW, "bob").status is ProviderStatus.OPEN
    assert worker.get("acct").actor == "bob"
